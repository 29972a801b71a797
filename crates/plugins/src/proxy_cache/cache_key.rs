//! Kong's proxy-cache key (`cache_key.lua`): the sha256, in hex, of
//! `prefix|method|uri|params|headers`.

use crate::template::Arg;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// What the key is made of.
pub(crate) struct KeyParts<'a> {
    pub consumer_id: Option<&'a str>,
    pub route_id: Option<&'a str>,
    pub method: &'a str,
    /// nginx's `$request` with everything from the first `?` cut off (so it keeps the
    /// ` HTTP/x` tail only when there was no query string).
    pub uri: &'a str,
    pub query: &'a [(String, Vec<Arg>)],
    pub headers: &'a HeaderMap,
}

/// `prefix_uuid`: consumer and route, the route alone, or `default`.
fn prefix(consumer: Option<&str>, route: Option<&str>) -> String {
    match (consumer, route) {
        (Some(c), Some(r)) => format!("{c}:{r}"),
        (_, Some(r)) => r.to_owned(),
        _ => "default".to_owned(),
    }
}

/// One `generate_key_from` piece: `name=v1,v2` (values sorted), a bare `name` for
/// `true`, `name=v`.
fn piece(out: &mut Vec<String>, field: &str, mut vals: Vec<String>, bare: bool) {
    if bare {
        out.push(field.to_owned());
    } else {
        vals.sort_unstable();
        out.push(format!("{field}={}", vals.join(",")));
    }
}

fn arg_text(a: &Arg) -> String {
    match a {
        Arg::Str(s) => s.clone(),
        Arg::True => "true".to_owned(),
    }
}

/// `params_key`: the `vary` arguments in their order, or all of them sorted by name.
fn params_key(query: &[(String, Vec<Arg>)], vary: &[String]) -> String {
    let mut out = Vec::new();
    let mut emit = |name: &str, vals: &[Arg]| match vals {
        [Arg::True] => piece(&mut out, name, Vec::new(), true),
        [one] => out.push(format!("{name}={}", arg_text(one))),
        many => piece(&mut out, name, many.iter().map(arg_text).collect(), false),
    };
    if vary.is_empty() {
        let mut all: Vec<&(String, Vec<Arg>)> = query.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, vals) in all {
            emit(name, vals);
        }
    } else {
        for name in vary {
            if let Some((_, vals)) = query.iter().find(|(n, _)| n == name) {
                emit(name, vals);
            }
        }
    }
    out.join(":")
}

/// `headers_key`: the `vary` headers found (looked up as `ngx.req.get_headers()`
/// does: any case, `_` for `-`), multiple values sorted and joined.
fn headers_key(headers: &HeaderMap, vary: &[String]) -> String {
    let mut out = Vec::new();
    for field in vary {
        let lookup = field.to_ascii_lowercase().replace('_', "-");
        let vals: Vec<String> = headers
            .get_all(lookup.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        match vals.len() {
            0 => {}
            1 => out.push(format!("{field}={}", vals[0])),
            _ => piece(&mut out, field, vals, false),
        }
    }
    out.join(":")
}

/// `build_cache_key`.
pub(crate) fn build(k: &KeyParts<'_>, vary_query: &[String], vary_headers: &[String]) -> String {
    let plain = format!(
        "{}|{}|{}|{}|{}",
        prefix(k.consumer_id, k.route_id),
        k.method,
        k.uri,
        params_key(k.query, vary_query),
        headers_key(k.headers, vary_headers),
    );
    hex::encode(Sha256::digest(plain.as_bytes()))
}

/// nginx's `$request` (`GET /p?q HTTP/1.1`) after Kong's `gsub("\?.*", "")`.
pub(crate) fn request_uri(method: &str, target: &str, version: http::Version) -> String {
    match target.find('?') {
        Some(i) => format!("{method} {}", &target[..i]),
        None => format!("{method} {target} {version:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::decode_args;

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn key_is_kongs_string_hashed() {
        let mut h = HeaderMap::new();
        h.append("x-a", "2".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.insert("x-b", "b".parse().unwrap());
        let q = decode_args("b=2&a=1&flag&m=z&m=y");
        let uri = request_uri("GET", "/p?b=2", http::Version::HTTP_11);
        assert_eq!(uri, "GET /p");
        let k = KeyParts {
            consumer_id: None,
            route_id: Some("r1"),
            method: "GET",
            uri: &uri,
            query: &q,
            headers: &h,
        };
        assert_eq!(
            build(&k, &[], &[]),
            sha("r1|GET|GET /p|a=1:b=2:flag:m=y,z|")
        );
        let vary_q = ["m".to_owned(), "nope".to_owned(), "b".to_owned()];
        let vary_h = ["X_A".to_owned(), "x-b".to_owned(), "x-c".to_owned()];
        assert_eq!(
            build(&k, &vary_q, &vary_h),
            sha("r1|GET|GET /p|m=y,z:b=2|X_A=1,2:x-b=b")
        );
        let k = KeyParts {
            consumer_id: Some("c1"),
            uri: "GET /p HTTP/1.1",
            query: &[],
            ..k
        };
        assert_eq!(build(&k, &[], &[]), sha("c1:r1|GET|GET /p HTTP/1.1||"));
        assert_eq!(
            request_uri("GET", "/p", http::Version::HTTP_2),
            "GET /p HTTP/2.0"
        );
        assert_eq!(prefix(Some("c"), None), "default");
    }
}
