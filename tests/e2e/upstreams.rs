//! Upstreams and targets end to end: several real HTTP servers on loopback that
//! the tests stop and restart, behind the real binary's balancer (weights from each
//! database).

use crate::support::{Db, Gateway, Load};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

mod dns;
use dns::{Rr, Zone};

/// An upstream server that answers every request with its name as the body
/// and a status the test can change; it can be stopped (listener and open
/// connections closed) and started again on the same port.
struct Backend {
    name: &'static str,
    port: u16,
    status: Arc<AtomicU16>,
    /// Milliseconds to wait before answering.
    delay: Arc<AtomicU64>,
    hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        Backend::start_at(name, "127.0.0.1:0").await
    }

    async fn start_at(name: &'static str, addr: &str) -> Backend {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let b = Backend {
            name,
            port,
            status: Arc::new(AtomicU16::new(200)),
            delay: Arc::new(AtomicU64::new(0)),
            hits: Arc::new(AtomicUsize::new(0)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        b.serve(l);
        b
    }

    fn serve(&self, l: tokio::net::TcpListener) {
        let (name, status, delay, hits, tasks) = (
            self.name,
            self.status.clone(),
            self.delay.clone(),
            self.hits.clone(),
            self.tasks.clone(),
        );
        let t2 = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let (status, hits, delay) = (status.clone(), hits.clone(), delay.clone());
                let conn = tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        let n = match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&tmp[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            buf.drain(..end + 4);
                            // health probes are not traffic
                            if !head.starts_with("GET /status ") {
                                hits.fetch_add(1, Ordering::SeqCst);
                            }
                            let code = status.load(Ordering::SeqCst);
                            let ms = delay.load(Ordering::SeqCst);
                            if ms > 0 && !head.starts_with("GET /status ") {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let close = head.contains("HTTP/1.0");
                            let resp = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\n{}\r\n{name}",
                                name.len(),
                                if close { "connection: close\r\n" } else { "" }
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
                t2.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes the listener and every open connection.
    fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let l = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("rebind {}: {e}", self.port),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(l);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An upstream named `name` with `targets`, and a service + route `/{name}`.
async fn setup(g: &Gateway, name: &str, upstream: Value, targets: &[(&Backend, u32)]) {
    let mut up = upstream;
    up["name"] = json!(name);
    let (s, b) = g.post("/upstreams", up).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for (t, w) in targets {
        let (s, b) = g
            .post(
                &format!("/upstreams/{name}/targets"),
                json!({"target": t.target(), "weight": w}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    service(
        g,
        json!({"name": name, "host": name, "port": 80, "retries": 5}),
    )
    .await;
    wait_targets(g, name, targets.len()).await;
    g.proxy_until(&format!("/{name}"), None, |s| s != StatusCode::NOT_FOUND)
        .await;
}

/// Waits until the proxy's balancer has `n` targets for the upstream.
async fn wait_targets(g: &Gateway, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = health(g, name).await;
        let known = h.values().filter(|v| *v != "DNS_ERROR").count();
        if known == n && h.len() == n {
            return;
        }
        assert!(Instant::now() < deadline, "targets never applied: {h:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// target → health, from `GET /upstreams/{u}/health`.
async fn health(g: &Gateway, name: &str) -> HashMap<String, String> {
    let (s, b) = g.get(&format!("/upstreams/{name}/health")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            Some((
                t["target"].as_str()?.to_owned(),
                t["health"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

async fn wait_health(g: &Gateway, name: &str, target: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let h = health(g, name).await;
        if h.get(target).map(String::as_str) == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{target} never {want}: {h:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` requests; returns body → count (or the status for failures).
async fn spread(g: &Gateway, path: &str, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = g
            .client
            .get(format!("{}{path}", g.proxy))
            .send()
            .await
            .unwrap();
        let key = if r.status() == StatusCode::OK {
            r.text().await.unwrap()
        } else {
            r.status().as_u16().to_string()
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

async fn round_robin_follows_weights_and_503_without_a_peer(db: Db) {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let g = Gateway::start_on(db, &[]).await;
    setup(&g, "rr", json!({}), &[(&a, 100), (&b, 200), (&c, 0)]).await;

    let got = spread(&g, "/rr", 300).await;
    assert_eq!(got.get("a"), Some(&100), "{got:?}");
    assert_eq!(got.get("b"), Some(&200), "{got:?}");
    assert_eq!(c.hits(), 0, "weight 0 disables a target");

    // /health without health checks; /targets/all lists weight 0 too
    let h = health(&g, "rr").await;
    assert!(h.values().all(|v| v == "HEALTHCHECKS_OFF"), "{h:?}");
    let (s, all) = g.get("/upstreams/rr/targets/all").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    // no health checker: Kong refuses to set health
    let (s, e) = g
        .put(
            &format!("/upstreams/rr/targets/{}/unhealthy", a.target()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["message"], "no healthchecker found for rr");

    for t in [&a, &b] {
        let (s, _) = g
            .patch(
                &format!("/upstreams/rr/targets/{}", t.target()),
                json!({"weight": 0}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let r = g
        .proxy_until("/rr", None, |s| s == StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        "failure to get a peer from the ring-balancer"
    );
}

fn passive(tcp: u32, http: u32) -> Value {
    json!({"healthchecks": {"passive": {"unhealthy": {
        "tcp_failures": tcp, "http_failures": http, "timeouts": 1}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_move_on_and_the_passive_breaker_opens() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let g = Gateway::start().await;
    setup(
        &g,
        "pass",
        passive(2, 3),
        &[(&a, 100), (&b, 100), (&c, 100)],
    )
    .await;
    assert!(health(&g, "pass").await.values().all(|v| v == "HEALTHY"));

    // c goes down: retries keep client errors at zero, and after two
    // connection failures c is out
    c.stop();
    let got = spread(&g, "/pass", 60).await;
    assert_eq!(
        got.get("a").copied().unwrap_or(0) + got.get("b").copied().unwrap_or(0),
        60,
        "{got:?}"
    );
    let h = health(&g, "pass").await;
    assert_eq!(h[&c.target()], "UNHEALTHY", "{h:?}");
    assert_eq!(h[&a.target()], "HEALTHY");

    // back up: passive checks alone never bring it back; the Admin API does
    c.restart().await;
    let before = c.hits();
    spread(&g, "/pass", 9).await;
    assert_eq!(c.hits(), before);
    let (s, _) = g
        .put(
            &format!("/upstreams/pass/targets/{}/healthy", c.target()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_health(&g, "pass", &c.target(), "HEALTHY", Duration::from_secs(1)).await;
    let got = spread(&g, "/pass", 30).await;
    assert_eq!(got.get("c"), Some(&10), "{got:?}");

    // statuses: b answers 500 (not retried: only errors and timeouts are);
    // after three in a row it is out and b sees no more traffic
    b.status.store(500, Ordering::SeqCst);
    let before = b.hits();
    let got = spread(&g, "/pass", 30).await;
    assert_eq!(got.get("500"), Some(&3), "{got:?}");
    assert_eq!(b.hits() - before, 3);
    assert_eq!(health(&g, "pass").await[&b.target()], "UNHEALTHY");

    // per-address form, and unknown targets
    let (s, _) = g
        .put(
            &format!("/upstreams/pass/targets/{0}/{0}/unhealthy", a.target()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_health(&g, "pass", &a.target(), "UNHEALTHY", Duration::from_secs(1)).await;
    let (s, _) = g
        .put("/upstreams/pass/targets/10.9.9.9:1/healthy", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // health survives configuration changes
    let (s, _) = g.patch("/upstreams/pass", json!({"slots": 100})).await;
    assert_eq!(s, StatusCode::OK);
    let d = Backend::start("d").await;
    let (s, _) = g
        .post("/upstreams/pass/targets", json!({"target": d.target()}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    wait_targets(&g, "pass", 4).await;
    let h = health(&g, "pass").await;
    assert_eq!(h[&a.target()], "UNHEALTHY", "{h:?}");
    assert_eq!(h[&b.target()], "UNHEALTHY", "{h:?}");
    assert_eq!(h[&d.target()], "HEALTHY", "{h:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_retries_failures_stay_within_the_passive_threshold() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let g = Gateway::start().await;
    setup(&g, "thr", passive(3, 0), &[(&a, 100), (&b, 100), (&c, 100)]).await;
    let (s, _) = g.patch("/services/thr", json!({"retries": 0})).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    spread(&g, "/thr", 30).await;
    c.stop();
    let got = spread(&g, "/thr", 90).await;
    assert_eq!(got.get("502").copied().unwrap_or(0), 3, "{got:?}");
}

fn active(interval: f64) -> Value {
    json!({"healthchecks": {"active": {
        "http_path": "/status",
        "timeout": 0.5,
        "healthy": {"interval": interval, "successes": 2},
        "unhealthy": {"interval": interval, "tcp_failures": 2, "http_failures": 2, "timeouts": 2}
    }}})
}

#[tokio::test(flavor = "multi_thread")]
async fn active_checks_take_a_target_out_and_put_it_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let g = Gateway::start().await;
    setup(&g, "act", active(0.1), &[(&a, 100), (&b, 100)]).await;
    wait_health(&g, "act", &b.target(), "HEALTHY", Duration::from_secs(2)).await;

    // no client traffic: the checker alone notices
    b.stop();
    wait_health(&g, "act", &b.target(), "UNHEALTHY", Duration::from_secs(3)).await;
    let got = spread(&g, "/act", 20).await;
    assert_eq!(got.get("a"), Some(&20), "{got:?}");

    b.restart().await;
    wait_health(&g, "act", &b.target(), "HEALTHY", Duration::from_secs(3)).await;
    let got = spread(&g, "/act", 20).await;
    assert_eq!(got.get("b"), Some(&10), "{got:?}");

    // an unhealthy status on the probe path counts as well
    a.status.store(503, Ordering::SeqCst);
    wait_health(&g, "act", &a.target(), "UNHEALTHY", Duration::from_secs(3)).await;
    a.status.store(200, Ordering::SeqCst);
    wait_health(&g, "act", &a.target(), "HEALTHY", Duration::from_secs(3)).await;
}

async fn user_map(g: &Gateway, path: &str, users: usize) -> Vec<String> {
    let mut out = Vec::new();
    for u in 0..users {
        let r = g
            .client
            .get(format!("{}{path}", g.proxy))
            .header("x-user", format!("user-{u}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        out.push(r.text().await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hashing_is_sticky_and_remaps_minimally() {
    let (a, b, c, d) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    );
    let g = Gateway::start().await;
    setup(
        &g,
        "ch",
        json!({"algorithm": "consistent-hashing", "hash_on": "header", "hash_on_header": "x-user"}),
        &[(&a, 100), (&b, 100), (&c, 100)],
    )
    .await;
    let first = user_map(&g, "/ch", 200).await;
    assert_eq!(first, user_map(&g, "/ch", 200).await, "sticky");
    for t in ["a", "b", "c"] {
        let n = first.iter().filter(|x| *x == t).count();
        assert!((30..110).contains(&n), "{t}: {n}");
    }

    let (s, _) = g
        .post("/upstreams/ch/targets", json!({"target": d.target()}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    wait_targets(&g, "ch", 4).await;
    let second = user_map(&g, "/ch", 200).await;
    let moved: Vec<_> = first.iter().zip(&second).filter(|(x, y)| x != y).collect();
    // Kong's continuum: a new target's points that take an old target's
    // positions give that target extra points, which take a sliver (about
    // 1% of keys) from a neighbour; all else moves to the new target.
    let elsewhere = moved.iter().filter(|(_, y)| *y != "d").count();
    assert!(
        elsewhere <= 8,
        "moved to old targets: {elsewhere} of {moved:?}"
    );
    assert!((20..90).contains(&moved.len()), "moved {}", moved.len());

    // hash_on cookie: made up and set when absent
    let (s, _) = g
        .patch(
            "/upstreams/ch",
            json!({"hash_on": "cookie", "hash_on_cookie": "sticky", "hash_on_cookie_path": "/ch"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    let cookie = loop {
        let r = g
            .client
            .get(format!("{}/ch", g.proxy))
            .send()
            .await
            .unwrap();
        if let Some(c) = r.headers().get("set-cookie") {
            break c.to_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no cookie set");
    };
    assert!(cookie.starts_with("sticky="), "{cookie}");
    assert!(
        cookie.ends_with("; Path=/ch; Same-Site=Lax; HttpOnly"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_owned();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = g
            .client
            .get(format!("{}/ch", g.proxy))
            .header("cookie", &value)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("set-cookie").is_none());
        seen.insert(r.text().await.unwrap());
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn least_connections_avoids_a_busy_target() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.delay.store(8000, Ordering::SeqCst);
    let g = Gateway::start().await;
    setup(
        &g,
        "lc",
        json!({"algorithm": "least-connections"}),
        &[(&a, 100), (&b, 100)],
    )
    .await;
    // Requests go out one at a time until one lands on the slow target a and stays
    // in flight there; from then on a holds one connection and b none whenever a
    // request arrives, so every later one must go to b (no timing assumption).
    let url = format!("{}/lc", g.proxy);
    let held = loop {
        let before = a.hits();
        let (c, u) = (g.client.clone(), url.clone());
        let r = tokio::spawn(async move { c.get(u).send().await.unwrap().text().await.unwrap() });
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.hits() == before && !r.is_finished() {
            assert!(Instant::now() < deadline, "no answer from the gateway");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if a.hits() > before {
            break r;
        }
        assert_eq!(r.await.unwrap(), "b");
    };
    let held_at = a.hits();
    let mut got: HashMap<String, usize> = HashMap::new();
    for _ in 0..19 {
        let body = g
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        *got.entry(body).or_default() += 1;
    }
    assert_eq!(a.hits(), held_at, "{got:?}");
    assert_eq!(got.get("b").copied(), Some(19), "{got:?}");
    assert_eq!(held.await.unwrap(), "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_prefers_the_fast_target() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.delay.store(60, Ordering::SeqCst);
    let g = Gateway::start().await;
    setup(
        &g,
        "lat",
        json!({"algorithm": "latency"}),
        &[(&a, 100), (&b, 100)],
    )
    .await;
    let got = spread(&g, "/lat", 40).await;
    assert!(got.get("b").copied().unwrap_or(0) >= 37, "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn target_names_resolve_through_the_configured_dns_server() {
    let zone = Zone::default();
    let (dns, _dh) = zone.serve().await;
    let a = Backend::start("a").await;
    // the same port on another loopback address, for the record to move to
    let y = Backend::start_at("y", &format!("127.0.0.2:{}", a.port)).await;
    zone.set("app.test", vec![Rr::A("127.0.0.1".parse().unwrap(), 2)]);
    let (echo, _eh) = crate::support::echo_upstream().await;
    let echo_port: u16 = echo.rsplit(':').next().unwrap().parse().unwrap();
    zone.set(
        "srv.test",
        vec![Rr::srv(0, 10, echo_port, "node1.test", 30)],
    );
    zone.set("node1.test", vec![Rr::A("127.0.0.1".parse().unwrap(), 30)]);

    let g = Gateway::start_with(&[("KONG_DNS_RESOLVER", &dns.to_string())]).await;
    let (s, b) = g.post("/upstreams", json!({"name": "named"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = g
        .post(
            "/upstreams/named/targets",
            json!({"target": format!("app.test:{}", a.port)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _) = g
        .post("/services", json!({"name": "named", "host": "named"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services/named/routes", json!({"paths": ["/named"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = g.proxy_until("/named", None, |s| s == StatusCode::OK).await;
    assert_eq!(r.text().await.unwrap(), "a");
    let (_, h) = g.get("/upstreams/named/health").await;
    assert_eq!(
        h["data"][0]["data"]["addresses"][0]["ip"], "127.0.0.1",
        "{h}"
    );

    // the record moves: the old answer holds for its TTL, then the new one
    zone.set("app.test", vec![Rr::A("127.0.0.2".parse().unwrap(), 2)]);
    assert_eq!(spread(&g, "/named", 1).await.get("a"), Some(&1));
    until_served_by(&g, "/named", "y").await;
    assert!(y.hits() >= 1);

    // SRV: the record's port, and with use_srv_name its name as Host
    let (s, _) = g
        .post("/upstreams", json!({"name": "srv", "use_srv_name": true}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/upstreams/srv/targets", json!({"target": "srv.test"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services", json!({"name": "srv", "host": "srv"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services/srv/routes", json!({"paths": ["/srv"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = g.proxy_until("/srv", None, |s| s == StatusCode::OK).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["host"], format!("node1.test:{echo_port}"));

    // a name that does not resolve: DNS_ERROR, and no peer
    let (s, _) = g.post("/upstreams", json!({"name": "gone"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post(
            "/upstreams/gone/targets",
            json!({"target": "missing.test:80"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services", json!({"name": "gone", "host": "gone"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services/gone/routes", json!({"paths": ["/gone"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = g
        .proxy_until("/gone", None, |s| s == StatusCode::SERVICE_UNAVAILABLE)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "failure to get a peer from the ring-balancer");
    assert_eq!(health(&g, "gone").await["missing.test:80"], "DNS_ERROR");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_killed_under_load_costs_no_client_errors_with_retries() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let g = Gateway::start().await;
    setup(
        &g,
        "load",
        passive(3, 0),
        &[(&a, 100), (&b, 100), (&c, 100)],
    )
    .await;
    let urls = (0..8).map(|_| format!("{}/load", g.proxy));
    let load = Load::start(&g.client, urls, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health(&g, "load").await[&c.target()], "UNHEALTHY");
    // Back again (passive checks alone never restore it: Kong's rule), still no error.
    c.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.finish("one of three targets killed and restarted under load")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_header_replaces_the_target_name() {
    let (echo, _h) = crate::support::echo_upstream().await;
    let target = echo.trim_start_matches("http://").to_owned();
    let port = target.rsplit(':').next().unwrap().to_owned();
    let g = Gateway::start().await;
    let (s, _) = g
        .post(
            "/upstreams",
            json!({"name": "hh", "host_header": "backend.internal"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/upstreams/hh/targets", json!({"target": target}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services", json!({"name": "hh", "host": "hh"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services/hh/routes", json!({"paths": ["/hh"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = g.proxy_until("/hh", None, |s| s == StatusCode::OK).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["host"], format!("backend.internal:{port}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn below_the_health_threshold_the_upstream_takes_no_traffic() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let g = Gateway::start().await;
    let mut up = passive(1, 0);
    up["healthchecks"]["threshold"] = json!(60);
    setup(&g, "thr60", up, &[(&a, 100), (&b, 100)]).await;
    let (_, bh) = g.get("/upstreams/thr60/health?balancer_health=1").await;
    assert_eq!(bh["data"]["health"], "HEALTHY", "{bh}");
    let (s, _) = g
        .put(
            &format!("/upstreams/thr60/targets/{}/unhealthy", b.target()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // 50% of the weight left is not above 60%: the whole upstream is down
    let r = g
        .proxy_until("/thr60", None, |s| s == StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, bh) = g.get("/upstreams/thr60/health?balancer_health=1").await;
    assert_eq!(bh["data"]["health"], "UNHEALTHY", "{bh}");
    assert_eq!(bh["data"]["balancer_health"], "UNHEALTHY", "{bh}");
}

crate::on_each_database!(round_robin_follows_weights_and_503_without_a_peer);

/// ip → health of the addresses of `name`'s first target, from
/// `GET /upstreams/{u}/health` (`data[].data.addresses[]`).
async fn addresses(g: &Gateway, name: &str) -> HashMap<String, String> {
    let (s, b) = g.get(&format!("/upstreams/{name}/health")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"][0]["data"]["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some((
                        x["ip"].as_str()?.to_owned(),
                        x["health"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A service (`body`, with its `name`) and a route `/{name}` to it.
async fn service(g: &Gateway, body: Value) {
    let name = body["name"].as_str().unwrap().to_owned();
    let (s, b) = g.post("/services", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = g
        .post(
            &format!("/services/{name}/routes"),
            json!({"paths": [format!("/{name}")]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// Waits until `backend` answers on `path` (a DNS record moved, its TTL ran out).
async fn until_served_by(g: &Gateway, path: &str, backend: &str) {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if spread(g, path, 1).await.contains_key(backend) {
            return;
        }
        assert!(Instant::now() < deadline, "TTL never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_is_balanced_over_its_addresses_with_health_per_address() {
    let zone = Zone::default();
    let (dns, _dh) = zone.serve().await;
    let one = Backend::start("one").await;
    let _two = Backend::start_at("two", &format!("127.0.0.2:{}", one.port)).await;
    zone.set(
        "multi.test",
        vec![
            Rr::A("127.0.0.1".parse().unwrap(), 30),
            Rr::A("127.0.0.2".parse().unwrap(), 30),
        ],
    );
    let g = Gateway::start_with(&[("KONG_DNS_RESOLVER", &dns.to_string())]).await;
    let target = format!("multi.test:{}", one.port);
    let mut up = passive(2, 0);
    up["name"] = json!("multi");
    let (s, b) = g.post("/upstreams", up).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = g
        .post("/upstreams/multi/targets", json!({"target": target}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    service(&g, json!({"name": "multi", "host": "multi", "retries": 3})).await;
    g.proxy_until("/multi", None, |s| s == StatusCode::OK).await;

    // both addresses take traffic, and /health lists each with its health
    let got = spread(&g, "/multi", 20).await;
    assert_eq!(
        (got.get("one"), got.get("two")),
        (Some(&10), Some(&10)),
        "{got:?}"
    );
    let want = |a: &str, b: &str| {
        HashMap::from([
            ("127.0.0.1".to_owned(), a.to_owned()),
            ("127.0.0.2".to_owned(), b.to_owned()),
        ])
    };
    assert_eq!(addresses(&g, "multi").await, want("HEALTHY", "HEALTHY"));

    // one address marked unhealthy through the per-address endpoint: only
    // the other takes traffic, and the target stays healthy
    let (s, b) = g
        .put(
            &format!(
                "/upstreams/multi/targets/{target}/127.0.0.2:{}/unhealthy",
                one.port
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert_eq!(addresses(&g, "multi").await, want("HEALTHY", "UNHEALTHY"));
    assert_eq!(health(&g, "multi").await[&target], "HEALTHY");
    assert_eq!(
        spread(&g, "/multi", 10).await,
        HashMap::from([("one".to_owned(), 10)])
    );

    // back, then the other address killed: the passive breaker takes out
    // that address alone, retries keep client errors at zero
    let (s, _) = g
        .put(
            &format!(
                "/upstreams/multi/targets/{target}/127.0.0.2:{}/healthy",
                one.port
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    one.stop();
    assert_eq!(
        spread(&g, "/multi", 20).await,
        HashMap::from([("two".to_owned(), 20)])
    );
    assert_eq!(addresses(&g, "multi").await, want("UNHEALTHY", "HEALTHY"));

    // the whole target by name: every address
    let (s, _) = g
        .put(
            &format!("/upstreams/multi/targets/{target}/unhealthy"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(addresses(&g, "multi").await, want("UNHEALTHY", "UNHEALTHY"));
    assert_eq!(health(&g, "multi").await[&target], "UNHEALTHY");
    let r = g
        .client
        .get(format!("{}/multi", g.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_hosts_resolve_through_the_configured_resolver() {
    let zone = Zone::default();
    let (dns, _dh) = zone.serve().await;
    // only on 127.0.0.2: the system resolver knows no such names
    let x = Backend::start_at("x", "127.0.0.2:0").await;
    let _y = Backend::start_at("y", &format!("127.0.0.3:{}", x.port)).await;
    zone.set("svc.test", vec![Rr::A("127.0.0.2".parse().unwrap(), 1)]);
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), "# test\n127.0.0.3 hosts-only.test\n").unwrap();
    let g = Gateway::start_with(&[
        ("KONG_DNS_RESOLVER", &dns.to_string()),
        ("KONG_DNS_HOSTSFILE", hosts.path().to_str().unwrap()),
    ])
    .await;
    for (name, host) in [("svc", "svc.test"), ("hf", "hosts-only.test")] {
        service(&g, json!({"name": name, "host": host, "port": x.port})).await;
    }
    let r = g.proxy_until("/svc", None, |s| s == StatusCode::OK).await;
    assert_eq!(r.text().await.unwrap(), "x");
    // a name only the hosts file (dns_hostsfile) knows
    let r = g.proxy_until("/hf", None, |s| s == StatusCode::OK).await;
    assert_eq!(r.text().await.unwrap(), "y");

    // the record moves: the old answer holds for its TTL, then the new one
    zone.set("svc.test", vec![Rr::A("127.0.0.3".parse().unwrap(), 1)]);
    until_served_by(&g, "/svc", "y").await;
    // a name nobody knows: Kong's 503
    service(&g, json!({"name": "nx", "host": "nx.test"})).await;
    let r = g
        .proxy_until("/nx", None, |s| s == StatusCode::SERVICE_UNAVAILABLE)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "name resolution failed");
}
