//! The response phases and the certificate phase over real sockets, with test plugins
//! registered next to the bundled ones (`Snapshot::build_with_registry`):
//!
//! * `test-log` records `LogCx::serialize()` (and sets a header in header_filter);
//! * `test-body` upper-cases chunks as they stream, or wraps the whole body;
//! * `test-cert` picks a certificate by id or aborts the handshake by SNI.

mod common;

use common::*;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_plugins::{
    BodyCx, CertificateCx, ConsumerIndex, LogCx, Phases, Plugin, PluginError, PluginSpec,
    ResponseCx,
};
use tollgate_proxy::{Dataset, Proxy, SharedSnapshot, Snapshot, Stats};

static RECORDS: Mutex<Vec<(String, Value)>> = Mutex::new(Vec::new());

struct LogRecorder(String);

impl Plugin for LogRecorder {
    fn header_filter(&self, cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        cx.resp
            .headers
            .insert("x-test-log", self.0.parse().unwrap());
        Ok(())
    }
    fn log(&self, cx: &LogCx<'_>) {
        RECORDS
            .lock()
            .unwrap()
            .push((self.0.clone(), cx.serialize()));
    }
}

static LOG: PluginSpec = PluginSpec {
    name: "test-log",
    priority: 5,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        header_filter: true,
        log: true,
        ..Phases::NONE
    },
    schema: || unreachable!("not in the catalog"),
    compile: |c| Ok(Box::new(LogRecorder(c["tag"].as_str().unwrap().to_owned()))),
};

enum BodyMode {
    Upper,
    Wrap,
    Fail,
}

struct BodyPlugin(BodyMode);

impl Plugin for BodyPlugin {
    fn body_filter(&self, cx: &mut BodyCx<'_>) -> Result<(), PluginError> {
        match self.0 {
            BodyMode::Upper => {
                let up = cx.chunk().to_ascii_uppercase();
                cx.set_chunk(up.into());
            }
            BodyMode::Wrap => {
                if let Some(body) = cx.raw_body() {
                    let v = json!({
                        "wrapped": String::from_utf8_lossy(&body),
                        "status": cx.status,
                    });
                    cx.set_raw_body(v.to_string().into());
                }
            }
            BodyMode::Fail => return Err(PluginError::new("boom")),
        }
        Ok(())
    }
}

static BODY: PluginSpec = PluginSpec {
    name: "test-body",
    priority: 10,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        body_filter: true,
        ..Phases::NONE
    },
    schema: || unreachable!("not in the catalog"),
    compile: |c| {
        Ok(Box::new(BodyPlugin(match c["mode"].as_str() {
            Some("upper") => BodyMode::Upper,
            Some("wrap") => BodyMode::Wrap,
            _ => BodyMode::Fail,
        })))
    },
};

struct CertPlugin {
    pick: Map<String, Value>,
    abort: String,
}

impl Plugin for CertPlugin {
    fn certificate(&self, cx: &mut CertificateCx<'_>) -> Result<(), PluginError> {
        assert!(cx.client_ip.is_loopback());
        let Some(sni) = cx.sni else { return Ok(()) };
        if sni == self.abort {
            cx.abort();
        } else if let Some(id) = self.pick.get(sni).and_then(|v| v.as_str()) {
            let id = id.to_owned();
            cx.use_certificate(&id);
        }
        Ok(())
    }
}

static CERT: PluginSpec = PluginSpec {
    name: "test-cert",
    priority: 5,
    no_consumer: true,
    no_route: true,
    no_service: true,
    phases: Phases {
        certificate: true,
        ..Phases::NONE
    },
    schema: || unreachable!("not in the catalog"),
    compile: |c| {
        Ok(Box::new(CertPlugin {
            pick: c["pick"].as_object().cloned().unwrap_or_default(),
            abort: c["abort"].as_str().unwrap_or_default().to_owned(),
        }))
    },
};

fn registry(name: &str) -> Option<&'static PluginSpec> {
    match name {
        "test-log" => Some(&LOG),
        "test-body" => Some(&BODY),
        "test-cert" => Some(&CERT),
        n => tollgate_plugins::spec(n),
    }
}

/// A `plugins` row (test plugins have no schema to default them).
fn plugin(name: &str, route: Option<&Map<String, Value>>, config: Value) -> Map<String, Value> {
    let fk = route.map_or(Value::Null, |r| json!({"id": r["id"]}));
    json!({
        "id": uuid(),
        "name": name,
        "enabled": true,
        "protocols": ["grpc", "grpcs", "http", "https"],
        "config": config,
        "route": fk,
        "service": null,
        "consumer": null,
    })
    .as_object()
    .unwrap()
    .clone()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn start_registry(d: &Dataset) -> Running {
    let consumers = Arc::new(arc_swap::ArcSwap::from_pointee(ConsumerIndex::build(d)));
    let snap = Snapshot::build_with_registry(d, consumers, registry).unwrap();
    let snapshot: SharedSnapshot = Arc::new(arc_swap::ArcSwap::from_pointee(snap));
    let stats = Arc::new(Stats::new());
    let mut p = Proxy::new(&config(&[]), snapshot.clone(), stats.clone()).unwrap();
    let addrs = p.bind().await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(p.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addrs,
        snapshot,
        stats,
        stop: Some(tx),
        done,
    }
}

/// The records of `tag` so far.
fn records(tag: &str) -> Vec<Value> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == tag)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Waits for the `n`th record of `tag` (the log phase runs on its own task).
async fn record(tag: &str, n: usize) -> Value {
    for _ in 0..200 {
        if let Some(v) = records(tag).get(n - 1) {
            return v.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no record {n} for {tag}: {:?}", records(tag));
}

/// An HTTP/1.1 upstream answering every request with `chunks` chunks of `size` bytes
/// ('a'..), `gap` apart, chunked.
async fn streaming_upstream(chunks: usize, size: usize, gap: Duration) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for i in 0..chunks {
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    let data = vec![b'a' + (i % 26) as u8; size];
                    let mut c = format!("{size:x}\r\n").into_bytes();
                    c.extend_from_slice(&data);
                    c.extend_from_slice(b"\r\n");
                    if s.write_all(&c).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn log_phase_runs_after_the_streamed_body_with_kongs_fields() {
    let up = streaming_upstream(3, 1000, Duration::from_millis(150)).await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/s"]}));
    let lp = plugin("test-log", Some(&r), json!({"tag": "stream"}));
    let d = dataset(vec![
        ("services", s.clone()),
        ("routes", r.clone()),
        ("plugins", lp),
    ]);
    let p = start_registry(&d).await;

    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let resp = client()
        .get(p.url("/s/x?a=1&b"))
        .header("authorization", "Basic secret")
        .header("x-mine", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-test-log"], "stream");
    // The head is here, the body is not: no log yet.
    assert!(
        records("stream").is_empty(),
        "logged before the body was sent"
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), 3000);

    let v = record("stream", 1).await;
    assert_eq!(v["request"]["method"], "GET");
    assert_eq!(v["request"]["uri"], "/s/x?a=1&b");
    assert_eq!(
        v["request"]["url"],
        format!("http://127.0.0.1:{}/s/x?a=1&b", p.addrs[0].port())
    );
    assert_eq!(v["request"]["querystring"], json!({"a": "1", "b": true}));
    assert_eq!(v["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(v["request"]["headers"]["x-mine"], "yes");
    assert!(v["request"]["size"].as_u64().unwrap() > 50);
    assert_eq!(v["request"]["id"].as_str().unwrap().len(), 32);
    assert_eq!(v["upstream_uri"], "/x?a=1&b");
    assert_eq!(v["upstream_status"], "200");
    assert_eq!(v["response"]["status"], 200);
    assert_eq!(v["response"]["headers"]["x-test-log"], "stream");
    let size = v["response"]["size"].as_u64().unwrap();
    assert!(size > 3000 && size < 3600, "response size {size}");
    let lat = &v["latencies"];
    assert!(lat["request"].as_u64().unwrap() >= 290, "{lat}");
    assert!(lat["receive"].as_u64().unwrap() >= 250, "{lat}");
    assert!(lat["proxy"].as_i64().unwrap() >= 0, "{lat}");
    assert!(lat["kong"].as_u64().is_some(), "{lat}");
    let tries = v["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0]["ip"], "127.0.0.1");
    assert_eq!(tries[0]["port"], up.port());
    assert!(tries[0].get("state").is_none());
    assert_eq!(v["route"]["id"], r["id"]);
    assert_eq!(v["route"]["paths"], json!(["/s"]));
    assert_eq!(v["service"]["id"], s["id"]);
    assert_eq!(v["service"]["port"], up.port());
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["source"], "upstream");
    let at = v["started_at"].as_u64().unwrap();
    assert!(
        at + 5 >= started && at < started + 5000,
        "{at} vs {started}"
    );
    assert!(v.get("consumer").is_none() && v.get("authenticated_entity").is_none());
    p.shutdown().await;
}

#[tokio::test]
async fn log_phase_runs_when_the_client_goes_away() {
    let up = streaming_upstream(50, 1000, Duration::from_millis(50)).await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(
        Some(&s),
        json!({"paths": ["/gone"], "response_buffering": false}),
    );
    let lp = plugin("test-log", Some(&r), json!({"tag": "gone"}));
    let p = start_registry(&dataset(vec![
        ("services", s),
        ("routes", r),
        ("plugins", lp),
    ]))
    .await;
    let mut resp = client().get(p.url("/gone")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.chunk().await.unwrap().unwrap();
    drop(resp);
    let v = record("gone", 1).await;
    let size = v["response"]["size"].as_u64().unwrap();
    assert!(size < 50_000, "the whole body counted: {size}");
    assert!(v["latencies"]["request"].as_u64().unwrap() < 2000);
    p.shutdown().await;
}

#[tokio::test]
async fn body_filter_streams_chunks_and_drops_content_length() {
    let up = streaming_upstream(3, 10, Duration::from_millis(100)).await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/up"]}));
    let bp = plugin("test-body", Some(&r), json!({"mode": "upper"}));
    let p = start_registry(&dataset(vec![
        ("services", s),
        ("routes", r),
        ("plugins", bp),
    ]))
    .await;
    let mut resp = client().get(p.url("/up")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none());
    // The first chunk comes through before the upstream sent the rest.
    let t = Instant::now();
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"AAAAAAAAAA");
    assert!(t.elapsed() < Duration::from_millis(150));
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"BBBBBBBBBBCCCCCCCCCC");
    p.shutdown().await;
}

#[tokio::test]
async fn body_filter_replaces_the_whole_body_of_upstream_and_exit_responses() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/wrap"]}));
    let bp = plugin("test-body", Some(&r), json!({"mode": "wrap"}));
    let r2 = route(Some(&s), json!({"paths": ["/exit"]}));
    let bp2 = plugin("test-body", Some(&r2), json!({"mode": "upper"}));
    let lp2 = plugin("test-log", Some(&r2), json!({"tag": "exit"}));
    let term = plugin(
        "request-termination",
        Some(&r2),
        json!({"status_code": 403, "message": "nope", "echo": false}),
    );
    let r3 = route(Some(&s), json!({"paths": ["/fail"]}));
    let bp3 = plugin("test-body", Some(&r3), json!({"mode": "fail"}));
    let d = dataset(vec![
        ("services", s),
        ("routes", r),
        ("routes", r2),
        ("routes", r3),
        ("plugins", bp),
        ("plugins", bp2),
        ("plugins", lp2),
        ("plugins", term),
        ("plugins", bp3),
    ]);
    let p = start_registry(&d).await;

    let resp = client().get(p.url("/wrap/a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], 200);
    let inner: Value = serde_json::from_str(v["wrapped"].as_str().unwrap()).unwrap();
    assert_eq!(inner["path"], "/a");

    // A plugin's exit goes through the collected plugins' body_filter and log.
    let resp = client().get(p.url("/exit")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-test-log"], "exit");
    assert_eq!(resp.text().await.unwrap(), r#"{"MESSAGE":"NOPE"}"#);
    let v = record("exit", 1).await;
    assert_eq!(v["response"]["status"], 403);
    assert_eq!(v["source"], "kong");
    assert_eq!(v["upstream_uri"], "");
    assert_eq!(v["latencies"]["proxy"], -1);
    assert!(v.get("tries").is_none());

    // A failing body filter breaks the response off (before or after the head went
    // out, as the body's first chunk comes).
    let broken = match client().get(p.url("/fail")).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(broken, "a failing body_filter let the body through");
    p.shutdown().await;
}

#[tokio::test]
async fn global_plugins_run_on_kongs_own_responses() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = service("127.0.0.1", closed, json!({"retries": 1}));
    let https = route(
        Some(&s),
        json!({"paths": ["/secure"], "protocols": ["https"]}),
    );
    let down = route(Some(&s), json!({"paths": ["/down"]}));
    let other = route(Some(&s), json!({"paths": ["/other"]}));
    let global = plugin("test-log", None, json!({"tag": "global"}));
    let upper = plugin("test-body", None, json!({"mode": "upper"}));
    // Shadows the global configuration on its route only.
    let scoped = plugin("test-log", Some(&other), json!({"tag": "scoped"}));
    let d = dataset(vec![
        ("services", s),
        ("routes", https),
        ("routes", down),
        ("routes", other),
        ("plugins", global),
        ("plugins", upper),
        ("plugins", scoped),
    ]);
    let p = start_registry(&d).await;

    // No route: the global plugins' header_filter, body_filter and log.
    let resp = client().get(p.url("/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-test-log"], "global");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("NO ROUTE MATCHED WITH THOSE VALUES"),
        "{body}"
    );
    let v = record("global", 1).await;
    assert_eq!(v["response"]["status"], 404);
    assert!(v.get("route").is_none() && v.get("service").is_none());
    assert_eq!(v["source"], "kong");

    // https only: 426 before access, the globals again.
    let resp = client().get(p.url("/secure")).send().await.unwrap();
    assert_eq!(resp.status(), 426);
    assert_eq!(resp.headers()["x-test-log"], "global");
    let v = record("global", 2).await;
    assert_eq!(v["response"]["status"], 426);
    assert!(v.get("tries").is_none());

    // The proxy's own 502: the plugins access collected (the globals here), with the
    // failed tries.
    let resp = client().get(p.url("/down")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-test-log"], "global");
    assert!(resp.text().await.unwrap().contains("AN INVALID RESPONSE"));
    let v = record("global", 3).await;
    assert_eq!(v["response"]["status"], 502);
    assert_eq!(v["source"], "upstream");
    let tries = v["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{tries:?}");
    for t in tries {
        assert_eq!(t["state"], "failed");
        assert_eq!(t["code"], 502);
        assert_eq!(t["port"], closed);
    }

    // A route's own configuration replaces the global one there.
    let resp = client().get(p.url("/other")).send().await.unwrap();
    assert_eq!(resp.headers()["x-test-log"], "scoped");
    record("scoped", 1).await;
    assert_eq!(records("global").len(), 3);
    p.shutdown().await;
}

async fn peer_cert(addr: SocketAddr, name: &str) -> Result<Vec<u8>, reqwest::Error> {
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
        .await?;
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    Ok(info.peer_certificate().expect("peer certificate").to_vec())
}

fn cert_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn certificate_phase_picks_a_certificate_or_aborts() {
    let ca = pki::Ca::new("phases-ca");
    let by_sni = ca.server(&["named.test"]);
    let picked = ca.server(&["picked.test"]);
    let c1 = row(
        "certificates",
        json!({"cert": by_sni.pem, "key": by_sni.key}),
    );
    let c2 = row(
        "certificates",
        json!({"cert": picked.pem, "key": picked.key}),
    );
    let sni = row(
        "snis",
        json!({"name": "named.test", "certificate": {"id": c1["id"]}}),
    );
    let cp = plugin(
        "test-cert",
        None,
        json!({"pick": {"picked.test": c2["id"]}, "abort": "bad.test"}),
    );
    let lp = plugin("test-log", None, json!({"tag": "tls"}));
    let d = dataset(vec![
        ("certificates", c1),
        ("certificates", c2),
        ("snis", sni),
        ("plugins", cp),
        ("plugins", lp),
    ]);
    let p = start_registry(&d).await;
    let tls = p.addrs[2];
    // Kong's own pick stands when the plugin leaves it.
    assert_eq!(
        peer_cert(tls, "named.test").await.unwrap(),
        cert_der(&by_sni.pem)
    );
    // The plugin's pick, a certificate no SNI points at.
    assert_eq!(
        peer_cert(tls, "picked.test").await.unwrap(),
        cert_der(&picked.pem)
    );
    // Aborted: no TLS session.
    assert!(peer_cert(tls, "bad.test").await.is_err());
    // The log phase sees the TLS details (of the 404s above).
    let v = record("tls", 1).await;
    assert_eq!(v["request"]["tls"]["version"], "TLSv1.3");
    assert_eq!(v["request"]["tls"]["client_verify"], "NONE");
    assert!(v["request"]["tls"]["cipher"]
        .as_str()
        .unwrap()
        .starts_with("TLS_"));
    assert!(v["request"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://named.test:"));
    p.shutdown().await;
}

#[tokio::test]
async fn log_phase_sees_the_consumer_and_the_request_body() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let buffered = route(Some(&s), json!({"paths": ["/buf"]}));
    let streamed = route(
        Some(&s),
        json!({"paths": ["/stream"], "request_buffering": false}),
    );
    let consumer = row(
        "consumers",
        json!({"username": "alice", "custom_id": "A-1"}),
    );
    let cred = row(
        "keyauth_credentials",
        json!({"key": "alice-key", "consumer": {"id": consumer["id"]}}),
    );
    let d = dataset(vec![
        ("services", s),
        ("routes", buffered.clone()),
        ("routes", streamed.clone()),
        ("consumers", consumer.clone()),
        ("keyauth_credentials", cred.clone()),
        ("plugins", plugin("key-auth", Some(&buffered), json!({}))),
        (
            "plugins",
            plugin("test-log", Some(&buffered), json!({"tag": "auth"})),
        ),
        (
            "plugins",
            plugin("test-log", Some(&streamed), json!({"tag": "body"})),
        ),
    ]);
    let p = start_registry(&d).await;

    let resp = client()
        .post(p.url("/buf"))
        .header("apikey", "alice-key")
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let v = record("auth", 1).await;
    assert_eq!(
        v["consumer"],
        json!({"id": consumer["id"], "username": "alice", "custom_id": "A-1"})
    );
    assert_eq!(
        v["authenticated_entity"],
        json!({"id": cred["id"], "consumer_id": consumer["id"]})
    );
    let size = v["request"]["size"].as_u64().unwrap();
    assert!(size > 5000 && size < 5400, "request size {size}");

    // Refused by key-auth: still logged, without a consumer.
    let resp = client().get(p.url("/buf")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    resp.bytes().await.unwrap();
    let v = record("auth", 2).await;
    assert_eq!(v["response"]["status"], 401);
    assert!(v.get("consumer").is_none());

    // A streamed request body is counted as it goes upstream.
    let mut c = tokio::net::TcpStream::connect(p.addrs[0]).await.unwrap();
    let mut req =
        b"POST /stream HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"3e8\r\n");
        req.extend_from_slice(&[b'y'; 1000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let v = record("body", 1).await;
    let size = v["request"]["size"].as_u64().unwrap();
    assert!(size > 4000 && size < 4400, "request size {size}");
    p.shutdown().await;
}
