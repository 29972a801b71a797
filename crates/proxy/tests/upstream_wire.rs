//! The proxy's own HTTP/1.1 client against an upstream that writes exact bytes:
//! chunked bodies with extensions and trailers, interim responses,
//! close-delimited bodies, conflicting framing, early closes, and keep-alive
//! connections the upstream closes while they sit in the pool.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream saw: one entry per request head (and the body
/// bytes that followed it in the same connection until the reply).
type Seen = Arc<Mutex<Vec<String>>>;

/// Reads one request (head, and a body framed by Content-Length or chunked).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).to_string();
            let lower = head.to_ascii_lowercase();
            let mut rest = buf.split_off(i + 4);
            let mut body = Vec::new();
            if let Some(l) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                let n: usize = l.trim().parse().unwrap();
                while rest.len() < n {
                    let mut b = [0u8; 4096];
                    let k = s.read(&mut b).await.ok()?;
                    if k == 0 {
                        return None;
                    }
                    rest.extend_from_slice(&b[..k]);
                }
                body = rest.drain(..n).collect();
            } else if lower.contains("transfer-encoding: chunked") {
                while !rest.windows(5).any(|w| w == b"0\r\n\r\n") {
                    let mut b = [0u8; 4096];
                    let k = s.read(&mut b).await.ok()?;
                    if k == 0 {
                        return None;
                    }
                    rest.extend_from_slice(&b[..k]);
                }
                let end = rest.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
                body = rest.drain(..end).collect();
            }
            *buf = rest;
            return Some(format!("{head}{}", String::from_utf8_lossy(&body)));
        }
        let mut b = [0u8; 4096];
        let k = s.read(&mut b).await.ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..k]);
    }
}

/// An upstream that answers each request by its path with the bytes of
/// `reply`, closing the connection after it when the reply says so.
async fn scripted_upstream(seen: Seen) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut s, &mut buf).await {
                    seen.lock().unwrap().push(req.clone());
                    let path = req.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (bytes, close): (&[u8], bool) = reply(&path);
                    if s.write_all(bytes).await.is_err() {
                        return;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn reply(path: &str) -> (&'static [u8], bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        "/continue" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the upstream closes", true),
        "/bad-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", true),
        "/te-and-cl" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
        "/no-response" => (b"", true),
        "/garbage" => (b"NOT HTTP AT ALL\r\n\r\n", true),
        // Keep-alive by the protocol, but the upstream closes right after.
        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", false),
    }
}

async fn proxy_to(up: SocketAddr, route_extra: serde_json::Value) -> Running {
    let s = service("127.0.0.1", up.port(), json!({"retries": 0}));
    let r = route(Some(&s), route_extra);
    start(&dataset(vec![("services", s), ("routes", r)]), &[]).await
}

#[tokio::test]
async fn response_framings_reach_the_client_whole() {
    let seen = Seen::default();
    let up = scripted_upstream(seen.clone()).await;
    let p = proxy_to(up, json!({"paths": ["/"], "strip_path": false})).await;
    let c = client();

    let r = c.get(p.url("/chunked")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello world");

    let r = c.get(p.url("/continue")).send().await.unwrap();
    assert_eq!(r.status(), 200, "interim responses are not the answer");
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = c.get(p.url("/until-close")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "until the upstream closes");

    let r = c.get(p.url("/te-and-cl")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(
        r.headers().get("content-length").map(|v| v.as_bytes()),
        Some(&b"100"[..]),
        "Transfer-Encoding overrides Content-Length, which is dropped"
    );
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = c.get(p.url("/no-content")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.text().await.unwrap(), "");

    // A HEAD response has no body whatever its Content-Length says.
    let r = c.head(p.url("/plain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "4");

    let r = c.get(p.url("/plain")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "body");
    p.shutdown().await;
}

#[tokio::test]
async fn broken_upstream_answers_are_502_or_a_cut_body() {
    let seen = Seen::default();
    let up = scripted_upstream(seen.clone()).await;
    let p = proxy_to(up, json!({"paths": ["/"], "strip_path": false})).await;
    let c = client();
    for path in ["/bad-length", "/no-response", "/garbage"] {
        let r = c.get(p.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("An invalid response was received from the upstream server"),
            "{path}"
        );
    }
    // The head was good, the body is cut short: the client must not get a
    // complete-looking response.
    // (the head may go out with the first bytes, or not at all before the cut)
    match c.get(p.url("/short")).send().await {
        Err(e) => assert!(e.is_request(), "{e}"),
        Ok(r) => {
            assert_eq!(r.status(), 200);
            assert!(
                r.bytes().await.is_err(),
                "a cut body is an error for the client"
            );
        }
    }
    p.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_upstream_closes_in_the_pool_is_not_a_failure() {
    let seen = Seen::default();
    let up = scripted_upstream(seen.clone()).await;
    let p = proxy_to(up, json!({"paths": ["/"], "strip_path": false})).await;
    let c = client();
    // With a pause, the close reaches the pool before the next checkout; without
    // one, the next request may race it and is sent again on a new connection.
    for pause in [50u64, 0, 0, 0, 0, 50, 0] {
        let r = c.get(p.url("/then-close")).send().await.unwrap();
        assert_eq!(r.status(), 200, "after a pause of {pause} ms");
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    p.shutdown().await;
}

#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream() {
    let seen = Seen::default();
    let up = scripted_upstream(seen.clone()).await;
    // Streamed (not buffered): a chunked client body goes up chunked.
    let p = proxy_to(
        up,
        json!({"paths": ["/"], "strip_path": false, "request_buffering": false}),
    )
    .await;
    let c = client();
    // (a raw client: the body goes out as two chunks)
    let mut raw = TcpStream::connect(p.addrs[0]).await.unwrap();
    raw.write_all(
        b"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\npart one,\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    raw.write_all(b"9\r\n part two\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"body") {
        let mut b = [0u8; 1024];
        let n = raw.read(&mut b).await.unwrap();
        assert!(n > 0, "proxy closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&b[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let r = c
        .post(p.url("/plain"))
        .body("exactly this")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = seen.lock().unwrap().clone();
    let chunked = seen[0].to_ascii_lowercase();
    assert!(chunked.starts_with("post /plain http/1.1\r\n"), "{chunked}");
    assert!(
        chunked.contains("transfer-encoding: chunked\r\n"),
        "{chunked}"
    );
    assert!(!chunked.contains("content-length"), "{chunked}");
    let body = &seen[0][seen[0].find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(dechunk(body), "part one, part two");
    let fixed = seen[1].to_ascii_lowercase();
    assert!(fixed.contains("content-length: 12\r\n"), "{fixed}");
    assert!(fixed.ends_with("\r\n\r\nexactly this"), "{fixed}");
    p.shutdown().await;
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}
