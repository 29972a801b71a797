use super::entity;
use crate::schema::{typedefs as t, EntityCheck, EntitySchema, Field, Pred, Type};
use serde_json::{json, Map, Value};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("services", "services");
    s.endpoint_key = Some("name");
    let https_only = |field| EntityCheck::Conditional {
        if_field: "protocol",
        if_match: Pred::NotOneOf(vec!["https", "tls"]),
        then_field: field,
        then_match: Pred::IsNull,
        then_err: None,
    };
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::updated_at(),
        t::utf8_name("name").describe("The service name."),
        Field::new("retries", Type::Integer)
            .default(json!(5))
            .between(0, 32767)
            .describe("The number of retries to execute upon failure to proxy."),
        t::protocol("protocol").required().default(json!("http")),
        t::host("host").required(),
        t::port("port").required().default(json!(80)),
        t::path("path"),
        t::timeout("connect_timeout", 60000),
        t::timeout("write_timeout", 60000),
        t::timeout("read_timeout", 60000),
        t::tags(),
        t::foreign("client_certificate", "certificates"),
        Field::new("tls_verify", Type::Boolean),
        Field::new("tls_verify_depth", Type::Integer)
            .default(Value::Null)
            .between(0, 64),
        Field::new(
            "ca_certificates",
            Type::Array(Box::new(
                Field::new("id", Type::String)
                    .required()
                    .check(crate::schema::Check::Uuid),
            )),
        ),
        Field::new("enabled", Type::Boolean)
            .required()
            .default(json!(true)),
    ];
    s.checks = vec![
        EntityCheck::Conditional {
            if_field: "protocol",
            if_match: Pred::OneOf(vec!["tcp", "tls", "udp", "grpc", "grpcs"]),
            then_field: "path",
            then_match: Pred::IsNull,
            then_err: None,
        },
        https_only("client_certificate"),
        https_only("tls_verify"),
        https_only("tls_verify_depth"),
        https_only("ca_certificates"),
    ];
    s.shorthands = vec![("url", expand_url)];
    s.import_order = 10;
    s
}

/// The `url` shorthand: `https://host:port/path` into protocol, host, port and path.
fn expand_url(v: &Value) -> Result<Map<String, Value>, String> {
    let Value::String(s) = v else {
        return Err("expected a string".into());
    };
    t::validate_url(s)?;
    let u = crate::url::parse(s)?;
    let port: Option<u16> = match &u.port {
        Some(p) => Some(p.parse().map_err(|_| format!("invalid port: {p}"))?),
        None => None,
    };
    let by_port = match port {
        Some(80) => Some("http"),
        Some(443) => Some("https"),
        _ => None,
    };
    let protocol = u
        .scheme
        .clone()
        .or(by_port.map(str::to_string))
        .unwrap_or_else(|| "http".into());
    let port = port.unwrap_or(match protocol.as_str() {
        "https" | "grpcs" | "tls" => 443,
        _ => 80,
    });
    let mut m = Map::new();
    m.insert("protocol".into(), Value::String(protocol));
    m.insert(
        "host".into(),
        u.host
            .map(|h| Value::String(h.trim_start_matches('[').trim_end_matches(']').to_string()))
            .unwrap_or(Value::Null),
    );
    m.insert("port".into(), Value::from(port));
    m.insert(
        "path".into(),
        u.path.map(Value::String).unwrap_or(Value::Null),
    );
    Ok(m)
}
