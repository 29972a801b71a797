use super::*;
use crate::testing::{defaults, fixture, parts};
use crate::ConsumerIndex;

fn validate(config: Value) -> Result<Map<String, Value>, String> {
    crate::testing::validated(&SPEC, config)
}

fn plugin(config: Value, id: &str) -> Box<dyn Plugin> {
    crate::testing::bound(&SPEC, config, id)
}

/// One request through access and header_filter, the upstream answering `x-kong-limit`
/// with `spend`. Returns the access exit (if any), the upstream's request headers and the
/// client's response (status, headers).
fn request(
    p: &dyn Plugin,
    ix: &ConsumerIndex,
    spend: Option<&str>,
) -> (Option<Exit>, http::HeaderMap, u16, http::HeaderMap) {
    let mut req = parts("GET", "/", &[]);
    let mut cx = RequestCx::new(&mut req, [10, 0, 0, 7].into(), ix);
    let flow = p.access(&mut cx).unwrap();
    let mut state = cx.take_plugin_state();
    drop(cx);
    if let Flow::Exit(e) = flow {
        return (Some(e), req.headers, 0, http::HeaderMap::new());
    }
    let mut b = http::Response::builder().status(200);
    if let Some(s) = spend {
        b = b.header("x-kong-limit", s);
    }
    let (mut resp, _) = b.body(()).unwrap().into_parts();
    let mut rcx = ResponseCx {
        resp: &mut resp,
        request_headers: &req.headers,
        state: &mut state,
        connection: None,
        empty_body: false,
    };
    p.header_filter(&mut rcx).unwrap();
    let status = if rcx.empty_body {
        rcx.resp.status.as_u16()
    } else {
        resp.status.as_u16()
    };
    (None, req.headers, status, resp.headers)
}

fn h<'a>(m: &'a http::HeaderMap, n: &str) -> Option<&'a str> {
    m.get(n).map(|v| v.to_str().unwrap())
}

#[test]
fn schema_follows_kong() {
    let c = validate(json!({"limits": {"video": {"minute": 10}}})).unwrap();
    assert_eq!(c["header_name"], "x-kong-limit");
    assert_eq!(c["limit_by"], "consumer");
    assert_eq!(c["policy"], "local");
    assert_eq!(c["block_on_first_violation"], false);
    assert_eq!(c["hide_client_headers"], false);
    assert_eq!(c["fault_tolerant"], true);
    let e = validate(json!({})).unwrap_err();
    assert!(
        e.contains("limits") && e.contains("required field missing"),
        "{e}"
    );
    let e = validate(json!({"limits": {}})).unwrap_err();
    assert!(e.contains("length must be at least 1"), "{e}");
    let e = validate(json!({"limits": {"video": {}}})).unwrap_err();
    assert!(
        e.contains("at least one of these fields must be non-empty"),
        "{e}"
    );
    let e = validate(json!({"limits": {"video": {"second": 10, "minute": 5}}})).unwrap_err();
    assert!(
        e.contains("the limit for minute(5.0) cannot be lower than the limit for second(10.0)"),
        "{e}"
    );
    let e =
        validate(json!({"limits": {"video": {"minute": 5}}, "limit_by": "service"})).unwrap_err();
    assert!(
        e.contains("expected one of: consumer, credential, ip"),
        "{e}"
    );
    let e = validate(json!({"limits": {"video": {"minute": 5}}, "policy": "redis"})).unwrap_err();
    assert!(e.contains("host: required field missing"), "{e}");
    let e = validate(json!({"limits": {"a b": {"minute": 5}}})).unwrap_err();
    assert!(e.contains("cannot be used in a header name"), "{e}");
    validate(json!({"limits": {"video": {"minute": 5}}, "policy": "cluster"})).unwrap();
}

#[test]
fn increments_parse_as_kong_does() {
    let p = built(json!({"limits": {"video": {"minute": 5}, "image": {"minute": 5}}}));
    let mut m = http::HeaderMap::new();
    m.append(
        "x-kong-limit",
        "video=2, image = 3, other=9".parse().unwrap(),
    );
    m.append("x-kong-limit", "bad, image=x=1".parse().unwrap());
    // limits in configuration order: video, image
    assert_eq!(
        parse_increments(m.get_all("x-kong-limit"), &p.rules),
        vec![2, 3]
    );
    let mut m = http::HeaderMap::new();
    m.append("x-kong-limit", "video=abc".parse().unwrap());
    assert_eq!(
        parse_increments(m.get_all("x-kong-limit"), &p.rules),
        vec![0, 0]
    );
}

fn built(config: Value) -> ResponseRateLimiting {
    build(&Value::Object(defaults(&SPEC, config))).unwrap()
}

#[test]
fn local_policy_counts_upstream_spend_and_blocks() {
    let ix = fixture();
    let p = plugin(
        json!({"limits": {"video": {"minute": 3, "hour": 10}}, "limit_by": "ip"}),
        "rrl-local-1",
    );
    let (exit, up, status, resp) = request(&*p, &ix, Some("video=2"));
    assert!(exit.is_none());
    assert_eq!(h(&up, "x-ratelimit-remaining-video"), Some("3"));
    assert_eq!(status, 200);
    assert_eq!(h(&resp, "x-ratelimit-limit-video-minute"), Some("3"));
    assert_eq!(h(&resp, "x-ratelimit-remaining-video-minute"), Some("1"));
    assert_eq!(h(&resp, "x-ratelimit-limit-video-hour"), Some("10"));
    assert_eq!(h(&resp, "x-ratelimit-remaining-video-hour"), Some("8"));
    assert!(
        resp.get("x-kong-limit").is_none(),
        "the upstream header is stripped"
    );
    // Spends 2 more with 1 left: allowed (Kong checks what remained before), now at -1.
    let (_, up, status, resp) = request(&*p, &ix, Some("video=2"));
    assert_eq!(h(&up, "x-ratelimit-remaining-video"), Some("1"));
    assert_eq!(status, 200);
    assert_eq!(h(&resp, "x-ratelimit-remaining-video-minute"), Some("0"));
    // Exhausted: a response that spends is turned into an empty 429 and not counted.
    let (exit, up, status, _) = request(&*p, &ix, Some("video=1"));
    assert!(
        exit.is_none(),
        "no block in access without block_on_first_violation"
    );
    assert_eq!(h(&up, "x-ratelimit-remaining-video"), Some("-1"));
    assert_eq!(status, 429);
    // A response that spends nothing passes.
    let (_, _, status, resp) = request(&*p, &ix, None);
    assert_eq!(status, 200);
    assert_eq!(h(&resp, "x-ratelimit-remaining-video-hour"), Some("6"));
}

#[test]
fn block_on_first_violation_and_hidden_headers() {
    let ix = fixture();
    let p = plugin(
        json!({"limits": {"video": {"minute": 2}}, "limit_by": "ip",
               "block_on_first_violation": true, "hide_client_headers": true}),
        "rrl-local-2",
    );
    let (_, _, status, resp) = request(&*p, &ix, Some("video=2"));
    assert_eq!(status, 200);
    assert!(resp.get("x-ratelimit-limit-video-minute").is_none());
    let (exit, _, _, _) = request(&*p, &ix, Some("video=1"));
    let e = exit.expect("blocked in access");
    assert_eq!(e.status, 429);
    assert_eq!(
        crate::Flow::Exit(e).unwrap_exit().message(),
        "API rate limit exceeded for 'video'"
    );
}
