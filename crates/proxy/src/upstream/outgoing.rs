//! The headers of a request to an upstream: the client's end-to-end ones
//! with the proxy's own set over them (`X-Forwarded-*`, `Via`, …).
//!
//! Copying the client's map into a new one and inserting a dozen headers into
//! it hashes every name twice and drops a map per request, about a tenth of a
//! plain proxied request's instructions (bench/RESULTS.md). An HTTP/1.1
//! upstream needs no map: its request head is written from the client's map
//! and this list as they are. HTTP/2 (hyper) gets the map, [`Outgoing::to_map`].

use crate::headers;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};

/// A value the proxy sets: borrowed where it can be, so that building and
/// dropping the list copies and counts nothing.
#[derive(Clone, Debug)]
pub enum Val<'a> {
    /// The header is removed.
    Removed,
    Owned(HeaderValue),
    Shared(&'a HeaderValue),
    /// Checked to be a header value ([`Val::text`]).
    Text(&'a str),
}

impl<'a> Val<'a> {
    /// `s` as a value, if it is one (`HeaderValue::from_str`'s rule).
    pub fn text(s: &'a str) -> Option<Val<'a>> {
        s.bytes()
            .all(|b| (b >= 32 && b != 127) || b == b'\t')
            .then_some(Val::Text(s))
    }

    /// The value's bytes; `None` for a removal.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Removed => None,
            Val::Owned(v) => Some(v.as_bytes()),
            Val::Shared(v) => Some(v.as_bytes()),
            Val::Text(s) => Some(s.as_bytes()),
        }
    }

    fn to_value(&self) -> Option<HeaderValue> {
        match self {
            Val::Removed => None,
            Val::Owned(v) => Some(v.clone()),
            Val::Shared(v) => Some((*v).clone()),
            Val::Text(s) => HeaderValue::from_str(s).ok(),
        }
    }
}

/// The client's headers and what the proxy sets over them.
pub struct Outgoing<'a> {
    client: &'a HeaderMap,
    /// The client's `Connection` lists headers of its own (hop-by-hop too).
    listed: bool,
    /// Headers set or removed over the client's, in order.
    set: Vec<(&'static HeaderName, Val<'a>)>,
    /// The `Host` of the current try (its target may differ from the last's).
    pub host: Option<Val<'a>>,
    /// HTTP/1.1: the request target, written in place of the request's URI.
    pub target: Option<&'a str>,
}

impl<'a> Outgoing<'a> {
    /// `listed`: [`headers::lists_others`] of `client`.
    pub fn new(
        client: &'a HeaderMap,
        listed: bool,
        set: Vec<(&'static HeaderName, Val<'a>)>,
    ) -> Self {
        Outgoing {
            client,
            listed,
            set,
            host: None,
            target: None,
        }
    }

    /// Whether the proxy sets (or removes) `name` itself.
    fn sets(&self, name: &HeaderName) -> bool {
        *name == HOST || self.set.iter().any(|(n, _)| *n == name)
    }

    /// Every header of the request, in the order written: `Host`, the
    /// client's end-to-end headers the proxy does not set, then the proxy's.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> + '_ {
        self.host
            .iter()
            .filter_map(|v| v.bytes().map(|v| (&HOST, v)))
            .chain(
                self.client
                    .iter()
                    .filter(|(n, _)| headers::is_end_to_end(self.client, self.listed, n))
                    .filter(|(n, _)| !self.sets(n))
                    .map(|(n, v)| (n, v.as_bytes())),
            )
            .chain(
                self.set
                    .iter()
                    .filter_map(|(n, v)| v.bytes().map(|v| (*n, v))),
            )
    }

    /// The same headers as a map (for hyper's HTTP/2 client).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = headers::end_to_end(self.client, self.set.len() + 1);
        for (n, v) in &self.set {
            match v.to_value() {
                Some(v) => {
                    map.insert(*n, v);
                }
                None => {
                    map.remove(*n);
                }
            }
        }
        match self.host.as_ref().and_then(Val::to_value) {
            Some(h) => {
                map.insert(HOST, h);
            }
            None => {
                map.remove(HOST);
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_and_the_map_agree() {
        let mut client = HeaderMap::new();
        for (n, v) in [
            ("host", "client.example"),
            ("accept", "*/*"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "300"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-prefix", "/old"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ] {
            client.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
        static XFP: HeaderName = HeaderName::from_static("x-forwarded-prefix");
        static CONNECTION: HeaderName = http::header::CONNECTION;
        let keep_alive = HeaderValue::from_static("keep-alive");
        let mut o = Outgoing::new(
            &client,
            headers::lists_others(&client),
            vec![
                (&XFF, Val::text("10.0.0.1, 127.0.0.1").unwrap()),
                (&XFP, Val::Removed),
                (&CONNECTION, Val::Shared(&keep_alive)),
            ],
        );
        o.host = Val::text("upstream:8080");
        let listed: Vec<(String, String)> = o
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8(v.to_vec()).unwrap()))
            .collect();
        assert_eq!(
            listed,
            [
                ("host", "upstream:8080"),
                ("accept", "*/*"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("x-forwarded-for", "10.0.0.1, 127.0.0.1"),
                ("connection", "keep-alive"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let mut from_list = HeaderMap::new();
        for (n, v) in o.iter() {
            from_list.append(n, HeaderValue::from_bytes(v).unwrap());
        }
        assert_eq!(from_list, o.to_map());
    }

    #[test]
    fn text_values_follow_the_header_value_rule() {
        assert!(Val::text("/a b\tc~\u{e9}").is_some());
        for bad in ["a\r\nb", "a\nb", "a\0b", "a\u{7f}b"] {
            assert!(Val::text(bad).is_none(), "{bad:?}");
            assert!(HeaderValue::from_str(bad).is_err(), "{bad:?}");
        }
    }
}
