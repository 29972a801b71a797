//! An upstream response's header lines kept as the bytes they arrived in.
//!
//! Building an `http::HeaderMap` for a response (a parsed, hashed name and a
//! value per line), adding to it and dropping it is about a seventh of a plain
//! proxied request's instructions (bench/RESULTS.md). When nothing reads the
//! response's headers — no plugin with a response phase, a client served by
//! `fast.rs` — the lines go to the client as they came, less the hop-by-hop
//! ones, and the proxy's own headers follow from a small map. Each line's
//! kind is found once, while the head is parsed; anything else gets the map.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, SERVER, VIA};

/// What a header line is to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Other,
    ContentLength,
    TransferEncoding,
    Connection,
    /// `Keep-Alive`, `Proxy`, `Proxy-Connection`, `TE`, `Upgrade`: hop-by-hop
    /// whatever `Connection` lists.
    HopByHop,
    Trailer,
    Date,
    Server,
    Via,
    /// `X-Kong-…`: the proxy may set one of these itself.
    Kong,
}

impl Kind {
    /// Whether the proxy's own list may set a header of this kind over the
    /// lines (one that neither frames the message nor is hop-by-hop).
    pub fn settable(self) -> bool {
        matches!(
            self,
            Kind::Other | Kind::Date | Kind::Server | Kind::Via | Kind::Kong
        )
    }

    /// The kind of a header name, in any letter case.
    pub fn of(name: &[u8]) -> Kind {
        let is = |s: &str| crate::headers::token_is(name, s.as_bytes());
        // (length and first letter first: most names are none of these)
        let Some(first) = name.first() else {
            return Kind::Other;
        };
        match (name.len(), first | 0x20) {
            (2, b't') if is("te") => Kind::HopByHop,
            (3, b'v') if is("via") => Kind::Via,
            (4, b'd') if is("date") => Kind::Date,
            (5, b'p') if is("proxy") => Kind::HopByHop,
            (6, b's') if is("server") => Kind::Server,
            (7, b'u') if is("upgrade") => Kind::HopByHop,
            (7, b't') if is("trailer") => Kind::Trailer,
            (10, b'c') if is("connection") => Kind::Connection,
            (10, b'k') if is("keep-alive") => Kind::HopByHop,
            (14, b'c') if is("content-length") => Kind::ContentLength,
            (16, b'p') if is("proxy-connection") => Kind::HopByHop,
            (17, b't') if is("transfer-encoding") => Kind::TransferEncoding,
            (n, b'x') if n > 7 && crate::headers::token_is(&name[..7], b"x-kong-") => Kind::Kong,
            _ => Kind::Other,
        }
    }
}

/// What a `Connection` value says, token by token.
#[derive(Default, Clone, Copy)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    /// Names of headers to remove besides the fixed hop-by-hop ones.
    pub others: bool,
}

impl ConnectionTokens {
    /// Notes the tokens of one more `Connection` line.
    pub fn add(&mut self, value: &[u8]) {
        for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let (close, keep_alive) = (
                t.eq_ignore_ascii_case(b"close"),
                t.eq_ignore_ascii_case(b"keep-alive"),
            );
            self.close |= close;
            self.keep_alive |= keep_alive;
            self.others |= !t.is_empty() && !close && !keep_alive;
        }
    }
}

/// Where one line's name and value sit in the head.
#[derive(Clone, Copy, Debug)]
pub struct Line {
    name: (u32, u32),
    value: (u32, u32),
    pub kind: Kind,
}

impl Line {
    pub fn new(name: (usize, usize), value: (usize, usize), kind: Kind) -> Line {
        // (a head is at most `h1::MAX_READ` bytes)
        Line {
            name: (name.0 as u32, name.1 as u32),
            value: (value.0 as u32, value.1 as u32),
            kind,
        }
    }
}

impl Line {
    /// Where the value sits in the head.
    pub fn value_range(&self) -> std::ops::Range<usize> {
        self.value.0 as usize..(self.value.0 + self.value.1) as usize
    }
}

/// A response head's header lines, in their order.
pub struct RawHeaders {
    head: Bytes,
    lines: Vec<Line>,
    /// The kinds among the lines, a bit each.
    kinds: u16,
    /// `Content-Length` lines to leave out: `Transfer-Encoding` overrides them
    /// (RFC 9112 §6.3).
    drop_length: bool,
    /// Headers the proxy sets itself, over lines of the same name, written after
    /// the lines (no framing headers among them).
    own: Vec<(HeaderName, HeaderValue)>,
    /// Whether `own` sets a header of kind `Other` or `Date` (a plugin's), whose
    /// lines must then be looked for by name.
    own_others: bool,
}

/// The proxy's own response headers (see [`RawHeaders::own`]).
pub type Own = Vec<(HeaderName, HeaderValue)>;

thread_local! {
    /// The emptied buffers of this thread's dropped [`RawHeaders`], for its next
    /// responses: two allocations fewer per response.
    static SPARE: std::cell::RefCell<(Vec<Vec<Line>>, Vec<Own>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Buffers kept per thread (its concurrent responses), and their largest size.
const SPARE_BUFFERS: usize = 64;
const SPARE_CAPACITY: usize = 64;

/// An empty buffer of at least `n` lines, a spare one when the thread has it.
pub fn line_buffer(n: usize) -> Vec<Line> {
    let mut v = SPARE.with(|s| s.borrow_mut().0.pop()).unwrap_or_default();
    v.reserve_exact(n);
    v
}

/// An empty list for the proxy's own headers, a spare one when the thread has it.
pub fn own_buffer() -> Own {
    SPARE
        .with(|s| s.borrow_mut().1.pop())
        .unwrap_or_else(|| Vec::with_capacity(6))
}

impl Drop for RawHeaders {
    fn drop(&mut self) {
        let mut lines = std::mem::take(&mut self.lines);
        let mut own = std::mem::take(&mut self.own);
        lines.clear();
        own.clear();
        // (`try_with`: a thread being torn down keeps nothing)
        let _ = SPARE.try_with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else {
                return;
            };
            if lines.capacity() > 0
                && lines.capacity() <= SPARE_CAPACITY
                && s.0.len() < SPARE_BUFFERS
            {
                s.0.push(lines);
            }
            if own.capacity() > 0 && own.capacity() <= SPARE_CAPACITY && s.1.len() < SPARE_BUFFERS {
                s.1.push(own);
            }
        });
    }
}

impl RawHeaders {
    pub fn new(head: Bytes, lines: Vec<Line>, drop_length: bool) -> RawHeaders {
        let kinds = lines.iter().fold(0, |k, l| k | 1 << l.kind as u16);
        RawHeaders {
            head,
            lines,
            kinds,
            drop_length,
            own: Vec::new(),
            own_others: false,
        }
    }

    /// Sets the proxy's own headers (see [`own`](Self::own)).
    pub fn set_own(&mut self, own: Own) {
        self.own = own;
    }

    /// Sets a header over the lines and own headers of the same name, as a
    /// map's `insert` would (what plugins set for the response). Only a
    /// [`Kind::settable`] one: the caller checks.
    pub fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.own.retain(|(n, _)| *n != name);
        self.own_others |= matches!(Kind::of(name.as_str().as_bytes()), Kind::Other | Kind::Date);
        self.own.push((name, value));
    }

    /// Whether the proxy sets a header of this name (as it came, in any case).
    fn own_has(&self, name: &[u8]) -> bool {
        self.own
            .iter()
            .any(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The headers the proxy sets itself.
    pub fn own(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.own.iter().map(|(n, v)| (n, v))
    }

    /// Whether the proxy sets `name` itself, here or in `overlay`.
    fn set_by_proxy(&self, overlay: &HeaderMap, name: &HeaderName) -> bool {
        self.own.iter().any(|(n, _)| n == name)
            || (!overlay.is_empty() && overlay.contains_key(name))
    }

    fn has(&self, kind: Kind) -> bool {
        self.kinds & 1 << kind as u16 != 0
    }

    fn name(&self, l: &Line) -> &[u8] {
        &self.head[l.name.0 as usize..(l.name.0 + l.name.1) as usize]
    }

    fn value(&self, l: &Line) -> &[u8] {
        &self.head[l.value_range()]
    }

    /// The first value of a kind of header.
    pub fn get(&self, kind: Kind) -> Option<&[u8]> {
        if !self.has(kind) {
            return None;
        }
        self.lines
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| self.value(l))
    }

    /// Whether `Connection` names headers to remove besides the fixed
    /// hop-by-hop ones (which only [`to_map`](Self::to_map) handles).
    #[cfg(test)]
    pub fn connection_lists_others(&self) -> bool {
        self.lines
            .iter()
            .filter(|l| l.kind == Kind::Connection)
            .any(|l| {
                let mut c = ConnectionTokens::default();
                c.add(self.value(l));
                c.others
            })
    }

    /// Every line as a map entry (what a response carries when something
    /// reads or changes its headers).
    pub fn to_map(&self, extra: usize) -> Result<HeaderMap, &'static str> {
        let mut map = HeaderMap::with_capacity(self.lines.len() + extra);
        for l in &self.lines {
            if self.drop_length && l.kind == Kind::ContentLength {
                continue;
            }
            let name = HeaderName::from_bytes(self.name(l))
                .map_err(|_| "invalid header name in the upstream response")?;
            // (httparse checked the value's bytes)
            let value = HeaderValue::from_maybe_shared(self.head.slice(l.value_range()))
                .map_err(|_| "invalid header value in the upstream response")?;
            map.append(name, value);
        }
        Ok(map)
    }

    /// The lines an end-to-end response carries on, as `(name, value, kind)`:
    /// without the hop-by-hop ones, `Trailer`, a `Content-Length` that
    /// `Transfer-Encoding` overrode, and any header the proxy sets itself (its
    /// own, or `overlay`'s).
    pub fn end_to_end<'a>(
        &'a self,
        overlay: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8], Kind)> + 'a {
        // (one look-up for each of these kinds present, not one per line)
        let drop_via = self.has(Kind::Via) && self.set_by_proxy(overlay, &VIA);
        let drop_server = self.has(Kind::Server) && self.set_by_proxy(overlay, &SERVER);
        self.lines.iter().filter_map(move |l| {
            let keep = match l.kind {
                Kind::Other | Kind::Date => !(self.own_others && self.own_has(self.name(l))),
                Kind::ContentLength => !self.drop_length,
                Kind::Via => !drop_via,
                Kind::Server => !drop_server,
                // (seldom sent by upstreams)
                Kind::Kong => HeaderName::from_bytes(self.name(l))
                    .is_ok_and(|n| !self.set_by_proxy(overlay, &n)),
                Kind::Connection | Kind::HopByHop | Kind::TransferEncoding | Kind::Trailer => false,
            };
            keep.then(|| (self.name(l), self.value(l), l.kind))
        })
    }

    /// Appends [`end_to_end`](Self::end_to_end)'s lines to `w` (without
    /// `Content-Length` unless `keep_length`), copying each run of adjacent
    /// lines at once. Returns the `Content-Length` value written and whether a
    /// `Date` was.
    pub fn write_end_to_end<'a>(
        &'a self,
        overlay: &'a HeaderMap,
        keep_length: bool,
        w: &mut Vec<u8>,
    ) -> (Option<&'a [u8]>, bool) {
        let (mut length, mut date) = (None, false);
        // The bytes of the lines not yet copied (`start..end` of the head).
        let mut run: Option<(usize, usize)> = None;
        let head = &self.head[..];
        let flush = |run: &mut Option<(usize, usize)>, w: &mut Vec<u8>| {
            if let Some((s, e)) = run.take() {
                w.extend_from_slice(&head[s..e]);
            }
        };
        for (name, value, kind) in self.end_to_end(overlay) {
            match kind {
                Kind::ContentLength if !keep_length => continue,
                Kind::ContentLength => {
                    length.get_or_insert(value);
                }
                Kind::Date => date = true,
                _ => {}
            }
            let start = name.as_ptr() as usize - head.as_ptr() as usize;
            let end = value.as_ptr() as usize - head.as_ptr() as usize + value.len();
            if value.is_empty() || !head[end..].starts_with(b"\r\n") {
                // (a value whose trailing space was trimmed, or a bare LF)
                flush(&mut run, w);
                crate::headers::put_line(w, name, value);
                continue;
            }
            // (the line as it came: its name, colon, spaces and value)
            run = match run {
                Some((s, e)) if e == start => Some((s, end + 2)),
                _ => {
                    flush(&mut run, w);
                    Some((start, end + 2))
                }
            };
        }
        flush(&mut run, w);
        (length, date)
    }

    /// Checks that [`write_end_to_end`](Self::write_end_to_end) writes what
    /// [`end_to_end`](Self::end_to_end) lists, read back by httparse (the
    /// fuzz target's and the tests' check).
    pub fn check_written(&self, overlay: &HeaderMap) {
        let mut w = Vec::new();
        let (length, _) = self.write_end_to_end(overlay, true, &mut w);
        w.extend_from_slice(b"\r\n");
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let parsed = match httparse::parse_headers(&w, &mut slots) {
            Ok(httparse::Status::Complete((n, h))) if n == w.len() => h,
            other => panic!("written lines do not parse: {other:?}"),
        };
        let written: Vec<(&[u8], &[u8])> = parsed
            .iter()
            .map(|h| (h.name.as_bytes(), h.value))
            .collect();
        let listed: Vec<(&[u8], &[u8])> =
            self.end_to_end(overlay).map(|(n, v, _)| (n, v)).collect();
        assert_eq!(written, listed);
        assert_eq!(
            length,
            self.end_to_end(overlay)
                .find(|l| l.2 == Kind::ContentLength)
                .map(|l| l.1)
        );
    }

    /// The response's headers as one map: [`end_to_end`](Self::end_to_end)'s
    /// lines, then `overlay`'s (for a client hyper serves).
    pub fn merge(&self, overlay: HeaderMap) -> Result<HeaderMap, &'static str> {
        let mut map = HeaderMap::with_capacity(self.lines.len() + overlay.len());
        for (n, v, _) in self.end_to_end(&overlay) {
            let name = HeaderName::from_bytes(n)
                .map_err(|_| "invalid header name in the upstream response")?;
            let value = HeaderValue::from_bytes(v)
                .map_err(|_| "invalid header value in the upstream response")?;
            map.append(name, value);
        }
        for (n, v) in &self.own {
            map.insert(n, v.clone());
        }
        let mut last = None;
        for (n, v) in overlay {
            let n = match n {
                Some(n) => {
                    last = Some(n.clone());
                    n
                }
                None => match &last {
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            map.append(n, v);
        }
        Ok(map)
    }

    /// The size of the head these lines make with `overlay` and the proxy's
    /// own headers, after a first line of `first_line` bytes (as
    /// `downstream::head_size` counts a map's).
    pub fn head_size(&self, first_line: usize, overlay: &HeaderMap) -> u64 {
        let lines: usize = self
            .end_to_end(overlay)
            .map(|(n, v, _)| n.len() + 2 + v.len() + 2)
            .sum();
        let own: usize = overlay
            .iter()
            .chain(self.own())
            .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
            .sum();
        (first_line + 2 + lines + own + 2) as u64
    }

    /// Whether a `Content-Length` of at most `n` is among the lines.
    pub fn length_at_most(&self, n: u64) -> bool {
        !self.drop_length
            && self
                .get(Kind::ContentLength)
                .and_then(crate::head::parse_content_length)
                .is_some_and(|len| len <= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_LENGTH;

    fn raw(lines: &[(&str, &str)], drop_length: bool) -> RawHeaders {
        let mut head = String::new();
        let mut at = Vec::new();
        for (n, v) in lines {
            let ns = head.len();
            head.push_str(n);
            head.push_str(": ");
            let vs = head.len();
            head.push_str(v);
            head.push_str("\r\n");
            at.push(Line::new(
                (ns, n.len()),
                (vs, v.len()),
                Kind::of(n.as_bytes()),
            ));
        }
        RawHeaders::new(Bytes::from(head), at, drop_length)
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of(b"Content-Length"), Kind::ContentLength);
        assert_eq!(Kind::of(b"TRANSFER-ENCODING"), Kind::TransferEncoding);
        assert_eq!(Kind::of(b"Keep-Alive"), Kind::HopByHop);
        assert_eq!(Kind::of(b"te"), Kind::HopByHop);
        assert_eq!(Kind::of(b"X-Kong-Upstream-Latency"), Kind::Kong);
        assert_eq!(Kind::of(b"x-kong-"), Kind::Other);
        assert_eq!(Kind::of(b"Content-Type"), Kind::Other);
        assert_eq!(Kind::of(b"Trailer"), Kind::Trailer);
        assert_eq!(Kind::of(b""), Kind::Other);
        assert_eq!(Kind::of(b"Xylophone-Header"), Kind::Other);
    }

    #[test]
    fn end_to_end_lines_match_the_map_path() {
        let r = raw(
            &[
                ("Server", "up"),
                ("Content-Length", "2"),
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
                ("Via", "1.1 other"),
                ("X-Kong-Proxy-Latency", "99"),
                ("X-Custom", "a"),
                ("x-custom", "b"),
                ("Trailer", "x"),
            ],
            false,
        );
        assert!(!r.connection_lists_others());
        r.check_written(&HeaderMap::new());
        let mut overlay = HeaderMap::new();
        overlay.insert("via", HeaderValue::from_static("1.1 other, 1.1 kong"));
        overlay.insert("x-kong-proxy-latency", HeaderValue::from_static("0"));
        r.check_written(&overlay);
        let kept: Vec<(String, String)> = r
            .end_to_end(&overlay)
            .map(|(n, v, _)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("Server", "up"),
                ("Content-Length", "2"),
                ("X-Custom", "a"),
                ("x-custom", "b")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // The merged map is what the map path builds: the upstream's map less
        // hop-by-hop headers and `Trailer`, with the overlay's values set.
        let merged = r.merge(overlay.clone()).unwrap();
        let mut expected = r.to_map(0).unwrap();
        crate::headers::remove_hop_by_hop(&mut expected);
        expected.remove(&crate::headers::TRAILER);
        for (n, v) in &overlay {
            expected.insert(n, v.clone());
        }
        assert_eq!(merged, expected);
        assert!(r.length_at_most(2) && !r.length_at_most(1));

        // The proxy's own headers kept with the lines mean what the overlay meant.
        let mut r = r;
        r.set_own(
            overlay
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        );
        let empty = HeaderMap::new();
        assert_eq!(r.end_to_end(&empty).count(), kept.len());
        r.check_written(&empty);
        assert_eq!(r.merge(HeaderMap::new()).unwrap(), expected);
    }

    /// Headers a plugin sets for the response replace the lines of the same
    /// name in any case, as a map's `insert` does on the map path.
    #[test]
    fn plugin_headers_replace_lines_of_their_name() {
        let mut r = raw(
            &[
                ("Server", "up"),
                ("x-ratelimit-remaining-second", "7"),
                ("X-Custom", "a"),
                ("Content-Length", "2"),
                ("X-RateLimit-Limit-Second", "9"),
            ],
            false,
        );
        let mut own = own_buffer();
        own.push((VIA, HeaderValue::from_static("1.1 kong/3.9.1")));
        r.set_own(own);
        let limit = HeaderName::from_static("x-ratelimit-limit-second");
        let remaining = HeaderName::from_static("x-ratelimit-remaining-second");
        r.set_header(limit.clone(), HeaderValue::from_static("1"));
        r.set_header(remaining.clone(), HeaderValue::from_static("5"));
        r.set_header(remaining.clone(), HeaderValue::from_static("4"));
        let empty = HeaderMap::new();
        let kept: Vec<&[u8]> = r.end_to_end(&empty).map(|(n, _, _)| n).collect();
        assert_eq!(kept, [&b"Server"[..], b"X-Custom", b"Content-Length"]);
        r.check_written(&empty);
        let merged = r.merge(HeaderMap::new()).unwrap();
        assert_eq!(merged.get(&remaining).unwrap(), "4");
        assert_eq!(merged.get_all(&remaining).iter().count(), 1);
        assert_eq!(merged.get(&limit).unwrap(), "1");
        assert_eq!(merged.get(VIA).unwrap(), "1.1 kong/3.9.1");
        // The size the log reports is the size of the head that map makes.
        assert_eq!(
            r.head_size(15, &empty),
            crate::downstream::head_size(15, &merged)
        );
        assert!(!Kind::ContentLength.settable() && !Kind::Connection.settable());
        assert!(Kind::Other.settable() && Kind::Kong.settable());
    }

    #[test]
    fn overridden_length_and_listed_names() {
        let r = raw(
            &[
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "5"),
                ("Connection", "close, X-Private"),
            ],
            true,
        );
        assert!(r.connection_lists_others());
        assert_eq!(r.end_to_end(&HeaderMap::new()).count(), 0);
        assert!(!r.to_map(0).unwrap().contains_key(CONTENT_LENGTH));
        assert!(!r.length_at_most(10));
    }
}
