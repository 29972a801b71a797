//! Entity schema cases ported from Kong's unit specs (spec/01-unit/01-db/01-schema).

use crate::schema::{Context, Operation};
use crate::{by_name, Row};
use serde_json::{json, Value};

fn process(entity: &str, v: Value) -> Result<Row, Value> {
    let Value::Object(m) = v else {
        panic!("object")
    };
    by_name(entity)
        .unwrap()
        .process(m, &Context::new(Operation::Insert))
        .map_err(|e| e.to_json())
}

fn field_err(entity: &str, v: Value, field: &str) -> Value {
    process(entity, v).expect_err("should fail")["fields"][field].clone()
}

#[test]
fn services_url_shorthand() {
    let cases = [
        ("http://example.com", "http", "example.com", 80, Value::Null),
        (
            "https://example.com",
            "https",
            "example.com",
            443,
            Value::Null,
        ),
        (
            "https://example.com:8443/p",
            "https",
            "example.com",
            8443,
            json!("/p"),
        ),
        (
            "grpc://example.com:50051",
            "grpc",
            "example.com",
            50051,
            Value::Null,
        ),
        (
            "http://example.com:443",
            "http",
            "example.com",
            443,
            Value::Null,
        ),
    ];
    for (url, proto, host, port, path) in cases {
        let r = process("services", json!({ "url": url })).unwrap();
        assert_eq!(
            (
                r["protocol"].clone(),
                r["host"].clone(),
                r["port"].clone(),
                r["path"].clone()
            ),
            (json!(proto), json!(host), json!(port), path),
            "{url}"
        );
    }
    assert_eq!(
        field_err("services", json!({"url": "example.com"}), "url"),
        "missing host in url"
    );
}

#[test]
fn services_constraints() {
    assert_eq!(
        field_err("services", json!({"host": "a.com", "port": 65536}), "port"),
        "value should be between 0 and 65535"
    );
    assert_eq!(
        field_err(
            "services",
            json!({"host": "a.com", "protocol": "ftp"}),
            "protocol"
        ),
        "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"
    );
    assert_eq!(
        field_err("services", json!({"host": "a.com", "path": "foo"}), "path"),
        "should start with: /"
    );
    assert_eq!(
        field_err(
            "services",
            json!({"host": "a.com", "path": "/a//b"}),
            "path"
        ),
        "must not have empty segments"
    );
    assert_eq!(
        field_err(
            "services",
            json!({"host": "a.com", "connect_timeout": 0}),
            "connect_timeout"
        ),
        "value should be between 1 and 2147483646"
    );
    assert_eq!(
        field_err(
            "services",
            json!({"host": "a.com", "protocol": "grpc", "path": "/x"}),
            "path"
        ),
        "value must be null"
    );
    assert_eq!(
        field_err(
            "services",
            json!({"host": "a.com", "tls_verify": true}),
            "tls_verify"
        ),
        "value must be null"
    );
    assert!(process(
        "services",
        json!({"host": "a.com", "protocol": "https", "tls_verify": true})
    )
    .is_ok());
    assert_eq!(field_err("services", json!({"host": "a.com", "name": "has space"}), "name"),
               "invalid value 'has space': the only accepted ascii characters are alphanumerics or ., -, _, and ~");
    assert_eq!(
        field_err(
            "services",
            json!({"host": "a.com", "tags": ["a,b"]}),
            "tags"
        )[0],
        "invalid tag 'a,b': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
    );
}

#[test]
fn routes_checks() {
    let ok = |v| process("routes", v).expect("valid route");
    let r = ok(json!({"paths": ["/"]}));
    assert_eq!(r["regex_priority"], 0);
    assert_eq!(r["preserve_host"], false);
    ok(json!({"hosts": ["*.example.com", "example.*", "example.com:8080"]}));
    ok(json!({"protocols": ["grpc"], "paths": ["/svc"], "strip_path": false}));
    ok(json!({"protocols": ["https"], "snis": ["a.com"]}));
    assert_eq!(
        field_err("routes", json!({"hosts": ["a.*.com"]}), "hosts")[0],
        "invalid wildcard: must be placed at leftmost or rightmost label"
    );
    assert_eq!(
        field_err("routes", json!({"hosts": ["*.a.*"]}), "hosts")[0],
        "invalid wildcard: must have at most one wildcard"
    );
    assert_eq!(
        field_err("routes", json!({"methods": ["get"]}), "methods")[0],
        "invalid value: get"
    );
    assert_eq!(
        field_err("routes", json!({"paths": ["foo"]}), "paths")[0],
        "should start with: / (fixed path) or ~/ (regex path)"
    );
    assert_eq!(
        field_err("routes", json!({"headers": {"Host": ["x"]}}), "headers")["Host"],
        "cannot contain 'host' header, which must be specified in the 'hosts' attribute"
    );
    assert_eq!(
        field_err(
            "routes",
            json!({"protocols": ["http", "grpc"], "paths": ["/"]}),
            "protocols"
        ),
        "these sets are mutually exclusive: ('http', 'https'), ('grpc', 'grpcs')"
    );
    assert_eq!(
        field_err(
            "routes",
            json!({"protocols": ["http"], "paths": ["/"], "snis": ["a.com"]}),
            "snis"
        ),
        "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'"
    );
    assert_eq!(
        field_err(
            "routes",
            json!({"protocols": ["grpc"], "paths": ["/"]}),
            "strip_path"
        ),
        "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'"
    );
    assert_eq!(process("routes", json!({"protocols": ["http"]})).unwrap_err()["message"],
               "schema violation (must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http')");
    assert_eq!(
        field_err(
            "routes",
            json!({"paths": ["/"], "https_redirect_status_code": 303}),
            "https_redirect_status_code"
        ),
        "expected one of: 426, 301, 302, 307, 308"
    );
}

#[test]
fn upstreams_targets_and_credentials() {
    let u = process("upstreams", json!({"name": "svc.internal"})).unwrap();
    assert_eq!(u["hash_on_cookie_path"], "/");
    assert_eq!(u["healthchecks"]["active"]["concurrency"], 10);
    assert_eq!(u["healthchecks"]["threshold"], 0);
    assert_eq!(
        field_err(
            "upstreams",
            json!({"name": "svc", "hash_on": "header"}),
            "hash_on_header"
        ),
        "required field missing"
    );
    assert_eq!(
        field_err(
            "upstreams",
            json!({"name": "svc", "hash_fallback": "ip"}),
            "hash_fallback"
        ),
        "expected one of: none"
    );
    assert_eq!(
        field_err("upstreams", json!({"name": "svc", "slots": 5}), "slots"),
        "value should be between 10 and 65536"
    );

    let cid = "6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a";
    let t = process(
        "targets",
        json!({"upstream": {"id": cid}, "target": "example.com"}),
    )
    .unwrap();
    assert_eq!(t["target"], "example.com:8000");
    assert_eq!(
        field_err(
            "targets",
            json!({"upstream": {"id": cid}, "target": "exa mple"}),
            "target"
        ),
        "Invalid target ('exa mple'); not a valid hostname or ip address"
    );
    assert_eq!(
        field_err(
            "keyauth_credentials",
            json!({"consumer": {"id": "nope"}}),
            "consumer"
        )["id"],
        "expected a valid UUID"
    );
    let b = process(
        "basicauth_credentials",
        json!({"consumer": {"id": cid}, "username": "u", "password": "p"}),
    )
    .unwrap();
    assert_eq!(b["password"], crate::entities::hash_password(cid, "p"));
}

#[test]
fn foreign_keys_ignore_fields_beside_a_valid_id() {
    // decK validates routes with `"service": {"id", "name"}`; Kong checks the primary key only.
    let id = "6a1c2c3e-7d0e-4a53-9a53-2f4c3b6f0d11";
    let row = process(
        "routes",
        json!({ "paths": ["/a"], "service": { "id": id, "name": "svc" } }),
    )
    .unwrap();
    assert_eq!(row["service"], json!({ "id": id }));
    // Without an id the other fields are still refused.
    let err = field_err(
        "routes",
        json!({ "paths": ["/a"], "service": { "name": "svc" } }),
        "service",
    );
    assert_eq!(err["id"], "required field missing");
    assert_eq!(err["name"], "unknown field");
}

#[test]
fn schema_json_marks_records_required() {
    // Kong's `make_records_required`: decK fills nested defaults only under required records.
    let j = crate::schema::json::entity_json(by_name("upstreams").unwrap());
    let hc = j["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("healthchecks"))
        .unwrap();
    assert_eq!(hc["required"], true);
    let active = hc["fields"][0]["active"].clone();
    assert_eq!(active["required"], true);
    assert_eq!(active["fields"][7]["healthy"]["required"], true);
}

#[test]
fn whole_numbers_print_as_cjson_does() {
    // go-kong decodes an upstream's health-check timeout into an int: `1.0` breaks decK.
    let row = process("upstreams", json!({ "name": "u" })).unwrap();
    let active = &row["healthchecks"]["active"];
    assert_eq!(serde_json::to_string(&active["timeout"]).unwrap(), "1");
    assert_eq!(
        serde_json::to_string(&active["healthy"]["interval"]).unwrap(),
        "0"
    );
    let row = process(
        "upstreams",
        json!({ "name": "u", "healthchecks": { "active": { "timeout": 2.5 } } }),
    )
    .unwrap();
    assert_eq!(row["healthchecks"]["active"]["timeout"], json!(2.5));
    let j = crate::schema::json::entity_json(by_name("upstreams").unwrap()).to_string();
    assert!(
        j.contains(r#""timeout":{"type":"number","default":1,"#),
        "{j}"
    );
}

#[test]
fn certificates_accept_env_references_in_referenceable_fields() {
    // Kong checks only the shape of a reference (the PEM checks and the key match wait for
    // the value); other vaults are refused here because this build cannot resolve them.
    let row = process(
        "certificates",
        json!({"cert": "{vault://env/tls/cert}", "key": "{vault://env/tls-key#2}"}),
    )
    .unwrap();
    assert_eq!(row["key"], "{vault://env/tls-key#2}");
    let e = field_err(
        "certificates",
        json!({"cert": "{vault://hcv/c}", "key": "{vault://env/k}"}),
        "cert",
    );
    assert!(
        e.as_str().unwrap().contains("vault 'hcv' is not supported"),
        "{e}"
    );
    let e = field_err(
        "certificates",
        json!({"cert": "{vault://env/c}", "key": "{vault://env}"}),
        "key",
    );
    assert!(e.as_str().unwrap().contains("empty path"), "{e}");
    // A field that is not referenceable takes the text literally: a CA certificate is PEM.
    let e = field_err(
        "ca_certificates",
        json!({"cert": "{vault://env/ca}"}),
        "cert",
    );
    assert!(e.is_string(), "{e}");
}
