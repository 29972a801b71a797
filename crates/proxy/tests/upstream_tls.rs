//! Upstream TLS: `tls_verify`, `ca_certificates`, `client_certificate` and
//! the SNI sent upstream, against real TLS servers on loopback.

mod common;

use common::pki::{tls_echo_upstream, Ca};
use common::*;
use serde_json::{json, Map, Value};

type Row = Map<String, Value>;

fn https_service(host: &str, port: u16, extra: Value) -> Row {
    let mut v = json!({"protocol": "https"});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    service(host, port, v)
}

fn ca_row(ca: &Ca) -> Row {
    row("ca_certificates", json!({"cert": ca.pem}))
}

async fn get(p: &Running, path: &str, host: Option<&str>) -> reqwest::Response {
    let mut r = client().get(p.url(path)).header("accept", "text/plain");
    if let Some(h) = host {
        r = r.header("host", h);
    }
    r.send().await.unwrap()
}

async fn assert_502(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 502, "{what}");
    let body = resp.text().await.unwrap();
    assert!(
        body.starts_with("An invalid response was received from the upstream server\n"),
        "{what}: {body:?}"
    );
}

#[tokio::test]
async fn tls_verify_and_ca_certificates() {
    let ca = Ca::new("Upstream CA");
    let other = Ca::new("Other CA");
    let up = tls_echo_upstream(&ca.server(&["localhost", "127.0.0.1"]), None).await;
    let (right, wrong) = (ca_row(&ca), ca_row(&other));
    let port = up.port();
    let plain = https_service("127.0.0.1", port, json!({}));
    let verified = https_service(
        "127.0.0.1",
        port,
        json!({"tls_verify": true, "ca_certificates": [right["id"]]}),
    );
    let wrong_ca = https_service(
        "127.0.0.1",
        port,
        json!({"tls_verify": true, "ca_certificates": [wrong["id"]], "retries": 1}),
    );
    // no ca_certificates: the public roots, which do not know the test CA
    let public_roots = https_service("127.0.0.1", port, json!({"tls_verify": true, "retries": 1}));
    // the wrong CA is fine while tls_verify is off (Kong's default)
    let unverified = https_service(
        "127.0.0.1",
        port,
        json!({"tls_verify": false, "ca_certificates": [wrong["id"]]}),
    );
    let routes: Vec<(&str, &Row)> = vec![
        ("/plain", &plain),
        ("/verified", &verified),
        ("/wrong-ca", &wrong_ca),
        ("/public-roots", &public_roots),
        ("/unverified", &unverified),
    ];
    let mut entries = vec![
        ("ca_certificates", right.clone()),
        ("ca_certificates", wrong),
    ];
    for (path, s) in &routes {
        entries.push(("routes", route(Some(s), json!({"paths": [path]}))));
    }
    for s in [&plain, &verified, &wrong_ca, &public_roots, &unverified] {
        entries.push(("services", s.clone()));
    }
    let p = start(&dataset(entries), &[]).await;

    for path in ["/plain", "/verified", "/unverified"] {
        let v = echo_json(get(&p, path, None).await).await;
        assert_eq!(v["path"], "/", "{path}");
        assert_eq!(v["host"], format!("127.0.0.1:{port}"), "{path}");
        // an IP literal is never sent as SNI (RFC 6066, nginx)
        assert_eq!(v["sni"], Value::Null, "{path}");
        assert_eq!(v["client_cert"], false, "{path}");
    }
    assert_502(
        get(&p, "/wrong-ca", None).await,
        "CA that did not issue the cert",
    )
    .await;
    assert_502(get(&p, "/public-roots", None).await, "public roots").await;
    p.shutdown().await;
}

#[tokio::test]
async fn sni_is_the_upstream_host_or_the_preserved_host() {
    let ca = Ca::new("Upstream CA");
    let up = tls_echo_upstream(&ca.server(&["localhost", "api.test", "127.0.0.1"]), None).await;
    let port = up.port();
    let cas = ca_row(&ca);
    let verify = json!({"tls_verify": true, "ca_certificates": [cas["id"]], "retries": 1});
    let by_name = https_service("localhost", port, verify.clone());
    let by_ip = https_service("127.0.0.1", port, verify);
    let d = dataset(vec![
        ("ca_certificates", cas),
        ("services", by_name.clone()),
        ("services", by_ip.clone()),
        (
            "routes",
            route(Some(&by_name), json!({"paths": ["/by-name"]})),
        ),
        (
            "routes",
            route(
                Some(&by_ip),
                json!({"paths": ["/preserved"], "preserve_host": true}),
            ),
        ),
    ]);
    let p = start(&d, &[]).await;

    let v = echo_json(get(&p, "/by-name", Some("client.test")).await).await;
    assert_eq!(v["sni"], "localhost");
    assert_eq!(v["host"], format!("localhost:{port}"));

    // preserve_host: the client's Host (without its port) is the SNI and the
    // name the certificate is verified against (nginx `proxy_ssl_name
    // $upstream_host`)
    let v = echo_json(get(&p, "/preserved", Some("api.test:8443")).await).await;
    assert_eq!(v["sni"], "api.test");
    assert_eq!(v["host"], "api.test:8443");
    assert_502(
        get(&p, "/preserved", Some("not-in-cert.test")).await,
        "preserved host not covered by the certificate",
    )
    .await;
    // and a name the certificate covers still works afterwards (the failed
    // name did not poison the pool entry of the good one)
    let v = echo_json(get(&p, "/preserved", Some("api.test")).await).await;
    assert_eq!(v["sni"], "api.test");
    p.shutdown().await;
}

#[tokio::test]
async fn client_certificate_for_mutual_tls() {
    let server_ca = Ca::new("Upstream CA");
    let client_ca = Ca::new("Client CA");
    let stranger_ca = Ca::new("Stranger CA");
    let up = tls_echo_upstream(&server_ca.server(&["127.0.0.1"]), Some(&client_ca)).await;
    let port = up.port();
    let good = client_ca.client("tollgate");
    let bad = stranger_ca.client("tollgate");
    let good_row = row("certificates", json!({"cert": good.pem, "key": good.key}));
    let bad_row = row("certificates", json!({"cert": bad.pem, "key": bad.key}));
    let with_cert = https_service(
        "127.0.0.1",
        port,
        json!({"client_certificate": {"id": good_row["id"]}}),
    );
    let without = https_service("127.0.0.1", port, json!({"retries": 1}));
    let stranger = https_service(
        "127.0.0.1",
        port,
        json!({"client_certificate": {"id": bad_row["id"]}, "retries": 1}),
    );
    let d = dataset(vec![
        ("certificates", good_row),
        ("certificates", bad_row),
        ("services", with_cert.clone()),
        ("services", without.clone()),
        ("services", stranger.clone()),
        (
            "routes",
            route(Some(&with_cert), json!({"paths": ["/mtls"]})),
        ),
        ("routes", route(Some(&without), json!({"paths": ["/none"]}))),
        (
            "routes",
            route(Some(&stranger), json!({"paths": ["/stranger"]})),
        ),
    ]);
    let p = start(&d, &[]).await;
    for _ in 0..2 {
        let v = echo_json(get(&p, "/mtls", None).await).await;
        assert_eq!(v["client_cert"], true);
    }
    assert_502(get(&p, "/none", None).await, "no client certificate").await;
    assert_502(
        get(&p, "/stranger", None).await,
        "client certificate of another CA",
    )
    .await;
    p.shutdown().await;
}

#[tokio::test]
async fn an_upstreams_client_certificate_serves_services_without_one() {
    let server_ca = Ca::new("Upstream CA");
    let client_ca = Ca::new("Client CA");
    let up = tls_echo_upstream(&server_ca.server(&["127.0.0.1"]), Some(&client_ca)).await;
    let good = client_ca.client("tollgate");
    let cert = row("certificates", json!({"cert": good.pem, "key": good.key}));
    let upstream = row(
        "upstreams",
        json!({"name": "mtls-up", "client_certificate": {"id": cert["id"]}}),
    );
    let target = row(
        "targets",
        json!({"target": format!("127.0.0.1:{}", up.port()), "upstream": {"id": upstream["id"]}}),
    );
    let svc = https_service("mtls-up", 443, json!({}));
    let d = dataset(vec![
        ("certificates", cert),
        ("upstreams", upstream),
        ("targets", target),
        ("services", svc.clone()),
        ("routes", route(Some(&svc), json!({"paths": ["/up"]}))),
    ]);
    let p = start(&d, &[]).await;
    let v = echo_json(get(&p, "/up", None).await).await;
    assert_eq!(v["client_cert"], true);
    p.shutdown().await;
}

#[tokio::test]
async fn active_https_checks_present_the_upstreams_client_certificate() {
    let server_ca = Ca::new("Upstream CA");
    let client_ca = Ca::new("Client CA");
    let up = tls_echo_upstream(&server_ca.server(&["127.0.0.1"]), Some(&client_ca)).await;
    let good = client_ca.client("tollgate");
    let cert = row("certificates", json!({"cert": good.pem, "key": good.key}));
    let checks = json!({"active": {
        "type": "https", "https_verify_certificate": false,
        "healthy": {"interval": 0.05, "successes": 1},
        "unhealthy": {"interval": 0.05, "tcp_failures": 1, "http_failures": 1}
    }});
    let with = row(
        "upstreams",
        json!({"name": "with", "client_certificate": {"id": cert["id"]}, "healthchecks": checks}),
    );
    let without = row(
        "upstreams",
        json!({"name": "without", "healthchecks": checks}),
    );
    let t = |u: &Row| {
        row(
            "targets",
            json!({"target": format!("127.0.0.1:{}", up.port()), "upstream": {"id": u["id"]}}),
        )
    };
    let d = dataset(vec![
        ("certificates", cert),
        ("upstreams", with.clone()),
        ("upstreams", without.clone()),
        ("targets", t(&with)),
        ("targets", t(&without)),
    ]);
    let p = start(&d, &[]).await;
    let state = |name: &str| p.snapshot.load().health_states(name).unwrap()[0].health;
    use tollgate_proxy::balancer::Health;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while state("without") != Health::Unhealthy {
        assert!(std::time::Instant::now() < deadline, "never unhealthy");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // same server, probed just as often: the certificate keeps it healthy
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(state("with"), Health::Healthy);
    p.shutdown().await;
}
