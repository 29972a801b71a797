//! Traffic plugins end to end: request-termination's echo, correlation-id and
//! request-transformer through the real binary, configured over the Admin API.

use crate::plugin_support::{echo, get, ok, routes, send, until};
use crate::support::Gateway;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn request_termination_echo_matches_kong() {
    let up = echo().await;
    let g = Gateway::start().await;
    let svc = ok(&g, "/services", json!({"name": "s", "url": up})).await;
    let route = ok(
        &g,
        "/services/s/routes",
        json!({"name": "cap", "paths": [r"~/cap/(?<ver>v\d+)/(\d+)$"], "tags": ["t1"]}),
    )
    .await;
    ok(
        &g,
        "/services/s/routes",
        json!({"name": "plain", "paths": ["/plain"]}),
    )
    .await;
    ok(
        &g,
        "/services/s/plugins",
        json!({"name": "request-termination", "config": {"echo": true, "status_code": 418}}),
    )
    .await;
    let (_, info) = g.get("/").await;

    let r = until(&g, "/cap/v1/42?a=1&a=2&flag", &[("x-test", "yes")], 418).await;
    let b = &r.body;
    assert_eq!(b["message"], serde_json::Value::Null, "no default for 418");
    assert_eq!(b["kong"]["node_id"], info["node_id"]);
    assert_eq!(b["kong"]["hostname"], info["hostname"]);
    assert!(b["kong"]["worker_pid"].as_u64().unwrap() > 0);
    let req = &b["request"];
    assert_eq!(req["scheme"], "http");
    assert_eq!(req["host"], "127.0.0.1");
    assert_eq!(req["method"], "GET");
    assert_eq!(req["path"], "/cap/v1/42");
    assert_eq!(req["query"], json!({"a": ["1", "2"], "flag": true}));
    assert_eq!(req["headers"]["x-test"], "yes");
    assert_eq!(
        req["uri_captures"],
        json!({"unnamed": ["v1", "42"], "named": {"ver": "v1"}})
    );
    assert_eq!(req["body"], serde_json::Value::Null);
    assert_eq!(req["raw_body"], "");
    // The whole matched route and service, as the Admin API has them (without nulls).
    let mr = &b["matched_route"];
    assert_eq!(mr["id"], route["id"]);
    assert_eq!(mr["name"], "cap");
    assert_eq!(mr["tags"], json!(["t1"]));
    assert_eq!(mr["paths"], route["paths"]);
    assert_eq!(mr["service"]["id"], svc["id"]);
    assert_eq!(mr["strip_path"], true);
    assert!(mr.get("hosts").is_none(), "nulls are left out: {mr}");
    let ms = &b["matched_service"];
    assert_eq!(ms["id"], svc["id"]);
    assert_eq!(ms["name"], "s");
    assert_eq!(ms["port"], svc["port"]);
    assert_eq!(ms["host"], "127.0.0.1");

    // Prefix path: empty captures; JSON, form and multipart bodies are decoded.
    let r = send(
        &g,
        Method::POST,
        "/plain",
        &[("content-type", "application/json")],
        Some(r#"{"k":[1,2]}"#.into()),
    )
    .await;
    assert_eq!(r.status, 418);
    assert_eq!(
        r.body["request"]["uri_captures"],
        json!({"unnamed": [], "named": {}})
    );
    assert_eq!(r.body["request"]["body"], json!({"k": [1, 2]}));
    assert_eq!(r.body["request"]["raw_body"], r#"{"k":[1,2]}"#);
    assert_eq!(r.body["matched_route"]["name"], "plain");
    let r = send(
        &g,
        Method::POST,
        "/plain",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("x=1&y=a%20b".into()),
    )
    .await;
    assert_eq!(r.body["request"]["body"], json!({"x": "1", "y": "a b"}));
    let mp = "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv1\r\n--B--\r\n";
    let r = send(
        &g,
        Method::POST,
        "/plain",
        &[("content-type", "multipart/form-data; boundary=B")],
        Some(mp.into()),
    )
    .await;
    assert_eq!(r.body["request"]["body"], json!({"f": "v1"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn correlation_id_for_upstream_and_client() {
    let up = echo().await;
    let g = Gateway::start().await;
    routes(
        &g,
        &up,
        &[
            ("quiet", "/quiet"),
            ("echoed", "/echoed"),
            ("auth", "/auth"),
        ],
    )
    .await;
    ok(
        &g,
        "/routes/quiet/plugins",
        json!({"name": "correlation-id"}),
    )
    .await;
    ok(
        &g,
        "/routes/echoed/plugins",
        json!({"name": "correlation-id", "config": {"header_name": "X-Trace", "generator": "uuid", "echo_downstream": true}}),
    )
    .await;
    ok(
        &g,
        "/routes/auth/plugins",
        json!({"name": "correlation-id", "config": {"echo_downstream": true}}),
    )
    .await;
    ok(&g, "/routes/auth/plugins", json!({"name": "key-auth"})).await;

    // Defaults: Kong-Request-ID from uuid#counter, upstream only.
    let r = until(&g, "/quiet", &[], 200).await;
    let id = r
        .up("kong-request-id")
        .expect("set for the upstream")
        .to_owned();
    let (worker, n) = id.split_once('#').unwrap();
    assert_eq!(worker.len(), 36, "{id}");
    assert!(!r.headers.contains_key("kong-request-id"), "not echoed");
    let r = get(&g, "/quiet", &[]).await;
    let id2 = r.up("kong-request-id").unwrap();
    let (worker2, n2) = id2.split_once('#').unwrap();
    assert_eq!(worker, worker2);
    assert!(n2.parse::<u64>().unwrap() > n.parse::<u64>().unwrap());
    // The client's own id goes through untouched.
    let r = get(&g, "/quiet", &[("kong-request-id", "client-1")]).await;
    assert_eq!(r.up("kong-request-id"), Some("client-1"));

    // echo_downstream: the client gets what the upstream got.
    let r = until(&g, "/echoed", &[], 200).await;
    let sent = r.up("x-trace").unwrap().to_owned();
    assert_eq!(sent.len(), 36, "a uuid: {sent}");
    assert_eq!(r.headers["x-trace"], sent.as_str());
    let r = get(&g, "/echoed", &[("x-trace", "abc")]).await;
    assert_eq!(
        (r.up("x-trace"), r.headers["x-trace"].to_str().unwrap()),
        (Some("abc"), "abc")
    );

    // A later plugin's exit (key-auth's 401) still carries the id.
    let r = until(&g, "/auth", &[], 401).await;
    let echoed = r.headers["kong-request-id"].to_str().unwrap();
    assert!(echoed.contains('#'), "{echoed}");

    // Schema violations name the field.
    for (config, field, msg) in [
        (
            json!({"generator": "random"}),
            "generator",
            "expected one of: uuid, uuid#counter, tracker",
        ),
        (
            json!({"generator": "tracker"}),
            "generator",
            "the 'tracker' generator is not supported",
        ),
        (
            json!({"echo_downstream": "yes"}),
            "echo_downstream",
            "expected a boolean",
        ),
    ] {
        let (s, v) = g
            .post(
                "/plugins",
                json!({"name": "correlation-id", "config": config}),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["name"], "schema violation");
        let m = v["fields"]["config"][field].as_str().unwrap_or_default();
        assert!(m.contains(msg), "{config}: {v}");
    }
}
