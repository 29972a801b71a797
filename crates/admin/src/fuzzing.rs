//! Entry point for the `admin_body` cargo-fuzz target in `fuzz/` and for the seed-corpus
//! test: arbitrary bytes with an arbitrary content type through the Admin API's body
//! parsing (JSON, Kong's nested form-urlencoded, multipart) and then through an entity
//! schema's validation, as `POST /<entity>` does. Never panics on any input; asserts its
//! own invariants.

use crate::body;
use crate::error::ApiError;
use axum::response::IntoResponse;
use serde_json::{Map, Value};
use std::future::Future;
use std::task::{Context as TaskContext, Poll, Waker};
use tollgate_model::schema::{Context, Operation};
use tollgate_model::{Error, ErrorCode, PluginCatalog, PluginDef};

/// Content types the first input byte picks from (anything else: the next bytes, up to a
/// newline, are the content type itself).
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=UTF-8"),
    Some("multipart/form-data; boundary=X"),
    Some("multipart/form-data; boundary=\"----tollgate\""),
    Some("Multipart/Form-Data; boundary=X"),
    Some("multipart/form-data"),
    Some("text/plain"),
    Some(""),
];

/// Drives a future that never waits on I/O (the body is all in memory) to completion.
fn run_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = TaskContext::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("body parsing did not finish on an in-memory body");
}

/// The plugins of the `plugins` entity's validation: test data in the shape of Kong's.
fn catalog() -> &'static PluginCatalog {
    use std::sync::OnceLock;
    use tollgate_model::{Field, Type};
    static CATALOG: OnceLock<PluginCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
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
                .default(serde_json::json!(["apikey"])),
                Field::new("hide_credentials", Type::Boolean)
                    .required()
                    .default(serde_json::json!(false)),
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
            config: vec![
                Field::new("minute", Type::Number),
                Field::new("hour", Type::Integer),
            ],
            config_checks: Vec::new(),
            checks: Vec::new(),
            no_consumer: false,
            no_route: false,
            no_service: false,
            protocols: None,
        };
        PluginCatalog::new(vec![key_auth, rate], &["bundled".to_string()]).expect("catalog")
    })
}

/// An error the Admin API would send: a 4xx (or a DAO error's status) with a JSON body
/// holding a `message`, and Kong's `code`/`name` for DAO errors.
fn assert_kong_error(e: ApiError) {
    if let ApiError::Model(m) = &e {
        assert_model_error(m);
    }
    let resp = e.into_response();
    let status = resp.status().as_u16();
    assert!(
        (400..500).contains(&status),
        "body parsing answered {status}"
    );
}

fn assert_model_error(e: &Error) {
    let body = e.to_json();
    assert_eq!(body["code"], Value::from(e.code() as i64), "{body}");
    assert!(body["name"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(
        e.code() != ErrorCode::DatabaseError,
        "validation raised a database error: {body}"
    );
}

/// Form and multipart values are strings nested in objects and arrays: never a null, a
/// number or an empty container (each leaf came from one `key=value` pair).
fn form_shaped(v: &Value, leaves: &mut usize) -> bool {
    match v {
        Value::String(_) => {
            *leaves += 1;
            true
        }
        Value::Array(a) => !a.is_empty() && a.iter().all(|x| form_shaped(x, leaves)),
        Value::Object(m) => !m.is_empty() && m.values().all(|x| form_shaped(x, leaves)),
        _ => false,
    }
}

/// Parses `data` as an Admin API request body and validates it against an entity schema.
///
/// Input layout: byte 0 picks the content type, byte 1 the entity and operation, the rest
/// is the body.
pub fn admin_body(data: &[u8]) {
    let (&ct_byte, rest) = data.split_first().unwrap_or((&0, &[]));
    let (&entity_byte, mut body_bytes) = rest.split_first().unwrap_or((&0, &[]));
    let owned_ct;
    let ct = match CONTENT_TYPES.get(ct_byte as usize) {
        Some(ct) => *ct,
        None => {
            let end = body_bytes
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(body_bytes.len());
            owned_ct = String::from_utf8_lossy(&body_bytes[..end]).into_owned();
            body_bytes = body_bytes.get(end + 1..).unwrap_or(&[]);
            Some(owned_ct.as_str())
        }
    };

    let parsed = match run_ready(body::parse(ct, body_bytes)) {
        Ok(b) => b,
        Err(e) => return assert_kong_error(e),
    };
    let lower = ct.unwrap_or("").to_ascii_lowercase();
    let is_form = lower.starts_with("application/x-www-form-urlencoded")
        || lower.starts_with("multipart/form-data");
    if body_bytes.iter().all(u8::is_ascii_whitespace) {
        assert!(parsed.map.is_empty());
    } else if is_form {
        assert!(parsed.coerce, "form values must be coerced");
        let mut leaves = 0;
        for v in parsed.map.values() {
            assert!(form_shaped(v, &mut leaves), "not form-shaped: {v}");
        }
        if lower.starts_with("application/x-www-form-urlencoded") {
            let pairs = form_urlencoded::parse(body_bytes).count();
            assert!(leaves <= pairs, "{leaves} values from {pairs} pairs");
        }
    } else {
        // JSON: exactly serde_json's object.
        assert!(!parsed.coerce);
        let v: Value = serde_json::from_slice(body_bytes).expect("parsed, so valid JSON");
        assert_eq!(v, Value::Object(parsed.map.clone()));
    }

    let schemas = &*tollgate_model::ENTITIES;
    let schema = &schemas[(entity_byte as usize) % schemas.len()];
    let op = if entity_byte & 0x80 == 0 {
        Operation::Insert
    } else {
        Operation::Upsert
    };
    let cx = Context {
        op,
        coerce: parsed.coerce,
        now: 1_700_000_000.0,
    };
    let sent: Vec<String> = parsed.map.keys().cloned().collect();
    let validated = schema
        .process_with_keys(parsed.map, &sent, &cx)
        .and_then(|mut row| {
            if schema.name == "plugins" {
                catalog().validate(&mut row, &cx)?;
            }
            Ok(row)
        });
    let row = match validated {
        Ok(row) => row,
        Err(e) => return assert_model_error(&e),
    };
    // A stored row is complete: every field of the schema is present.
    for f in &schema.fields {
        assert!(
            row.contains_key(f.name) || schema.transient.contains(&f.name),
            "{}: field {} missing from {row:?}",
            schema.name,
            f.name
        );
    }
    // And it validates again to itself, as a PATCH that changes nothing does (no field sent,
    // so no write-time transformation such as password hashing runs twice).
    let again_cx = Context {
        op: Operation::Update,
        coerce: false,
        now: cx.now,
    };
    let again = schema
        .process_with_keys(row.clone(), &[], &again_cx)
        .and_then(|mut r| {
            if schema.name == "plugins" {
                catalog().validate(&mut r, &again_cx)?;
            }
            Ok(r)
        });
    match again {
        Ok(r) => assert_eq!(
            Value::Object(strip_times(r)),
            Value::Object(strip_times(row)),
            "{}: re-validating a valid row changed it",
            schema.name
        ),
        Err(e) => panic!(
            "{}: a valid row fails validation: {} {:?}\nrow: {row:?}",
            schema.name,
            e.message(),
            e.fields()
        ),
    }
}

/// `updated_at` moves on an update; everything else must stay.
fn strip_times(mut row: Map<String, Value>) -> Map<String, Value> {
    row.remove("updated_at");
    row
}

/// The declarative configuration parser (`POST /config`, `declarative_config`): arbitrary
/// text as YAML or JSON.
///
/// Invariants: a failure is Kong's declarative error (code 14, `{code, name, message,
/// fields}`, plus `flattened_errors` when asked for); success and failure do not depend on
/// `flatten_errors`; a parsed configuration exported as `GET /config` does (JSON and YAML)
/// parses back to the same entities.
pub fn declarative(data: &[u8]) {
    use tollgate_model::declarative::{self as decl, ParseOptions};
    let text = String::from_utf8_lossy(data);
    let cat = catalog();
    let opts = ParseOptions {
        flatten_errors: false,
        now: Some(1_700_000_000.0),
    };

    // The loader alone: an object, or Kong's error.
    match decl::load(&text) {
        Ok(v) => assert!(v.is_object()),
        Err(e) => assert_declarative_error(&e, false),
    }

    let first = decl::parse_with(&text, cat, &opts);
    let flat = decl::parse_with(
        &text,
        cat,
        &ParseOptions {
            flatten_errors: true,
            ..opts
        },
    );
    let parsed = match (first, flat) {
        (Err(e), Err(f)) => {
            assert_declarative_error(&e, false);
            assert_declarative_error(&f, true);
            return;
        }
        (Ok(p), Ok(q)) => {
            assert_eq!(
                (&p.format_version, p.transform, &p.hash),
                (&q.format_version, q.transform, &q.hash)
            );
            assert_eq!(
                canonical(&p.set, &text),
                canonical(&q.set, &text),
                "flatten_errors changed a successful parse"
            );
            p
        }
        (a, b) => panic!(
            "flatten_errors changed the outcome: {:?} vs {:?}",
            a.map(|_| ()).map_err(|e| e.message().to_string()),
            b.map(|_| ()).map_err(|e| e.message().to_string())
        ),
    };
    assert_eq!(parsed.format_version, "3.0");
    assert_eq!(parsed.hash.len(), 32);
    if parsed.set.is_empty() {
        assert_eq!(parsed.hash, decl::EMPTY_CONFIG_HASH);
    }

    // GET /config → POST /config gives the same entities, as JSON and as YAML.
    let exported = decl::export(&parsed.set);
    let again = decl::parse_value_with(exported.clone(), cat, &opts).unwrap_or_else(|e| {
        panic!(
            "export does not parse back: {} {:?}\nexport: {exported}",
            e.message(),
            e.fields()
        )
    });
    assert_eq!(again.set, parsed.set, "export → parse changed the entities");
    let yaml = decl::to_yaml(&exported);
    let from_yaml = decl::parse_with(&yaml, cat, &opts).unwrap_or_else(|e| {
        panic!(
            "exported YAML does not parse back: {} {:?}\nyaml:\n{yaml}",
            e.message(),
            e.fields()
        )
    });
    assert_eq!(
        from_yaml.set, parsed.set,
        "export → YAML → parse changed the entities\nyaml:\n{yaml}"
    );
}

/// The set exported as JSON text, with the ids the parser generated at random (Kong's
/// `uuid()` for entities without a deterministic id, e.g. certificates) renamed in order
/// of appearance, so that two parses of one file compare equal.
fn canonical(set: &tollgate_model::declarative::EntitySet, text: &str) -> String {
    fn ids<'v>(v: &'v Value, text: &str, out: &mut Vec<&'v str>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match x.as_str() {
                        Some(id) if k == "id" && !text.contains(id) && !out.contains(&id) => {
                            out.push(id)
                        }
                        _ => ids(x, text, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| ids(x, text, out)),
            _ => {}
        }
    }
    let exported = tollgate_model::declarative::export(set);
    let mut generated = Vec::new();
    ids(&exported, text, &mut generated);
    let mut out = exported.to_string();
    for (i, id) in generated.iter().enumerate() {
        out = out.replace(id, &format!("generated-id-{i}"));
    }
    out
}

fn assert_declarative_error(e: &Error, flattened: bool) {
    use tollgate_model::declarative as decl;
    assert_eq!(e.code(), ErrorCode::DeclarativeConfig, "{}", e.message());
    assert_eq!(e.http_status(), 400);
    let body = decl::error_body(e);
    assert_eq!(body["code"], 14, "{body}");
    assert_eq!(body["name"], "invalid declarative configuration", "{body}");
    let msg = body["message"].as_str().expect("message");
    assert!(msg.starts_with("declarative config is invalid: "), "{msg}");
    assert!(body["fields"].is_object(), "{body}");
    assert!(body["fields"].get(decl::FLATTENED_KEY).is_none(), "{body}");
    // Only a flattening parse of a configuration that loaded has `flattened_errors`.
    if let Some(list) = body.get("flattened_errors") {
        assert!(flattened && list.is_array(), "{body}");
    }
    // The body is what the Admin API sends: it must serialise.
    assert!(serde_json::to_string(&body).is_ok());
}
