//! response-ratelimiting end to end: the upstream spends named limits with
//! `X-Kong-Limit`, the gateway counts them (local, redis, cluster on SQLite), tells the
//! upstream what remains, answers the usage headers, strips the upstream's header, and
//! blocks as Kong does.

use crate::plugin_support::{echo, get, ok, routes, until_with, Resp};
use crate::rate_limiting::{h, num, Redis};
use crate::support::Gateway;
use serde_json::json;

/// Asks the echo upstream to answer `X-Kong-Limit: <spend>`.
fn spend(s: &str) -> String {
    format!("X-Kong-Limit: {s}")
}

async fn call(g: &Gateway, path: &str, spent: &str) -> Resp {
    get(g, path, &[("x-respond-header", &spend(spent))]).await
}

/// The first request the plugin answers (configuration applies asynchronously).
async fn first(g: &Gateway, path: &str, spent: &str) -> Resp {
    let s = spend(spent);
    until_with(g, path, &[("x-respond-header", &s)], |r| {
        h(r, "x-ratelimit-limit-video-minute").is_some() || r.status == 429
    })
    .await
}

/// Waits until the upstream is told `want` videos remain.
async fn settled(g: &Gateway, path: &str, want: &str) {
    let r = until_with(g, path, &[], |r| {
        r.up("x-ratelimit-remaining-video") == Some(want)
    })
    .await;
    assert_eq!(
        r.up("x-ratelimit-remaining-video"),
        Some(want),
        "{:?}",
        r.body
    );
}

/// One policy's run: 5 videos a minute, spent 2 at a time.
async fn spends_and_blocks(g: &Gateway, path: &str) {
    let r = first(g, path, "video=2, image=1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.up("x-ratelimit-remaining-video"),
        Some("5"),
        "{:?}",
        r.body
    );
    assert_eq!(num(&r, "x-ratelimit-limit-video-minute"), 5);
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), 3);
    assert!(
        h(&r, "x-kong-limit").is_none(),
        "the upstream's header is stripped"
    );
    // Counting may land after the response (redis): wait for it with requests that
    // spend nothing, then spend.
    settled(g, path, "3").await;
    let r = call(g, path, "video=2").await;
    assert_eq!(
        r.up("x-ratelimit-remaining-video"),
        Some("3"),
        "{:?}",
        r.body
    );
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), 1);
    settled(g, path, "1").await;
    let r = call(g, path, "video=2").await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-video-minute"), 0);
    // Used up: a response that spends becomes an empty 429, and is not counted.
    settled(g, path, "-1").await;
    let r = call(g, path, "video=1").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body, json!(""), "no body");
    assert!(h(&r, "x-kong-limit").is_none());
    // A response that spends nothing still passes.
    let r = call(g, path, "image=0").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.up("x-ratelimit-remaining-video"), Some("-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_policy_counts_upstream_spend_strips_and_blocks() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("l", "/l"), ("b", "/b"), ("c", "/c")]).await;
    let (s, e) = g
        .post(
            "/routes/l/plugins",
            json!({"name": "response-ratelimiting", "config": {"limits": {}}}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        e["fields"]["config"]["limits"], "length must be at least 1",
        "{e}"
    );
    let (s, schema) = g.get("/schemas/plugins/response-ratelimiting").await;
    assert_eq!(s, 200);
    assert!(schema.to_string().contains("x-kong-limit"), "{schema}");
    ok(
        &g,
        "/routes/l/plugins",
        json!({"name": "response-ratelimiting",
               "config": {"limits": {"video": {"minute": 5}}, "limit_by": "ip"}}),
    )
    .await;
    spends_and_blocks(&g, "/l").await;

    // block_on_first_violation: refused in access, with Kong's message, upstream untouched.
    ok(
        &g,
        "/routes/b/plugins",
        json!({"name": "response-ratelimiting",
               "config": {"limits": {"video": {"minute": 2}}, "limit_by": "ip",
                          "block_on_first_violation": true, "hide_client_headers": true}}),
    )
    .await;
    let r = until_with(&g, "/b", &[("x-respond-header", &spend("video=2"))], |r| {
        r.up("x-ratelimit-remaining-video").is_some()
    })
    .await;
    assert_eq!(r.status, 200);
    assert!(h(&r, "x-ratelimit-limit-video-minute").is_none(), "hidden");
    assert!(h(&r, "x-kong-limit").is_none());
    let r = until_with(&g, "/b", &[], |r| r.status == 429).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["message"], "API rate limit exceeded for 'video'");

    // The cluster policy on the node's SQLite.
    ok(
        &g,
        "/routes/c/plugins",
        json!({"name": "response-ratelimiting",
               "config": {"limits": {"video": {"minute": 5}}, "limit_by": "ip",
                          "policy": "cluster"}}),
    )
    .await;
    spends_and_blocks(&g, "/c").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_policy_counts_in_redis() {
    let redis = Redis::start();
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("r", "/r")]).await;
    ok(
        &g,
        "/routes/r/plugins",
        json!({"name": "response-ratelimiting",
               "config": {"limits": {"video": {"minute": 5}}, "limit_by": "ip",
                          "policy": "redis",
                          "redis": {"host": "127.0.0.1", "port": redis.port}}}),
    )
    .await;
    spends_and_blocks(&g, "/r").await;
    // Kong's key shape, so Kong nodes can share the counters.
    let keys = redis.cli(&["--scan", "--pattern", "response-ratelimit:*"]);
    assert!(
        keys.contains(":127.0.0.1:") && keys.contains(":video:minute"),
        "{keys}"
    );
}
