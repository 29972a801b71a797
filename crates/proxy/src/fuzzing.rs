//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the
//! property tests in `tests/fuzz_props.rs`: each takes arbitrary bytes and
//! must never panic (they assert their own invariants).

use crate::head::{ChunkFollower, Framer, Framing, HeadCheck, HeadScanner, Limits, Step};
use tollgate_router::{normalize_path, RequestInfo, RouteSpec, Router};

/// Reads structured values out of fuzz input.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (self.byte() as usize).min(max).min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    fn pick(&mut self, dict: &[&str]) -> String {
        let b = self.byte() as usize;
        if b < dict.len() * 4 {
            dict[b % dict.len()].to_owned()
        } else {
            String::from_utf8_lossy(self.bytes(24)).into_owned()
        }
    }
    fn list(&mut self, dict: &[&str], max: usize) -> Vec<String> {
        let n = self.byte() as usize % (max + 1);
        (0..n).map(|_| self.pick(dict)).collect()
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

const PROTOCOLS: &[&str] = &["http", "https", "grpc", "grpcs", "tcp", "tls", "ws", "wss"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"];
const HOSTS: &[&str] = &[
    "example.com",
    "*.example.com",
    "example.*",
    "a.example.com",
    "example.com:8000",
    "*.example.com:443",
    "[::1]",
    "[::1]:80",
    "localhost",
    "*",
    "",
];
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/a/",
    "~/a/(?<id>\\d+)$",
    "~/a/[^/]+/c",
    "~^/x",
    "~(",
    "~/(a|b)*",
    "/%2F",
    "/a%20b",
    "~/\\d{1,3}",
    "",
    "//",
];
const HEADER_NAMES: &[&str] = &["x-version", "accept", "host", "content-type", "X-Case"];
const HEADER_VALUES: &[&str] = &["v1", "V2", "~*^v\\d$", "~*(", "application/grpc", ""];
const REQ_PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a/b", "/a/123", "/a/x/c", "/x", "/a%2Fb", "/%41", "/a/../b", "/./a", "",
    "/a//b",
];

/// Builds a router from fuzzed route specs and matches fuzzed requests.
pub fn router(data: &[u8]) {
    let mut inp = Input { data };
    let n = inp.byte() as usize % 12;
    let mut specs = Vec::new();
    for i in 0..n {
        let headers = (0..inp.byte() % 3)
            .map(|_| (inp.pick(HEADER_NAMES), inp.list(HEADER_VALUES, 3)))
            .collect();
        specs.push(RouteSpec {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            created_at: i64::from(inp.byte()),
            protocols: inp.list(PROTOCOLS, 3),
            methods: inp.list(METHODS, 3),
            hosts: inp.list(HOSTS, 3),
            paths: inp.list(PATHS, 3),
            headers,
            snis: inp.list(HOSTS, 2),
            regex_priority: i64::from(inp.byte() as i8),
        });
    }
    let Ok(router) = Router::build(&specs) else {
        return;
    };
    let mut rounds = 0;
    while !inp.is_empty() && rounds < 16 {
        rounds += 1;
        let scheme = if inp.byte() & 1 == 0 { "http" } else { "https" };
        let method = inp.pick(METHODS);
        let host = inp.pick(HOSTS);
        let raw_path = inp.pick(REQ_PATHS);
        let path = normalize_path(&raw_path).into_owned();
        let sni = if inp.byte() & 1 == 0 {
            None
        } else {
            Some(inp.pick(HOSTS))
        };
        let hname = inp.pick(HEADER_NAMES).to_ascii_lowercase();
        let hval = inp.pick(HEADER_VALUES);
        let lookup = |name: &str| (name == hname).then_some(hval.as_str());
        let port = u16::from(inp.byte()) * 100;
        let req = RequestInfo {
            scheme,
            method: &method,
            host: &host,
            port,
            path: &path,
            sni: sni.as_deref(),
            headers: &lookup,
        };
        if let Some(m) = router.find(&req) {
            assert!(m.route_index < specs.len());
            assert!(m.prefix_len <= path.len());
        }
        let _ = router.find_linear(&req);
    }
}

/// Feeds raw bytes through the request-head checks: the framer (as a
/// connection would, in fuzzed pieces), the head scanner, the chunk follower,
/// and `normalize_path`.
pub fn request_head(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let small = Limits {
        max_request_line: 64,
        max_header_line: 48,
        max_head: 256,
        max_headers: 4,
    };
    for (limits, h2) in [(Limits::default(), true), (small.clone(), false)] {
        // whole input at once, then the same input in pieces
        for piece in [data.len(), 1 + data[0] as usize % 7] {
            let mut fr = Framer::new(limits.clone(), h2);
            let mut pending: Vec<u8> = Vec::new();
            let mut fed = 0;
            let mut released = 0usize;
            'feed: while fed < data.len() {
                let end = (fed + piece).min(data.len());
                pending.extend_from_slice(&data[fed..end]);
                fed = end;
                loop {
                    if pending.is_empty() {
                        break;
                    }
                    match fr.step(&pending) {
                        Step::Release(n) => {
                            assert!(n > 0 && n <= pending.len(), "release {n}");
                            released += n;
                            pending.drain(..n);
                        }
                        Step::NeedMore => {
                            assert!(pending.len() <= limits.max_head + 8, "unbounded head");
                            break;
                        }
                        Step::UpgradeWait => fr.upgrade_resolved(data[0] & 1 == 1),
                        Step::Passthrough | Step::Reject(..) | Step::BadChunk => break 'feed,
                    }
                }
            }
            assert!(released <= data.len());
        }
    }
    let mut s = HeadScanner::default();
    if let HeadCheck::Complete(h) = s.check(data, &Limits::default()) {
        assert!(h.len <= data.len());
    }
    // A head accepted at once (one parse, no line scan) is accepted alike by the
    // scan that sees it grow byte by byte.
    for limits in [Limits::default(), small.clone()] {
        let whole = HeadScanner::default().check(data, &limits);
        if let HeadCheck::Complete(_) = whole {
            let mut s = HeadScanner::default();
            let grown = (1..=data.len())
                .map(|i| s.check(&data[..i], &limits))
                .find(|c| *c != HeadCheck::Partial);
            assert_eq!(grown, Some(whole));
        }
    }
    // The fast path (`fast.rs`), which reads heads without the framer, serves
    // only what the framer would release as a bodiless request, whole.
    for limits in [Limits::default(), small] {
        if let Some(n) = crate::fast::served_len(data, &limits) {
            match HeadScanner::default().check(data, &limits) {
                HeadCheck::Complete(h) => {
                    assert_eq!(
                        h.len, n,
                        "the fast path and the framer disagree on the head"
                    );
                    assert_eq!(h.framing, Framing::None, "served with a body");
                    assert!(!h.upgrade, "served an upgrade");
                }
                other => panic!("the fast path served a head the framer says {other:?} to"),
            }
        }
    }
    let mut c = ChunkFollower::default();
    if let Ok(n) = c.advance(data, 100) {
        assert!(n <= data.len());
    }
    let text = String::from_utf8_lossy(data);
    let p = normalize_path(&text);
    // normalizing twice changes nothing more
    let _ = normalize_path(&p);
    if let Some(sp) = text.split_whitespace().next() {
        let _ = Limits::from_large_client_header_buffers(sp);
        let _ = crate::head::parse_size(sp);
    }
}

/// Feeds raw bytes to the upstream HTTP/1.1 response decoder (the head, then the
/// body by its framing: length, chunked with trailers, until close), whole and in
/// pieces: it must never panic, never yield more body bytes than it was given,
/// and decode the same however the bytes arrive; and its head kept as lines of
/// bytes must mean what its head as a map means.
pub fn upstream_response(data: &[u8]) {
    use crate::upstream::h1::{check_raw_head, decode_all};
    let Some((&first, raw)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 1 {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    check_raw_head(raw, &method);
    let whole = decode_all(raw, &method, raw.len());
    let pieces = decode_all(raw, &method, 1 + (first as usize >> 1) % 7);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "decoded differently in pieces");
            assert!(a.as_ref().map_or(0, Vec::len) <= raw.len());
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "whole: {:?}, in pieces: {:?}",
            whole
                .as_ref()
                .map(|b| b.as_ref().map(Vec::len))
                .map_err(|e| e.to_string()),
            pieces
                .as_ref()
                .map(|b| b.as_ref().map(Vec::len))
                .map_err(|e| e.to_string())
        ),
    }
}
