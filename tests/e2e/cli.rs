//! The command line: version, check, migrations, stop/health, restart persistence, and the
//! Admin API's exposure guard.

use crate::support::{command, free_port, Gateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn run(prefix: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = command(prefix);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_check_and_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Tollgate "));

    let conf = dir.path().join("good.conf");
    std::fs::write(
        &conf,
        "# a comment\nlog_level = debug\nproxy_listen = 127.0.0.1:9000\nno_such_key = 1\n",
    )
    .unwrap();
    let (code, out, err) = run(dir.path(), &["check", conf.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is valid"));
    assert!(
        err.contains("no_such_key"),
        "unknown keys are warned about: {err}"
    );

    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "database = mysql\nlog_level = loud\nno_such_key = 1\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["check", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("'database'"), "{err}");
    assert!(err.contains("mysql"), "{err}");
    assert!(err.contains("'log_level'"), "{err}");

    // Environment overrides use TOLLGATE_ and KONG_ names.
    let (code, _, err) = run(dir.path(), &["check"], &[("KONG_DATABASE", "oracle")]);
    assert_eq!(code, 1);
    assert!(err.contains("oracle"), "{err}");
}

#[test]
fn migrations_commands() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (code, out, err) = run(p, &["migrations", "status"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bootstrapped"], false);
    assert!(!v["pending"].as_array().unwrap().is_empty());
    let (code, out, _) = run(p, &["migrations", "bootstrap"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("Database is up-to-date"), "{out}");
    let (code, out, _) = run(p, &["migrations", "bootstrap"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("already bootstrapped"));
    let (_, out, _) = run(p, &["migrations", "list"], &[]);
    assert!(out.contains("000_base"));
    let (code, _, err) = run(p, &["migrations", "reset"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"));
    let (code, _, _) = run(p, &["migrations", "reset", "--yes"], &[]);
    assert_eq!(code, 0);
    let (_, out, _) = run(p, &["migrations", "status"], &[]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["bootstrapped"],
        false
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_data_and_stop_health_work() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().to_path_buf();
    let mut g = Gateway::launch(prefix.clone(), &[]).await;
    let (s, svc) = g
        .post(
            "/services",
            json!({"name": "persisted", "host": "p.internal"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (code, out, _) = run(&prefix, &["health"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("healthy"));
    // `tollgate stop` drains and stops the running node.
    let (code, out, err) = run(&prefix, &["stop"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(g.stop(), Some(0), "exit status after SIGTERM");
    let (code, _, _) = run(&prefix, &["health"], &[]);
    assert_eq!(code, 1);

    let g2 = Gateway::launch(prefix.clone(), &[]).await;
    assert_eq!(g2.get("/services/persisted").await.1["id"], svc["id"]);
}

#[test]
fn admin_beyond_loopback_needs_admin_auth() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let (code, _, err) = run(
        dir.path(),
        &["start"],
        &[
            ("TOLLGATE_ADMIN_LISTEN", &format!("0.0.0.0:{port}")),
            ("TOLLGATE_PROXY_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("admin_auth"), "{err}");
}
