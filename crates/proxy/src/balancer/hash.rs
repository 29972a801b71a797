//! Consistent hashing: the value a request hashes on (Kong's
//! `get_value_to_hash`, `kong/runloop/balancer/init.lua`) and a ring of
//! `slots` entries. Each target owns points on a 64-bit circle derived from
//! its own `target` string and weight only, so adding or removing a target
//! moves just the slots that land on (or came from) its points.

use super::BTarget;
use crate::snapshot::Row;
use http::HeaderMap;
use std::net::IpAddr;
use tollgate_router::Captures;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashOn {
    None,
    Consumer,
    Ip,
    Header,
    Cookie,
    Path,
    QueryArg,
    UriCapture,
}

impl HashOn {
    fn parse(s: Option<&str>) -> HashOn {
        match s {
            Some("consumer") => HashOn::Consumer,
            Some("ip") => HashOn::Ip,
            Some("header") => HashOn::Header,
            Some("cookie") => HashOn::Cookie,
            Some("path") => HashOn::Path,
            Some("query_arg") => HashOn::QueryArg,
            Some("uri_capture") => HashOn::UriCapture,
            _ => HashOn::None,
        }
    }
}

/// The hashing settings of an upstream.
#[derive(Debug, Clone)]
pub struct HashCfg {
    pub on: HashOn,
    pub fallback: HashOn,
    on_header: Option<String>,
    fallback_header: Option<String>,
    cookie: Option<String>,
    cookie_path: String,
    on_query_arg: Option<String>,
    fallback_query_arg: Option<String>,
    on_uri_capture: Option<String>,
    fallback_uri_capture: Option<String>,
}

/// What a request offers to hash on.
pub struct HashInput<'a> {
    pub consumer: Option<&'a str>,
    pub ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// The normalized request path (nginx `$uri`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub captures: &'a Captures,
}

impl HashCfg {
    pub fn from_row(row: &Row) -> HashCfg {
        let s = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        HashCfg {
            on: HashOn::parse(s("hash_on").as_deref()),
            fallback: HashOn::parse(s("hash_fallback").as_deref()),
            on_header: s("hash_on_header"),
            fallback_header: s("hash_fallback_header"),
            cookie: s("hash_on_cookie"),
            cookie_path: s("hash_on_cookie_path").unwrap_or_else(|| "/".into()),
            on_query_arg: s("hash_on_query_arg"),
            fallback_query_arg: s("hash_fallback_query_arg"),
            on_uri_capture: s("hash_on_uri_capture"),
            fallback_uri_capture: s("hash_fallback_uri_capture"),
        }
    }

    /// The hash of the request's value, and the `Set-Cookie` value to send
    /// when hashing on a cookie the client did not have (Kong makes one up).
    pub fn value(&self, req: &HashInput<'_>) -> (Option<u64>, Option<String>) {
        for (on, header, arg, capture) in [
            (
                self.on,
                &self.on_header,
                &self.on_query_arg,
                &self.on_uri_capture,
            ),
            (
                self.fallback,
                &self.fallback_header,
                &self.fallback_query_arg,
                &self.fallback_uri_capture,
            ),
        ] {
            let v: Option<String> = match on {
                HashOn::None => return (None, None),
                HashOn::Consumer => req.consumer.map(str::to_owned),
                HashOn::Ip => Some(req.ip.to_string()),
                HashOn::Header => header.as_deref().and_then(|h| {
                    // nginx joins repeated headers with ", "
                    let vals: Vec<&str> = req
                        .headers
                        .get_all(h)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .collect();
                    (!vals.is_empty()).then(|| vals.join(", "))
                }),
                HashOn::Cookie => {
                    let name = self.cookie.as_deref().unwrap_or_default();
                    match cookie(req.headers, name) {
                        Some(v) => Some(v.to_owned()),
                        None => {
                            let v = uuid::Uuid::new_v4().to_string();
                            let set = format!(
                                "{name}={v}; Path={}; Same-Site=Lax; HttpOnly",
                                self.cookie_path
                            );
                            return (Some(hash_str(&v)), Some(set));
                        }
                    }
                }
                HashOn::Path => Some(req.path.to_owned()),
                HashOn::QueryArg => arg
                    .as_deref()
                    .and_then(|a| query_arg(req.query.unwrap_or_default(), a)),
                // Kong indexes `uri_captures` with the configured string, so
                // only named groups match.
                HashOn::UriCapture => capture
                    .as_deref()
                    .and_then(|c| req.captures.name(c))
                    .map(str::to_owned),
            };
            if let Some(v) = v {
                return (Some(hash_str(&v)), None);
            }
        }
        (None, None)
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The first value of query argument `name` (repeated arguments join with
/// ","; an argument without a value is not a value).
fn query_arg(query: &str, name: &str) -> Option<String> {
    let vals: Vec<String> = form_pairs(query)
        .filter(|(k, _)| k == name)
        .filter_map(|(_, v)| v)
        .collect();
    (!vals.is_empty()).then(|| vals.join(","))
}

fn form_pairs(q: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let dec = |s: &str| percent_decode(&s.replace('+', " "));
        match p.split_once('=') {
            Some((k, v)) => (dec(k), Some(dec(v))),
            None => (dec(p), None),
        }
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// FNV-1a with a final avalanche: stable across processes and builds.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Points per target: proportional to its own weight only (10 per weight
/// unit of 1, i.e. 1000 for the default 100), capped, so that other targets'
/// changes never move its points.
fn points(weight: u32) -> u64 {
    (weight as u64 * 10).clamp(1, 40_000)
}

/// Each slot goes to the owner of the first point at or after the slot's
/// position on the circle.
pub fn build_ring(targets: &[BTarget], slots: usize) -> Vec<u32> {
    let mut pts: Vec<(u64, u32)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if t.weight == 0 {
            continue;
        }
        let base = hash_str(&t.target);
        for k in 0..points(t.weight) {
            pts.push((mix(base ^ mix(k + 1)), i as u32));
        }
    }
    if pts.is_empty() {
        return Vec::new();
    }
    pts.sort_unstable();
    let step = u64::MAX / slots as u64;
    let mut j = 0;
    (0..slots as u64)
        .map(|s| {
            let pos = s * step;
            while j < pts.len() && pts[j].0 < pos {
                j += 1;
            }
            pts[j % pts.len()].1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::state::TargetState;
    use std::sync::Arc;

    fn t(target: &str, weight: u32) -> BTarget {
        BTarget {
            target: target.into(),
            id: String::new(),
            host: String::new(),
            port: 0,
            ip: None,
            weight,
            state: Arc::new(TargetState::default()),
            addrs: Default::default(),
        }
    }

    #[test]
    fn adding_a_target_moves_only_its_share() {
        let a = vec![t("a:1", 100), t("b:1", 100), t("c:1", 100)];
        let r1 = build_ring(&a, 10000);
        let mut b = a;
        b.push(t("d:1", 100));
        let r2 = build_ring(&b, 10000);
        let moved = r1.iter().zip(&r2).filter(|(x, y)| x != y).count();
        // every moved slot went to the new target, about a quarter of them
        assert!(r1.iter().zip(&r2).all(|(x, y)| x == y || *y == 3));
        assert!((1500..3500).contains(&moved), "moved {moved}");
        for i in 0..4 {
            let n = r2.iter().filter(|&&x| x == i).count();
            assert!((1500..3500).contains(&n), "target {i} has {n}");
        }
    }

    fn cfg(v: serde_json::Value) -> HashCfg {
        HashCfg::from_row(v.as_object().unwrap())
    }

    #[test]
    fn hash_on_then_fallback() {
        let h = HeaderMap::new();
        let caps = Captures::default();
        let input = |consumer| HashInput {
            consumer,
            ip: "10.0.0.1".parse().unwrap(),
            headers: &h,
            path: "/p",
            query: Some("k=v"),
            captures: &caps,
        };
        let c = cfg(serde_json::json!({"hash_on": "consumer", "hash_fallback": "ip"}));
        assert_eq!(c.value(&input(Some("c1"))).0, Some(hash_str("c1")));
        // no consumer: the fallback
        assert_eq!(c.value(&input(None)).0, Some(hash_str("10.0.0.1")));
        let c = cfg(
            serde_json::json!({"hash_on": "header", "hash_on_header": "x-a",
            "hash_fallback": "query_arg", "hash_fallback_query_arg": "k"}),
        );
        assert_eq!(c.value(&input(None)).0, Some(hash_str("v")));
        let c = cfg(serde_json::json!({"hash_on": "path"}));
        assert_eq!(c.value(&input(None)).0, Some(hash_str("/p")));
        let c = cfg(serde_json::json!({"hash_on": "header", "hash_on_header": "x-a"}));
        assert_eq!(c.value(&input(None)), (None, None));
        let c = cfg(serde_json::json!({"hash_on": "cookie", "hash_on_cookie": "s"}));
        let (v, set) = c.value(&input(None));
        assert!(v.is_some());
        assert!(set.unwrap().starts_with("s="));
    }

    #[test]
    fn query_args_and_cookies() {
        assert_eq!(query_arg("a=1&b=x%20y&b=2", "b").as_deref(), Some("x y,2"));
        assert_eq!(query_arg("a", "a"), None);
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, "x=1; sticky=abc".parse().unwrap());
        assert_eq!(cookie(&h, "sticky"), Some("abc"));
        assert_eq!(cookie(&h, "y"), None);
    }
}
