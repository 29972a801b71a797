//! The proxy path as a user first meets it, on each database: create a service and a
//! route through the Admin API, then proxy a request (the README tour); certificates and
//! SNIs picking what a TLS handshake gets.

use crate::support::{echo_upstream, free_port, peer_cert, Db, Gateway};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

async fn readme_tour_proxies_a_request(db: Db) {
    let (upstream, _h) = echo_upstream().await;
    let g = Gateway::start_on(db, &[]).await;
    let r = g
        .proxy_until("/echo", None, |s| s == StatusCode::NOT_FOUND)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "no Route matched with those values");

    let (s, _) = g
        .post(
            "/services",
            json!({"name": "echo", "url": format!("{upstream}/base")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post(
            "/services/echo/routes",
            json!({"name": "echo-route", "paths": ["/echo"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let r = g
        .proxy_until("/echo/hello?x=1", None, |s| s == StatusCode::OK)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-kong-upstream-latency"));
    assert!(r.headers().contains_key("x-kong-proxy-latency"));
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(
        echoed["uri"], "/base/hello?x=1",
        "strip_path joins the service path"
    );
    assert_eq!(echoed["headers"]["x-forwarded-prefix"], "/echo");
    assert!(echoed["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1"));

    // Route changes apply without a restart.
    let (s, _) = g
        .patch("/routes/echo-route", json!({"paths": ["/other"]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = g.proxy_until("/other", None, |s| s == StatusCode::OK).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = g
        .proxy_until("/echo", None, |s| s == StatusCode::NOT_FOUND)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

fn cert_pair(name: &str) -> (Vec<u8>, Value) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let body = json!({"cert": c.cert.pem(), "key": c.key_pair.serialize_pem()});
    (c.cert.der().to_vec(), body)
}

/// Waits until a handshake for `name` at `addr` gets a certificate that `ok` accepts.
async fn until_cert(g: &Gateway, addr: SocketAddr, name: &str, ok: impl Fn(&[u8]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !peer_cert(addr, name).await.is_some_and(|c| ok(&c)) {
        assert!(
            Instant::now() < deadline,
            "{name}: not the expected certificate\n{}",
            g.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn certificates_are_chosen_by_sni(db: Db) {
    let ssl = free_port();
    let listen = format!("127.0.0.1:{{proxy_port}}, 127.0.0.1:{ssl} ssl");
    let g = Gateway::start_on(db, &[("TOLLGATE_PROXY_LISTEN", &listen)]).await;
    let addr: SocketAddr = format!("127.0.0.1:{ssl}").parse().unwrap();

    // An exact name with the certificate, a wildcard added later through /snis.
    let (a, mut body) = cert_pair("a.test");
    body["snis"] = json!(["a.test"]);
    let (s, ca) = g.post("/certificates", body).await;
    assert_eq!(s, StatusCode::CREATED, "{ca}");
    let (wild, body) = cert_pair("*.wild.test");
    let (s, cw) = g.post("/certificates", body).await;
    assert_eq!(s, StatusCode::CREATED, "{cw}");
    let (s, sni) = g
        .post(
            "/snis",
            json!({"name": "*.wild.test", "certificate": {"id": cw["id"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sni}");
    until_cert(&g, addr, "a.test", |c| c == a).await;
    until_cert(&g, addr, "x.wild.test", |c| c == wild).await;
    assert_ne!(peer_cert(addr, "b.test").await.as_deref(), Some(&a[..]));

    // A new key pair for the same certificate id is served without a restart.
    let (renewed, body) = cert_pair("a.test");
    let id = ca["id"].as_str().unwrap();
    let (s, p) = g.patch(&format!("/certificates/{id}"), body).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    until_cert(&g, addr, "a.test", |c| c == renewed).await;

    // The SNI gone, the name gets the default certificate; the wildcard still serves.
    assert_eq!(g.delete("/snis/a.test").await, StatusCode::NO_CONTENT);
    until_cert(&g, addr, "a.test", |c| c != renewed).await;
    until_cert(&g, addr, "y.wild.test", |c| c == wild).await;
}

crate::on_each_database!(
    readme_tour_proxies_a_request,
    certificates_are_chosen_by_sni
);
