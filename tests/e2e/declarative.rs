//! Declarative configuration: db_import → db_export round trips, DB-less start and
//! `POST /config`.

use crate::support::{command, echo_upstream, Gateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

const REALISTIC: &str = r#"
_format_version: "3.0"
_transform: true
services:
- name: orders
  url: http://orders.internal:8080/api
  tags: [team-a]
  routes:
  - name: orders-public
    paths: [/orders]
    methods: [GET, POST]
  - name: orders-admin
    hosts: [admin.example.com]
    paths: ["~/admin/(?<id>\\d+)$"]
    strip_path: false
- name: users
  host: users.internal
  port: 9000
  routes:
  - name: users-route
    paths: [/users]
consumers:
- username: alice
  custom_id: A-1
  keyauth_credentials:
  - key: alice-key
  basicauth_credentials:
  - username: alice
    password: s3cret
  acls:
  - group: admins
- username: bob
upstreams:
- name: orders.internal
  targets:
  - target: 10.0.0.1:8080
    weight: 50
  - target: 10.0.0.2:8080
"#;

fn run(prefix: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = command(prefix).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn names(v: &Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    e["name"]
                        .as_str()
                        .or(e["username"].as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn db_import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let file = p.join("kong.yml");
    std::fs::write(&file, REALISTIC).unwrap();
    let (code, out, err) = run(p, &["config", "parse", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(p, &["config", "db_import", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    let export1 = p.join("export1.yml");
    let (code, _, err) = run(p, &["config", "db_export", export1.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let e1: Value = serde_yaml::from_str(&std::fs::read_to_string(&export1).unwrap()).unwrap();
    assert_eq!(e1["_format_version"], "3.0");
    assert_eq!(names(&e1, "services"), vec!["orders", "users"]);
    assert_eq!(
        names(&e1, "routes"),
        vec!["orders-admin", "orders-public", "users-route"]
    );
    assert_eq!(names(&e1, "consumers"), vec!["alice", "bob"]);
    assert_eq!(e1["targets"].as_array().unwrap().len(), 2);
    let pw = e1["basicauth_credentials"][0]["password"].as_str().unwrap();
    assert_ne!(pw, "s3cret", "passwords are exported hashed");

    // Import the export into a fresh prefix; exporting again yields the same document.
    let dir2 = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        dir2.path(),
        &["config", "db_import", export1.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let export2 = dir2.path().join("export2.yml");
    run(
        dir2.path(),
        &["config", "db_export", export2.to_str().unwrap()],
    );
    let e2: Value = serde_yaml::from_str(&std::fs::read_to_string(&export2).unwrap()).unwrap();
    assert_eq!(
        e1, e2,
        "round trip must not lose or change anything (no double hashing)"
    );

    // The imported data is served by the Admin API.
    let g = Gateway::launch(p.to_path_buf(), &[]).await;
    let (_, r) = g.get("/routes/orders-admin").await;
    assert_eq!(r["strip_path"], false);
    assert_eq!(r["paths"], json!(["~/admin/(?<id>\\d+)$"]));
    assert_eq!(
        g.get("/key-auths/alice-key/consumer").await.1["username"],
        "alice"
    );

    // A broken file is refused whole, with every error and its path.
    let bad = p.join("bad.yml");
    std::fs::write(
        &bad,
        "_format_version: \"3.0\"\nservices:\n- name: ok-svc\n  host: ok.internal\n- name: broken\n  port: 99999999\nconsumers:\n- {}\n",
    )
    .unwrap();
    let (code, _, err) = run(p, &["config", "parse", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("host"), "{err}");
    assert!(err.contains("port"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dbless_start_and_post_config() {
    let (upstream, _h) = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yml");
    std::fs::write(
        &file,
        format!("_format_version: \"3.0\"\nservices:\n- name: echo\n  url: {upstream}\n  routes:\n  - name: r\n    paths: [/echo]\n"),
    )
    .unwrap();
    let g = Gateway::start_with(&[
        ("TOLLGATE_DATABASE", "off"),
        ("TOLLGATE_DECLARATIVE_CONFIG", file.to_str().unwrap()),
    ])
    .await;
    assert_eq!(g.get("/services/echo").await.1["name"], "echo");
    let r = g
        .proxy_until("/echo/x", None, |s| s == StatusCode::OK)
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Entity writes are refused in DB-less mode: 405, code 12.
    let (s, e) = g.post("/services", json!({"host": "a.com"})).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(e["code"], 12);
    assert_eq!(
        e["message"],
        "cannot create 'services' entities when not using a database"
    );
    assert_eq!(
        g.delete("/services/echo").await,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let (s, cfg) = g.get("/config").await;
    assert_eq!(s, StatusCode::OK);
    assert!(cfg["config"].as_str().unwrap().contains("echo"));

    // Replace the whole configuration.
    let new = json!({"_format_version": "3.0", "services": [{"name": "two", "url": upstream, "routes": [{"name": "r2", "paths": ["/two"]}]}]});
    let (s, _) = g.post("/config", new.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(g.get("/services/echo").await.0, StatusCode::NOT_FOUND);
    assert_eq!(g.get("/services/two").await.0, StatusCode::OK);
    let r = g.proxy_until("/two", None, |s| s == StatusCode::OK).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = g
        .proxy_until("/echo", None, |s| s == StatusCode::NOT_FOUND)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Same config again with check_hash: 304.
    let r = g
        .client
        .post(format!("{}/config?check_hash=1", g.admin))
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // A raw YAML body works too; an invalid one is code 14, and nothing changes.
    let r = g
        .client
        .post(format!("{}/config", g.admin))
        .header("content-type", "text/yaml")
        .body("_format_version: \"3.0\"\nservices:\n- name: bad\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], 14);
    assert_eq!(e["name"], "invalid declarative configuration");
    assert_eq!(e["fields"]["services"][0]["host"], "required field missing");
    let r = g
        .client
        .post(format!("{}/config?flatten_errors=1", g.admin))
        .json(&json!({"_format_version": "3.0", "services": [{"name": "bad"}]}))
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert!(e["flattened_errors"].is_array(), "{e}");
    assert_eq!(g.get("/services/two").await.0, StatusCode::OK);
}
