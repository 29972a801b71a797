//! Traffic plugins end to end: request-termination's echo, correlation-id and
//! request-transformer through the real binary, configured over the Admin API.

use crate::plugin_support::{echo, get, ok, routes, send, until, until_with};
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
            ("tracker", "/tracker"),
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
        "/routes/tracker/plugins",
        json!({"name": "correlation-id", "config": {"generator": "tracker", "echo_downstream": true}}),
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

    // key-auth is the last plugin created: once it answers, the others serve too.
    until(&g, "/auth", &[], 401).await;
    // Defaults: Kong-Request-ID from uuid#counter, upstream only.
    let r = get(&g, "/quiet", &[]).await;
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

    // tracker: server_addr-server_port-pid-connection-connection_requests-time, the
    // request count going up on one kept-alive connection.
    until_with(&g, "/tracker", &[], |r| {
        r.headers.contains_key("kong-request-id")
    })
    .await;
    let port = g.proxy.rsplit(':').next().unwrap();
    let ids = two_on_one_connection(&g, "/tracker").await;
    let mut parsed = Vec::new();
    for v in &ids {
        let f: Vec<&str> = v.split('-').collect();
        assert_eq!(f.len(), 6, "{v}");
        assert_eq!((f[0], f[1]), ("127.0.0.1", port), "{v}");
        assert_eq!(f[2], g.pid().unwrap().to_string(), "{v}");
        let (_, ms) = f[5].split_once('.').expect("seconds with milliseconds");
        assert_eq!(ms.len(), 3, "{v}");
        let t: f64 = f[5].parse().unwrap();
        assert!((t - now_secs()).abs() < 60.0, "{v}");
        parsed.push((f[3].parse::<u64>().unwrap(), f[4].parse::<u64>().unwrap()));
    }
    assert_eq!(parsed[1], (parsed[0].0, parsed[0].1 + 1), "{ids:?}");
    assert_eq!(parsed[0].1, 1, "first request on its connection");

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

#[tokio::test(flavor = "multi_thread")]
async fn request_transformer_edits_headers_query_and_bodies() {
    let up = echo().await;
    let g = Gateway::start().await;
    ok(&g, "/services", json!({"name": "s", "url": up})).await;
    let route =
        |name: &str, path: &str| json!({"name": name, "paths": [path], "strip_path": false});
    ok(&g, "/services/s/routes", route("rt", r"~/rt/(?<user>\w+)$")).await;
    ok(&g, "/services/s/routes", route("get", "/get")).await;
    ok(&g, "/services/s/routes", route("form", "/form")).await;
    ok(&g, "/services/s/routes", route("mp", "/mp")).await;
    ok(
        &g,
        "/routes/rt/plugins",
        json!({"name": "request-transformer", "config": {
            "remove": {"headers": ["x-remove"], "querystring": ["drop"], "body": ["secret"]},
            "rename": {"headers": ["x-old:x-new"], "querystring": ["old:new"], "body": ["a:b"]},
            "replace": {"headers": ["x-rep:replaced-$(query_params.q)"], "querystring": ["q:Q"], "body": ["c:C"]},
            "add": {
                "headers": ["x-user:$(uri_captures.user)", "x-agent:$(headers.user_agent or 'none')", "x-rep:not-added"],
                "querystring": ["added:$(uri_captures[1])"],
                "body": ["new:$(headers['x-old'])"]
            },
            "append": {"headers": ["x-multi:two"], "querystring": ["q:again"], "body": ["list:x"]}
        }}),
    )
    .await;
    ok(
        &g,
        "/routes/get/plugins",
        json!({"name": "request-transformer", "config": {"http_method": "GET"}}),
    )
    .await;
    ok(
        &g,
        "/routes/form/plugins",
        json!({"name": "request-transformer", "config": {"remove": {"body": ["x"]}, "add": {"body": ["z:3 4"]}}}),
    )
    .await;
    ok(
        &g,
        "/routes/mp/plugins",
        json!({"name": "request-transformer", "config": {"rename": {"body": ["f:g"]}, "add": {"body": ["h:added"], "headers": ["x-ready:1"]}, "remove": {"body": ["gone"]}}}),
    )
    .await;
    // The last plugin created: once it serves, every earlier one does.
    until_with(&g, "/mp", &[], |r| r.up("x-ready") == Some("1")).await;

    let r = send(
        &g,
        Method::POST,
        "/rt/alice?q=1&drop=1&old=o",
        &[
            ("content-type", "application/json"),
            ("x-remove", "1"),
            ("x-old", "v"),
            ("x-rep", "r"),
            ("x-multi", "one"),
            ("user-agent", "ua"),
        ],
        Some(r#"{"secret":1,"a":"A","c":"c","list":"l","keep":true}"#.into()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Query: removed, renamed, replaced then appended, added; encoded sorted as Kong.
    assert_eq!(r.body["uri"], "/rt/alice?added=alice&new=o&q=Q&q=again");
    assert_eq!(r.up("x-remove"), None);
    assert_eq!((r.up("x-old"), r.up("x-new")), (None, Some("v")));
    assert_eq!(
        r.up("x-rep"),
        Some("replaced-1"),
        "replace, and add skips present"
    );
    assert_eq!(r.up("x-user"), Some("alice"));
    assert_eq!(r.up("x-agent"), Some("ua"));
    // Two `x-multi` lines reach the upstream; the echo keeps the last.
    assert_eq!(r.up("x-multi"), Some("two"));
    let body: serde_json::Value = serde_json::from_str(r.body["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"b": "A", "c": "C", "keep": true, "list": ["l", "x"], "new": "v"})
    );
    assert_eq!(
        r.up("content-length").unwrap(),
        r.body["body_len"].to_string()
    );

    // http_method GET: a form body's arguments join the query string.
    let r = send(
        &g,
        Method::POST,
        "/get?a=0",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("a=1&b=2".into()),
    )
    .await;
    assert_eq!(r.body["method"], "GET");
    assert_eq!(r.body["uri"], "/get?a=0&a=1&b=2");

    // Form body: removed and added, re-encoded.
    let r = send(
        &g,
        Method::POST,
        "/form",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some("x=1&y=2".into()),
    )
    .await;
    assert_eq!(r.body["body"], "y=2&z=3%204");
    // Another content type is left alone.
    let r = send(
        &g,
        Method::POST,
        "/form",
        &[("content-type", "text/plain")],
        Some("x=1".into()),
    )
    .await;
    assert_eq!(r.body["body"], "x=1");

    // Multipart: renamed part, removed part, added part, same boundary.
    let mp = "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv1\r\n--B\r\nContent-Disposition: form-data; name=\"gone\"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"keep\"\r\nContent-Type: text/plain\r\n\r\nk\r\n--B--\r\n";
    let r = send(
        &g,
        Method::POST,
        "/mp",
        &[("content-type", "multipart/form-data; boundary=B")],
        Some(mp.into()),
    )
    .await;
    assert_eq!(
        r.body["body"],
        "--B\r\nContent-Disposition: form-data; name=\"keep\"\r\nContent-Type: text/plain\r\n\r\nk\r\n--B\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\nv1\r\n--B\r\nContent-Disposition: form-data; name=\"h\"\r\n\r\nadded\r\n--B--"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_transformer_schema_violations_name_the_field() {
    let g = Gateway::start().await;
    for (config, path, msg) in [
        (
            json!({"add": {"querystring": ["novalue"]}}),
            &["add", "querystring"][..],
            "key 'novalue' has no value",
        ),
        (
            json!({"add": {"headers": ["bad header:x"]}}),
            &["add", "headers"][..],
            "'bad header' is not a valid header",
        ),
        (
            json!({"rename": {"headers": ["x-a:bad header"]}}),
            &["rename", "headers"][..],
            "'bad header' is not a valid header",
        ),
        (
            json!({"append": {"headers": ["no-colon"]}}),
            &["append", "headers"][..],
            "invalid value",
        ),
        (
            json!({"http_method": "get"}),
            &["http_method"][..],
            "invalid value",
        ),
        (
            json!({"add": {"body": ["k:$(os.exit())"]}}),
            &["add", "body"][..],
            "unsupported template expression",
        ),
        (
            json!({"replace": {"headers": ["Host:x"]}}),
            &["replace", "headers"][..],
            "'host' header is not supported",
        ),
        (
            json!({"replace": {"uri": "/x"}}),
            &[][..],
            "replace.uri is not supported",
        ),
    ] {
        let (s, v) = g
            .post(
                "/plugins",
                json!({"name": "request-transformer", "config": config}),
            )
            .await;
        assert_eq!(s, 400, "{config}: {v}");
        assert_eq!(v["name"], "schema violation", "{v}");
        let mut at = &v["fields"]["config"];
        for p in path {
            at = &at[*p];
        }
        assert!(at.to_string().contains(msg), "{config}: {v}");
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Two GETs of `path` on one HTTP/1.1 connection; the `Kong-Request-ID` each response
/// echoed (and the upstream saw).
async fn two_on_one_connection(g: &Gateway, path: &str) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = g.proxy.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut ids = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..2 {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (head, len) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                buf.drain(..end + 4);
                break (head, len);
            }
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&tmp[..n]);
        };
        while buf.len() < len {
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&tmp[..n]);
        }
        let body: serde_json::Value = serde_json::from_slice(&buf[..len]).unwrap();
        buf.drain(..len);
        let echoed = head
            .lines()
            .find_map(|l| l.strip_prefix("kong-request-id:"))
            .expect("echoed downstream")
            .trim()
            .to_owned();
        assert_eq!(body["headers"]["kong-request-id"], echoed.as_str());
        ids.push(echoed);
    }
    ids
}
