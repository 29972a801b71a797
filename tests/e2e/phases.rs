//! The response phases on responses Kong itself generates, through the real binary: a
//! global plugin's header_filter runs on the router's 404 and on the proxy's own 502
//! (Kong's `get_collected_iterator` falls back to the global plugins when access did
//! not collect any), and a route's plugins run on its plugin exits.

use crate::plugin_support::{echo, get, ok, until};
use crate::support::Gateway;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn global_cors_on_kongs_own_responses() {
    let up = echo().await;
    let g = Gateway::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "r", "paths": ["/up"]}),
    )
    .await;
    ok(
        &g,
        "/services",
        json!({"name": "down", "url": format!("http://127.0.0.1:{closed}"), "retries": 0}),
    )
    .await;
    ok(
        &g,
        "/services/down/routes",
        json!({"name": "d", "paths": ["/down"]}),
    )
    .await;
    ok(
        &g,
        "/routes/r/plugins",
        json!({"name": "request-termination", "config": {"status_code": 418, "message": "tea"}}),
    )
    .await;
    ok(
        &g,
        "/plugins",
        json!({"name": "cors", "config": {"origins": ["https://app.example.com"]}}),
    )
    .await;
    let origin = [("origin", "https://app.example.com")];
    until(&g, "/up", &origin, 418).await;
    // The global plugin may land in a later snapshot than the route's: wait for it too.
    let mut r = get(&g, "/nowhere", &origin).await;
    for _ in 0..100 {
        if r.headers.contains_key("access-control-allow-origin") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        r = get(&g, "/nowhere", &origin).await;
    }
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "no Route matched with those values");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );

    let r = get(&g, "/down", &origin).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );

    let r = get(&g, "/up", &origin).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.message(), "tea");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
}
