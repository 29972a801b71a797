use super::*;
use crate::testing::{fixture, parts};
use crate::PluginState;
use bytes::Bytes;

fn plugin(config: Value) -> ProxyCache {
    let mut config = config;
    config["strategy"] = json!("memory");
    build(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
}

/// access on a request to `route`: the flow, the response headers access set, and the
/// plugin's state.
fn access(
    p: &ProxyCache,
    route: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (Flow, Vec<(HeaderName, HeaderValue)>, Option<PluginState>) {
    let ix = fixture();
    let mut req = parts(method, uri, headers);
    let mut cx = RequestCx::new(&mut req, [127, 0, 0, 1].into(), &ix).with_route(Some(route), None);
    let flow = p.access(&mut cx).unwrap();
    let set = cx.take_response_headers();
    (flow, set, cx.take_plugin_state())
}

/// The upstream's response through header_filter and body_filter; its final headers
/// and body mode.
fn respond(
    p: &ProxyCache,
    state: &mut Option<PluginState>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (HeaderMap, BodyMode) {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (mut resp, _) = b.body(()).unwrap().into_parts();
    let rh = HeaderMap::new();
    let mut cx = ResponseCx {
        resp: &mut resp,
        request_headers: &rh,
        state,
        connection: None,
        empty_body: false,
    };
    p.header_filter(&mut cx).unwrap();
    let mode = p.body_mode(&cx);
    if mode != BodyMode::Skip {
        let mut held = None;
        for (chunk, eof) in [(body, false), (&b""[..], true)] {
            let mut bcx = BodyCx::new(
                status,
                &resp.headers,
                Bytes::copy_from_slice(chunk),
                eof,
                &mut held,
            )
            .with_state(state.as_mut());
            p.body_filter(&mut bcx).unwrap();
            assert_eq!(&bcx.finish().0[..], chunk, "passed through unchanged");
        }
    }
    (resp.headers, mode)
}

fn header<'a>(set: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
    set.iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.to_str().ok())
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn miss_then_hit_without_the_upstream() {
    let p = plugin(json!({}));
    let (flow, set, mut state) = access(&p, "r-hit", "GET", "/a?x=1", &[]);
    assert!(flow.is_continue());
    assert_eq!(header(&set, "x-cache-status"), Some("Miss"));
    let key = header(&set, "x-cache-key").unwrap().to_owned();
    assert_eq!(key.len(), 64);
    let (_, mode) = respond(
        &p,
        &mut state,
        200,
        &[
            JSON,
            ("x-up", "1"),
            ("content-length", "2"),
            ("connection", "close"),
        ],
        b"{}",
    );
    assert_eq!(mode, BodyMode::Read);

    let (flow, _, state) = access(&p, "r-hit", "GET", "/a?x=1", &[]);
    assert!(state.is_none());
    let e = flow.unwrap_exit();
    assert_eq!(e.status, 200);
    assert!(matches!(&e.body, ExitBody::Raw { body, .. } if &body[..] == b"{}"));
    let h = &e.headers;
    assert_eq!(header(h, "x-cache-status"), Some("Hit"));
    assert_eq!(header(h, "x-cache-key"), Some(key.as_str()));
    assert_eq!(header(h, "age"), Some("0"));
    assert_eq!(header(h, "x-up"), Some("1"));
    assert_eq!(header(h, "content-length"), None, "not replayed");
    assert_eq!(header(h, "connection"), None);
    // Another query string is another key.
    let (flow, set, _) = access(&p, "r-hit", "GET", "/a?x=2", &[]);
    assert!(flow.is_continue());
    assert_ne!(header(&set, "x-cache-key"), Some(key.as_str()));
    // The Admin API's view.
    let v = p.dict.fetch(&key).unwrap().to_json();
    assert_eq!(
        (v["status"].clone(), v["body"].clone(), v["version"].clone()),
        (json!(200), json!("{}"), json!(1))
    );
    assert_eq!(v["headers"]["x-up"], "1");
    assert!(p.dict.purge(&key) && !p.dict.purge(&key));
}

#[test]
fn bypass_for_methods_statuses_and_types() {
    let p = plugin(json!({"response_headers": {"X-Cache-Key": false}}));
    let (flow, set, state) = access(&p, "r-bypass", "POST", "/", &[]);
    assert!(flow.is_continue() && state.is_none());
    assert_eq!(header(&set, "x-cache-status"), Some("Bypass"));
    assert_eq!(header(&set, "x-cache-key"), None, "toggled off");
    // Kong-Debug shows the key anyway.
    let (_, set, _) = access(&p, "r-bypass", "GET", "/", &[("kong-debug", "1")]);
    assert!(header(&set, "x-cache-key").is_some());
    for (status, ct) in [
        (500, "application/json"),
        (200, "text/html"),
        (200, "application/json; charset=utf-8"),
        (200, ""),
    ] {
        let (_, _, mut state) = access(&p, "r-bypass", "GET", "/t", &[]);
        let (h, mode) = respond(&p, &mut state, status, &[("content-type", ct)], b"x");
        assert_eq!(
            (h["x-cache-status"].to_str().unwrap(), mode),
            ("Bypass", BodyMode::Skip),
            "{status} {ct}"
        );
        assert!(state.is_none());
    }
    let (flow, ..) = access(&p, "r-bypass", "GET", "/t", &[]);
    assert!(flow.is_continue(), "nothing was stored");
    // Parameters must match exactly; wildcards match any type.
    let p = plugin(json!({"content_type": ["application/json; charset=utf-8", "image/*"]}));
    assert!(p.content_type_matches("Application/JSON;charset=utf-8"));
    assert!(p.content_type_matches("image/png"));
    assert!(!p.content_type_matches("application/json"));
}

#[test]
fn cache_control_is_honoured_when_asked() {
    let p = plugin(json!({"cache_control": true}));
    let (flow, set, _) = access(&p, "r-cc", "GET", "/", &[("cache-control", "no-store")]);
    assert!(flow.is_continue());
    assert_eq!(header(&set, "x-cache-status"), Some("Bypass"));
    let (flow, ..) = access(
        &p,
        "r-cc",
        "GET",
        "/",
        &[("cache-control", "only-if-cached")],
    );
    assert_eq!(flow.unwrap_exit().status, 504);
    // No max-age / Expires: nothing to cache; private: not for a shared cache.
    for cc in ["", "private, max-age=60", "no-cache", "max-age=0"] {
        let (_, _, mut state) = access(&p, "r-cc", "GET", "/", &[]);
        let (h, _) = respond(&p, &mut state, 200, &[JSON, ("cache-control", cc)], b"1");
        assert_eq!(h["x-cache-status"], "Bypass", "{cc}");
    }
    let (_, _, mut state) = access(&p, "r-cc", "GET", "/", &[]);
    respond(
        &p,
        &mut state,
        200,
        &[JSON, ("cache-control", "max-age=5, s-maxage=60")],
        b"1",
    );
    let (flow, ..) = access(&p, "r-cc", "GET", "/", &[]);
    let e = flow.unwrap_exit();
    assert_eq!(header(&e.headers, "x-cache-status"), Some("Hit"));
    let key = header(&e.headers, "x-cache-key").unwrap();
    assert_eq!(p.dict.fetch(key).unwrap().ttl, 60.0, "s-maxage first");
    // The client's max-age=0 on an entry stored in an earlier second asks for a refresh.
    let (_, _, state) = access(
        &p,
        "r-cc",
        "GET",
        "/",
        &[("cache-control", "min-fresh=120")],
    );
    let pending = state.unwrap().downcast::<Pending>().unwrap();
    assert_eq!(pending.key, key);
    // Without cache_control the request's directives are not read.
    let p = plugin(json!({}));
    let (_, set, _) = access(&p, "r-cc2", "GET", "/", &[("cache-control", "no-store")]);
    assert_eq!(header(&set, "x-cache-status"), Some("Miss"));
}

#[test]
fn storage_outlives_cache_ttl_and_refreshes() {
    let p = plugin(json!({"cache_ttl": 1, "storage_ttl": 60}));
    let (_, _, mut state) = access(&p, "r-ttl", "GET", "/", &[]);
    respond(
        &p,
        &mut state,
        200,
        &[("content-type", "text/plain")],
        b"old",
    );
    let key = state.map(|s| s.downcast::<Pending>().unwrap().key).unwrap();
    // An entry stored two seconds ago is past cache_ttl but still in the dictionary.
    let e = p.dict.fetch(&key).unwrap();
    let older = Entry {
        status: e.status,
        headers: e.headers.clone(),
        body: e.body.clone(),
        timestamp: e.timestamp - 2,
        ttl: e.ttl,
        storage_ttl: e.storage_ttl,
    };
    assert_eq!(older.storage_ttl, Some(Duration::from_secs(60)));
    p.dict.store(&key, older);
    let (flow, set, state) = access(&p, "r-ttl", "GET", "/", &[]);
    assert!(flow.is_continue() && state.is_some());
    assert_eq!(header(&set, "x-cache-status"), Some("Refresh"));
    assert_eq!(p.storage_ttl(1.0), Some(Some(Duration::from_secs(60))));
    assert_eq!(
        plugin(json!({"storage_ttl": 0})).storage_ttl(1.0),
        Some(None)
    );
    assert_eq!(plugin(json!({"storage_ttl": -1})).storage_ttl(1.0), None);
}

#[test]
fn schema_refuses_other_strategies_and_dicts() {
    use tollgate_model::schema::{Context, Operation};
    let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
    for (cfg, msg) in [
        (json!({"strategy": "redis"}), "expected one of: memory"),
        (json!({}), "required field missing"),
        (
            json!({"strategy": "memory", "memory": {"dictionary_name": "nope"}}),
            "missing shared dict 'nope'",
        ),
        (
            json!({"strategy": "memory", "response_code": []}),
            "length must be at least 1",
        ),
        (
            json!({"strategy": "memory", "request_method": ["DELETE"]}),
            "expected one of: HEAD, GET, POST, PATCH, PUT",
        ),
        (
            json!({"strategy": "memory", "cache_ttl": 0}),
            "value must be greater than 0",
        ),
    ] {
        let mut row = serde_json::Map::new();
        row.insert("name".into(), json!(NAME));
        row.insert("config".into(), cfg.clone());
        let err = cat
            .validate(&mut row, &Context::new(Operation::Insert))
            .expect_err(&cfg.to_string());
        assert!(format!("{err:?}").contains(msg), "{cfg}: {err:?}");
    }
}

#[test]
fn key_reads_the_request_line_as_sent() {
    use sha2::{Digest, Sha256};
    let p = plugin(json!({}));
    let ix = fixture();
    // A plugin before this one dropped the query (key-auth's hide_credentials): nginx's
    // `$request` still has it, so the uri part stops at the `?`.
    let mut req = parts("GET", "/p?apikey=secret", &[]);
    let mut cx =
        RequestCx::new(&mut req, [127, 0, 0, 1].into(), &ix).with_route(Some("r-line"), None);
    cx.clear_query_arg("apikey");
    assert_eq!(cx.query(), None);
    let want = hex::encode(Sha256::digest(b"r-line|GET|GET /p||"));
    assert_eq!(p.key(&cx), want);
    let mut req = parts("GET", "/P", &[]);
    let cx = RequestCx::new(&mut req, [127, 0, 0, 1].into(), &ix).with_route(Some("r-line"), None);
    let p = plugin(json!({"ignore_uri_case": true}));
    let want = hex::encode(Sha256::digest(b"r-line|GET|get /p http/1.1||"));
    assert_eq!(p.key(&cx), want);
}
