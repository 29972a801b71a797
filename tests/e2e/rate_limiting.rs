//! rate-limiting end to end: the local policy (windows, Kong's headers and 429 body,
//! limit_by consumer vs ip, hide_client_headers, counters across configuration changes)
//! and the redis policy against a real redis-server (shared by two gateways,
//! fault_tolerant when Redis is down).

use crate::plugin_support::{echo, get, ok, routes, until, Resp};
use crate::support::{free_port, Gateway};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) fn h<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn num(r: &Resp, name: &str) -> i64 {
    h(r, name)
        .unwrap_or_else(|| panic!("{name} missing: {:?}", r.headers))
        .parse()
        .unwrap()
}

/// Requests `path` until the rate-limiting plugin answers (its headers or its 429): the
/// configuration applies asynchronously. The answering request is counted.
async fn first_limited(g: &Gateway, path: &str, headers: &[(&str, &str)], header: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(g, path, headers).await;
        if h(&r, header).is_some() || r.status == 429 || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sleeps until just after the start of the next wall-clock second.
async fn next_second() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(1000 - ms as u64 + 20)).await;
}

fn assert_kong_429(r: &Resp, msg: &str) {
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.body["message"], msg, "{:?}", r.body);
    assert!(r.body["request_id"].is_string(), "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_policy_minute_second_headers_and_429() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("m", "/m"), ("sec", "/sec")]).await;
    let (s, v) = g
        .post(
            "/routes/m/plugins",
            json!({"name": "rate-limiting", "config": {}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["fields"]["@entity"][0],
        "at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"
    );
    ok(
        &g,
        "/routes/m/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 3, "hour": 100, "limit_by": "ip"}}),
    )
    .await;

    let r = first_limited(&g, "/m", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-limit-minute"), 3);
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 2);
    assert_eq!(num(&r, "x-ratelimit-limit-hour"), 100);
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 99);
    // The minute window has the fewest remaining: it drives RateLimit-*.
    assert_eq!(num(&r, "ratelimit-limit"), 3);
    assert_eq!(num(&r, "ratelimit-remaining"), 2);
    let reset = num(&r, "ratelimit-reset");
    assert!((1..=60).contains(&reset), "{reset}");
    assert!(h(&r, "retry-after").is_none());
    let r = get(&g, "/m", &[]).await;
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 1);
    let r = get(&g, "/m", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 0);
    assert_eq!(num(&r, "ratelimit-remaining"), 0);
    let r = get(&g, "/m", &[]).await;
    assert_kong_429(&r, "API rate limit exceeded");
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 0);
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 97);
    assert_eq!(num(&r, "ratelimit-remaining"), 0);
    assert_eq!(num(&r, "retry-after"), num(&r, "ratelimit-reset"));
    assert!((1..=60).contains(&num(&r, "retry-after")));

    // Per second, with a custom code and message.
    ok(
        &g,
        "/routes/sec/plugins",
        json!({"name": "rate-limiting", "config": {"second": 2, "limit_by": "ip",
               "error_code": 503, "error_message": "calm down"}}),
    )
    .await;
    first_limited(&g, "/sec", &[], "x-ratelimit-limit-second").await;
    next_second().await;
    let r = get(&g, "/sec", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-second"), 1);
    assert_eq!(num(&r, "ratelimit-reset"), 1);
    get(&g, "/sec", &[]).await;
    let r = get(&g, "/sec", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["message"], "calm down");
    assert_eq!(num(&r, "retry-after"), 1);
    next_second().await;
    assert_eq!(get(&g, "/sec", &[]).await.status, 200);
}

/// An upstream that sends its own rate-limiting headers (in another letter case) and a
/// header of its own: the plugin's values replace the upstream's, each header once, on
/// the path that keeps the upstream's lines as bytes (a bodiless GET) as on the one that
/// builds the response's map (a POST with a body, served by hyper).
#[tokio::test(flavor = "multi_thread")]
async fn plugin_headers_replace_the_upstream_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    // (each request's head, then its Content-Length body, if any)
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        buf.drain(..end + 4 + len);
                        let resp = "HTTP/1.1 200 OK\r\nX-RateLimit-Remaining-Minute: 999\r\n\
                            ratelimit-limit: 77\r\nX-Upstream: kept\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let g = Gateway::start().await;
    routes(&g, &up, &[("m", "/m")]).await;
    ok(
        &g,
        "/routes/m/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 50, "limit_by": "ip"}}),
    )
    .await;
    first_limited(&g, "/m", &[], "x-ratelimit-limit-minute").await;
    for post in [false, true] {
        let r = if post {
            crate::plugin_support::send(
                &g,
                reqwest::Method::POST,
                "/m",
                &[],
                Some(reqwest::Body::from("payload")),
            )
            .await
        } else {
            get(&g, "/m", &[]).await
        };
        assert_eq!(r.status, 200, "post {post}");
        assert_eq!(r.body, "ok");
        let remaining: Vec<_> = r
            .headers
            .get_all("x-ratelimit-remaining-minute")
            .iter()
            .collect();
        assert_eq!(remaining.len(), 1, "post {post}: {:?}", r.headers);
        assert!(num(&r, "x-ratelimit-remaining-minute") < 50, "post {post}");
        assert_eq!(r.headers.get_all("ratelimit-limit").iter().count(), 1);
        assert_eq!(num(&r, "ratelimit-limit"), 50);
        assert_eq!(h(&r, "x-upstream"), Some("kept"));
        assert_eq!(num(&r, "x-ratelimit-limit-minute"), 50);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_policy_consumer_vs_ip_hide_headers_and_config_changes() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(
        &g,
        &up,
        &[("auth", "/auth"), ("open", "/open"), ("hide", "/hide")],
    )
    .await;
    ok(&g, "/consumers", json!({"username": "alice"})).await;
    ok(&g, "/consumers", json!({"username": "bob"})).await;
    ok(&g, "/consumers/alice/key-auth", json!({"key": "ka"})).await;
    ok(&g, "/consumers/bob/key-auth", json!({"key": "kb"})).await;
    ok(&g, "/routes/auth/plugins", json!({"name": "key-auth"})).await;
    ok(
        &g,
        "/routes/auth/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 2}}),
    )
    .await;
    // limit_by consumer without any consumer: Kong falls back to the IP.
    ok(
        &g,
        "/routes/open/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 2}}),
    )
    .await;
    ok(
        &g,
        "/routes/hide/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 1, "limit_by": "ip", "hide_client_headers": true}}),
    )
    .await;

    let alice = [("apikey", "ka")];
    let bob = [("apikey", "kb")];
    let r = first_limited(&g, "/auth", &alice, "x-ratelimit-limit-minute").await;
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 1);
    assert_eq!(get(&g, "/auth", &alice).await.status, 200);
    assert_kong_429(&get(&g, "/auth", &alice).await, "API rate limit exceeded");
    // Bob has his own counter although he comes from the same IP.
    let r = get(&g, "/auth", &bob).await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 1);

    let r = first_limited(&g, "/open", &alice, "x-ratelimit-limit-minute").await;
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 1);
    // Same IP, another "key": still the same (IP) counter.
    assert_eq!(get(&g, "/open", &bob).await.status, 200);
    assert_eq!(get(&g, "/open", &[]).await.status, 429);

    // hide_client_headers: no headers on the answer nor on the 429.
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(&g, "/hide", &[]).await;
        if r.status == 429 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_kong_429(&r, "API rate limit exceeded");
    for name in [
        "x-ratelimit-limit-minute",
        "x-ratelimit-remaining-minute",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "retry-after",
    ] {
        assert!(h(&r, name).is_none(), "{name}");
    }

    // An unrelated configuration change rebuilds the snapshot; the counters stay.
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "other", "paths": ["/other"]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&g, "/other", &[]).await.status != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&g, "/other", &[]).await.status, 200);
    assert_kong_429(&get(&g, "/auth", &alice).await, "API rate limit exceeded");
    assert_eq!(get(&g, "/open", &[]).await.status, 429);
    assert_eq!(get(&g, "/hide", &[]).await.status, 429);
}

/// A real redis-server on a loopback port, killed (by its PID) when dropped.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        Redis::start_with(free_port(), &[])
    }

    /// `redis-server --port <port> --bind 127.0.0.1 --save '' --appendonly no <extra>`,
    /// run from a temporary directory. With `--port 0` in `extra` the port is TLS only.
    pub(crate) fn start_with(port: u16, extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port_arg = port.to_string();
        let mut args = vec!["--port", &port_arg, "--bind", "127.0.0.1"];
        args.extend(["--save", "", "--appendonly", "no"]);
        args.extend(extra);
        if extra.contains(&"--tls-port") {
            args[1] = "0";
        }
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server could not be started ({e}): the redis policy is tested against \
                     a real Redis; install it with `apt-get install -y redis-server` \
                     (scripts/test does so as root)"
                )
            });
        let r = Redis {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// `redis-cli` against this server.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (package redis-tools, installed with redis-server)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

const SVC: &str = "5e1f0000-0000-4000-8000-00000000aaaa";
const ROUTE: &str = "5e1f0000-0000-4000-8000-00000000bbbb";

async fn redis_gateway(up: &str, port: u16) -> Gateway {
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"id": SVC, "name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/routes",
        json!({"id": ROUTE, "name": "r", "paths": ["/r"]}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "ft", "paths": ["/ft"]}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "nft", "paths": ["/nft"]}),
    )
    .await;
    let redis = json!({"host": "127.0.0.1", "port": port, "timeout": 500});
    ok(
        &g,
        "/routes/r/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 3, "limit_by": "ip",
               "policy": "redis", "redis": redis}}),
    )
    .await;
    for (route, ft) in [("ft", true), ("nft", false)] {
        ok(
            &g,
            &format!("/routes/{route}/plugins"),
            json!({"name": "rate-limiting", "config": {"minute": 100, "limit_by": "ip",
                   "policy": "redis", "redis": redis, "fault_tolerant": ft}}),
        )
        .await;
    }
    g
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_policy_shared_by_two_gateways_and_fault_tolerance() {
    let mut redis = Redis::start();
    let up = echo().await;
    let (s, v) = Gateway::start()
        .await
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 3, "policy": "redis"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let a = redis_gateway(&up, redis.port).await;
    let b = redis_gateway(&up, redis.port).await;

    let r = first_limited(&a, "/r", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(num(&r, "x-ratelimit-limit-minute"), 3);
    let first = num(&r, "x-ratelimit-remaining-minute");
    // Both gateways count in the same Redis keys (Kong's, by route and service ids)...
    let r = first_limited(&b, "/r", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), first - 1);
    // ...until the limit, reached through either node. (A minute boundary in between
    // starts a fresh window: retry once then.)
    let mut last = get(&a, "/r", &[]).await;
    for _ in 0..3 {
        if last.status == 429 {
            break;
        }
        last = get(&b, "/r", &[]).await;
    }
    assert_kong_429(&last, "API rate limit exceeded");
    assert_eq!(num(&last, "x-ratelimit-remaining-minute"), 0);
    assert!(num(&last, "retry-after") >= 1);

    // Redis is reachable: fault-tolerant or not, the limits apply.
    let r = first_limited(&a, "/ft", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(r.status, 200);
    let r = first_limited(&a, "/nft", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(r.status, 200);

    // Redis down: fault_tolerant proxies without the headers; otherwise Kong's 500.
    redis.stop();
    let r = get(&a, "/ft", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(h(&r, "x-ratelimit-limit-minute").is_none());
    assert!(h(&r, "ratelimit-remaining").is_none());
    let t = Instant::now();
    let r = get(&a, "/nft", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["message"], "An unexpected error occurred");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Redis back on the same port: the pooled connection recovers, the limits apply again.
    let port = redis.port;
    let _redis = Redis::start_with(port, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = get(&a, "/nft", &[]).await;
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(num(&r, "x-ratelimit-limit-minute"), 100);
}

/// ACL user, password and database; TLS with and without verification.
#[tokio::test(flavor = "multi_thread")]
async fn redis_policy_auth_database_and_tls() {
    let redis = Redis::start_with(
        free_port(),
        &["--user", "rl", "on", ">s3cret", "~*", "&*", "+@all"],
    );
    let up = echo().await;
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    for (route, user, pass, db) in [("/good", "rl", "s3cret", 3), ("/bad", "rl", "wrong", 0)] {
        let name = &route[1..];
        ok(
            &g,
            "/services/s/routes",
            json!({"name": name, "paths": [route]}),
        )
        .await;
        ok(
            &g,
            &format!("/routes/{name}/plugins"),
            json!({"name": "rate-limiting", "config": {"minute": 5, "limit_by": "ip",
                   "policy": "redis", "fault_tolerant": false,
                   "redis": {"host": "127.0.0.1", "port": redis.port, "username": user,
                             "password": pass, "database": db}}}),
        )
        .await;
    }
    let r = first_limited(&g, "/good", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 4);
    let keys = redis.cli(&[
        "--user",
        "rl",
        "--pass",
        "s3cret",
        "--no-auth-warning",
        "-n",
        "3",
        "--scan",
        "--pattern",
        "ratelimit:*",
    ]);
    assert!(
        keys.contains(":127.0.0.1:") && keys.trim_end().ends_with(":minute"),
        "{keys}"
    );
    let r = until(&g, "/bad", &[], 500).await;
    assert_eq!(r.status, 500, "{:?}", r.body);

    // TLS: a self-signed server certificate, accepted only without ssl_verify.
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("redis.crt");
    let key = dir.path().join("redis.key");
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    let tls_port = free_port();
    let tp = tls_port.to_string();
    let tls = Redis::start_with(
        tls_port,
        &[
            "--tls-port",
            &tp,
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            cert.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    for (route, verify) in [("/tls", false), ("/tlsverify", true)] {
        let name = &route[1..];
        ok(
            &g,
            "/services/s/routes",
            json!({"name": name, "paths": [route]}),
        )
        .await;
        ok(
            &g,
            &format!("/routes/{name}/plugins"),
            json!({"name": "rate-limiting", "config": {"minute": 5, "limit_by": "ip",
                   "policy": "redis", "fault_tolerant": false,
                   "redis": {"host": "localhost", "port": tls.port, "ssl": true,
                             "ssl_verify": verify}}}),
        )
        .await;
    }
    let r = first_limited(&g, "/tls", &[], "x-ratelimit-limit-minute").await;
    assert_eq!(r.status, 200, "{:?} {}", r.body, g.stderr());
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 4);
    let r = until(&g, "/tlsverify", &[], 500).await;
    assert_eq!(r.status, 500, "{:?}", r.body);
}

/// The redis policy under concurrency (requests counted together in one pipeline): exactly
/// `limit` requests pass, each with its own X-RateLimit-Remaining (every value from
/// limit-1 down to 0 once), the others get the 429; Redis stopped in the middle of a burst
/// with fault_tolerant false: every request is either counted (its headers) or a 500, and
/// after the stop every one is a 500, never a pass.
#[tokio::test(flavor = "multi_thread")]
async fn redis_policy_concurrent_requests_exact_counts_and_no_fail_open() {
    let mut redis = Redis::start();
    let up = echo().await;
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    let limit = 40;
    for (name, hour) in [("burst", limit), ("stop", 100_000)] {
        ok(
            &g,
            "/services/s/routes",
            json!({"name": name, "paths": [format!("/{name}")]}),
        )
        .await;
        ok(
            &g,
            &format!("/routes/{name}/plugins"),
            json!({"name": "rate-limiting", "config": {"hour": hour, "limit_by": "ip",
                   "policy": "redis", "fault_tolerant": false,
                   "redis": {"host": "127.0.0.1", "port": redis.port, "timeout": 1000}}}),
        )
        .await;
    }
    // Not across an hour boundary (a fresh window would count again).
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if secs % 3600 > 3580 {
        tokio::time::sleep(Duration::from_secs(3600 - secs % 3600 + 1)).await;
    }
    for path in ["/burst", "/stop"] {
        let r = first_limited(&g, path, &[], "x-ratelimit-limit-hour").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // One request was counted by first_limited: limit - 1 remain, for 3x as many requests.
    let rs = futures_util::future::join_all((0..3 * limit).map(|_| get(&g, "/burst", &[]))).await;
    let mut remaining: Vec<i64> = rs
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| num(r, "x-ratelimit-remaining-hour"))
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..limit - 1).collect::<Vec<_>>());
    for r in rs.iter().filter(|r| r.status != 200) {
        assert_kong_429(r, "API rate limit exceeded");
        assert_eq!(num(r, "x-ratelimit-remaining-hour"), 0);
    }
    let keys = redis.cli(&["--scan", "--pattern", "ratelimit:*:hour"]);
    let counted: i64 = keys
        .lines()
        .map(|k| redis.cli(&["GET", k]).trim().parse::<i64>().unwrap())
        .sum();
    // Every request counted (Kong's script counts the refused ones too), in both routes.
    assert_eq!(counted, 3 * limit + 2, "{keys}");

    // Redis stopped while a burst is in flight.
    let burst = futures_util::future::join_all((0..200).map(|_| get(&g, "/stop", &[])));
    let stop = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        redis.stop();
    };
    let (rs, ()) = tokio::join!(burst, stop);
    for r in &rs {
        match r.status.as_u16() {
            200 => assert!(
                h(r, "x-ratelimit-remaining-hour").is_some(),
                "{:?}",
                r.headers
            ),
            500 => assert_eq!(r.body["message"], "An unexpected error occurred"),
            s => panic!("{s} {:?}", r.body),
        }
    }
    let rs = futures_util::future::join_all((0..50).map(|_| get(&g, "/stop", &[]))).await;
    assert!(
        rs.iter().all(|r| r.status == 500),
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}
