//! The proxy path as a user first meets it: create a service and a route through the
//! Admin API, then proxy a request (the README tour).

use crate::support::{echo_upstream, Gateway};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn readme_tour_proxies_a_request() {
    let (upstream, _h) = echo_upstream().await;
    let g = Gateway::start().await;
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
