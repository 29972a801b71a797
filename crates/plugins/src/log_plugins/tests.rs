//! The logging plugins' schemas against Kong's.

use crate::PluginSpec;
use serde_json::{json, Map, Value};

fn validate(spec: &PluginSpec, config: Value) -> Result<Map<String, Value>, String> {
    let cat =
        tollgate_model::PluginCatalog::new(vec![(spec.schema)()], &["bundled".into()]).unwrap();
    let mut row = Map::new();
    row.insert("name".into(), json!(spec.name));
    row.insert("config".into(), config);
    let cx = tollgate_model::schema::Context::new(tollgate_model::schema::Operation::Insert);
    cat.validate(&mut row, &cx)
        .map(|_| row["config"].as_object().unwrap().clone())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn lua_code_is_refused_everywhere() {
    for (spec, cfg) in [
        (
            &super::http_log::SPEC,
            json!({"http_endpoint": "http://h/"}),
        ),
        (&super::file_log::SPEC, json!({"path": "/tmp/x.log"})),
        (&super::tcp_log::SPEC, json!({"host": "h", "port": 1})),
        (&super::udp_log::SPEC, json!({"host": "h", "port": 1})),
        (&super::syslog::SPEC, json!({})),
    ] {
        let mut with_lua = cfg.clone();
        with_lua["custom_fields_by_lua"] = json!({"x": "return 1"});
        let e = validate(spec, with_lua).unwrap_err();
        assert!(e.contains(super::ERR_LUA), "{}: {e}", spec.name);
        let mut empty = cfg.clone();
        empty["custom_fields_by_lua"] = json!({});
        validate(spec, empty).unwrap();
        let c = validate(spec, cfg).unwrap();
        assert_eq!(c["custom_fields_by_lua"], Value::Null, "{}", spec.name);
    }
}

#[test]
fn http_log_schema_follows_kong() {
    let spec = &super::http_log::SPEC;
    let c = validate(spec, json!({"http_endpoint": "http://h/"})).unwrap();
    assert_eq!(c["method"], "POST");
    assert_eq!(c["content_type"], "application/json");
    assert_eq!(c["timeout"], 10000);
    assert_eq!(c["keepalive"], 60000);
    assert_eq!(c["retry_count"], Value::Null);
    let q = &c["queue"];
    assert_eq!(q["max_batch_size"], 1);
    assert_eq!(q["max_coalescing_delay"], 1);
    assert_eq!(q["max_entries"], 10000);
    assert_eq!(q["max_bytes"], Value::Null);
    assert_eq!(q["max_retry_time"], 60);
    assert_eq!(q["initial_retry_delay"], 0.01);
    assert_eq!(q["max_retry_delay"], 60);
    assert_eq!(q["concurrency_limit"], 1);
    let e = validate(spec, json!({})).unwrap_err();
    assert!(e.contains("http_endpoint"), "{e}");
    let e = validate(spec, json!({"http_endpoint": "http://h/", "method": "GET"})).unwrap_err();
    assert!(e.contains("expected one of: POST, PUT, PATCH"), "{e}");
    for (h, msg) in [
        ("Host", "cannot contain 'Host' header"),
        ("content-length", "cannot contain 'Content-Length' header"),
        ("Content-Type", "cannot contain 'Content-Type' header"),
    ] {
        let e = validate(
            spec,
            json!({"http_endpoint": "http://h/", "headers": {h: "x"}}),
        )
        .unwrap_err();
        assert!(e.contains(msg), "{e}");
    }
    let e = validate(
        spec,
        json!({"http_endpoint": "http://u:p@h/", "headers": {"Authorization": "x"}}),
    )
    .unwrap_err();
    assert!(e.contains(super::http_log::ERR_AUTH_TWICE), "{e}");
    let e = validate(
        spec,
        json!({"http_endpoint": "http://h/", "queue": {"concurrency_limit": 2}}),
    )
    .unwrap_err();
    assert!(e.contains("concurrency_limit"), "{e}");
    let e = validate(
        spec,
        json!({"http_endpoint": "http://h/", "queue": {"initial_retry_delay": 0}}),
    )
    .unwrap_err();
    assert!(
        e.contains("value should be between 0.001 and 1000000"),
        "{e}"
    );
}

#[test]
fn file_log_and_syslog_schemas_follow_kong() {
    let f = &super::file_log::SPEC;
    assert_eq!(
        validate(f, json!({"path": "/tmp/a.log"})).unwrap()["reopen"],
        false
    );
    for bad in ["/tmp/a*b", " /tmp/a", "/tmp/a ", "/tmp/`x`"] {
        let e = validate(f, json!({"path": bad})).unwrap_err();
        assert!(e.contains("not a valid filename"), "{bad}: {e}");
    }
    let s = &super::syslog::SPEC;
    let c = validate(s, json!({})).unwrap();
    assert_eq!(c["log_level"], "info");
    assert_eq!(c["successful_severity"], "info");
    assert_eq!(c["facility"], "user");
    assert!(validate(s, json!({"facility": "local9"})).is_err());
    let t = &super::tcp_log::SPEC;
    let c = validate(t, json!({"host": "h", "port": 1})).unwrap();
    assert_eq!(c["tls"], false);
    assert_eq!(c["keepalive"], 60000);
    assert!(validate(t, json!({"host": "h"})).is_err());
}
