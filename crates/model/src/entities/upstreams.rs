use super::entity;
use crate::schema::{typedefs as t, Check, EntityCheck, EntitySchema, Field, Pred, Type};
use serde_json::json;

fn rec(name: &'static str, fields: Vec<Field>) -> Field {
    Field::new(name, Type::Record(fields, Vec::new()))
}
fn seconds(name: &'static str, d: f64) -> Field {
    Field::new(name, Type::Number)
        .between(0, 65535)
        .default(json!(d))
}
fn byte(name: &'static str) -> Field {
    Field::new(name, Type::Integer)
        .between(0, 255)
        .default(json!(0))
}
fn statuses(d: &[u16]) -> Field {
    Field::new(
        "http_statuses",
        Type::Array(Box::new(
            Field::new("status", Type::Integer)
                .required()
                .between(100, 999),
        )),
    )
    .default(json!(d))
}
fn check_type() -> Field {
    Field::new("type", Type::String)
        .one_of(&["tcp", "http", "https", "grpc", "grpcs"])
        .default(json!("http"))
}

pub(crate) fn healthchecks() -> Field {
    let headers = Field::new(
        "headers",
        Type::Map {
            keys: Box::new(t::header_name("key")),
            values: Box::new(t::string_array("values")),
        },
    );
    let active = rec(
        "active",
        vec![
            check_type(),
            seconds("timeout", 1.0),
            Field::new("concurrency", Type::Integer)
                .between(1, 2_147_483_648)
                .default(json!(10)),
            t::path("http_path").default(json!("/")),
            t::wildcard_host("https_sni"),
            Field::new("https_verify_certificate", Type::Boolean)
                .required()
                .default(json!(true)),
            headers,
            rec(
                "healthy",
                vec![
                    seconds("interval", 0.0),
                    statuses(&[200, 302]),
                    byte("successes"),
                ],
            ),
            rec(
                "unhealthy",
                vec![
                    seconds("interval", 0.0),
                    statuses(&[429, 404, 500, 501, 502, 503, 504, 505]),
                    byte("tcp_failures"),
                    byte("timeouts"),
                    byte("http_failures"),
                ],
            ),
        ],
    );
    let passive = rec(
        "passive",
        vec![
            check_type(),
            rec(
                "healthy",
                vec![
                    statuses(&[
                        200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
                        305, 306, 307, 308,
                    ]),
                    byte("successes"),
                ],
            ),
            rec(
                "unhealthy",
                vec![
                    statuses(&[429, 500, 503]),
                    byte("tcp_failures"),
                    byte("timeouts"),
                    byte("http_failures"),
                ],
            ),
        ],
    );
    Field::new(
        "healthchecks",
        Type::Record(
            vec![
                active,
                passive,
                Field::new("threshold", Type::Number)
                    .between(0, 100)
                    .default(json!(0)),
            ],
            Vec::new(),
        ),
    )
}

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("upstreams", "upstreams");
    s.endpoint_key = Some("name");
    let hash = |n| {
        Field::new(n, Type::String).default(json!("none")).one_of(&[
            "none",
            "consumer",
            "ip",
            "header",
            "cookie",
            "path",
            "query_arg",
            "uri_capture",
        ])
    };
    let simple = |n| Field::new(n, Type::String).check(Check::LenMin(1));
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::updated_at(),
        Field::new("name", Type::String)
            .required()
            .unique()
            .custom(validate_upstream_name),
        Field::new("algorithm", Type::String)
            .default(json!("round-robin"))
            .one_of(&[
                "consistent-hashing",
                "least-connections",
                "round-robin",
                "latency",
            ]),
        hash("hash_on"),
        hash("hash_fallback"),
        t::header_name("hash_on_header"),
        t::header_name("hash_fallback_header"),
        Field::new("hash_on_cookie", Type::String).custom(validate_cookie_name),
        t::path("hash_on_cookie_path").default(json!("/")),
        simple("hash_on_query_arg"),
        simple("hash_fallback_query_arg"),
        simple("hash_on_uri_capture"),
        simple("hash_fallback_uri_capture"),
        Field::new("slots", Type::Integer)
            .default(json!(10000))
            .between(10, 65536),
        healthchecks(),
        t::tags(),
        Field::new("host_header", Type::String).custom(t::validate_host_with_optional_port),
        t::foreign("client_certificate", "certificates"),
        Field::new("use_srv_name", Type::Boolean).default(json!(false)),
    ];
    let cond = |if_field, v: &'static str, then_field, then_match| EntityCheck::Conditional {
        if_field,
        if_match: Pred::OneOf(vec![v]),
        then_field,
        then_match,
        then_err: None,
    };
    let all_but = |x: &'static str| {
        Pred::OneOf(
            [
                "none",
                "consumer",
                "ip",
                "header",
                "cookie",
                "path",
                "query_arg",
                "uri_capture",
            ]
            .into_iter()
            .filter(|v| *v != x)
            .collect(),
        )
    };
    s.checks = vec![
        cond("hash_on", "header", "hash_on_header", Pred::NotNull),
        cond(
            "hash_fallback",
            "header",
            "hash_fallback_header",
            Pred::NotNull,
        ),
        cond("hash_on", "cookie", "hash_on_cookie", Pred::NotNull),
        cond("hash_fallback", "cookie", "hash_on_cookie", Pred::NotNull),
        cond(
            "hash_on",
            "none",
            "hash_fallback",
            Pred::OneOf(vec!["none"]),
        ),
        cond(
            "hash_on",
            "cookie",
            "hash_fallback",
            Pred::OneOf(vec!["none"]),
        ),
        cond("hash_on", "consumer", "hash_fallback", all_but("consumer")),
        cond("hash_on", "ip", "hash_fallback", all_but("ip")),
        cond("hash_on", "path", "hash_fallback", all_but("path")),
        cond("hash_on", "query_arg", "hash_on_query_arg", Pred::NotNull),
        cond(
            "hash_fallback",
            "query_arg",
            "hash_fallback_query_arg",
            Pred::NotNull,
        ),
        cond(
            "hash_on",
            "uri_capture",
            "hash_on_uri_capture",
            Pred::NotNull,
        ),
        cond(
            "hash_fallback",
            "uri_capture",
            "hash_fallback_uri_capture",
            Pred::NotNull,
        ),
        EntityCheck::Custom(|r| {
            for (a, b) in [
                ("hash_on_header", "hash_fallback_header"),
                ("hash_on_query_arg", "hash_fallback_query_arg"),
                ("hash_on_uri_capture", "hash_fallback_uri_capture"),
            ] {
                let (x, y) = (r.get(a), r.get(b));
                if x.is_some_and(|v| !v.is_null()) && x == y {
                    return Err((
                        None,
                        format!("values of these fields must be distinct: '{a}', '{b}'"),
                    ));
                }
            }
            Ok(())
        }),
    ];
    s.import_order = 40;
    s
}

fn validate_upstream_name(name: &str) -> Result<(), String> {
    let label = if name.is_ascii() {
        format!("Invalid name ('{name}')")
    } else {
        "Invalid name".to_string()
    };
    if t::validate_wildcard_host(name).is_ok() && !name.contains('*') {
        return Ok(());
    }
    if t::validate_host_with_optional_port(name).is_ok() {
        if name.contains(':') && !name.starts_with('[') && name.matches(':').count() == 1 {
            return Err(format!("{label}; no port allowed"));
        }
        return Err(format!("{label}; no ip addresses allowed"));
    }
    Err(format!("{label}; must be a valid hostname"))
}

fn validate_cookie_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("contains one or more invalid characters. ASCII control characters (0-31;127), space, tab and the characters ()<>@,;:\\\"/?={} are not allowed.".into())
    }
}
