//! Secret references (`{vault://env/…}`) end to end: resolved from the gateway process's
//! environment when the snapshot is built, shown as written by the Admin API, `config
//! db_export`, the prefix and the logs; an unresolvable one fails closed.

use crate::plugin_support::{echo, get, ok, routes, until};
use crate::rate_limiting::Redis;
use crate::support::{command, free_port, peer_cert, Gateway};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every file under `dir`, read as bytes.
fn files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_key_from_env_is_served_and_never_shown() {
    let good = rcgen::generate_simple_self_signed(vec!["vault.test".to_string()]).unwrap();
    let missing = rcgen::generate_simple_self_signed(vec!["missing.test".to_string()]).unwrap();
    let key_pem = good.key_pair.serialize_pem();
    // A line of the key's base64 body: what must never leave the process.
    let secret_line = key_pem.lines().nth(1).unwrap().to_string();
    // The certificate as a JSON secret (a key of it), the key as a plain variable.
    let cert_json = json!({ "pem": good.cert.pem() }).to_string();
    let ssl = free_port();
    let plain = free_port();
    let listen = format!("127.0.0.1:{plain}, 127.0.0.1:{ssl} ssl");
    let g = Gateway::start_with(&[
        ("TOLLGATE_PROXY_LISTEN", &listen),
        ("TG_VAULT_CERT", &cert_json),
        ("TG_VAULT_KEY", &key_pem),
    ])
    .await;

    // Kong's shape is accepted; a vault this build cannot resolve is refused clearly.
    let (s, body) = g
        .post(
            "/certificates",
            json!({"cert": "{vault://aws/cert}", "key": "{vault://env/tg-vault-key}"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["name"], "schema violation", "{body}");
    assert!(
        body["fields"]["cert"]
            .as_str()
            .is_some_and(|m| m.contains("vault 'aws' is not supported")),
        "{body}"
    );

    let cert_ref = "{vault://env/tg_vault_cert/pem}";
    let key_ref = "{vault://env/tg-vault-key}";
    let created = ok(
        &g,
        "/certificates",
        json!({"cert": cert_ref, "key": key_ref, "snis": ["vault.test"]}),
    )
    .await;
    assert_eq!(created["cert"], cert_ref);
    assert_eq!(created["key"], key_ref);
    let missing_ref = "{vault://env/tg_vault_missing_key}";
    ok(
        &g,
        "/certificates",
        json!({"cert": missing.cert.pem(), "key": missing_ref, "snis": ["missing.test"]}),
    )
    .await;

    // Served by SNI once the snapshot has it.
    let addr: SocketAddr = format!("127.0.0.1:{ssl}").parse().unwrap();
    let want = good.cert.der().to_vec();
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_cert(addr, "vault.test").await.as_ref() != Some(&want) {
        assert!(
            Instant::now() < deadline,
            "vault.test not served:\n{}",
            g.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The certificate whose key does not resolve is not served: the default one is.
    let other = peer_cert(addr, "missing.test").await.expect("a handshake");
    assert_ne!(other, missing.cert.der().to_vec());
    assert_ne!(other, want);

    // The Admin API shows the references.
    let id = created["id"].as_str().unwrap();
    let (s, row) = g.get(&format!("/certificates/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        (row["cert"].as_str(), row["key"].as_str()),
        (Some(cert_ref), Some(key_ref))
    );
    let (_, list) = g.get("/certificates").await;
    assert!(!list.to_string().contains(&secret_line), "{list}");

    // The log names the unresolvable reference.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.stderr().contains(missing_ref) {
        assert!(
            Instant::now() < deadline,
            "no error naming {missing_ref}:\n{}",
            g.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // `config db_export` writes the references.
    let export = g.prefix.join("export.yml");
    let out = command(&g.prefix)
        .args(["config", "db_export", export.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&export).unwrap();
    let y: Value = serde_yaml::from_str(&text).unwrap();
    let keys: Vec<&str> = y["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert!(
        keys.contains(&key_ref) && keys.contains(&missing_ref),
        "{text}"
    );

    // Nothing in the prefix (database, logs, rendered configuration, the export) holds
    // the resolved key.
    let mut all = Vec::new();
    files(&g.prefix, &mut all);
    assert!(all.len() > 2);
    for (p, b) in &all {
        assert!(
            !contains(b, &secret_line),
            "{} holds the secret",
            p.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_password_from_env_and_missing_variable_fails_closed() {
    let password = "vault-e2e-redis-pass";
    let redis = Redis::start_with(free_port(), &["--requirepass", password]);
    let up = echo().await;
    let g = Gateway::start_with(&[("TG_REDIS_PASS", password)]).await;
    routes(&g, &up, &[("ok", "/ok"), ("missing", "/missing")]).await;
    // `?prefix=` overrides the prefix: TG_ + redis-pass → TG_REDIS_PASS.
    let pass_ref = "{vault://env/redis-pass?prefix=tg_}";
    let conf = |pw: &str| {
        json!({"name": "rate-limiting", "config": {"minute": 2, "limit_by": "ip",
               "policy": "redis", "fault_tolerant": false,
               "redis": {"host": "127.0.0.1", "port": redis.port, "timeout": 1000,
                         "password": pw}}})
    };
    let plugin = ok(&g, "/routes/ok/plugins", conf(pass_ref)).await;
    assert_eq!(plugin["config"]["redis"]["password"], pass_ref);
    let missing_ref = "{vault://env/tg_redis_missing}";
    ok(&g, "/routes/missing/plugins", conf(missing_ref)).await;

    // Authenticated against Redis (fault_tolerant is off, so a failed AUTH would be a
    // 500): the third request in the minute is limited.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&g, "/ok", &[]).await;
        if r.status == 429 {
            break;
        }
        assert!(
            r.status == 200 && Instant::now() < deadline,
            "{} {:?}\n{}",
            r.status,
            r.body,
            g.stderr()
        );
    }
    let keys = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "-a",
            password,
            "--no-auth-warning",
        ])
        .args(["--scan", "--pattern", "ratelimit:*"])
        .output()
        .unwrap();
    assert!(!keys.stdout.is_empty(), "no counters in Redis");

    // The missing variable: the plugin fails closed with a 500, and the log names the
    // reference.
    let r = until(&g, "/missing", &[], 500).await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert_eq!(r.message(), "An unexpected error occurred");
    let log = g.stderr();
    assert!(log.contains(missing_ref), "{log}");
    assert!(!log.contains(password), "the log shows the password");
    let (_, p) = g
        .get(&format!("/plugins/{}", plugin["id"].as_str().unwrap()))
        .await;
    assert_eq!(p["config"]["redis"]["password"], pass_ref);
}

/// A service's client certificate whose key is a reference that does not resolve: the
/// gateway answers 500 and never connects to the upstream without the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_client_certificate_never_connects_without_it() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let g = Gateway::start().await;
    let cc = rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).unwrap();
    let cert = ok(
        &g,
        "/certificates",
        json!({"cert": cc.cert.pem(), "key": "{vault://env/tg-vault-absent-client-key}"}),
    )
    .await;
    ok(
        &g,
        "/services",
        json!({"name": "mtls", "url": format!("https://127.0.0.1:{port}"),
               "client_certificate": {"id": cert["id"]}}),
    )
    .await;
    ok(&g, "/services/mtls/routes", json!({"paths": ["/mtls"]})).await;
    let r = until(&g, "/mtls", &[], 500).await;
    assert_eq!(r.status, 500);
    // Nothing reached the upstream: no connection waits to be accepted.
    let accepted = tokio::time::timeout(Duration::from_millis(300), upstream.accept()).await;
    assert!(
        accepted.is_err(),
        "the gateway connected without its client certificate"
    );
    assert!(g
        .stderr()
        .contains("client certificate could not be loaded"));
}
