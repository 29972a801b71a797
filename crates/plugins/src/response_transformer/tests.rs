use super::*;
use bytes::Bytes;
use serde_json::json;

fn plugin(config: Value) -> ResponseTransformer {
    build(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
}

fn head(headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder();
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn filter(p: &ResponseTransformer, resp: &mut http::response::Parts) -> BodyMode {
    let rh = HeaderMap::new();
    let mut cx = ResponseCx {
        resp,
        request_headers: &rh,
        state: &mut None,
        connection: None,
        empty_body: false,
    };
    p.header_filter(&mut cx).unwrap();
    p.body_mode(&cx)
}

/// The body through body_filter in two chunks.
fn body(p: &ResponseTransformer, h: &HeaderMap, body: &[u8]) -> Bytes {
    let mut held = None;
    let (a, b) = body.split_at(body.len() / 2);
    let mut out = Vec::new();
    for (chunk, eof) in [(a, false), (b, false), (&b""[..], true)] {
        let mut cx = BodyCx::new(200, h, Bytes::copy_from_slice(chunk), eof, &mut held);
        p.body_filter(&mut cx).unwrap();
        out.extend_from_slice(&cx.finish().0);
    }
    out.into()
}

#[test]
fn headers_in_kongs_order_against_the_sent_head() {
    let p = plugin(json!({
        "remove": {"headers": ["x-gone", "x-again"]},
        "rename": {"headers": ["x-old:x-new", "x-missing:x-none", "x-same:X-Same"]},
        "replace": {"headers": ["x-keep:replaced", "x-absent:no"]},
        "add": {"headers": ["x-added:1", "x-keep:no", "x-again:readded"]},
        "append": {"headers": ["x-multi:b", "x-fresh:c"]},
    }));
    let mut r = head(&[
        ("x-gone", "1"),
        ("x-again", "1"),
        ("x-old", "o1"),
        ("x-old", "o2"),
        ("x-same", "s"),
        ("x-keep", "k"),
        ("x-multi", "a"),
        ("content-type", "text/plain"),
    ]);
    assert_eq!(filter(&p, &mut r), BodyMode::Skip, "no json edits");
    let h = &r.headers;
    assert!(!h.contains_key("x-gone"));
    // add checks the head as sent: x-again was there, so it is not added back.
    assert!(!h.contains_key("x-again"));
    let new: Vec<_> = h.get_all("x-new").iter().collect();
    assert_eq!(new, ["o1", "o2"]);
    assert!(!h.contains_key("x-old") && !h.contains_key("x-none"));
    assert!(
        !h.contains_key("x-same"),
        "a rename onto itself clears it, as Kong"
    );
    assert_eq!(h["x-keep"], "replaced");
    assert!(!h.contains_key("x-absent"));
    assert_eq!(h["x-added"], "1");
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(h["x-fresh"], "c");
}

#[test]
fn append_without_value_fails_the_phase() {
    let p = plugin(json!({"append": {"headers": ["x-a:"]}}));
    let mut r = head(&[]);
    let rh = HeaderMap::new();
    let mut cx = ResponseCx {
        resp: &mut r,
        request_headers: &rh,
        state: &mut None,
        connection: None,
        empty_body: false,
    };
    assert!(p.header_filter(&mut cx).is_err());
}

#[test]
fn json_body_edits_with_types() {
    let p = plugin(json!({
        "remove": {"json": ["secret"]},
        "rename": {"json": ["old:new", "nil:"]},
        "replace": {"json": ["f:no", "n:x", "s:replaced", "cnt:7"], "json_types": ["string", "string", "string", "number"]},
        "add": {"json": ["f:added", "b:true", "num:0x10", "bad:abc", "url:http://x/\"q\""], "json_types": ["string", "boolean", "number", "number"]},
        "append": {"json": ["list:3", "s2:x", "obj:y", "fresh:1.5"], "json_types": ["number", "string", "string", "number"]},
    }));
    let mut r = head(&[
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "10"),
    ]);
    assert_eq!(filter(&p, &mut r), BodyMode::Change);
    let out = body(
        &p,
        &r.headers,
        br#"{"secret":1,"old":"o","f":false,"n":null,"s":"s","cnt":1,"list":[1],"s2":"a","obj":{"k":1}}"#,
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({
            "new": "o",
            // false is absent to `if not body[name]`; null (cjson.null) is present.
            "f": "added",
            "n": "x",
            "s": "replaced",
            "cnt": 7,
            "b": true,
            "num": 16,
            "url": "http://x/\"q\"",
            "list": [1, 3],
            "s2": ["a", "x"],
            "obj": {"k": 1, "1": "y"},
            "fresh": [1.5],
        })
    );
    assert!(
        v.get("bad").is_none(),
        "a number that does not parse is nil"
    );
}

#[test]
fn other_bodies_pass_unchanged() {
    let p = plugin(json!({"add": {"json": ["a:1"]}}));
    let json_ct = head(&[("content-type", "application/json")]).headers;
    for b in [&b"{broken"[..], b"[1,2]", b"\x1f\x8b\x08\x00gzip", b"\"s\""] {
        assert_eq!(&body(&p, &json_ct, b)[..], b);
    }
    let mut r = head(&[("content-type", "text/html")]);
    assert_eq!(filter(&p, &mut r), BodyMode::Skip);
    let mut r = head(&[("content-type", "application/vnd.api+json")]);
    assert_eq!(filter(&p, &mut r), BodyMode::Change);
}

#[test]
fn schema_checks_entries() {
    use tollgate_model::schema::{Context, Operation};
    let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
    for (cfg, msg) in [
        (
            json!({"add": {"json": ["novalue"]}}),
            "invalid value: novalue",
        ),
        (
            json!({"rename": {"headers": ["a:b c"]}}),
            "'b c' is not a valid header",
        ),
        (
            json!({"add": {"headers": ["a b:1"]}}),
            "'a b' is not a valid header",
        ),
        (
            json!({"add": {"json_types": ["date"]}}),
            "expected one of: boolean, number, string",
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
