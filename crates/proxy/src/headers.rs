//! Header rules: hop-by-hop removal, the real client address
//! (`trusted_ips`/`real_ip_header`), Kong's upstream URI escaping.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE,
    VIA,
};
use std::net::IpAddr;
use tollgate_config::TrustedIp;

pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static PROXY: HeaderName = HeaderName::from_static("proxy");
pub static TRAILER: HeaderName = HeaderName::from_static("trailer");

/// Names listed in `Connection` (trimmed, not empty; compare them ignoring
/// case). Borrowed: no allocation per request.
pub fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether `Connection` lists `token` (lower-case).
pub fn connection_has(h: &HeaderMap, token: &str) -> bool {
    connection_tokens(h).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether the client asked for trailers (`TE: trailers`).
pub fn wants_trailers(h: &HeaderMap) -> bool {
    h.get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|x| x.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// `n` as a header value. Below 1000 (latencies in milliseconds, statuses) a
/// shared static value: no formatting and no allocation per header.
pub fn number_value(n: u64) -> HeaderValue {
    const SMALL: usize = 1000;
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    match usize::try_from(n) {
        Ok(i) if i < SMALL => TABLE.get_or_init(|| {
            // one leaked string holds every number's digits
            let mut text = String::new();
            let mut ends = Vec::with_capacity(SMALL);
            for i in 0..SMALL {
                text.push_str(&i.to_string());
                ends.push(text.len());
            }
            let text: &'static str = Box::leak(text.into_boxed_str());
            let mut start = 0;
            ends.into_iter()
                .map(|end| {
                    let v = HeaderValue::from_static(&text[start..end]);
                    start = end;
                    v
                })
                .collect()
        })[i]
            .clone(),
        _ => HeaderValue::from(n),
    }
}

/// The hop-by-hop names removed whatever `Connection` lists (`Connection` first).
static FIXED_HOP_BY_HOP: [&HeaderName; 7] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY,
    &PROXY_CONNECTION,
    &TE,
    &TRANSFER_ENCODING,
    &UPGRADE,
];

fn is_fixed_hop_by_hop(n: &HeaderName) -> bool {
    FIXED_HOP_BY_HOP.contains(&n)
}

/// A copy of `src` without what [`remove_hop_by_hop`] removes, with room for
/// `extra` more headers. Built in one pass and sized once: a clone keeps no
/// spare room, so each header added to it would grow the copy again.
pub fn end_to_end(src: &HeaderMap, extra: usize) -> HeaderMap {
    let listed = lists_others(src);
    let mut out = HeaderMap::with_capacity(src.len() + extra);
    for (k, v) in src {
        if is_end_to_end(src, listed, k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Whether `name`, a header name as parsed (an RFC 9110 token), is `lower` in
/// any letter case. Cheaper than `eq_ignore_ascii_case` on the hot path: one
/// side is lower case already, and for token bytes setting bit 5 lowers a
/// letter and changes nothing a lower-case literal of letters, digits and `-`
/// could be confused with.
#[inline]
pub fn token_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b)
}

/// Names of one length, each lower-cased with its standard name.
type SameLength = &'static [(&'static [u8], HeaderName)];

/// The request headers clients send most, by name length.
const COMMON_REQUEST: [(usize, SameLength); 6] = [
    (4, &[(b"host", http::header::HOST)]),
    (
        6,
        &[
            (b"accept", http::header::ACCEPT),
            (b"cookie", http::header::COOKIE),
            (b"origin", http::header::ORIGIN),
        ],
    ),
    (
        10,
        &[
            (b"user-agent", http::header::USER_AGENT),
            (b"connection", http::header::CONNECTION),
        ],
    ),
    (12, &[(b"content-type", http::header::CONTENT_TYPE)]),
    (
        13,
        &[
            (b"authorization", http::header::AUTHORIZATION),
            (b"cache-control", http::header::CACHE_CONTROL),
            (b"if-none-match", http::header::IF_NONE_MATCH),
        ],
    ),
    (
        15,
        &[
            (b"accept-encoding", http::header::ACCEPT_ENCODING),
            (b"accept-language", http::header::ACCEPT_LANGUAGE),
        ],
    ),
];

/// The standard name of a header clients send most (`Host`, `Accept`,
/// `User-Agent` …) in any letter case, told by its length and a compare
/// rather than `HeaderName::from_bytes`' lower-cased copy and long match;
/// `None` for any other name. `name` must be a token (httparse checked it).
#[inline]
pub fn common_request_name(name: &[u8]) -> Option<HeaderName> {
    let (_, names) = COMMON_REQUEST.iter().find(|(len, _)| *len == name.len())?;
    names
        .iter()
        .find(|(lower, _)| token_is(name, lower))
        .map(|(_, n)| n.clone())
}

/// `X-Forwarded-For`, parsed once.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client headers the proxy reads for itself after the access phase, found
/// in one pass over the map rather than a hashed look-up each (most requests
/// carry none of them).
#[derive(Default)]
pub struct Seen<'h> {
    /// The first of each.
    pub content_length: Option<&'h HeaderValue>,
    pub x_forwarded_for: Option<&'h HeaderValue>,
    pub via: Option<&'h HeaderValue>,
    /// Whether there is any `Connection` / `TE` header.
    pub connection: bool,
    pub te: bool,
}

impl<'h> Seen<'h> {
    pub fn scan(h: &'h HeaderMap) -> Seen<'h> {
        let mut s = Seen::default();
        for (n, v) in h {
            if *n == CONNECTION {
                s.connection = true;
            } else if *n == TE {
                s.te = true;
            } else if *n == CONTENT_LENGTH {
                s.content_length.get_or_insert(v);
            } else if *n == VIA {
                s.via.get_or_insert(v);
            } else if *n == X_FORWARDED_FOR {
                s.x_forwarded_for.get_or_insert(v);
            }
        }
        s
    }

    /// [`connection_has`], without a look-up when there is no `Connection`.
    pub fn connection_has(&self, h: &HeaderMap, token: &str) -> bool {
        self.connection && connection_has(h, token)
    }

    /// [`wants_trailers`], without a look-up when there is no `TE`.
    pub fn wants_trailers(&self, h: &HeaderMap) -> bool {
        self.te && wants_trailers(h)
    }

    /// [`lists_others`], without a look-up when there is no `Connection`.
    pub fn lists_others(&self, h: &HeaderMap) -> bool {
        self.connection && lists_others(h)
    }
}

/// Appends `name: value` and its line end to a head being written.
#[inline]
pub fn put_line(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

/// Whether `h`'s `Connection` may name headers besides the fixed hop-by-hop
/// ones (then [`is_end_to_end`] reads its list).
pub fn lists_others(h: &HeaderMap) -> bool {
    h.get_all(CONNECTION)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"keep-alive"))
}

/// Whether `name`, one of `src`'s headers, goes on past a proxy: not one of
/// the fixed hop-by-hop headers, nor (with `listed`, [`lists_others`]) one
/// that `src`'s `Connection` lists.
pub fn is_end_to_end(src: &HeaderMap, listed: bool, name: &HeaderName) -> bool {
    let listed_here =
        || listed && connection_tokens(src).any(|t| t.eq_ignore_ascii_case(name.as_str()));
    !(is_fixed_hop_by_hop(name) || listed_here())
}

/// Removes hop-by-hop headers: `Connection` and what it lists,
/// `Keep-Alive`, `Proxy`, `Proxy-Connection`, `TE`, `Transfer-Encoding`,
/// `Upgrade` (the caller re-adds `Upgrade` for a tunnel and `TE: trailers`).
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    // (a response whose lines are kept as bytes brings an empty map)
    if h.is_empty() {
        return;
    }
    let fixed = FIXED_HOP_BY_HOP;
    // One pass over the names instead of seven hashed look-ups: most
    // messages carry none of these (or only `Connection`).
    let mut found = [false; 7];
    let mut any = false;
    // Whether `Connection` may list other headers than `keep-alive` (removed below
    // anyway), which it seldom does: no parsing of its list otherwise.
    let mut listed = false;
    for (k, v) in h.iter() {
        if let Some(i) = fixed.iter().position(|n| *n == k) {
            found[i] = true;
            any = true;
            listed |= i == 0 && !v.as_bytes().eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if !any {
        return;
    }
    if listed {
        // `keep-alive` is removed below anyway; with nothing else listed
        // (the usual case) the list stays empty and allocates nothing.
        let listed: Vec<HeaderName> = connection_tokens(h)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in listed {
            h.remove(n);
        }
    }
    for (n, f) in fixed.into_iter().zip(found) {
        if f {
            h.remove(n);
        }
    }
}

/// nginx's realip module: the client address when `peer` is trusted and
/// `real_ip_header` carries one. `X-Forwarded-For`-style lists give their
/// last entry, or with `recursive` the last entry that is not trusted.
pub fn real_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[TrustedIp],
    real_ip_header: &str,
    recursive: bool,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if trusted.is_empty()
        || !is_trusted(peer)
        || real_ip_header.eq_ignore_ascii_case("proxy_protocol")
    {
        return peer;
    }
    let values: Vec<&str> = headers
        .get_all(real_ip_header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if values.is_empty() {
        return peer;
    }
    let parse = |s: &str| -> Option<IpAddr> {
        s.parse().ok().or_else(|| {
            // `1.2.3.4:port` or `[v6]:port`
            crate::snapshot::split_host_port(s).and_then(|(h, _)| h.parse().ok())
        })
    };
    if !recursive {
        return values.last().and_then(|s| parse(s)).unwrap_or(peer);
    }
    let mut found = peer;
    for v in values.iter().rev() {
        match parse(v) {
            Some(ip) => {
                found = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    found
}

/// Kong's `kong.tools.uri.escape` for the upstream URI: percent-encodes bytes
/// that are neither unreserved nor reserved (and not `%`).
pub fn escape_uri(s: &str) -> std::borrow::Cow<'_, str> {
    // (a table: this runs over every proxied request's path)
    const KEEP: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let extra = b"-._~!*'();:@&=+$,/?#[]%";
        let mut i = 0;
        while i < extra.len() {
            t[extra[i] as usize] = true;
            i += 1;
        }
        t
    };
    fn keep(b: u8) -> bool {
        KEEP[b as usize]
    }
    if s.bytes().all(keep) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Appends the current time as an HTTP date (IMF-fixdate, the `Date` header),
/// formatted at most once a second per thread.
pub fn http_date(w: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [b' '; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                c.1.copy_from_slice(s.as_bytes());
                c.0 = secs;
            } else {
                w.extend_from_slice(s.as_bytes());
                return;
            }
        }
        w.extend_from_slice(&c.1);
    });
}

/// `n` in decimal, in `buf` (without `fmt`).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in lower-case hexadecimal (a chunk size).
pub fn push_hex(w: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, X-Foo".parse().unwrap());
        h.insert("x-foo", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-bar", "2".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-bar"));
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 42, 999, 1000, 65_535, u64::MAX] {
            assert_eq!(number_value(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn end_to_end_copy_matches_removal() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, X-Foo".parse().unwrap());
        h.append(CONNECTION, " Upgrade ,".parse().unwrap());
        h.insert("x-foo", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert("x-bar", "2".parse().unwrap());
        h.append("x-bar", "3".parse().unwrap());
        h.insert("x-baz", "4".parse().unwrap());
        let copy = end_to_end(&h, 4);
        remove_hop_by_hop(&mut h);
        assert_eq!(copy, h);
        let values: Vec<_> = copy.get_all("x-bar").iter().collect();
        assert_eq!(values, ["2", "3"]);
        // nothing listed in `Connection`: every end-to-end header is kept
        let mut plain = HeaderMap::new();
        plain.insert("x-foo", "1".parse().unwrap());
        plain.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        let copy = end_to_end(&plain, 0);
        assert_eq!(copy.len(), 1);
        assert!(copy.contains_key("x-foo"));
    }

    #[test]
    fn realip() {
        let trusted = vec![TrustedIp::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 10.0.0.5".parse().unwrap(),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            real_ip(peer, &h, &trusted, "X-Forwarded-For", false),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            real_ip(peer, &h, &trusted, "X-Forwarded-For", true),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(
            real_ip(untrusted, &h, &trusted, "X-Forwarded-For", true),
            untrusted
        );
    }

    #[test]
    fn token_is_agrees_with_eq_ignore_ascii_case_on_tokens() {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let literal = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        for a in (0..=255u8).filter(|b| tchar(*b)) {
            for &b in literal {
                assert_eq!(
                    token_is(&[a], &[b]),
                    [a].eq_ignore_ascii_case(&[b]),
                    "{a:#x} against {b:#x}"
                );
            }
        }
        assert!(token_is(b"Content-Length", b"content-length"));
        assert!(!token_is(b"Content-Lengths", b"content-length"));
        assert!(!token_is(b"x-kong", b"x-kong-"));
    }

    #[test]
    fn common_request_names_are_the_parsed_ones() {
        for (len, names) in COMMON_REQUEST {
            for (lower, name) in names {
                assert_eq!(lower.len(), len);
                assert_eq!(HeaderName::from_bytes(lower).unwrap(), name);
                let upper = lower.to_ascii_uppercase();
                let title: Vec<u8> = lower
                    .iter()
                    .enumerate()
                    .map(|(i, b)| if i == 0 { b.to_ascii_uppercase() } else { *b })
                    .collect();
                for spelling in [&lower[..], &upper, &title] {
                    assert_eq!(common_request_name(spelling), Some(name.clone()));
                }
            }
        }
        for other in [
            &b"hosts"[..],
            b"hos",
            b"x-host",
            b"accepts",
            b"content-length",
            b"",
        ] {
            assert_eq!(common_request_name(other), None, "{other:?}");
        }
    }

    #[test]
    fn escape() {
        assert_eq!(escape_uri("/a b/é"), "/a%20b/%C3%A9");
        assert_eq!(escape_uri("/a%2Fb?x=1"), "/a%2Fb?x=1");
    }
}
