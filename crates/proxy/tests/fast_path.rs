//! Bodiless HTTP/1.1 requests are served without hyper (`fast.rs`) until a
//! request needs hyper (a body, an upgrade, `Expect`, HTTP/1.0): these tests
//! talk raw HTTP/1.1 to the proxy and check that the two read one connection
//! in turn without losing or reordering a byte.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy() -> Running {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    start(&dataset(vec![("services", s), ("routes", r)]), &[]).await
}

/// Reads `n` responses (each framed by its content-length) from `s`; returns
/// each head and body.
async fn responses(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let body_len = len;
            if buf.len() >= i + 4 + body_len {
                let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + body_len]).to_string();
                buf.drain(..i + 4 + body_len);
                out.push((head, body));
                continue;
            }
        }
        let mut b = [0u8; 8192];
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("response in time")
            .unwrap();
        assert!(k > 0, "closed after {} responses", out.len());
        buf.extend_from_slice(&b[..k]);
    }
    out
}

#[tokio::test]
async fn pipelined_requests_cross_from_the_fast_path_to_hyper_in_order() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    // Two bodiless requests, one with a body (hyper's from here on), one more.
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /d HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let rs = responses(&mut s, 4).await;
    let paths: Vec<String> = rs
        .iter()
        .map(|(h, b)| {
            assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
            assert!(h.to_ascii_lowercase().contains("\r\ndate: "), "{h}");
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["path"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(paths, ["/a", "/b?q=1", "/c", "/d"]);
    let v: serde_json::Value = serde_json::from_str(&rs[2].1).unwrap();
    assert_eq!(v["body"], "hello");
    p.shutdown().await;
}

#[tokio::test]
async fn connection_close_and_http_1_0_end_the_connection_after_the_response() {
    let p = proxy().await;
    for req in [
        &b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        &b"GET /y HTTP/1.0\r\nHost: x\r\n\r\n"[..],
    ] {
        let text = until_closed(&p, req).await;
        assert!(text.starts_with("HTTP/1."), "{text}");
        assert!(text.contains(" 200 OK\r\n"), "{text}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn head_answers_carry_no_body_and_the_connection_goes_on() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The HEAD answer's length describes the GET's body: read both heads raw.
    let buf = read_until(&mut s, |buf| {
        buf.windows(4).filter(|w| *w == b"\r\n\r\n").count() >= 2 && buf.ends_with(b"}")
    })
    .await;
    let text = String::from_utf8_lossy(&buf);
    let second = text
        .find("HTTP/1.1 200 OK")
        .and_then(|i| text[i + 1..].find("HTTP/1.1 200 OK"));
    let second = second.expect("two answers") + 1;
    assert!(
        text[..second].ends_with("\r\n\r\n"),
        "no body after the HEAD answer: {text}"
    );
    assert!(text[second..].contains("\"/g\""), "{text}");
    p.shutdown().await;
}

/// Sends `bytes` on a new connection; what the proxy answered until it closed.
async fn until_closed(p: &Running, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads from `s` until what was read is `done`.
async fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = Vec::new();
    while !done(&buf) {
        let mut b = [0u8; 8192];
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("in time")
            .unwrap();
        assert!(k > 0, "closed early");
        buf.extend_from_slice(&b[..k]);
    }
    buf
}

/// An upstream that answers every request with `answer`, as it is.
async fn fixed_upstream(answer: &'static [u8]) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let mut b = [0u8; 4096];
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&b[..k]),
                    }
                }
            });
        }
    });
    addr
}

/// The upstream's header lines go to a fast-path client as bytes (see
/// `upstream/raw.rs`): as they came, in their order and letter case, less the
/// hop-by-hop ones, `Trailer`, and what the proxy sets itself.
#[tokio::test]
async fn upstream_header_lines_pass_through_less_hop_by_hop() {
    let up = fixed_upstream(
        b"HTTP/1.1 200 OK\r\n\
          Server: up/1\r\n\
          X-Mixed-Case: A b\r\n\
          Set-Cookie: a=1\r\n\
          Connection: keep-alive\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          Upgrade: foo/1\r\n\
          Trailer: x-t\r\n\
          Via: 1.0 up\r\n\
          X-Kong-Proxy-Latency: 999\r\n\
          X-Spaced:   v  \r\n\
          set-cookie: b=2\r\n\
          Content-Length: 9\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n\
          5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n",
    )
    .await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let mut c = TcpStream::connect(p.addrs[0]).await.unwrap();
    for _ in 0..2 {
        c.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let buf = read_until(&mut c, |buf| buf.ends_with(b"0\r\n\r\n")).await;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.lines().skip(1).collect();
        let names: Vec<String> = lines
            .iter()
            .map(|l| l.split_once(':').unwrap().0.to_ascii_lowercase())
            .collect();
        for gone in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "trailer",
            "content-length",
        ] {
            assert!(!names.iter().any(|n| n == gone), "{gone} passed on: {head}");
        }
        // (in their order and letter case; the proxy's own after them)
        let kept: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                ["Server", "X-Mixed", "Set-Cookie", "set-cookie", "X-Spaced"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert_eq!(
            kept,
            [
                "Server: up/1",
                "X-Mixed-Case: A b",
                "Set-Cookie: a=1",
                "X-Spaced: v",
                "set-cookie: b=2"
            ],
            "{head}"
        );
        let via: Vec<&&str> = lines.iter().filter(|l| l.starts_with("via:")).collect();
        assert_eq!(via, [&"via: 1.0 up, 1.1 kong/3.9.1"], "{head}");
        let latency: Vec<&&str> = lines
            .iter()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-kong-proxy-latency:"))
            .collect();
        assert_eq!(latency.len(), 1, "{head}");
        assert!(!latency[0].ends_with("999"), "{head}");
        assert!(names.iter().any(|n| n == "date"), "{head}");
        assert!(names.iter().any(|n| n == "transfer-encoding"), "{head}");
        // (re-chunked as the body's frames arrive)
        let mut decoded = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size, 16).unwrap();
            if n == 0 {
                break;
            }
            decoded.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        assert_eq!(decoded, "hello!");
    }
    p.shutdown().await;
}

/// A head the framer refuses after one the fast path served: its verdict
/// (a synthetic request, handed to hyper) is answered in order, then the
/// connection closes; a client's own copy of the verdict header proves nothing.
#[tokio::test]
async fn a_refused_head_after_a_served_one_gets_its_verdict() {
    let p = proxy().await;
    let text = until_closed(
        &p,
        b"GET /a HTTP/1.1\r\nHost: x\r\nx-tollgate-reject: forged 400\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    let first = text
        .find("HTTP/1.1 200 OK")
        .expect("the first request served");
    let second = text.find("HTTP/1.1 400 Bad Request").expect("the verdict");
    assert!(first < second, "{text}");
    assert!(text.contains("\"/a\""), "{text}");
    assert!(text[second..].contains("Bad request"), "{text}");
    p.shutdown().await;
}
