//! A cluster of gateways on one PostgreSQL: concurrent bootstrap, propagation of writes
//! (LISTEN/NOTIFY and the polling fallback); the outage under load is in outage.rs.

use crate::support::{command, echo_upstream, pg_env, until_status, Gateway, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// `n` gateways started at the same time on database `name` of `server`.
async fn cluster(
    server: &TestServer,
    name: &str,
    n: usize,
    extra: &[(&str, &str)],
) -> Vec<Gateway> {
    let mut env = pg_env(server, name);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    crate::support::cluster(&env, n).await
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_bootstrap_together_and_serve_each_others_writes() {
    let server = TestServer::shared();
    let db = server.fresh_database().await;
    let nodes = cluster(server, &db, 3, &[("TOLLGATE_DB_UPDATE_FREQUENCY", "5")]).await;
    crate::support::assert_one_schema(&nodes, &pg_env(server, &db)).await;

    let (upstream, _h) = echo_upstream().await;
    let (s, svc) = nodes[0]
        .post("/services", json!({"name": "echo", "url": upstream}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    // Propagation of route creations, node 1 → nodes 2 and 3.
    let mut times = Vec::new();
    for i in 0..10 {
        let path = format!("/p{i}");
        let (s, _) = nodes[0]
            .post("/services/echo/routes", json!({"paths": [path]}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let t0 = Instant::now();
        for g in &nodes[1..] {
            until_status(g, &path, StatusCode::OK, Duration::from_secs(3)).await;
        }
        times.push(t0.elapsed());
    }
    times.sort();
    eprintln!(
        "propagation to 2 nodes: p50 {:?}, max {:?}",
        times[5], times[9]
    );
    // The notification path, not the 5 s poll, carried them.
    assert!(times[9] < Duration::from_secs(2), "{times:?}");

    // Plugins, consumers and credentials follow too: key-auth on node 2, key from node 3.
    let (s, _) = nodes[1]
        .post("/services/echo/plugins", json!({"name": "key-auth"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for g in &nodes {
        until_status(g, "/p0", StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    }
    let (s, _) = nodes[2]
        .post("/consumers", json!({"username": "ann"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = nodes[2]
        .post("/consumers/ann/key-auth", json!({"key": "secret-ann"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for g in &nodes {
        let t0 = Instant::now();
        loop {
            let r = g
                .client
                .get(format!("{}/p0", g.proxy))
                .header("apikey", "secret-ann")
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "credential not on {}",
                g.proxy
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // A delete on node 3 (cascading to the credential) revokes the key everywhere.
    assert_eq!(
        nodes[2].delete("/consumers/ann").await,
        StatusCode::NO_CONTENT
    );
    for g in &nodes {
        let t0 = Instant::now();
        loop {
            let r = g
                .client
                .get(format!("{}/p0", g.proxy))
                .header("apikey", "secret-ann")
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "key still valid on {}",
                g.proxy
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_notifications_are_recovered_by_polling() {
    let server = TestServer::shared();
    let db = server.fresh_database().await;
    let nodes = cluster(server, &db, 2, &[("TOLLGATE_DB_UPDATE_FREQUENCY", "0.3")]).await;
    let (upstream, _h) = echo_upstream().await;
    let (s, _) = nodes[0]
        .post("/services", json!({"name": "echo", "url": upstream}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // Keep killing every LISTEN connection of this database (a flapping link): the
    // notifications never arrive, the poll every 0.3 s must carry the writes.
    let killer = {
        let server = server.clone();
        let db = db.clone();
        tokio::spawn(async move {
            loop {
                server
                    .execute(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND application_name = 'tollgate-listen'"
                    ))
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let path = format!("/lost{i}");
        let (s, _) = nodes[0]
            .post("/services/echo/routes", json!({"paths": [path]}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let took = until_status(&nodes[1], &path, StatusCode::OK, Duration::from_secs(5)).await;
        eprintln!("propagated without LISTEN in {took:?}");
    }
    killer.abort();
    // The LISTEN connection comes back and carries notifications again.
    let log = nodes[1].stderr();
    assert!(log.contains("LISTEN connection was lost"), "{log}");
}

#[test]
fn a_node_without_its_database_refuses_to_start_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let out = command(dir.path())
        .arg("start")
        .env("TOLLGATE_DATABASE", "postgres")
        .env("TOLLGATE_PG_HOST", "127.0.0.1")
        .env("TOLLGATE_PG_PORT", port.to_string())
        .env("TOLLGATE_PG_TIMEOUT", "1000")
        .env(
            "TOLLGATE_ADMIN_LISTEN",
            format!("127.0.0.1:{}", crate::support::free_port()),
        )
        .env(
            "TOLLGATE_PROXY_LISTEN",
            format!("127.0.0.1:{}", crate::support::free_port()),
        )
        .env("TOLLGATE_STATUS_LISTEN", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the database is not available") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_db_snapshot_a_node_starts_while_the_database_is_down() {
    let server = TestServer::private();
    let db = server.fresh_database().await;
    let extra = [
        ("TOLLGATE_DB_SNAPSHOT", "on"),
        ("TOLLGATE_DB_UPDATE_FREQUENCY", "0.5"),
    ];
    let mut env = pg_env(&server, &db);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut g = Gateway::start_with(&env).await;
    let (upstream, _h) = echo_upstream().await;
    let (s, _) = g
        .post("/services", json!({"name": "echo", "url": upstream}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services/echo/routes", json!({"paths": ["/saved"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    until_status(&g, "/saved", StatusCode::OK, Duration::from_secs(3)).await;
    // The saved file catches up within its one-second coalescing window.
    let file = g.prefix.join("db_snapshot.json");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("/saved")
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "snapshot not saved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g.stop();
    server.stop();

    // Same prefix, database down: it starts from the file and proxies.
    let prefix = g.prefix.clone();
    let g2 = Gateway::launch_unready(prefix, &env).await;
    until_status(&g2, "/saved", StatusCode::OK, Duration::from_secs(10)).await;
    let (_, st) = g2.get("/status").await;
    assert_eq!(st["database"]["reachable"], false);
    let r = g2
        .client
        .get(format!("{}/status/ready", g2.status))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The database returns: the node resyncs (a route added meanwhile by another writer
    // shows up) and becomes ready.
    server.start();
    let writer = Gateway::start_with(&env).await;
    let (s, _) = writer
        .post("/services/echo/routes", json!({"paths": ["/later"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    until_status(&g2, "/later", StatusCode::OK, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    loop {
        let r = g2
            .client
            .get(format!("{}/status/ready", g2.status))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not ready after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(g);
}

/// Runs `tollgate migrations …` against database `db`; (exit status, stdout + stderr).
fn migrations(server: &TestServer, db: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("migrations")
        .args(args)
        .envs(pg_env(server, db))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_commands_on_postgres() {
    let server = TestServer::shared();
    let db = server.fresh_database().await;
    let (ok, out) = migrations(server, &db, &["status"]);
    assert!(ok, "{out}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["database"], "postgres");
    assert_eq!(st["bootstrapped"], false);
    let (ok, out) = migrations(server, &db, &["up"]);
    assert!(!ok && out.contains("needs bootstrapping"), "{out}");

    // Concurrent bootstraps: one runs the migrations, the others find them done.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let (server, db) = (server.clone(), db.clone());
            std::thread::spawn(move || migrations(&server, &db, &["bootstrap"]))
        })
        .collect();
    let outs: Vec<(bool, String)> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outs.iter().all(|(ok, _)| *ok), "{outs:?}");
    let ran = outs
        .iter()
        .filter(|(_, o)| o.contains("migrating 000_base done"))
        .count();
    assert_eq!(ran, 1, "{outs:?}");

    let (ok, out) = migrations(server, &db, &["list"]);
    assert!(
        ok && out.contains("core: 000_base") && out.contains("Database is up-to-date"),
        "{out}"
    );
    let (ok, out) = migrations(server, &db, &["up"]);
    assert!(ok && out.contains("already up-to-date"), "{out}");
    let (ok, out) = migrations(server, &db, &["finish"]);
    assert!(ok, "{out}");
    let (ok, out) = migrations(server, &db, &["reset"]);
    assert!(!ok && out.contains("--yes"), "{out}");
    let (ok, out) = migrations(server, &db, &["reset", "--yes"]);
    assert!(ok, "{out}");
    let (_, out) = migrations(server, &db, &["status"]);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["bootstrapped"], false);
}

#[test]
fn scripts_cluster_starts_postgres_and_nodes_sharing_writes() {
    let dir = tempfile::tempdir().unwrap();
    // Node k uses base + 100k .. +2: a base below Linux's ephemeral range (32768+), where
    // the other tests' servers take their ports.
    let base = 20000 + (std::process::id() % 120) * 100;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");
    let run = |args: &[&str]| {
        std::process::Command::new(script)
            .args(args)
            .env("TOLLGATE_BIN", crate::support::BIN)
            .env("TOLLGATE_CLUSTER_DIR", dir.path().join("c"))
            .env("TOLLGATE_CLUSTER_BASE", base.to_string())
            .output()
            .unwrap()
    };
    let out = run(&["start", "2"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let cleanup = scopeguard(|| {
        run(&["destroy"]);
    });
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("node 2: proxy http://127.0.0.1:{}", base + 200)),
        "{text}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let admin1 = format!("http://127.0.0.1:{}", base + 101);
        let r = client
            .post(format!("{admin1}/services"))
            .json(&json!({"name": "s", "url": "http://127.0.0.1:9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = client
            .post(format!("{admin1}/services/s/routes"))
            .json(&json!({"paths": ["/c"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        // Node 2 routes it (to a closed port: 502, where an unknown path is 404).
        let t0 = Instant::now();
        loop {
            let s = client
                .get(format!("http://127.0.0.1:{}/c", base + 200))
                .send()
                .await
                .unwrap()
                .status();
            if s == StatusCode::BAD_GATEWAY {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "{s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    drop(cleanup);
}

/// Runs `f` when dropped (cleanup that also happens when an assertion fails).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_ssl_encrypts_and_pg_ssl_verify_checks_the_server() {
    let server = TestServer::private_tls();
    let db = server.fresh_database().await;
    let cert = server.certificate().display().to_string();
    let base = pg_env(&server, &db);
    let with = |extra: &[(&str, &str)]| {
        let mut env = base.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let as_refs = |env: &[(String, String)]| -> Vec<(String, String)> { env.to_vec() };

    // pg_ssl = on, verification off (Kong's default): encrypted.
    let env = as_refs(&with(&[("TOLLGATE_PG_SSL", "on")]));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let g = Gateway::start_with(&refs).await;
    let (s, _) = g.post("/consumers", json!({"username": "tls"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let encrypted = server
        .query_i64(&format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = '{db}' AND ssl"
        ))
        .await;
    let plain = server
        .query_i64(&format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = '{db}' AND NOT ssl"
        ))
        .await;
    assert!(
        encrypted >= 2 && plain == 0,
        "{encrypted} encrypted, {plain} plain"
    );
    drop(g);

    // Verified against the certificate named by lua_ssl_trusted_certificate.
    let env = as_refs(&with(&[
        ("TOLLGATE_PG_SSL", "on"),
        ("TOLLGATE_PG_SSL_VERIFY", "on"),
        ("TOLLGATE_LUA_SSL_TRUSTED_CERTIFICATE", &cert),
    ]));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let g = Gateway::start_with(&refs).await;
    let (s, body) = g.get("/consumers/tls").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    drop(g);

    // Verification without a CA that signed it: refused, and the node says why.
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("start")
        .envs(with(&[
            ("TOLLGATE_PG_SSL", "on"),
            ("TOLLGATE_PG_SSL_VERIFY", "on"),
        ]))
        .env(
            "TOLLGATE_ADMIN_LISTEN",
            format!("127.0.0.1:{}", crate::support::free_port()),
        )
        .env(
            "TOLLGATE_PROXY_LISTEN",
            format!("127.0.0.1:{}", crate::support::free_port()),
        )
        .env("TOLLGATE_STATUS_LISTEN", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}
