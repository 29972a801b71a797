//! `admin_auth`: tokens made with the CLI against a running node's store (401, 403, 200,
//! revocation while running), decK with `--headers`, mutual TLS with generated
//! certificates, the audit log, and the start-up refusals.

use crate::shared_db::SharedDb;
use crate::support::{command, free_port, Db, Gateway};
use crate::tools_support::{text, tool};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const HEADER: &str = "Kong-Admin-Token";

/// `tollgate admin-tokens …` on the gateway's prefix and environment: (exit code, stdout,
/// stderr).
fn tokens_cli(prefix: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = command(prefix);
    c.arg("admin-tokens").args(args);
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

/// Creates a token and returns it (the last line of the output).
fn create(prefix: &Path, name: &str, read_only: bool, env: &[(&str, &str)]) -> String {
    let mut args = vec!["create", name];
    if read_only {
        args.push("--read-only");
    }
    let (code, out, err) = tokens_cli(prefix, &args, env);
    assert_eq!(code, 0, "{out}{err}");
    let token = out.lines().last().unwrap().trim().to_string();
    assert!(token.starts_with("tgk_") && token.len() == 68, "{out}");
    token
}

async fn call(
    client: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header(HEADER, t);
    }
    if !form.is_empty() {
        req = req.form(form);
    }
    let r = req.send().await.expect("admin request");
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until `GET url` with `token` answers `want` (tokens propagate asynchronously).
async fn until_status(client: &Client, url: &str, token: &str, want: StatusCode) -> Duration {
    let t0 = Instant::now();
    loop {
        let (s, _) = call(client, Method::GET, url, Some(token), &[]).await;
        if s == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{url} still answers {s}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The audit log's lines, each parsed as JSON.
fn audit_lines(prefix: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(prefix.join("logs/admin_audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

const UNAUTHORIZED: &str = "Invalid credentials. Token or User credentials required";

#[tokio::test]
async fn tokens_from_the_cli_guard_the_admin_api() {
    let g = Gateway::start_on(Db::Sqlite, &[("TOLLGATE_ADMIN_AUTH", "token")]).await;
    let c = &g.client;
    let services = format!("{}/services", g.admin);

    // No token, an unknown token: 401 with Kong RBAC's message.
    for token in [None, Some("tgk_nope")] {
        let (s, b) = call(c, Method::GET, &services, token, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        assert_eq!(b, json!({ "message": UNAUTHORIZED }));
    }

    let ops = create(&g.prefix, "ops", false, &[]);
    let auditor = create(&g.prefix, "auditor", true, &[]);
    let took = until_status(c, &services, &ops, StatusCode::OK).await;
    eprintln!("token creation reached the running node in {took:?}");

    let (s, svc) = call(
        c,
        Method::POST,
        &services,
        Some(&ops),
        &[("name", "guarded"), ("url", "http://example.test")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");

    // The read-only token reads, and is refused a write with a 403.
    until_status(c, &services, &auditor, StatusCode::OK).await;
    let (s, b) = call(
        c,
        Method::GET,
        &format!("{services}/guarded"),
        Some(&auditor),
        &[],
    )
    .await;
    assert_eq!((s, &b["id"]), (StatusCode::OK, &svc["id"]));
    let (s, b) = call(
        c,
        Method::DELETE,
        &format!("{services}/guarded"),
        Some(&auditor),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({ "message": "auditor, you do not have permissions to delete this resource" })
    );

    // A CORS preflight carries no token and is still answered.
    let r = c
        .request(Method::OPTIONS, &services)
        .header("Origin", "http://manager.test")
        .header("Access-Control-Request-Headers", "kong-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["access-control-allow-headers"],
        "kong-admin-token"
    );
    // The refusal carries CORS headers, so a browser tool can read it.
    let r = c
        .get(&services)
        .header("Origin", "http://manager.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("access-control-allow-origin"));

    // The status listener stays open.
    for path in ["/status", "/status/ready"] {
        let r = c.get(format!("{}{path}", g.status)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }

    // list: names and flags, never a token or a hash.
    let (code, out, _) = tokens_cli(&g.prefix, &["list"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("ops") && out.contains("auditor"), "{out}");
    assert!(!out.contains(&ops[4..12]) && !out.contains("tgk_"), "{out}");
    let auditor_line = out.lines().find(|l| l.starts_with("auditor")).unwrap();
    assert!(auditor_line.contains("true"), "{out}");
    // A name is taken once.
    let (code, _, err) = tokens_cli(&g.prefix, &["create", "ops"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("exists already"), "{err}");

    // Revoked while running: refused within the propagation time, without a restart.
    let (code, out, err) = tokens_cli(&g.prefix, &["revoke", "ops"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let took = until_status(c, &services, &ops, StatusCode::UNAUTHORIZED).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (code, _, err) = tokens_cli(&g.prefix, &["revoke", "ops"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no Admin API token named 'ops'"), "{err}");

    // The audit log: one JSON line per write, with who, what and the result.
    let lines = audit_lines(&g.prefix);
    let created = lines
        .iter()
        .find(|l| l["method"] == "POST" && l["status"] == 201)
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(created["who"], "ops");
    assert_eq!(created["auth"], "token");
    assert_eq!(created["path"], "/services");
    assert_eq!(created["entity_ids"], json!([svc["id"]]));
    assert!(created["at"].as_str().unwrap().ends_with('Z'));
    let refused = lines
        .iter()
        .find(|l| l["method"] == "DELETE")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(
        (&refused["who"], &refused["status"]),
        (&json!("auditor"), &json!(403))
    );
    // Reads are not audited; bodies never are.
    assert!(lines.iter().all(|l| l["method"] != "GET"), "{lines:?}");
    let raw = std::fs::read_to_string(g.prefix.join("logs/admin_audit.log")).unwrap();
    assert!(
        !raw.contains("example.test") && !raw.contains(&ops),
        "{raw}"
    );
}

#[tokio::test]
async fn deck_syncs_with_a_token_header() {
    let bin = tool("deck");
    let g = Gateway::start_on(Db::Sqlite, &[("TOLLGATE_ADMIN_AUTH", "token")]).await;
    let token = create(&g.prefix, "deck", false, &[]);
    until_status(&g.client, &format!("{}/", g.admin), &token, StatusCode::OK).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yml");
    std::fs::write(
        &file,
        "_format_version: \"3.0\"\nservices:\n- name: decked\n  url: http://example.test\n  routes:\n  - name: decked\n    paths: [/decked]\n",
    )
    .unwrap();
    let deck = |args: &[&str], header: Option<&str>| {
        let mut c = std::process::Command::new(&bin);
        c.arg("gateway")
            .args(args)
            .args(["--kong-addr", &g.admin, "--analytics=false"])
            .env("HOME", dir.path())
            .current_dir(dir.path());
        if let Some(h) = header {
            c.args(["--headers", h]);
        }
        c.output().expect("run deck")
    };
    let header = format!("{HEADER}:{token}");
    let out = deck(&["ping"], None);
    assert!(
        !out.status.success(),
        "deck without the token: {}",
        text(&out)
    );
    let out = deck(&["sync", file.to_str().unwrap()], Some(&header));
    assert!(out.status.success(), "{}", text(&out));
    let out = deck(&["diff", file.to_str().unwrap()], Some(&header));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Created: 0"),
        "{}",
        text(&out)
    );
    let (s, b) = call(
        &g.client,
        Method::GET,
        &format!("{}/routes/decked", g.admin),
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // decK's writes are audited under the token's name, with the ids they wrote.
    let lines = audit_lines(&g.prefix);
    let written: Vec<&Value> = lines
        .iter()
        .filter(|l| l["status"].as_u64().is_some_and(|s| s < 300))
        .collect();
    assert_eq!(written.len(), 2, "{lines:?}");
    for l in written {
        assert_eq!(l["who"], "deck", "{l}");
        assert_eq!(l["entity_ids"].as_array().map(Vec::len), Some(1), "{l}");
    }
}

/// A CA, and a client certificate with subject `CN=ops-robot, O=Tollgate Tests` it signed.
fn client_pki(dir: &Path) -> (std::path::PathBuf, reqwest::Identity) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Tollgate Test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["ops-robot".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "ops-robot");
    leaf.distinguished_name
        .push(DnType::OrganizationName, "Tollgate Tests");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let ca_path = dir.join("admin-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
            .unwrap();
    (ca_path, identity)
}

#[tokio::test]
async fn mtls_requires_a_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, identity) = client_pki(pki.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port} ssl");
    let g = Gateway::start_on(
        Db::Sqlite,
        &[
            ("TOLLGATE_ADMIN_AUTH", "mtls"),
            ("TOLLGATE_ADMIN_LISTEN", &listen),
            ("TOLLGATE_ADMIN_SSL_CLIENT_CA", ca.to_str().unwrap()),
        ],
    )
    .await;
    let url = format!("https://127.0.0.1:{port}/services");
    let builder = || {
        Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
    };

    // Without a certificate the handshake is refused: no answer at all.
    let bare = builder().build().unwrap();
    let r = bare.get(&url).send().await;
    assert!(r.is_err(), "answered without a client certificate: {r:?}");

    let client = builder().identity(identity).build().unwrap();
    let (s, svc) = call(
        &client,
        Method::POST,
        &url,
        None,
        &[("name", "mtls"), ("url", "http://example.test")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    let (s, _) = call(&client, Method::GET, &url, None, &[]).await;
    assert_eq!(s, StatusCode::OK);

    let lines = audit_lines(&g.prefix);
    let line = lines
        .iter()
        .find(|l| l["status"] == 201)
        .unwrap_or_else(|| panic!("{lines:?}"));
    let who = line["who"].as_str().unwrap();
    assert!(
        who.contains("CN=ops-robot") && who.contains("O=Tollgate Tests"),
        "{who}"
    );
    assert_eq!(line["auth"], "mtls");
    assert_eq!(line["entity_ids"], json!([svc["id"]]));
}

/// `tollgate start` that must refuse: its exit code and stderr (killed after 20 s).
fn refused_start(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    c.arg("start")
        .env(
            "TOLLGATE_PROXY_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("TOLLGATE_STATUS_LISTEN", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate start did not refuse {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_refuses_what_it_cannot_enforce() {
    let anywhere = format!("0.0.0.0:{}", free_port());
    let (code, err) = refused_start(&[("TOLLGATE_ADMIN_LISTEN", &anywhere)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("admin_auth is not set")
            && err.contains("admin_auth = token")
            && err.contains("127.0.0.1"),
        "{err}"
    );

    // `tollgate check` says so before a start is tried.
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("check")
        .env("TOLLGATE_ADMIN_LISTEN", &anywhere)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_auth is not set"));

    let plain = format!("127.0.0.1:{}", free_port());
    let (code, err) = refused_start(&[
        ("TOLLGATE_ADMIN_AUTH", "mtls"),
        ("TOLLGATE_ADMIN_LISTEN", &plain),
        ("TOLLGATE_ADMIN_SSL_CLIENT_CA", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("needs every admin_listen entry to have the ssl flag"),
        "{err}"
    );

    let ssl = format!("127.0.0.1:{} ssl", free_port());
    let (code, err) = refused_start(&[
        ("TOLLGATE_ADMIN_AUTH", "mtls"),
        ("TOLLGATE_ADMIN_LISTEN", &ssl),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("admin_ssl_client_ca"), "{err}");

    let (code, err) = refused_start(&[
        ("TOLLGATE_ADMIN_AUTH", "token"),
        ("TOLLGATE_DATABASE", "off"),
        ("TOLLGATE_ADMIN_LISTEN", &plain),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("database = off has none"), "{err}");
}

#[tokio::test]
async fn postgres_tokens_reach_every_node_without_a_restart() {
    // Polling alone would take db_update_frequency (60 s here): what arrives sooner came
    // through the cluster event.
    tokens_reach_every_node_without_a_restart(SharedDb::Postgres, "60").await;
}

#[tokio::test]
async fn cassandra_tokens_reach_every_node_without_a_restart() {
    // Cassandra's cluster events are polled: every db_update_frequency.
    tokens_reach_every_node_without_a_restart(SharedDb::Cassandra, "0.5").await;
}

/// Tokens made and revoked with the CLI through one node's database guard both nodes'
/// Admin APIs within seconds.
async fn tokens_reach_every_node_without_a_restart(db: SharedDb, frequency: &str) {
    use crate::shared_db::{pairs, shared_env};
    let mut env = shared_env(db, frequency).await;
    env.push(("TOLLGATE_ADMIN_AUTH".into(), "token".into()));
    let env = pairs(&env);
    let a = Gateway::start_with(&env).await;
    let b = Gateway::start_with(&env).await;
    let token = create(&a.prefix, "ops", false, &env);
    for g in [&a, &b] {
        let took = until_status(
            &g.client,
            &format!("{}/services", g.admin),
            &token,
            StatusCode::OK,
        )
        .await;
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    let (code, out, err) = tokens_cli(&b.prefix, &["revoke", "ops"], &env);
    assert_eq!(code, 0, "{out}{err}");
    for g in [&a, &b] {
        let took = until_status(
            &g.client,
            &format!("{}/services", g.admin),
            &token,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(took < Duration::from_secs(5), "{took:?}");
        eprintln!("revocation reached {} in {took:?}", g.admin);
    }
}

#[tokio::test]
async fn an_acknowledged_write_keeps_its_audit_line_across_sigkill() {
    // admin_auth unset on loopback: anonymous, audited to the default file.
    let mut g = Gateway::start_on(Db::Sqlite, &[]).await;
    let (s, svc) = g
        .form(
            Method::POST,
            "/services",
            &[("name", "killed"), ("url", "http://example.test")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    let pid = nix::unistd::Pid::from_raw(g.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    g.stop();
    let lines = audit_lines(&g.prefix);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["who"], "anonymous");
    assert_eq!(lines[0]["auth"], "off");
    assert_eq!(lines[0]["entity_ids"], json!([svc["id"]]));

    // admin_audit_log = off: no file.
    let g = Gateway::start_on(Db::Sqlite, &[("TOLLGATE_ADMIN_AUDIT_LOG", "off")]).await;
    let (s, _) = g.post("/consumers", json!({ "username": "quiet" })).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(!g.prefix.join("logs/admin_audit.log").exists());
}
