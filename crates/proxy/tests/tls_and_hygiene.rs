mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TestCert {
    pem: String,
    key: String,
    der: Vec<u8>,
}

fn cert(names: &[&str]) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    TestCert {
        pem: ck.cert.pem(),
        key: ck.key_pair.serialize_pem(),
        der: ck.cert.der().to_vec(),
    }
}

fn cert_rows(
    c: &TestCert,
    snis: &[&str],
) -> Vec<(&'static str, serde_json::Map<String, serde_json::Value>)> {
    let crow = row("certificates", json!({"cert": c.pem, "key": c.key}));
    let mut out = Vec::new();
    for s in snis {
        out.push((
            "snis",
            row(
                "snis",
                json!({"name": s, "certificate": {"id": crow["id"]}}),
            ),
        ));
    }
    out.insert(0, ("certificates", crow));
    out
}

async fn peer_cert(addr: std::net::SocketAddr, name: &str) -> Vec<u8> {
    let c = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(name, addr)
        .build()
        .unwrap();
    let resp = c
        .get(format!("https://{name}:{}/", addr.port()))
        .send()
        .await
        .unwrap();
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    info.peer_certificate().expect("peer certificate").to_vec()
}

#[tokio::test]
async fn sni_selects_certificate_and_follows_snapshot() {
    let exact = cert(&["a.test"]);
    let wild = cert(&["*.wild.test"]);
    let suffix = cert(&["example.com"]);
    let mut entries = cert_rows(&exact, &["a.test"]);
    entries.extend(cert_rows(&wild, &["*.wild.test"]));
    entries.extend(cert_rows(&suffix, &["example.*"]));
    let d = dataset(entries);
    let p = start(&d, &[]).await;
    let tls = p.addrs[2];
    assert_eq!(peer_cert(tls, "a.test").await, exact.der);
    assert_eq!(peer_cert(tls, "x.wild.test").await, wild.der);
    assert_eq!(peer_cert(tls, "example.org").await, suffix.der);
    // two labels deep does not match `*.wild.test` (Kong replaces one label)
    let default = peer_cert(tls, "y.x.wild.test").await;
    assert_ne!(default, wild.der);
    assert_ne!(default, exact.der);
    assert_eq!(
        peer_cert(tls, "other.test").await,
        default,
        "unknown names get the default certificate"
    );

    // a new certificate for a.test applies without restart
    let newer = cert(&["a.test"]);
    p.swap(&dataset(cert_rows(&newer, &["a.test"])));
    assert_eq!(peer_cert(tls, "a.test").await, newer.der);
    p.shutdown().await;
}

#[tokio::test]
async fn configured_default_certificate() {
    let def = cert(&["default.test"]);
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("c.pem");
    let kp = dir.path().join("k.pem");
    std::fs::write(&cp, &def.pem).unwrap();
    std::fs::write(&kp, &def.key).unwrap();
    let cfg = config(&[
        ("ssl_cert", cp.to_str().unwrap()),
        ("ssl_cert_key", kp.to_str().unwrap()),
    ]);
    let p = start_with(&Dataset::new(), cfg, |_| {}).await;
    assert_eq!(peer_cert(p.addrs[2], "anything.test").await, def.der);
    p.shutdown().await;
}

async fn raw(addr: std::net::SocketAddr, req: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_not_smuggled() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let resp = raw(
        p.addrs[0],
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    // nginx (so Kong) refuses a head with both framings: 400, then close,
    // so the smuggled request is never seen.
    assert!(resp.starts_with("HTTP/1.1 400 "), "got {resp:?}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "got {resp:?}"
    );
    assert!(
        !resp.contains("smuggled"),
        "the smuggled request was processed: {resp:?}"
    );
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn oversized_request_head_is_rejected() {
    let p = start(&Dataset::new(), &[]).await;
    let big = "a".repeat(200 * 1024);
    let resp = raw(
        p.addrs[0],
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    // nginx's 494 goes out as 400 with Kong's message
    assert!(resp.starts_with("HTTP/1.1 400 "), "got {resp:?}");
    assert!(
        resp.contains("Request header or cookie too large"),
        "got {resp:?}"
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..1100 {
        many.push_str(&format!("X-H{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    // more header lines than the hard cap (1,000) is refused the same way
    let resp = raw(p.addrs[0], many.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "got {resp:?}");
    // and a request line over 8 KiB is nginx's 414
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let resp = raw(p.addrs[0], long.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 414 "), "got {resp:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn header_read_timeout_closes_slow_clients() {
    let cfg = config(&[]);
    let p = start_with(&Dataset::new(), cfg, |p| {
        p.set_header_read_timeout(Duration::from_millis(300))
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "connection not closed after the header read timeout"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_keepalive_connections() {
    let p = start(&Dataset::new(), &[]).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    // idle keep-alive connection: shutdown must not wait for it
    let started = std::time::Instant::now();
    p.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "idle connection closed");
}

use tollgate_proxy::Dataset;
