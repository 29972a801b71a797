use super::*;
use crate::plugin::PluginDef;
use crate::schema::{Field, Type};
use serde_json::json;

const NOW: f64 = 1_700_000_000.0;

fn opts() -> ParseOptions {
    ParseOptions {
        flatten_errors: false,
        now: Some(NOW),
    }
}

/// A key-auth-shaped plugin and a small rate-limiting one: test data only.
fn catalog() -> PluginCatalog {
    let key_auth = PluginDef {
        name: "key-auth",
        priority: 1250,
        version: "3.0.0",
        config: vec![
            Field::new(
                "key_names",
                Type::Array(Box::new(Field::new("key_name", Type::String).required())),
            )
            .required()
            .default(json!(["apikey"])),
            Field::new("hide_credentials", Type::Boolean)
                .required()
                .default(json!(false)),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: true,
        no_route: false,
        no_service: false,
        protocols: None,
    };
    let rate = PluginDef {
        name: "rate-limiting",
        priority: 910,
        version: "3.0.0",
        config: vec![Field::new("minute", Type::Number)],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    };
    PluginCatalog::new(vec![key_auth, rate], &["bundled".to_string()]).expect("catalog")
}

/// A parse result with its rows as maps, for indexing in assertions.
struct Done {
    set: Maps,
    format_version: String,
    transform: bool,
    hash: String,
    raw: EntitySet,
}

#[derive(Debug, PartialEq)]
struct Maps {
    entities: BTreeMap<String, Vec<Row>>,
}

impl Maps {
    fn rows(&self, entity: &str) -> &[Row] {
        self.entities.get(entity).map(Vec::as_slice).unwrap_or(&[])
    }
}

fn ok(text: &str) -> Done {
    match parse_with(text, &catalog(), &opts()) {
        Ok(p) => Done {
            set: Maps {
                entities: p.set.clone().into_dataset(),
            },
            format_version: p.format_version,
            transform: p.transform,
            hash: p.hash,
            raw: p.set,
        },
        Err(e) => panic!("{}: {:?}", e.message(), e.fields()),
    }
}

fn err(text: &str) -> Error {
    parse_with(text, &catalog(), &opts()).expect_err("should fail")
}

fn find<'a>(set: &'a Maps, entity: &str, field: &str, value: &str) -> &'a Row {
    set.rows(entity)
        .iter()
        .find(|r| r.get(field).and_then(Value::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no {entity} with {field}={value}"))
}

fn fk(row: &Row, field: &str) -> String {
    row[field]["id"].as_str().unwrap_or_default().to_string()
}

const NESTED: &str = r#"
_format_version: "3.0"
_comment: a comment
services:
- name: svc
  url: http://example.com:8080/api
  routes:
  - name: r1
    paths: [/one]
    plugins:
    - name: key-auth
  plugins:
  - name: rate-limiting
    config:
      minute: 10
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
  basicauth_credentials:
  - username: alice-basic
    password: secret
  acls:
  - group: admins
upstreams:
- name: up
  targets:
  - target: 10.0.0.1:80
"#;

const FLAT: &str = r#"
_format_version: "3.0"
services:
- name: svc
  url: http://example.com:8080/api
routes:
- name: r1
  paths: [/one]
  service: svc
plugins:
- name: key-auth
  route: r1
- name: rate-limiting
  service: svc
  config:
    minute: 10
consumers:
- username: alice
keyauth_credentials:
- key: alice-key
  consumer: alice
basicauth_credentials:
- username: alice-basic
  password: secret
  consumer: alice
acls:
- group: admins
  consumer: alice
upstreams:
- name: up
targets:
- target: 10.0.0.1:80
  upstream: up
"#;

#[test]
fn known_entities_follow_kongs_topological_order() {
    let names: Vec<&str> = known_entities().iter().map(|s| s.name).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).expect(n);
    for (parent, child) in [
        ("services", "routes"),
        ("routes", "plugins"),
        ("consumers", "plugins"),
        ("consumers", "keyauth_credentials"),
        ("upstreams", "targets"),
        ("certificates", "snis"),
        ("certificates", "services"),
    ] {
        assert!(
            pos(parent) < pos(child),
            "{parent} before {child}: {names:?}"
        );
    }
    assert_eq!(names.len(), entities::ALL.len());
}

#[test]
fn nested_and_flat_forms_give_the_same_set() {
    let nested = ok(NESTED);
    let flat = ok(FLAT);
    assert_eq!(nested.raw.len(), 10);
    assert_eq!(nested.set, flat.set);

    let set = &nested.set;
    let svc = find(set, "services", "name", "svc");
    assert_eq!(svc["host"], "example.com");
    assert_eq!(svc["port"], 8080);
    assert_eq!(svc["path"], "/api");
    assert_eq!(svc["created_at"], 1_700_000_000);
    let route = find(set, "routes", "name", "r1");
    assert_eq!(fk(route, "service"), svc["id"].as_str().unwrap());
    let ka = find(set, "plugins", "name", "key-auth");
    assert_eq!(fk(ka, "route"), route["id"].as_str().unwrap());
    assert!(ka["service"].is_null());
    assert_eq!(ka["config"]["key_names"], json!(["apikey"]));
    let rl = find(set, "plugins", "name", "rate-limiting");
    assert_eq!(fk(rl, "service"), svc["id"].as_str().unwrap());
    let alice = find(set, "consumers", "username", "alice");
    for e in ["keyauth_credentials", "basicauth_credentials", "acls"] {
        assert_eq!(
            fk(&set.rows(e)[0], "consumer"),
            alice["id"].as_str().unwrap(),
            "{e}"
        );
    }
    let up = find(set, "upstreams", "name", "up");
    assert_eq!(
        fk(&set.rows("targets")[0], "upstream"),
        up["id"].as_str().unwrap()
    );
    assert_eq!(nested.format_version, "3.0");
    assert!(nested.transform);
}

#[test]
fn ids_are_kongs_deterministic_uuids() {
    // resty.jit-uuid's documented v5 vector: Kong's uuid-v5 is the standard one.
    let ns = uuid::uuid!("e6ebd542-06ae-11e6-8e82-bba81706b27d");
    assert_eq!(
        uuid::Uuid::new_v5(&ns, b"hello").to_string(),
        "4850816f-1658-5890-8bfd-1ed14251f1f0"
    );
    // v5(v5(fd02801f-…, "consumers"), "bobo"), computed independently.
    assert_eq!(
        generate_id("consumers", "bobo"),
        "a331738c-d6d9-595e-a2cf-9cad8a78d622"
    );
    let a = ok(NESTED);
    let b = ok(NESTED);
    for (name, rows) in &a.set.entities {
        let ids_a: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
        let ids_b: Vec<&Value> = b.set.rows(name).iter().map(|r| &r["id"]).collect();
        assert_eq!(ids_a, ids_b, "{name}");
    }
    let svc = find(&a.set, "services", "name", "svc");
    assert_eq!(svc["id"], generate_id("services", "svc"));
    let alice = find(&a.set, "consumers", "username", "alice");
    let alice_id = alice["id"].as_str().unwrap();
    let acl = &a.set.rows("acls")[0];
    assert_eq!(
        acl["id"],
        generate_id("acls", &format!("acls:*:{alice_id}:admins"))
    );
    let route_id = find(&a.set, "routes", "name", "r1")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ka = find(&a.set, "plugins", "name", "key-auth");
    assert_eq!(
        ka["id"],
        generate_id("plugins", &format!("plugins:*:key-auth:{route_id}::"))
    );
    let basic = &a.set.rows("basicauth_credentials")[0];
    assert_eq!(
        basic["id"],
        generate_id(
            "basicauth_credentials",
            "basicauth_credentials:*:alice-basic"
        )
    );
}

#[test]
fn given_ids_are_kept_and_referenced() {
    let p = ok(r#"
_format_version: "3.0"
services:
- id: 0855b320-0dd2-547d-891d-601e9b38647f
  host: example.com
routes:
- paths: [/a]
  service: 0855b320-0dd2-547d-891d-601e9b38647f
- paths: [/b]
  service: { id: 0855b320-0dd2-547d-891d-601e9b38647f }
plugins:
- name: rate-limiting
  service: { id: 0855b320-0dd2-547d-891d-601e9b38647f }
"#);
    let svc = &p.set.rows("services")[0];
    assert_eq!(svc["id"], "0855b320-0dd2-547d-891d-601e9b38647f");
    for r in p.set.rows("routes") {
        assert_eq!(fk(r, "service"), "0855b320-0dd2-547d-891d-601e9b38647f");
    }
    assert_eq!(
        fk(&p.set.rows("plugins")[0], "service"),
        "0855b320-0dd2-547d-891d-601e9b38647f"
    );
    // Routes without a name get random ids.
    assert_ne!(p.set.rows("routes")[0]["id"], p.set.rows("routes")[1]["id"]);
}

#[test]
fn references_by_name_as_string_or_record() {
    let p = ok(r#"
_format_version: "3.0"
routes:
- name: r
  paths: [/]
  service: { name: s }
services:
- name: s
  host: example.com
keyauth_credentials:
- key: k1
  consumer: { username: bob }
- key: k2
  consumer: bob
consumers:
- username: bob
"#);
    let sid = p.set.rows("services")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fk(&p.set.rows("routes")[0], "service"), sid);
    let bob = p.set.rows("consumers")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for k in p.set.rows("keyauth_credentials") {
        assert_eq!(fk(k, "consumer"), bob);
    }
}

#[test]
fn validation_error_message_matches_kong() {
    // 15-off_spec.lua: "returns 400 on a validation error".
    let e = err("_format_version: \"1.1\"\nservices:\n- port: -12\n");
    assert_eq!(e.code(), ErrorCode::DeclarativeConfig);
    assert_eq!(e.name(), "invalid declarative configuration");
    assert_eq!(
        e.message(),
        "declarative config is invalid: \
         {services={{host=\"required field missing\",port=\"value should be between 0 and 65535\"}}}"
    );
    assert_eq!(
        e.fields().unwrap(),
        &json!({"services": [{"host": "required field missing", "port": "value should be between 0 and 65535"}]})
    );
}

#[test]
fn unserialize_errors_match_kong() {
    let e = err("bobby tables");
    assert_eq!(
        e.message(),
        "declarative config is invalid: {error=\"failed parsing declarative configuration: expected an object\"}"
    );
    assert_eq!(
        e.fields().unwrap(),
        &json!({"error": "failed parsing declarative configuration: expected an object"})
    );
    let e = parse_value(json!(["x"]), &catalog()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::DeclarativeConfig);
}

#[test]
fn every_schema_error_is_reported_at_its_position() {
    let e = err(r#"
_format_version: "3.0"
services:
- name: ok
  host: example.com
  routes:
  - name: fine
    paths: [/]
  - name: bad
    protocols: [nope]
    paths: [/]
- host: example.com
  port: nope
  plugins:
  - name: not-there
  - name: rate-limiting
    config:
      minute: fast
consumers:
- custom_id: x
  keyauth_credentials:
  - key: 12
"#);
    let f = e.fields().unwrap();
    assert_eq!(f["services"][0]["routes"][0], Value::Null);
    assert_eq!(
        f["services"][0]["routes"][1]["protocols"],
        json!(["expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"])
    );
    assert_eq!(f["services"][1]["port"], "expected an integer");
    assert_eq!(
        f["services"][1]["plugins"][0]["name"],
        "plugin 'not-there' not enabled; add it to the 'plugins' configuration property"
    );
    assert_eq!(
        f["services"][1]["plugins"][1]["config"]["minute"],
        "expected a number"
    );
    assert_eq!(
        f["consumers"][0]["keyauth_credentials"][0]["key"],
        "expected a string"
    );
    assert!(e.message().starts_with("declarative config is invalid: {consumers={{keyauth_credentials={{key=\"expected a string\"}}}},services={{routes={[2]={protocols={\"expected one of"), "{}", e.message());
}

#[test]
fn top_level_errors() {
    let e = err("services: []\nfoo: 1\n");
    assert_eq!(
        e.fields().unwrap(),
        &json!({"_format_version": "required field missing", "foo": "unknown field"})
    );
    assert_eq!(
        e.message(),
        "declarative config is invalid: {_format_version=\"required field missing\",foo=\"unknown field\"}"
    );
    let e = err("_format_version: \"0.9\"\n_transform: yes please\nservices: 3\n");
    assert_eq!(
        e.fields().unwrap(),
        &json!({
            "_format_version": "expected one of: 1.1, 2.1, 3.0",
            "_transform": "expected a boolean",
            "services": "expected an array",
        })
    );
    // _comment, _ignore and _workspace are accepted; an empty list is fine.
    let p = ok(
        "_format_version: \"3.0\"\n_comment: hi\n_ignore: [1]\n_workspace: default\nservices:\n",
    );
    assert!(p.raw.is_empty());
    assert_eq!(p.hash, EMPTY_CONFIG_HASH);
}

#[test]
fn uniqueness_errors_match_kong() {
    // 15-off_spec.lua: endpoint key, primary key and plain unique field.
    let e = err(r#"
_format_version: "1.1"
services:
- name: foo
  host: example.com
- name: foo
  host: example.test
"#);
    assert_eq!(
        e.message(),
        "declarative config is invalid: {services={[2]=\"uniqueness violation: 'services' entity with name set to 'foo' already declared\"}}"
    );
    assert_eq!(
        e.fields().unwrap(),
        &json!({"services": [null, "uniqueness violation: 'services' entity with name set to 'foo' already declared"]})
    );
    let e = err(r#"
_format_version: "1.1"
services:
- id: 0855b320-0dd2-547d-891d-601e9b38647f
  name: foo
  host: example.com
- id: 0855b320-0dd2-547d-891d-601e9b38647f
  name: bar
  host: example.test
"#);
    assert_eq!(
        e.fields().unwrap(),
        &json!({"services": [null, "uniqueness violation: 'services' entity with primary key set to '0855b320-0dd2-547d-891d-601e9b38647f' already declared"]})
    );
    let e = err(r#"
_format_version: "1.1"
consumers:
- username: foo
  custom_id: conflict
- username: bar
  custom_id: conflict
"#);
    assert_eq!(
        e.message(),
        "declarative config is invalid: {consumers={bar=\"uniqueness violation: 'consumers' entity with custom_id set to 'conflict' already declared\"}}"
    );
    // A nested duplicate is reported at its nested position.
    let e = err(r#"
_format_version: "3.0"
consumers:
- username: a
  basicauth_credentials:
  - username: user-01
    password: x
- username: b
  basicauth_credentials:
  - username: user-01
    password: y
"#);
    let f = e.fields().unwrap();
    let msgs: Vec<&Value> = (0..2)
        .map(|i| &f["consumers"][i]["basicauth_credentials"][0])
        .collect();
    assert!(
        msgs.contains(&&json!("uniqueness violation: 'basicauth_credentials' entity with username set to 'user-01' already declared")),
        "{f}"
    );
}

#[test]
fn dangling_references_are_reported() {
    // 03-flatten_spec.lua: "fails with missing foreign relationships".
    let e = err(r#"
_format_version: "1.1"
plugins:
- name: rate-limiting
  service: svc1
  consumer: my-consumer
"#);
    let f = e.fields().unwrap();
    let (at, list) = f["plugins"].as_object().unwrap().iter().next().unwrap();
    assert!(crate::schema::is_uuid(at));
    let mut list: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    list.sort();
    assert_eq!(
        list,
        [
            "invalid reference 'consumer: my-consumer' (no such entry in 'consumers')",
            "invalid reference 'service: svc1' (no such entry in 'services')",
        ]
    );
    // #7696: a record reference is shown as JSON, keyed by the entity's name.
    let e = err(r#"
_format_version: "2.1"
services:
- name: my-service-1
  url: http://localhost:8001/status
  routes:
  - name: my-route-1
    service:
      id: "769bdf51-16df-5476-9830-ef26800b5448"
    paths:
    - /status
"#);
    assert_eq!(
        e.fields().unwrap(),
        &json!({"routes": {"my-route-1": ["invalid reference 'service: {\"id\":\"769bdf51-16df-5476-9830-ef26800b5448\"}' (no such entry in 'services')"]}})
    );
    assert_eq!(
        e.message(),
        "declarative config is invalid: {routes={[\"my-route-1\"]={\"invalid reference 'service: {\\\"id\\\":\\\"769bdf51-16df-5476-9830-ef26800b5448\\\"}' (no such entry in 'services')\"}}}"
    );
}

#[test]
fn old_formats_get_regex_paths_migrated() {
    let p = ok(r#"
_format_version: "1.1"
services:
- name: s
  host: example.com
  routes:
  - name: nested
    paths: ["/users/\\d+", "/plain"]
routes:
- name: top
  paths: ["/v1/(?<x>[a-z]+)$"]
  service: s
"#);
    assert_eq!(p.format_version, "3.0");
    let nested = find(&p.set, "routes", "name", "nested");
    assert_eq!(nested["paths"], json!(["~/users/\\d+", "/plain"]));
    let top = find(&p.set, "routes", "name", "top");
    assert_eq!(top["paths"], json!(["~/v1/(?<x>[a-z]+)$"]));
    // 3.0 files are taken as written: a regex without `~` is a (strange) plain path.
    let p = ok("_format_version: \"3.0\"\nroutes:\n- paths: [\"/users/x+\"]\n");
    assert_eq!(p.set.rows("routes")[0]["paths"], json!(["/users/x+"]));
}

#[test]
fn transform_false_keeps_a_hashed_password() {
    let text = |transform: bool| {
        format!(
            "_format_version: \"3.0\"\n_transform: {transform}\nconsumers:\n- username: u\n  basicauth_credentials:\n  - username: b\n    password: secret\n"
        )
    };
    let hashed = ok(&text(true));
    let cid = hashed.set.rows("consumers")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pw = hashed.set.rows("basicauth_credentials")[0]["password"]
        .as_str()
        .unwrap()
        .to_string();
    // Kong's basic-auth hash: sha1(password .. consumer id).
    use sha1::{Digest as _, Sha1};
    let want = hex::encode(Sha1::digest(format!("secret{cid}").as_bytes()));
    assert_eq!(pw, want);
    let kept = ok(&text(false));
    assert!(!kept.transform);
    assert_eq!(
        kept.set.rows("basicauth_credentials")[0]["password"],
        "secret"
    );
}

#[test]
fn export_round_trips() {
    let first = ok(NESTED);
    let exported = export(&first.raw);
    assert_eq!(exported["_format_version"], "3.0");
    assert_eq!(exported["_transform"], false);
    let keys: Vec<&String> = exported.as_object().unwrap().keys().collect();
    let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(pos("services") < pos("routes") && pos("routes") < pos("plugins"));
    assert!(pos("consumers") < pos("keyauth_credentials"));
    // Foreign keys are plain ids; nulls are kept as Kong's export keeps them.
    let route = exported["routes"].as_array().unwrap()[0].clone();
    assert_eq!(route["service"], first.set.rows("services")[0]["id"]);
    assert!(route.get("hosts").is_some_and(Value::is_null));
    assert!(exported["plugins"][0]["consumer"].is_null());

    // Through YAML and back: the same set, passwords not hashed twice.
    let yaml = to_yaml(&exported);
    let second = ok(&yaml);
    assert_eq!(second.set, first.set);
    assert!(!second.transform);
    // And through JSON.
    let third = parse_value_with(exported, &catalog(), &opts()).unwrap();
    assert_eq!(third.set, first.raw);
}

#[test]
fn hashes_are_md5_of_the_input() {
    let p = ok(NESTED);
    assert_eq!(p.hash, hex::encode(Md5::digest(NESTED.as_bytes())));
    let v = load(NESTED).unwrap();
    let a = parse_value_with(v.clone(), &catalog(), &opts()).unwrap();
    let b = parse_value_with(v, &catalog(), &opts()).unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash.len(), 32);
}

#[test]
fn json_input_is_accepted() {
    let p = ok(r#"{"_format_version": "3.0", "consumers": [{"username": "j"}]}"#);
    assert_eq!(
        p.set.rows("consumers")[0]["id"],
        generate_id("consumers", "j")
    );
}

#[test]
fn flattened_errors_follow_kong() {
    let text = r#"
_format_version: "3.0"
services:
- name: svc
  host: localhost
  protocol: nope
  tags: [service-01]
  routes:
  - name: r
    protocols: [http]
    tags: [route-01]
  plugins:
  - name: rate-limiting
    config:
      minute: soon
consumers:
- username: ok
"#;
    let o = ParseOptions {
        flatten_errors: true,
        now: Some(NOW),
    };
    let e = parse_with(text, &catalog(), &o).unwrap_err();
    let list = flattened_errors(&e).expect("flattened");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let by_type = |t: &str| {
        list.iter()
            .find(|x| x["entity_type"] == t)
            .unwrap_or_else(|| panic!("{t}"))
    };
    let svc = by_type("service");
    assert_eq!(svc["entity_name"], "svc");
    assert_eq!(svc["entity_tags"], json!(["service-01"]));
    assert_eq!(
        svc["errors"],
        json!([{"type": "field", "field": "protocol", "message": "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"}])
    );
    assert!(svc["entity"].get("routes").is_none());
    let route = by_type("route");
    assert_eq!(route["errors"][0]["type"], "entity");
    assert_eq!(
        route["errors"][0]["message"],
        "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
    );
    let plugin = by_type("plugin");
    assert_eq!(plugin["errors"][0]["field"], "config.minute");
    let body = error_body(&e);
    assert_eq!(body["code"], 14);
    assert_eq!(body["fields"], json!({}));
    assert_eq!(body["message"], "declarative config is invalid: {}");
    assert_eq!(body["flattened_errors"].as_array().unwrap().len(), 3);
}
