//! Hostile input on the proxy (issue 13, part 3): raw bytes over loopback TCP to the
//! real binary, each case answered as nginx (and so Kong) answers it, the connection
//! closed when reusing it would be unsafe, nothing smuggled to the upstream, and the
//! gateway's memory bounded under floods. HTTP/2 cases are in [`h2`]; the results
//! table is tests/hardening/REPORT.md.

mod h2;

use crate::plugin_support::{echo, ok, until, until_with};
use crate::support::{command, free_port, Gateway};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The marker a smuggled request carries: the upstream must never see it.
const SMUGGLED: &str = "SMUGGLED";

/// An upstream that keeps every byte it receives (to prove what never reached it) and
/// answers each request `200 ok`; a path starting `/big` gets a 1 MiB body.
pub struct Recorder {
    pub url: String,
    seen: Arc<Mutex<Vec<u8>>>,
    requests: Arc<AtomicUsize>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (seen.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(record(s, s2.clone(), r2.clone()));
            }
        });
        Recorder {
            url,
            seen,
            requests,
        }
    }

    /// Whether any upstream connection carried `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn record(mut s: TcpStream, seen: Arc<Mutex<Vec<u8>>>, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 16384];
    loop {
        while let Some((used, path)) = next_request(&buf) {
            buf.drain(..used);
            requests.fetch_add(1, Ordering::Relaxed);
            let body = if path.starts_with("/big") {
                vec![b'x'; 1 << 20]
            } else {
                b"ok".to_vec()
            };
            let mut resp =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
            resp.extend_from_slice(&body);
            if s.write_all(&resp).await.is_err() {
                return;
            }
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                seen.lock().unwrap().extend_from_slice(&tmp[..n]);
                buf.extend_from_slice(&tmp[..n]);
            }
        }
    }
}

/// One whole request at the front of `buf` (Content-Length or chunked body): its length
/// and path.
fn next_request(buf: &[u8]) -> Option<(usize, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let body = &buf[end..];
        let at = if body.starts_with(b"0\r\n\r\n") {
            0
        } else {
            body.windows(7).position(|w| w == b"\r\n0\r\n\r\n")? + 2
        };
        return Some((end + at + 5, path));
    }
    let len: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (buf.len() >= end + len).then_some((end + len, path))
}

/// What came back on a raw connection.
pub struct Reply {
    pub text: String,
    /// The gateway closed (or reset) the connection.
    pub closed: bool,
}

impl Reply {
    /// The status of every response, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| self.text.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }
}

pub fn addr(g: &Gateway) -> String {
    g.proxy.trim_start_matches("http://").to_string()
}

/// Reads until the gateway closes the connection or `wait` passes.
pub async fn read_reply(s: &mut TcpStream, wait: Duration) -> Reply {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut tmp = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
            Err(_) => break false,
        }
    };
    Reply {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Sends `req` on a new connection and reads what comes back until the gateway closes
/// it (or 5 s pass).
pub async fn exchange(g: &Gateway, req: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr(g)).await.unwrap();
    // The gateway may refuse before reading everything: a failed write is an answer.
    let _ = s.write_all(req).await;
    read_reply(&mut s, Duration::from_secs(5)).await
}

/// The gateway's resident memory in KiB (`VmRSS`).
pub fn rss_kib(g: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", g.pid().unwrap())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The bound on memory growth during one flood.
pub const FLOOD_RSS_BOUND_KIB: u64 = 64 * 1024;

/// Asserts the growth since `before` is under [`FLOOD_RSS_BOUND_KIB`]; returns it.
pub fn assert_bounded(g: &Gateway, case: &str, before: u64) -> u64 {
    let after = rss_kib(g);
    let grew = after.saturating_sub(before);
    eprintln!("{case}: RSS {before} KiB -> {after} KiB (+{grew} KiB)");
    assert!(
        grew < FLOOD_RSS_BOUND_KIB,
        "{case}: RSS grew by {grew} KiB ({before} -> {after})"
    );
    grew
}

/// A gateway with one service on a [`Recorder`] and a catch-all route.
pub async fn gateway_on_recorder(env: &[(&str, &str)]) -> (Gateway, Recorder) {
    let up = Recorder::start().await;
    let g = Gateway::start_with(env).await;
    ok(&g, "/services", json!({"name": "rec", "url": up.url})).await;
    ok(
        &g,
        "/services/rec/routes",
        json!({"name": "all", "paths": ["/"]}),
    )
    .await;
    let r = until(&g, "/ready", &[], 200).await;
    assert_eq!(r.status.as_u16(), 200);
    (g, up)
}

/// A POST whose body, if the framing were read another way, is a second request.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /s HTTP/1.1\r\nHost: h\r\n{headers}\r\n{body}").into_bytes()
}

fn smuggled() -> String {
    format!("GET /{SMUGGLED} HTTP/1.1\r\nHost: h\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_are_refused_and_the_connection_closed() {
    let (g, up) = gateway_on_recorder(&[]).await;
    let s = smuggled();
    let chunked_then = |x: &str| format!("0\r\n\r\n{x}");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "CL+TE",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                &chunked_then(&s),
            ),
            400,
        ),
        (
            "TE+CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
                &chunked_then(&s),
            ),
            400,
        ),
        (
            "TE: xchunked",
            post("Transfer-Encoding: xchunked\r\n", &chunked_then(&s)),
            501,
        ),
        (
            "TE: chunked, identity",
            post(
                "Transfer-Encoding: chunked, identity\r\n",
                &chunked_then(&s),
            ),
            501,
        ),
        (
            "TE: identity, chunked",
            post(
                "Transfer-Encoding: identity, chunked\r\n",
                &chunked_then(&s),
            ),
            501,
        ),
        (
            "TE: \"chunked\"",
            post("Transfer-Encoding: \"chunked\"\r\n", &chunked_then(&s)),
            501,
        ),
        (
            "TE twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &chunked_then(&s),
            ),
            400,
        ),
        (
            "TE name with a space before the colon",
            post(
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                &chunked_then(&s),
            ),
            400,
        ),
        (
            "TE behind obs-fold",
            post(
                "X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                &chunked_then(&s),
            ),
            400,
        ),
        (
            "TE value with a vertical tab",
            post("Transfer-Encoding: \x0bchunked\r\n", &chunked_then(&s)),
            400,
        ),
        (
            "TE in HTTP/1.0",
            format!(
                "POST /s HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                chunked_then(&s)
            )
            .into_bytes(),
            400,
        ),
        (
            "CL twice, differing",
            post("Content-Length: 0\r\nContent-Length: 40\r\n", &s),
            400,
        ),
        (
            "CL twice, equal",
            post("Content-Length: 0\r\nContent-Length: 0\r\n", &s),
            400,
        ),
        ("CL list", post("Content-Length: 0, 0\r\n", &s), 400),
        ("CL signed +", post("Content-Length: +5\r\n", &s), 400),
        ("CL signed -", post("Content-Length: -1\r\n", &s), 400),
        ("CL hex", post("Content-Length: 0x0\r\n", &s), 400),
        (
            "CL overflow",
            post("Content-Length: 99999999999999999999999\r\n", &s),
            400,
        ),
        ("CL empty", post("Content-Length: \r\n", &s), 400),
        (
            "bare CR inside a header",
            post("X-A: 1\rContent-Length: 0\r\n", &s),
            400,
        ),
        ("obs-fold", post("X-A: 1\r\n\tfolded\r\n", &s), 400),
        (
            "Host twice",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunk size not hex",
            post("Transfer-Encoding: chunked\r\n", &format!("zz\r\n{s}")),
            400,
        ),
        (
            "chunk size overflow",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("fffffffffffffffff1\r\nab\r\n0\r\n\r\n{s}"),
            ),
            400,
        ),
        (
            "chunk size negative",
            post("Transfer-Encoding: chunked\r\n", &format!("-1\r\n{s}")),
            400,
        ),
        (
            "chunk size with leading space",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!(" 2\r\nab\r\n{s}"),
            ),
            400,
        ),
        (
            "chunk data longer than its size",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("2\r\nabcd\r\n0\r\n\r\n{s}"),
            ),
            400,
        ),
        (
            "chunk size line ended by bare LF",
            post("Transfer-Encoding: chunked\r\n", &format!("2\nab\r\n{s}")),
            400,
        ),
        (
            "chunk extension of 20 KiB",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("2;x={}\r\nab\r\n0\r\n\r\n{s}", "a".repeat(20 * 1024)),
            ),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, req, want) in &cases {
        let r = exchange(&g, req).await;
        let statuses = r.statuses();
        // Bad chunks fail the body after the head went through: the answer is 400, or
        // a closed connection when the upstream exchange had already begun.
        let chunk_case = name.starts_with("chunk");
        let status_ok = statuses == [*want] || (chunk_case && statuses.is_empty());
        if !status_ok || !r.closed {
            failures.push(format!(
                "{name}: statuses {statuses:?} closed {} (want [{want}], closed)\n{}",
                r.closed, r.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!up.saw(SMUGGLED), "a smuggled request reached the upstream");

    // Control: the same connection carries pipelined requests when the framing is
    // unambiguous, bare LF line ends included (nginx accepts them; the upstream gets
    // CRLF), so the refusals above are not a blanket refusal.
    let before = up.requests();
    let r = exchange(
        &g,
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nabPOST /b HTTP/1.1\nHost: h\nTransfer-Encoding:  chunked\n\n2\r\ncd\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.statuses(), [200, 200, 200], "{}", r.text);
    assert!(r.closed);
    assert_eq!(up.requests(), before + 3);

    // A refused request after a good one on the same connection: the good one is
    // answered, the bad one refused, the connection closed, the smuggled never sent.
    let mut req = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    req.extend(post(
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        &chunked_then(&s),
    ));
    let r = exchange(&g, &req).await;
    assert_eq!(r.statuses(), [200, 400], "{}", r.text);
    assert!(r.closed);
    assert!(!up.saw(SMUGGLED));
}

/// `n` headers after `Host`.
fn with_headers(n: usize, each: usize) -> Vec<u8> {
    let mut req = String::from("GET /h HTTP/1.1\r\nHost: h\r\n");
    for i in 0..n {
        req.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(each)));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn long_request_line(len: usize) -> Vec<u8> {
    // "GET /" + path + " HTTP/1.1\r\n" is `len` bytes
    let path = "p".repeat(len - 16);
    format!("GET /{path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
}

async fn assert_refused(g: &Gateway, case: &str, req: &[u8], want: u16) {
    let r = exchange(g, req).await;
    assert_eq!(r.statuses(), [want], "{case}: {}", r.text);
    assert!(r.closed, "{case}: connection left open");
}

async fn assert_served(g: &Gateway, case: &str, req: &[u8]) {
    let mut s = TcpStream::connect(addr(g)).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok") {
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&tmp[..n]),
            other => panic!("{case}: {other:?} after {}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{case}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_heads_get_nginx_answers() {
    let (g, _up) = gateway_on_recorder(&[]).await;
    // Request line: 8 KiB with its CRLF passes, one byte more is 414.
    assert_served(&g, "request line of 8192 bytes", &long_request_line(8192)).await;
    assert_refused(
        &g,
        "request line of 8193 bytes",
        &long_request_line(8193),
        414,
    )
    .await;
    assert_refused(
        &g,
        "request line of 64 KiB",
        &long_request_line(64 * 1024),
        414,
    )
    .await;
    // One header line over 8 KiB; all headers over 32 KiB (Kong answers nginx's 494
    // as 400 "Request header or cookie too large").
    assert_refused(&g, "one header of 9 KiB", &with_headers(1, 9 * 1024), 400).await;
    assert_served(&g, "four headers of 7 KiB", &with_headers(4, 7 * 1024)).await;
    assert_refused(&g, "five headers of 7 KiB", &with_headers(5, 7 * 1024), 400).await;
    // Header count: 100 in all pass, 101 are refused.
    assert_served(&g, "100 headers", &with_headers(99, 8)).await;
    assert_refused(&g, "101 headers", &with_headers(100, 8), 400).await;
    assert_refused(&g, "5000 headers", &with_headers(5000, 1), 400).await;
    let r = exchange(&g, &with_headers(5, 9 * 1024)).await;
    assert!(
        r.text.contains("Request header or cookie too large"),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_limits_follow_the_nginx_keys() {
    let (g, _up) = gateway_on_recorder(&[
        ("TOLLGATE_NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS", "2 1k"),
        ("TOLLGATE_NGINX_PROXY_MAX_HEADERS", "10"),
    ])
    .await;
    assert_served(&g, "request line of 1024", &long_request_line(1024)).await;
    assert_refused(&g, "request line of 1025", &long_request_line(1025), 414).await;
    assert_served(&g, "10 headers", &with_headers(9, 8)).await;
    assert_refused(&g, "11 headers", &with_headers(10, 8), 400).await;
    assert_refused(&g, "head over 2 KiB", &with_headers(3, 900), 400).await;

    // A value nginx would refuse stops the start, naming the key.
    for (key, value) in [
        ("TOLLGATE_NGINX_HTTP_MAX_HEADERS", "lots"),
        ("TOLLGATE_NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS", "8k"),
        ("TOLLGATE_NGINX_PROXY_CLIENT_HEADER_TIMEOUT", "soon"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = command(dir.path())
            .arg("start")
            .env(
                "TOLLGATE_PROXY_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "TOLLGATE_ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("TOLLGATE_STATUS_LISTEN", "off")
            .env(key, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let name = key.trim_start_matches("TOLLGATE_").to_ascii_lowercase();
        assert!(!out.status.success(), "{key}={value} started");
        assert!(
            err.contains(&format!("invalid value for '{name}'")),
            "{key}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_timed_out() {
    let (g, up) = gateway_on_recorder(&[
        ("TOLLGATE_NGINX_HTTP_CLIENT_HEADER_TIMEOUT", "1s"),
        ("TOLLGATE_NGINX_HTTP_CLIENT_BODY_TIMEOUT", "1s"),
    ])
    .await;

    // Slowloris: a header byte every 200 ms never completes the head; nginx closes the
    // connection after client_header_timeout, from the head's first byte.
    let mut s = TcpStream::connect(addr(&g)).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .await
        .unwrap();
    let mut closed_after = None;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(b"a").await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut b = [0u8; 256];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
            let n = r.unwrap_or(0);
            let got = String::from_utf8_lossy(&b[..n]).into_owned();
            assert!(n == 0 || got.starts_with("HTTP/1.1 408"), "{got}");
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let t = closed_after.expect("slowloris connection still open after 5 s");
    assert!(t >= Duration::from_millis(900), "closed too early: {t:?}");
    eprintln!("slowloris: closed after {t:?}");

    // A connection that never sends a byte is closed after the same time.
    let mut s = TcpStream::connect(addr(&g)).await.unwrap();
    let r = read_reply(&mut s, Duration::from_secs(5)).await;
    assert!(r.closed, "silent connection left open");

    // Slow body: two bytes of ten, then silence: 408 after client_body_timeout.
    let mut s = TcpStream::connect(addr(&g)).await.unwrap();
    s.write_all(b"POST /slowbody HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let start = Instant::now();
    let r = read_reply(&mut s, Duration::from_secs(5)).await;
    assert_eq!(r.statuses(), [408], "{}", r.text);
    assert!(r.closed);
    assert!(start.elapsed() >= Duration::from_millis(900));

    // A flood of 200 slowloris connections: memory stays bounded, all are closed, and
    // the gateway serves the next client.
    let before = rss_kib(&g);
    let mut conns = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(addr(&g)).await.unwrap();
        s.write_all(format!("GET /l{i} HTTP/1.1\r\nHost: h\r\nX-A: ").as_bytes())
            .await
            .unwrap();
        conns.push(s);
    }
    assert_bounded(&g, "200 slowloris connections", before);
    let mut open = 0;
    for mut s in conns {
        if !read_reply(&mut s, Duration::from_secs(5)).await.closed {
            open += 1;
        }
    }
    assert_eq!(open, 0, "slowloris connections left open");
    assert_served(
        &g,
        "after the slowloris flood",
        b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert!(
        !up.saw("/slow HTTP") && !up.saw("/l0 HTTP"),
        "an incomplete head was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_never_read_keep_memory_bounded() {
    let (g, up) = gateway_on_recorder(&[]).await;
    // 200 HTTP/1.1 clients ask for 1 MiB each (200 MiB in all) and read nothing: the
    // routes buffer responses (Kong's default), within the process's budget.
    let before = rss_kib(&g);
    let mut conns = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(addr(&g)).await.unwrap();
        s.write_all(format!("GET /big{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await
            .unwrap();
        conns.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.requests() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_bounded(&g, "200 HTTP/1.1 clients not reading 1 MiB each", before);
    // They do not hold up a client that reads.
    let mut s = TcpStream::connect(addr(&g)).await.unwrap();
    s.write_all(b"GET /big-reader HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let r = read_reply(&mut s, Duration::from_secs(5)).await;
    assert!(
        r.closed && r.text.len() > 1 << 20,
        "reader got {} bytes",
        r.text.len()
    );
    drop(conns);

    // One client pipelines 20000 requests and reads nothing: the gateway stops reading
    // once its answers back up, instead of queueing them.
    let before = rss_kib(&g);
    let mut s = TcpStream::connect(addr(&g)).await.unwrap();
    let flood = b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n".repeat(20_000);
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&flood)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_bounded(&g, "20000 pipelined requests, none read", before);
    drop(s);
    assert_served(
        &g,
        "after the readers left",
        b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crlf_from_a_plugin_template_is_neutralised() {
    let up = echo().await;
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/crlf"]}),
    )
    .await;
    // A CR/LF written into the configuration is refused by the Admin API...
    let (s, body) = g
        .post(
            "/routes/r/plugins",
            json!({"name": "request-transformer", "config": {"add": {"headers": [
                "x-static:a\r\nx-injected-static: 1",
            ]}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 400, "{body}");
    assert_eq!(body["name"], "schema violation");
    // ...and one a client feeds through a template is percent-encoded, as OpenResty
    // does when a header is set.
    ok(
        &g,
        "/routes/r/plugins",
        json!({"name": "request-transformer", "config": {"add": {"headers": [
            "x-q:$(query_params.q)",
        ]}}}),
    )
    .await;
    let path = "/crlf?q=a%0D%0AX-Injected:%20yes%0D%0A%0D%0AGET%20/x%20HTTP/1.1";
    let r = until_with(&g, path, &[], |r| r.up("x-q").is_some()).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(
        r.up("x-q"),
        Some("a%0D%0AX-Injected: yes%0D%0A%0D%0AGET /x HTTP/1.1")
    );
    assert!(r.up("x-injected").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frames_after_a_refused_upgrade_never_reach_the_upstream() {
    let (g, up) = gateway_on_recorder(&[]).await;
    ok(
        &g,
        "/services/rec/routes",
        json!({"name": "closed", "paths": ["/closed"]}),
    )
    .await;
    ok(
        &g,
        "/routes/closed/plugins",
        json!({"name": "request-termination", "config": {"status_code": 403}}),
    )
    .await;
    until(&g, "/closed", &[], 403).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .into_bytes()
    };
    // A masked text frame with a zero mask: its payload is readable on the wire.
    let mut frame = vec![0x81, 0x80 | SMUGGLED.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(SMUGGLED.as_bytes());

    for (case, path, refusal) in [
        ("upstream answers 200", "/ws", 200),
        ("a plugin answers 403", "/closed", 403),
    ] {
        // The frame right behind the upgrade request, before any answer.
        let mut req = upgrade(path);
        req.extend_from_slice(&frame);
        let r = exchange(&g, &req).await;
        eprintln!("{case}: closed {} {:?}", r.closed, r.statuses());
        assert_eq!(r.statuses(), [refusal, 400], "{case}: {}", r.text);
        assert!(r.closed, "{case}");

        // The frame after the refusal arrived.
        let mut s = TcpStream::connect(addr(&g)).await.unwrap();
        s.write_all(&upgrade(path)).await.unwrap();
        let mut got = Vec::new();
        let mut tmp = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "{case}: closed before answering");
            got.extend_from_slice(&tmp[..n]);
        }
        let _ = s.write_all(&frame).await;
        let r = read_reply(&mut s, Duration::from_secs(5)).await;
        let head = String::from_utf8_lossy(&got);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {refusal}")),
            "{case}: {head}"
        );
        assert!(r.closed, "{case}: {}", r.text);
    }
    assert!(!up.saw(SMUGGLED), "a WebSocket frame reached the upstream");
}
