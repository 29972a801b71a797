//! The logging plugins through the real binary: http-log to a real HTTP receiver
//! (Kong's record, batches, retries, a stalled receiver), file-log with a
//! logrotate-style rename and SIGUSR1, tcp-log, udp-log, and syslog to a datagram
//! socket of the test's own (`TOLLGATE_SYSLOG_SOCKET`).

use crate::plugin_support::{echo, get, ok, until};
use crate::support::Gateway;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A request the log receiver got.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    headers: serde_json::Map<String, Value>,
    body: Value,
}

#[derive(Clone, Copy)]
enum Mode {
    /// 200 to everything.
    Ok,
    /// 500 to the first n requests, then 200.
    FailFirst(usize),
    /// Reads requests and never answers.
    Stall,
}

/// A real HTTP/1.1 log receiver (keep-alive, Content-Length bodies).
async fn receiver(mode: Mode) -> (String, mpsc::UnboundedReceiver<Received>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (tx, seen) = (tx.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 16384];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let mut lines = head.split("\r\n");
                    let first = lines.next().unwrap_or_default().to_string();
                    let mut it = first.split(' ');
                    let (method, path) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                    let mut headers = serde_json::Map::new();
                    let mut len = 0usize;
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            let k = k.trim().to_ascii_lowercase();
                            if k == "content-length" {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            headers.insert(k, Value::from(v.trim()));
                        }
                    }
                    while buf.len() < end + 4 + len {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    buf.drain(..end + 4 + len);
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(Received {
                        method: method.into(),
                        path: path.into(),
                        headers,
                        body,
                    });
                    let status = match mode {
                        Mode::Stall => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        Mode::FailFirst(k) if n < k => "500 Internal Server Error",
                        _ => "200 OK",
                    };
                    let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a log entry in time")
        .expect("receiver open")
}

#[tokio::test(flavor = "multi_thread")]
async fn http_log_sends_kongs_record() {
    let (logs, mut rx) = receiver(Mode::Ok).await;
    let up = echo().await;
    let g = Gateway::start().await;
    let svc = ok(&g, "/services", json!({"name": "s", "url": up})).await;
    let route = ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/log"]}),
    )
    .await;
    let alice = ok(&g, "/consumers", json!({"username": "alice"})).await;
    ok(&g, "/consumers/alice/key-auth", json!({"key": "k1"})).await;
    let endpoint = logs.replace("http://", "http://user:pw@") + "/logs?dropped=1";
    ok(
        &g,
        "/routes/r/plugins",
        json!({"name": "http-log", "config": {
            "http_endpoint": endpoint, "method": "PUT",
            "content_type": "application/json; charset=utf-8",
            "headers": {"X-Tag": "t1"}}}),
    )
    .await;
    // key-auth, added after http-log, shows both are applied.
    ok(&g, "/routes/r/plugins", json!({"name": "key-auth"})).await;
    until(&g, "/log/probe", &[], 401).await;
    assert_eq!(get(&g, "/log/a?q=1", &[("apikey", "k1")]).await.status, 200);
    let r = loop {
        let r = next(&mut rx).await;
        if r.body["request"]["uri"] == "/log/a?q=1" {
            break r;
        }
    };
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/logs", "Kong sends the path without the query");
    assert_eq!(r.headers["authorization"], "Basic dXNlcjpwdw==");
    assert_eq!(r.headers["x-tag"], "t1");
    assert_eq!(r.headers["content-type"], "application/json; charset=utf-8");
    let b = &r.body;
    assert!(b.is_object(), "one object per request: {b}");
    assert_eq!(b["request"]["method"], "GET");
    assert_eq!(b["request"]["uri"], "/log/a?q=1");
    assert_eq!(b["request"]["querystring"]["q"], "1");
    assert_eq!(b["request"]["headers"]["apikey"], "k1");
    assert_eq!(b["response"]["status"], 200);
    assert!(b["response"]["size"].as_u64().unwrap() > 0);
    assert_eq!(b["route"]["id"], route["id"]);
    assert_eq!(b["service"]["id"], svc["id"]);
    assert_eq!(b["consumer"]["id"], alice["id"]);
    assert_eq!(b["consumer"]["username"], "alice");
    assert_eq!(b["authenticated_entity"]["consumer_id"], alice["id"]);
    for k in ["kong", "proxy", "request", "receive"] {
        assert!(
            b["latencies"][k].as_i64().unwrap() >= 0,
            "latencies.{k}: {b}"
        );
    }
    assert_eq!(b["client_ip"], "127.0.0.1");
    let started = b["started_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(started <= now && now - started < 60_000, "{started}");
    assert_eq!(b["upstream_uri"], "/a?q=1");
    assert_eq!(b["tries"].as_array().unwrap().len(), 1);
    assert_eq!(b["tries"][0]["ip"], "127.0.0.1");
    assert_eq!(b["source"], "upstream");

    // A request key-auth refuses is logged too, without a consumer.
    get(&g, "/log/refused", &[]).await;
    let r = next(&mut rx).await;
    assert_eq!(r.body["request"]["uri"], "/log/refused");
    assert_eq!(r.body["response"]["status"], 401);
    assert!(r.body.get("consumer").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn http_log_batches_and_retries() {
    // The receiver fails the first two requests: the queue retries the batch.
    let (logs, mut rx) = receiver(Mode::FailFirst(2)).await;
    let up = echo().await;
    let g = Gateway::start().await;
    // The plugin goes on the service before the route exists: the route's first
    // request is logged.
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/plugins",
        json!({"name": "http-log", "config": {"http_endpoint": logs,
            "queue": {"max_batch_size": 5, "max_coalescing_delay": 2, "initial_retry_delay": 0.05}}}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/b"]}),
    )
    .await;
    until(&g, "/b/0", &[], 200).await;
    for i in 1..5 {
        assert_eq!(get(&g, &format!("/b/{i}"), &[]).await.status, 200);
    }
    // Three deliveries of the same batch (two refused, one accepted).
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.push(next(&mut rx).await.body);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    let batch = bodies[2]
        .as_array()
        .expect("a JSON array when max_batch_size > 1");
    let mut uris: Vec<&str> = batch
        .iter()
        .map(|e| e["request"]["uri"].as_str().unwrap())
        .collect();
    // Log phases of back-to-back requests may finish in either order.
    uris.sort_unstable();
    assert_eq!(uris, ["/b/0", "/b/1", "/b/2", "/b/3", "/b/4"]);
    assert!(g.stderr().contains("handler could not process entries"));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_log_sends_what_it_holds_at_shutdown() {
    let (logs, mut rx) = receiver(Mode::Ok).await;
    let up = echo().await;
    let mut g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/plugins",
        json!({"name": "http-log", "config": {"http_endpoint": logs,
            "queue": {"max_batch_size": 100, "max_coalescing_delay": 3600}}}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/z"]}),
    )
    .await;
    until(&g, "/z/0", &[], 200).await;
    get(&g, "/z/1", &[]).await;
    get(&g, "/z/2", &[]).await;
    // An hour of coalescing: nothing is sent until the gateway stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err());
    let t = Instant::now();
    assert_eq!(g.stop(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10));
    let batch = next(&mut rx).await.body;
    assert_eq!(batch.as_array().map(Vec::len), Some(3), "{batch}");
}

/// The 50th and 99th percentiles.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    (at(50), at(99))
}

/// `n` requests to each path, alternating (so load on the machine hits both alike).
async fn timed(g: &Gateway, paths: [&str; 2], n: usize) -> [Vec<Duration>; 2] {
    let mut out = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for i in 0..n {
        for (k, path) in paths.iter().enumerate() {
            let t = Instant::now();
            let r = get(g, &format!("{path}/{i}"), &[]).await;
            out[k].push(t.elapsed());
            assert_eq!(r.status, 200, "request {i} through {path}");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_log_receiver_does_not_slow_responses() {
    let (logs, mut rx) = receiver(Mode::Stall).await;
    let up = echo().await;
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "plain", "url": up})).await;
    ok(&g, "/services", json!({"name": "logged", "url": up})).await;
    ok(
        &g,
        "/services/logged/plugins",
        json!({"name": "http-log", "config": {"http_endpoint": logs, "timeout": 60000,
            "queue": {"max_entries": 50}}}),
    )
    .await;
    for (name, path) in [("plain", "/plain"), ("logged", "/logged")] {
        ok(
            &g,
            &format!("/services/{name}/routes"),
            json!({"name": name, "paths": [path]}),
        )
        .await;
    }
    until(&g, "/logged/warm", &[], 200).await;
    // The receiver got the first entry and never answers.
    next(&mut rx).await;
    timed(&g, ["/plain", "/logged"], 20).await;
    let [plain, logged] = timed(&g, ["/plain", "/logged"], 200).await;
    let (plain, logged) = (percentiles(plain), percentiles(logged));
    println!(
        "p50/p99 without http-log: {:?}/{:?}; with http-log to a stalled receiver: {:?}/{:?}",
        plain.0, plain.1, logged.0, logged.1
    );
    // Only one request reached the receiver: the rest wait in (or fell off) the queue.
    assert!(rx.try_recv().is_err());
    assert!(
        g.stderr()
            .contains("queue full, dropping old entries until processing is successful again"),
        "the queue is bounded: {}",
        g.stderr()
    );
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

async fn wait_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = lines(path);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_log_writes_lines_and_reopens_on_sigusr1() {
    let up = echo().await;
    let g = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/plugins",
        json!({"name": "file-log", "config": {"path": path}}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/f"]}),
    )
    .await;
    until(&g, "/f/0", &[], 200).await;
    for i in 1..3 {
        get(&g, &format!("/f/{i}"), &[]).await;
    }
    let l = wait_lines(&path, 3).await;
    assert_eq!(l.len(), 3);
    assert_eq!(l[2]["request"]["uri"], "/f/2");
    assert_eq!(l[2]["response"]["status"], 200);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // logrotate: rename; the open file keeps getting lines until the signal.
    std::fs::rename(&path, &rotated).unwrap();
    get(&g, "/f/3", &[]).await;
    assert_eq!(wait_lines(&rotated, 4).await.len(), 4);
    assert!(!path.exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(g.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.stderr().contains("reopening log files") {
        assert!(Instant::now() < deadline, "SIGUSR1 handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    get(&g, "/f/4", &[]).await;
    let l = wait_lines(&path, 1).await;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["request"]["uri"], "/f/4");
    assert_eq!(lines(&rotated).len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_log_reopen_follows_a_renamed_file() {
    let up = echo().await;
    let g = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/plugins",
        json!({"name": "file-log", "config": {"path": path, "reopen": true}}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/f"]}),
    )
    .await;
    until(&g, "/f/0", &[], 200).await;
    assert_eq!(wait_lines(&path, 1).await.len(), 1);
    std::fs::rename(&path, dir.path().join("r.log.1")).unwrap();
    get(&g, "/f/1", &[]).await;
    let l = wait_lines(&path, 1).await;
    assert_eq!(
        l.len(),
        1,
        "reopen: true opens the path again for every write"
    );
    assert_eq!(l[0]["request"]["uri"], "/f/1");
}

/// A service with one plugin, then its route `/x` (so the route's first request is
/// logged).
async fn with_plugin(g: &Gateway, plugin: Value) {
    let up = echo().await;
    ok(g, "/services", json!({"name": "s", "url": up})).await;
    ok(g, "/services/s/plugins", plugin).await;
    ok(
        g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/x"]}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_log_writes_json_lines() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(s).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(serde_json::from_str(&line).expect("JSON per line"));
                }
            });
        }
    });
    let g = Gateway::start().await;
    with_plugin(
        &g,
        json!({"name": "tcp-log", "config": {"host": "127.0.0.1", "port": port}}),
    )
    .await;
    until(&g, "/x/1", &[], 200).await;
    get(&g, "/x/2", &[]).await;
    let mut uris = Vec::new();
    while uris.last() != Some(&"/x/2".to_string()) {
        let v = next(&mut rx).await;
        assert_eq!(v["response"]["status"], 200);
        uris.push(v["request"]["uri"].as_str().unwrap().to_owned());
    }
    assert!(uris.contains(&"/x/1".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_log_sends_a_datagram_per_request() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let g = Gateway::start().await;
    with_plugin(
        &g,
        json!({"name": "udp-log", "config": {"host": "127.0.0.1", "port": port}}),
    )
    .await;
    until(&g, "/x/u", &[], 200).await;
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("a datagram")
        .unwrap();
    let v: Value = serde_json::from_slice(&buf[..n]).expect("one JSON record, no newline");
    assert_eq!(v["request"]["uri"], "/x/u");
    assert_eq!(v["response"]["status"], 200);

    // Lua is refused, not accepted and ignored.
    let (s, e) = g
        .post(
            "/plugins",
            json!({"name": "udp-log", "config": {"host": "127.0.0.1", "port": port,
                "custom_fields_by_lua": {"f": "return 1"}}}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        e["fields"]["config"]["custom_fields_by_lua"],
        "custom_fields_by_lua is not supported: Tollgate does not run Lua"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_sends_with_kongs_severities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let g = Gateway::start_with(&[("TOLLGATE_SYSLOG_SOCKET", path.to_str().unwrap())]).await;
    // Global, so it also sees Kong's own 404.
    ok(
        &g,
        "/plugins",
        json!({"name": "syslog", "config": {"log_level": "info",
            "successful_severity": "warning", "client_errors_severity": "debug",
            "server_errors_severity": "crit", "facility": "local0"}}),
    )
    .await;
    let up = echo().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/x"]}),
    )
    .await;
    until(&g, "/x/ok", &[], 200).await;
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("a syslog message")
        .unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    // local0 (16) * 8 + warning (4)
    assert!(msg.starts_with("<132>"), "{msg}");
    let (head, json) = msg.split_once(": ").unwrap();
    assert!(
        head.ends_with(&format!("kong[{}]", g.pid().unwrap())),
        "{head}"
    );
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["request"]["uri"], "/x/ok");
    // A client error at debug is less urgent than log_level info: not sent.
    assert_eq!(get(&g, "/nowhere", &[]).await.status, 404);
    let r = get(&g, "/x/ok2", &[]).await;
    assert_eq!(r.status, 200);
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("a second message")
        .unwrap();
    let v: Value = serde_json::from_str(
        String::from_utf8_lossy(&buf[..n])
            .split_once(": ")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(v["request"]["uri"], "/x/ok2");
}
