//! Test helpers: a consumer fixture and a fake request.

use crate::{ConsumerIndex, Flow, Plugin, PluginSpec, RequestCx};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tollgate_model::schema::{Context, Operation};

pub(crate) const ALICE: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub(crate) const BOB: &str = "bbbbbbbb-0000-4000-8000-000000000002";
pub(crate) const ANON: &str = "cccccccc-0000-4000-8000-000000000003";

fn rows(v: Value) -> Vec<Map<String, Value>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

/// alice (groups admin, dev; key `alice-key`; basic alice:pw), bob (group users),
/// anon (no groups).
pub(crate) fn fixture() -> ConsumerIndex {
    let mut d = BTreeMap::new();
    d.insert(
        "consumers".into(),
        rows(json!([
            {"id": ALICE, "username": "alice", "custom_id": "A-1"},
            {"id": BOB, "username": "bob"},
            {"id": ANON, "username": "anon"},
        ])),
    );
    d.insert(
        "keyauth_credentials".into(),
        rows(json!([
            {"id": "cred-alice", "key": "alice-key", "consumer": {"id": ALICE}},
            {"id": "cred-bob", "key": "bob-key", "consumer": {"id": BOB}},
        ])),
    );
    d.insert(
        "basicauth_credentials".into(),
        rows(json!([{
            "id": "basic-alice", "username": "alice", "consumer": {"id": ALICE},
            "password": crate::basic_auth::hash(ALICE, b"pw"),
        }])),
    );
    d.insert(
        "acls".into(),
        rows(json!([
            {"id": "1", "group": "admin", "consumer": {"id": ALICE}},
            {"id": "2", "group": "dev", "consumer": {"id": ALICE}},
            {"id": "3", "group": "users", "consumer": {"id": BOB}},
        ])),
    );
    ConsumerIndex::build(&d)
}

/// `config` validated and defaulted by the plugin's schema, or its errors (debug-printed).
pub(crate) fn validated(spec: &PluginSpec, config: Value) -> Result<Map<String, Value>, String> {
    let cat =
        tollgate_model::PluginCatalog::new(vec![(spec.schema)()], &["bundled".into()]).unwrap();
    let mut row = Map::new();
    row.insert("name".into(), json!(spec.name));
    row.insert("config".into(), config);
    cat.validate(&mut row, &Context::new(Operation::Insert))
        .map(|_| row["config"].as_object().unwrap().clone())
        .map_err(|e| format!("{e:?}"))
}

/// `config` validated and defaulted by the plugin's schema.
pub(crate) fn defaults(spec: &PluginSpec, config: Value) -> Map<String, Value> {
    validated(spec, config).unwrap_or_else(|e| panic!("{e}"))
}

/// `config` defaulted, compiled and bound to the `plugins` row `id`.
pub(crate) fn bound(spec: &PluginSpec, config: Value, id: &str) -> Box<dyn crate::Plugin> {
    let mut p = (spec.compile)(&Value::Object(defaults(spec, config))).unwrap();
    p.bind(&crate::InstanceScope {
        id,
        ..Default::default()
    });
    p
}

pub(crate) fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Runs `access`; returns the flow, the upstream headers and URI.
pub(crate) fn run_access(
    p: &dyn Plugin,
    ix: &ConsumerIndex,
    mut parts: http::request::Parts,
    body: Option<Bytes>,
) -> (Flow, http::HeaderMap, String) {
    let mut cx = RequestCx::new(&mut parts, [127, 0, 0, 1].into(), ix).with_body(body);
    let f = p.access(&mut cx).expect("no run-time error");
    drop(cx);
    (f, parts.headers, parts.uri.to_string())
}

/// Runs `access` with a body; returns the flow, the headers and the upstream body.
pub(crate) fn run_access_body(
    p: &dyn Plugin,
    ix: &ConsumerIndex,
    mut parts: http::request::Parts,
    body: &[u8],
) -> (Flow, http::HeaderMap, Bytes) {
    let mut cx = RequestCx::new(&mut parts, [127, 0, 0, 1].into(), ix)
        .with_body(Some(Bytes::copy_from_slice(body)));
    let f = p.access(&mut cx).expect("no run-time error");
    let b = cx.into_body().unwrap_or_default();
    (f, parts.headers, b)
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Drives a future that needs no runtime (a chain whose plugins never wait on I/O).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
