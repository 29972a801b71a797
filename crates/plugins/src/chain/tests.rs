//! Kong's precedence (`lookup_cfg`), every rule, and the consumer re-resolution after
//! authentication.

use super::*;
use crate::testing::{fixture, parts, ALICE, BOB};
use crate::PluginError;
use serde_json::{json, Value};

/// Tags the request with the id of the configuration that ran.
struct Tag(String);

impl Plugin for Tag {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let prev = cx
            .req
            .headers
            .get("x-tag")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("{v},"))
            .unwrap_or_default();
        cx.req
            .headers
            .insert("x-tag", format!("{prev}{}", self.0).parse().unwrap());
        Ok(Flow::Continue)
    }
}

static TAG: PluginSpec = PluginSpec {
    name: "tag",
    priority: 10,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema: || unreachable!(),
    compile: |c| Ok(Box::new(Tag(c["tag"].as_str().unwrap().to_owned()))),
};

/// A high-priority tag plugin, to show that plugins above auth do not see the consumer.
static EARLY: PluginSpec = PluginSpec {
    name: "early",
    priority: 5000,
    ..TAG
};

fn registry(name: &str) -> Option<&'static PluginSpec> {
    match name {
        "tag" => Some(&TAG),
        "early" => Some(&EARLY),
        n => crate::spec(n),
    }
}

fn row(name: &str, tag: &str, r: Option<&str>, s: Option<&str>, c: Option<&str>) -> Row {
    let fk = |v: Option<&str>| v.map_or(Value::Null, |id| json!({ "id": id }));
    json!({
        "id": tag, "name": name, "enabled": true, "protocols": ["http", "https"],
        "config": { "tag": tag }, "route": fk(r), "service": fk(s), "consumer": fk(c),
    })
    .as_object()
    .unwrap()
    .clone()
}

fn build(rows: Vec<Row>) -> Plugins {
    let mut d = BTreeMap::new();
    d.insert("plugins".to_string(), rows);
    Plugins::build_with(&d, registry)
}

fn all_combos() -> Plugins {
    build(vec![
        row("tag", "G", None, None, None),
        row("tag", "S", None, Some("s1"), None),
        row("tag", "R", Some("r1"), None, None),
        row("tag", "C", None, None, Some(ALICE)),
        row("tag", "RS", Some("r1"), Some("s1"), None),
        row("tag", "SC", None, Some("s1"), Some(ALICE)),
        row("tag", "RC", Some("r1"), None, Some(ALICE)),
        row("tag", "RSC", Some("r1"), Some("s1"), Some(ALICE)),
    ])
}

fn resolved(p: &Plugins, r: Option<&str>, s: Option<&str>, c: Option<&str>) -> Option<String> {
    p.resolve("tag", r, s, c).map(|i| i.id.to_string())
}

#[test]
fn most_specific_wins_in_kong_order() {
    // Remove the winner each time: the next rule must take over.
    let order = ["RSC", "RC", "SC", "RS", "C", "R", "S", "G"];
    let mut rows: Vec<Row> = all_combos_rows();
    for expect in order {
        let p = build(rows.clone());
        assert_eq!(
            resolved(&p, Some("r1"), Some("s1"), Some(ALICE)).as_deref(),
            Some(expect)
        );
        rows.retain(|r| r["id"] != expect);
    }
    let p = build(rows);
    assert_eq!(resolved(&p, Some("r1"), Some("s1"), Some(ALICE)), None);
}

fn all_combos_rows() -> Vec<Row> {
    vec![
        row("tag", "G", None, None, None),
        row("tag", "S", None, Some("s1"), None),
        row("tag", "R", Some("r1"), None, None),
        row("tag", "C", None, None, Some(ALICE)),
        row("tag", "RS", Some("r1"), Some("s1"), None),
        row("tag", "SC", None, Some("s1"), Some(ALICE)),
        row("tag", "RC", Some("r1"), None, Some(ALICE)),
        row("tag", "RSC", Some("r1"), Some("s1"), Some(ALICE)),
    ]
}

#[test]
fn other_routes_services_and_consumers_fall_through() {
    let p = all_combos();
    let r = |r, s, c| resolved(&p, r, s, c);
    assert_eq!(
        r(Some("r2"), Some("s1"), Some(ALICE)).as_deref(),
        Some("SC")
    );
    assert_eq!(
        r(Some("r1"), Some("s2"), Some(ALICE)).as_deref(),
        Some("RC")
    );
    assert_eq!(r(Some("r2"), Some("s2"), Some(ALICE)).as_deref(), Some("C"));
    assert_eq!(r(Some("r1"), Some("s1"), Some(BOB)).as_deref(), Some("RS"));
    assert_eq!(r(Some("r1"), Some("s2"), Some(BOB)).as_deref(), Some("R"));
    assert_eq!(r(Some("r2"), Some("s1"), None).as_deref(), Some("S"));
    assert_eq!(r(Some("r2"), Some("s2"), None).as_deref(), Some("G"));
    // A route without a service.
    assert_eq!(r(Some("r1"), None, None).as_deref(), Some("R"));
    assert_eq!(r(Some("r1"), None, Some(ALICE)).as_deref(), Some("RC"));
}

#[test]
fn disabled_and_non_http_configs_do_not_shadow() {
    let mut rs = row("tag", "R", Some("r1"), None, None);
    rs.insert("enabled".into(), json!(false));
    let mut tcp = row("tag", "S", None, Some("s1"), None);
    tcp.insert("protocols".into(), json!(["tcp"]));
    let p = build(vec![row("tag", "G", None, None, None), rs, tcp]);
    assert_eq!(
        resolved(&p, Some("r1"), Some("s1"), None).as_deref(),
        Some("G")
    );
}

#[test]
fn no_consumer_plugins_ignore_the_consumer_dimension() {
    let mut d = BTreeMap::new();
    let mut ka = row("key-auth", "ka", Some("r1"), None, None);
    ka.insert("config".into(), json!({}));
    d.insert("plugins".to_string(), vec![ka]);
    let p = Plugins::build_with(&d, registry);
    assert_eq!(
        p.resolve("key-auth", Some("r1"), None, Some(ALICE))
            .map(|i| &*i.id),
        Some("ka")
    );
}

fn key_auth_row(id: &str) -> Row {
    let mut r = row("key-auth", id, None, None, None);
    r.insert(
        "config".into(),
        Value::Object(crate::testing::defaults(&crate::key_auth::SPEC, json!({}))),
    );
    r
}

/// Runs a route's chain and returns the flow and the `x-tag` the upstream would get.
fn run(chain: &Chain, headers: &[(&str, &str)]) -> (bool, Option<String>) {
    let ix = fixture();
    let mut pr = parts("GET", "/", headers);
    let mut cx =
        RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix).with_route(Some("r1"), Some("s1"));
    let mut collected = Collected::new();
    let f = crate::testing::block_on(chain.access(&mut cx, &mut collected));
    drop(cx);
    let tag = pr
        .headers
        .get("x-tag")
        .map(|v| v.to_str().unwrap().to_owned());
    (f.is_continue(), tag)
}

#[test]
fn consumer_configs_are_resolved_after_authentication() {
    let p = build(vec![
        key_auth_row("ka"),
        row("tag", "R", Some("r1"), None, None),
        row("tag", "C-alice", None, None, Some(ALICE)),
        row("early", "E-global", None, None, None),
        row("early", "E-alice", None, None, Some(ALICE)),
    ]);
    let chain = p.chain(Some("r1"), Some("s1"));
    let names: Vec<_> = chain.slots().iter().map(|s| s.spec.name).collect();
    assert_eq!(names, ["early", "key-auth", "tag"], "priority order");
    // alice: `tag` (below key-auth) sees her; `early` (above it) does not.
    assert_eq!(
        run(&chain, &[("apikey", "alice-key")]),
        (true, Some("E-global,C-alice".into()))
    );
    assert_eq!(
        run(&chain, &[("apikey", "bob-key")]),
        (true, Some("E-global,R".into()))
    );
    // Rejected by key-auth: the plugins below it do not run.
    assert_eq!(run(&chain, &[]), (false, Some("E-global".into())));
}

#[test]
fn consumer_only_configs_apply_to_any_route_with_an_auth_plugin() {
    let p = build(vec![
        key_auth_row("ka"),
        row("tag", "C-alice", None, None, Some(ALICE)),
    ]);
    let chain = p.chain(Some("elsewhere"), None);
    assert_eq!(chain.slots().len(), 2);
    // Without any plugin that applies, a route's chain is empty (and free).
    let p = build(vec![
        row("tag", "C-alice", None, None, Some(ALICE)),
        row("tag", "R", Some("r1"), None, None),
    ]);
    assert!(p.chain(Some("r2"), Some("s2")).is_empty());
    assert!(!p.chain(Some("r1"), None).is_empty());
    assert!(Plugins::default().chain(Some("r1"), None).is_empty());
}

#[test]
fn a_config_that_does_not_compile_fails_its_requests() {
    let mut bad = row("key-auth", "bad", None, None, None);
    bad.insert("config".into(), json!({"key_names": "not-an-array"}));
    let mut unknown = row("nope", "u", Some("r9"), None, None);
    unknown.insert("config".into(), json!({}));
    let p = build(vec![bad, unknown]);
    let chain = p.chain(Some("r1"), Some("s1"));
    let ix = fixture();
    let mut pr = parts("GET", "/", &[("apikey", "alice-key")]);
    let mut cx = RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix);
    let e = crate::testing::block_on(chain.access(&mut cx, &mut Collected::new())).unwrap_exit();
    assert_eq!(
        (e.status, e.message()),
        (500, "An unexpected error occurred")
    );
    let chain = p.chain(Some("r9"), None);
    let mut cx = RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix);
    assert_eq!(
        crate::testing::block_on(chain.access(&mut cx, &mut Collected::new()))
            .unwrap_exit()
            .status,
        500
    );
}

#[test]
fn an_unresolvable_reference_fails_even_a_log_only_plugin() {
    // http-log runs only in the log phase: its broken instance still fails the request.
    let mut log = row("http-log", "hl", Some("r1"), None, None);
    let config = crate::testing::defaults(
        crate::spec("http-log").unwrap(),
        json!({"http_endpoint": "http://127.0.0.1:9/",
               "headers": {"x-token": "{vault://env/tg_chain_test_unset}"}}),
    );
    log.insert("config".into(), Value::Object(config));
    let p = build(vec![log]);
    let chain = p.chain(Some("r1"), None);
    let ix = fixture();
    let mut pr = parts("GET", "/", &[]);
    let mut cx = RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix);
    let e = crate::testing::block_on(chain.access(&mut cx, &mut Collected::new())).unwrap_exit();
    assert_eq!(e.status, 500);
}

#[test]
fn references_resolve_only_in_referenceable_fields() {
    // PATH is set in any test process.
    let path = std::env::var("PATH").unwrap();
    let spec = crate::spec("http-log").unwrap();
    let config = json!({"http_endpoint": "{vault://env/path}",
                        "content_type": "{vault://env/path}",
                        "headers": {"x-token": "{vault://env/path}"}});
    let out = resolve_references(spec, config).unwrap();
    assert_eq!(out["headers"]["x-token"], path.as_str());
    assert_eq!(out["http_endpoint"], path.as_str());
    // Not referenceable: kept as written.
    assert_eq!(out["content_type"], "{vault://env/path}");
    let unset = json!({"headers": {"x": "{vault://env/tg_chain_test_unset}"}});
    let e = resolve_references(spec, unset).unwrap_err();
    assert!(e.contains("{vault://env/tg_chain_test_unset}"), "{e}");
}
