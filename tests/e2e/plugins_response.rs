//! response-transformer end to end: headers and JSON bodies edited on the way back,
//! Content-Length following the new body, other bodies passed through untouched.

use crate::plugin_support::{echo, get, ok, routes, until_with};
use crate::support::Gateway;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn response_transformer_edits_headers_and_json() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("json", "/json"), ("heads", "/heads")]).await;
    ok(
        &g,
        "/routes/heads/plugins",
        json!({"name": "response-transformer", "config": {
            "remove": {"headers": ["content-type"]},
            "rename": {"headers": ["x-none:x-other"]},
            "add": {"headers": ["x-added:yes", "content-length:1"]},
            "append": {"headers": ["x-multi:a", "x-multi:b"]},
        }}),
    )
    .await;
    ok(
        &g,
        "/routes/json/plugins",
        json!({"name": "response-transformer", "config": {
            "remove": {"json": ["headers"]},
            "rename": {"json": ["uri:path"]},
            "replace": {"json": ["method:PATCHED"]},
            "add": {"json": ["count:3", "ok:true", "note:text"], "json_types": ["number", "boolean"]},
            "append": {"json": ["body:more"]},
        }}),
    )
    .await;

    // Header edits only: the echo's JSON body and its Content-Length are untouched.
    let r = until_with(&g, "/heads", &[], |r| r.headers.contains_key("x-added")).await;
    assert_eq!(r.headers["x-added"], "yes");
    assert!(!r.headers.contains_key("content-type"), "removed");
    assert!(!r.headers.contains_key("x-other"));
    let multi: Vec<_> = r.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(r.body["uri"], "/", "body as sent");
    let len: usize = r.headers["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        len,
        r.body.to_string().len(),
        "the upstream's length, not the added one"
    );

    // JSON edits: the body changes and its length with it.
    let resp = until_with(&g, "/json?q=1", &[], |r| r.body.get("path").is_some()).await;
    assert_eq!(
        resp.body,
        json!({
            "method": "PATCHED",
            "path": "/?q=1",
            "body": ["", "more"],
            "body_len": 0,
            "count": 3,
            "ok": true,
            "note": "text",
        })
    );
    assert_eq!(resp.headers["content-type"], "application/json");
    // Sent as a whole, with its real length when the client reads it.
    let raw = g
        .client
        .get(format!("{}/json", g.proxy))
        .send()
        .await
        .unwrap();
    let declared = raw.headers().get("content-length").cloned();
    let bytes = raw.bytes().await.unwrap();
    if let Some(l) = declared {
        assert_eq!(l.to_str().unwrap(), bytes.len().to_string());
    }
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["count"], 3);

    // Kong's schema errors.
    for (config, msg) in [
        (
            json!({"add": {"json": ["novalue"]}}),
            "invalid value: novalue",
        ),
        (
            json!({"append": {"json_types": ["date"]}}),
            "expected one of: boolean, number, string",
        ),
        (
            json!({"rename": {"headers": ["a:b c"]}}),
            "'b c' is not a valid header",
        ),
    ] {
        let (s, v) = g
            .post(
                "/plugins",
                json!({"name": "response-transformer", "config": config}),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(msg), "{config}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn response_transformer_leaves_non_json_and_broken_bodies() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("term", "/term"), ("broken", "/broken")]).await;
    for (route, ct, body) in [
        ("term", "text/plain", "hello"),
        ("broken", "application/json", "{not json"),
    ] {
        ok(
            &g,
            &format!("/routes/{route}/plugins"),
            json!({"name": "request-termination", "config": {"status_code": 200, "body": body, "content_type": ct}}),
        )
        .await;
        ok(
            &g,
            &format!("/routes/{route}/plugins"),
            json!({"name": "response-transformer", "config": {"add": {"json": ["a:1"], "headers": ["x-rt:1"]}}}),
        )
        .await;
    }
    for (path, body) in [("/term", "hello"), ("/broken", "{not json")] {
        let r = until_with(&g, path, &[], |r| r.headers.contains_key("x-rt")).await;
        assert_eq!(r.body, Value::String(body.into()), "{path}");
    }
    let r = get(&g, "/term", &[]).await;
    assert_eq!(
        r.headers["content-length"], "5",
        "no body edit: the length stays"
    );
}
