//! Listen flags (`backlog`, `reuseport`), slow-client timeouts (request
//! body, head, keep-alive, idle HTTP/2) and hop-by-hop header rules.

mod common;

use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_proxy::Dataset;

/// The `Send-Q` column `ss -ltn` shows for a listening socket: its backlog.
fn listen_backlog(addr: SocketAddr) -> Option<u32> {
    let out = std::process::Command::new("ss").arg("-ltn").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 4 && cols[0] == "LISTEN" && cols[3] == addr.to_string())
            .then(|| cols[2].parse().ok())
            .flatten()
    })
}

#[tokio::test]
async fn backlog_flag_sets_the_listen_queue() {
    let cfg = config(&[("proxy_listen", "127.0.0.1:0 backlog=7, 127.0.0.1:0")]);
    let p = start_with(&Dataset::new(), cfg, |_| {}).await;
    if std::process::Command::new("ss").arg("-V").output().is_err() {
        eprintln!("`ss` is not installed: backlog not checked");
    } else {
        assert_eq!(listen_backlog(p.addrs[0]), Some(7));
        // nginx's default on Linux
        assert_eq!(listen_backlog(p.addrs[1]), Some(511));
    }
    let resp = client().get(p.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    p.shutdown().await;
}

#[tokio::test]
async fn reuseport_lets_two_proxies_share_a_port() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let a = start_with(
        &dataset(vec![
            ("services", s.clone()),
            ("routes", route(Some(&s), json!({"paths": ["/a"]}))),
        ]),
        config(&[("proxy_listen", "127.0.0.1:0 reuseport")]),
        |_| {},
    )
    .await;
    let port = a.addrs[0].port();
    // without the flag the port is taken
    let mut plain = tollgate_proxy::Proxy::new(
        &config(&[("proxy_listen", &format!("127.0.0.1:{port}"))]),
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
            tollgate_proxy::Snapshot::empty(),
        )),
        std::sync::Arc::new(tollgate_proxy::Stats::new()),
    )
    .unwrap();
    assert!(
        plain.bind().await.is_err(),
        "bound a taken port without reuseport"
    );
    // with it, a second proxy binds the same port and takes over when the
    // first one stops
    let b = start_with(
        &dataset(vec![
            ("services", s.clone()),
            ("routes", route(Some(&s), json!({"paths": ["/b"]}))),
        ]),
        config(&[("proxy_listen", &format!("127.0.0.1:{port} reuseport"))]),
        |_| {},
    )
    .await;
    assert_eq!(b.addrs[0], a.addrs[0]);
    a.shutdown().await;
    for _ in 0..5 {
        // a fresh connection each time: no keep-alive to the stopped proxy
        let c = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let resp = c.get(b.url("/b/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    b.shutdown().await;
}

/// Sends `head` then the body in `chunks`, `gap` apart; returns the whole
/// response (the proxy closes after it) and how long it took.
async fn slow_post(
    addr: SocketAddr,
    head: &str,
    chunks: &[&[u8]],
    gap: Duration,
) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        tokio::time::sleep(gap).await;
        if s.write_all(c).await.is_err() {
            break;
        }
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    (String::from_utf8_lossy(&buf).into_owned(), t.elapsed())
}

#[tokio::test]
async fn client_body_timeout_answers_408() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let d = dataset(vec![
        ("services", s.clone()),
        ("routes", route(Some(&s), json!({"paths": ["/buffered"]}))),
        (
            "routes",
            route(
                Some(&s),
                json!({"paths": ["/streamed"], "request_buffering": false}),
            ),
        ),
    ]);
    let p = start_with(&d, config(&[]), |p| {
        p.set_client_body_timeout(Duration::from_millis(300))
    })
    .await;
    for path in ["/buffered", "/streamed"] {
        // 10 of 100 bytes, then silence
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\nContent-Length: 100\r\n\r\n0123456789"
        );
        let (resp, took) = slow_post(p.addrs[0], &head, &[], Duration::ZERO).await;
        assert!(resp.starts_with("HTTP/1.1 408 "), "{path}: {resp:?}");
        assert!(
            resp.contains("\r\n\r\nRequest timeout\nrequest_id: "),
            "{path}: {resp:?}"
        );
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{path}"
        );
        assert!(
            took >= Duration::from_millis(300),
            "{path}: 408 after {took:?}"
        );

        // a client that keeps sending, each pause shorter than the timeout,
        // gets through although the whole body takes longer
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 10\r\n\r\n"
        );
        let (resp, took) = slow_post(
            p.addrs[0],
            &head,
            &[b"01", b"23", b"45", b"67", b"89"],
            Duration::from_millis(100),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 "), "{path}: {resp:?}");
        assert!(resp.contains("\"body\":\"0123456789\""), "{path}: {resp:?}");
        assert!(took >= Duration::from_millis(500));
    }
    p.shutdown().await;
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed() {
    // The keep-alive timeout, not the (longer) header timeout, closes an idle
    // connection.
    let p = start_with(&Dataset::new(), config(&[]), |p| {
        p.set_keepalive_timeout(Duration::from_millis(300));
        p.set_header_read_timeout(Duration::from_secs(20));
    })
    .await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    // the connection is kept alive, then closed once idle for the timeout
    let idle = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("idle keep-alive connection not closed")
        .unwrap();
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    assert!(idle.elapsed() >= Duration::from_millis(250));
    p.shutdown().await;
}

#[tokio::test]
async fn keepalive_timeout_comes_from_the_injected_nginx_key() {
    let cfg = config(&[("nginx_http_keepalive_timeout", "300ms")]);
    let p = start_with(&Dataset::new(), cfg, |_| {}).await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("the configured keep-alive timeout did not apply")
        .unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn a_slow_head_is_timed_from_its_first_bytes_not_by_keepalive() {
    // A head in progress is under the header timeout, however long the
    // keep-alive timeout is.
    let p = start_with(&Dataset::new(), config(&[]), |p| {
        p.set_keepalive_timeout(Duration::from_secs(20));
        p.set_header_read_timeout(Duration::from_millis(300));
    })
    .await;
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    // The first request comes a while after the connection (its wait is timed too).
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    // idle longer than the header timeout: still open
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"),
        "the idle connection was closed by the header timeout"
    );
    // a head that stops half way is cut after the header timeout
    s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let t = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("slow head not cut")
        .ok();
    assert!(t.elapsed() >= Duration::from_millis(250));
    p.shutdown().await;
}

#[tokio::test]
async fn idle_http2_connection_is_closed() {
    let p = start_with(&Dataset::new(), config(&[]), |p| {
        p.set_keepalive_timeout(Duration::from_millis(200));
    })
    .await;
    let tcp = TcpStream::connect(p.addrs[1]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/", p.addrs[1]))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 404);
    drop(resp);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("idle HTTP/2 connection not closed")
        .unwrap()
        .ok();
    assert!(t.elapsed() >= Duration::from_millis(150));
    p.shutdown().await;
}

/// An upstream that answers with hop-by-hop headers of its own.
async fn hop_upstream() -> SocketAddr {
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |_req: hyper::Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("connection", "keep-alive, x-up-hop")
                                .header("x-up-hop", "1")
                                .header("keep-alive", "timeout=5")
                                .header("proxy-connection", "keep-alive")
                                .header("x-kept", "1")
                                .body(Full::new(bytes::Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let echo = echo_upstream().await;
    let hop = hop_upstream().await;
    let s1 = service("127.0.0.1", echo.port(), json!({}));
    let s2 = service("127.0.0.1", hop.port(), json!({}));
    let d = dataset(vec![
        ("services", s1.clone()),
        ("services", s2.clone()),
        ("routes", route(Some(&s1), json!({"paths": ["/echo"]}))),
        ("routes", route(Some(&s2), json!({"paths": ["/hop"]}))),
    ]);
    let p = start(&d, &[]).await;

    // request side
    let mut s = TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close, x-hop\r\nx-hop: 1\r\n\
          Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nProxy: http://evil\r\n\
          TE: trailers, deflate\r\nUpgrade: foo/1\r\nx-kept: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &v["headers"];
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "proxy",
        "upgrade",
    ] {
        assert!(h.get(gone).is_none(), "{gone} forwarded: {h}");
    }
    assert_eq!(h["connection"], "keep-alive");
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["x-kept"], "1");

    // response side
    let resp = client().get(p.url("/hop")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for gone in ["x-up-hop", "keep-alive", "proxy-connection"] {
        assert!(
            !resp.headers().contains_key(gone),
            "{gone} passed to the client"
        );
    }
    assert_eq!(resp.headers()["x-kept"], "1");
    assert_eq!(resp.text().await.unwrap(), "ok");
    p.shutdown().await;
}
