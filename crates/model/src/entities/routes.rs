use super::entity;
use crate::schema::Check;
use crate::schema::{typedefs as t, EntityCheck, EntitySchema, Field, Pred, Type};
use serde_json::{json, Map, Value};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("routes", "routes");
    s.endpoint_key = Some("name");
    let protocols = Field::new(
        "protocols",
        Type::Set(Box::new(t::protocol("protocol").required())),
    )
    .required()
    .default(json!(["http", "https"]))
    .check(Check::LenMin(1))
    .check(Check::MutuallyExclusiveSubsets(vec![
        vec!["http", "https"],
        vec!["tcp", "tls", "udp"],
        vec!["tls_passthrough"],
        vec!["grpc", "grpcs"],
    ]));
    let headers = Field::new(
        "headers",
        Type::Map {
            keys: Box::new(t::header_name("key").check(Check::MatchNone(
                regex::Regex::new("^[Hh][Oo][Ss][Tt]$").expect("static"),
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            ))),
            values: Box::new(t::string_array("values")),
        },
    );
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::updated_at(),
        t::utf8_name("name"),
        protocols,
        Field::new("https_redirect_status_code", Type::Integer)
            .required()
            .default(json!(426))
            .one_of_int(&[426, 301, 302, 307, 308]),
        Field::new("strip_path", Type::Boolean)
            .required()
            .default(json!(true)),
        Field::new("preserve_host", Type::Boolean)
            .required()
            .default(json!(false)),
        Field::new("request_buffering", Type::Boolean)
            .required()
            .default(json!(true)),
        Field::new("response_buffering", Type::Boolean)
            .required()
            .default(json!(true)),
        t::tags(),
        t::foreign("service", "services"),
        Field::new(
            "snis",
            Type::Set(Box::new(t::wildcard_host("sni").required())),
        ),
        t::ip_port_records("sources"),
        t::ip_port_records("destinations"),
        t::methods(),
        t::hosts(),
        t::router_paths(),
        headers,
        Field::new("regex_priority", Type::Integer).default(json!(0)),
        Field::new("path_handling", Type::String)
            .default(json!("v0"))
            .one_of(&["v0", "v1"]),
    ];
    s.checks = vec![
        EntityCheck::Conditional {
            if_field: "protocols",
            if_match: Pred::ElementsNotOneOf(vec!["grpcs", "https", "tls", "tls_passthrough"]),
            then_field: "snis",
            then_match: Pred::LenEq(0),
            then_err: Some(
                "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
            ),
        },
        EntityCheck::Custom(subschema_checks),
    ];
    s.import_order = 20;
    s
}

fn non_empty(r: &Map<String, Value>, f: &str) -> bool {
    match r.get(f) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        _ => true,
    }
}

fn has(r: &Map<String, Value>, p: &str) -> bool {
    r.get("protocols")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(p)))
}

fn list(fields: &[&str]) -> String {
    crate::schema::quoted_list(fields)
}

/// The protocol subschemas of `routes_subschemas.lua`: which fields each protocol family
/// allows and which it needs.
fn subschema_checks(r: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    let stream = ["tcp", "tls", "udp", "tls_passthrough"]
        .iter()
        .any(|p| has(r, p));
    let grpc = has(r, "grpc") || has(r, "grpcs");
    let http = has(r, "http") || has(r, "https");
    if http {
        for f in ["sources", "destinations"] {
            if non_empty(r, f) {
                return Err((
                    Some(if f == "sources" {
                        "sources"
                    } else {
                        "destinations"
                    }),
                    format!("cannot set '{f}' when 'protocols' is 'http' or 'https'"),
                ));
            }
        }
        let (fields, which): (&[&str], &str) = if has(r, "https") {
            (&["methods", "hosts", "headers", "paths", "snis"], "https")
        } else {
            (&["methods", "hosts", "headers", "paths"], "http")
        };
        if !fields.iter().any(|f| non_empty(r, f)) {
            return Err((
                None,
                format!(
                    "must set one of {} when 'protocols' is '{which}'",
                    list(fields)
                ),
            ));
        }
    }
    if grpc {
        if r.get("strip_path") == Some(&Value::Bool(true)) {
            return Err((
                Some("strip_path"),
                "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'".into(),
            ));
        }
        for f in ["methods", "sources", "destinations"] {
            if non_empty(r, f) {
                let field: &'static str = match f {
                    "methods" => "methods",
                    "sources" => "sources",
                    _ => "destinations",
                };
                return Err((
                    Some(field),
                    format!("cannot set '{f}' when 'protocols' is 'grpc' or 'grpcs'"),
                ));
            }
        }
        let (fields, which): (&[&str], &str) = if has(r, "grpcs") {
            (&["hosts", "headers", "paths", "snis"], "grpcs")
        } else {
            (&["hosts", "headers", "paths"], "grpc")
        };
        if !fields.iter().any(|f| non_empty(r, f)) {
            return Err((
                None,
                format!(
                    "must set one of {} when 'protocols' is '{which}'",
                    list(fields)
                ),
            ));
        }
    }
    if stream {
        for f in ["methods", "hosts", "paths", "headers"] {
            if non_empty(r, f) {
                let field: &'static str = match f {
                    "methods" => "methods",
                    "hosts" => "hosts",
                    "paths" => "paths",
                    _ => "headers",
                };
                return Err((
                    Some(field),
                    format!("cannot set '{f}' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"),
                ));
            }
        }
        if has(r, "tls_passthrough") {
            if !non_empty(r, "snis") {
                return Err((
                    None,
                    "must set snis when 'protocols' is 'tls_passthrough'".into(),
                ));
            }
        } else if !["sources", "destinations", "snis"]
            .iter()
            .any(|f| non_empty(r, f))
        {
            return Err((
                None,
                format!(
                    "must set one of {} when 'protocols' is 'tcp', 'tls' or 'udp'",
                    list(&["sources", "destinations", "snis"])
                ),
            ));
        }
    }
    Ok(())
}
