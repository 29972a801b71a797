//! request-termination (`kong/plugins/request-termination/{schema,handler}.lua`): answers
//! every request (or only those carrying the `trigger` header or query argument) with a
//! fixed response, or with an echo of the request.

use crate::api::{Exit, ExitBody, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use crate::auth;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "request-termination";
pub const PRIORITY: i32 = 2;

pub const ERR_MESSAGE_WITH_BODY: &str = "message cannot be used with content_type or body";
pub const ERR_CONTENT_TYPE_WITHOUT_BODY: &str = "content_type requires a body";
pub const ERR_ECHO_WITH_BODY: &str = "echo cannot be used with content_type and body";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

/// Kong's `DEFAULT_RESPONSE` table.
pub fn default_message(status: u16) -> Option<&'static str> {
    Some(match status {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

fn present(cfg: &Map<String, Value>, k: &str) -> bool {
    cfg.get(k)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Kong's `custom_validator` on the config record.
fn validate(rec: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    let Some(cfg) = rec.get("config").and_then(Value::as_object) else {
        return Ok(());
    };
    let err = |m: &str| Err((Some("config"), m.to_owned()));
    if present(cfg, "message") && (present(cfg, "content_type") || present(cfg, "body")) {
        return err(ERR_MESSAGE_WITH_BODY);
    }
    if present(cfg, "content_type") && !present(cfg, "body") {
        return err(ERR_CONTENT_TYPE_WITHOUT_BODY);
    }
    let echo = cfg.get("echo").and_then(Value::as_bool).unwrap_or(false);
    if echo && (present(cfg, "content_type") || present(cfg, "body")) {
        return err(ERR_ECHO_WITH_BODY);
    }
    Ok(())
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("status_code", Type::Integer)
                .required()
                .default(json!(503))
                .between(100, 599)
                .describe("The response code to send. Must be an integer between 100 and 599."),
            Field::new("message", Type::String)
                .describe("The message to send, if using the default response generator."),
            Field::new("content_type", Type::String)
                .describe("Content type of the raw response configured with `config.body`."),
            Field::new("body", Type::String).describe("The raw response body to send. This is mutually exclusive with the `config.message` field."),
            Field::new("echo", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("When set, the plugin will echo a copy of the request back to the client. The main usecase for this is debugging. It can be combined with `trigger` in order to debug requests on live systems without disturbing real traffic."),
            Field::new("trigger", Type::String)
                .custom(auth::validate_header_name)
                .describe("A string representing an HTTP header name."),
        ],
        config_checks: Vec::new(),
        checks: vec![tollgate_model::schema::EntityCheck::Custom(validate)],
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub struct RequestTerminationConfig {
    pub status_code: u16,
    pub message: Option<String>,
    pub content_type: Option<String>,
    pub body: Option<String>,
    pub echo: bool,
    pub trigger: Option<String>,
}

impl Default for RequestTerminationConfig {
    fn default() -> Self {
        RequestTerminationConfig {
            status_code: 503,
            message: None,
            content_type: None,
            body: None,
            echo: false,
            trigger: None,
        }
    }
}

/// request-termination compiled.
pub struct RequestTermination {
    status: u16,
    message: Option<String>,
    body: Option<(Option<HeaderValue>, Bytes)>,
    echo: bool,
    /// The trigger as a query argument name, and as a header name.
    trigger: Option<(String, Option<HeaderName>)>,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: RequestTerminationConfig =
        serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let content_type = match &c.content_type {
        Some(ct) => Some(HeaderValue::from_str(ct).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(Box::new(RequestTermination {
        status: c.status_code,
        message: c
            .message
            .or_else(|| default_message(c.status_code).map(Into::into)),
        body: c.body.map(|b| (content_type, Bytes::from(b))),
        echo: c.echo,
        trigger: c.trigger.map(|t| {
            let h = HeaderName::from_bytes(t.to_ascii_lowercase().as_bytes()).ok();
            (t, h)
        }),
    }))
}

/// `kong.request.get_query()`: repeated arguments become arrays, a bare name is `true`.
fn query_table(q: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let has_eq = pair.contains('=');
        let Some((k, v)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        let v = if has_eq {
            Value::String(v.into_owned())
        } else {
            Value::Bool(true)
        };
        match m.get_mut(&*k) {
            Some(Value::Array(a)) => a.push(v),
            Some(old) => *old = Value::Array(vec![old.take(), v]),
            None => {
                m.insert(k.into_owned(), v);
            }
        }
    }
    m
}

/// `kong.request.get_headers()`: lower-cased names, repeated headers as arrays.
fn header_table(h: &http::HeaderMap) -> Map<String, Value> {
    let mut m = Map::new();
    for name in h.keys() {
        let vals: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let v = if vals.len() == 1 {
            vals.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(vals)
        };
        m.insert(name.as_str().to_owned(), v);
    }
    m
}

/// `kong.request.get_uri_captures()` as cjson encodes it: `unnamed` an array from
/// group 1 (cjson drops the whole match at index 0), `named` an object.
fn uri_captures(cx: &RequestCx<'_>) -> Value {
    let (unnamed, named) = match cx.uri_captures() {
        Some(c) => (
            c.unnamed.iter().skip(1).map(|v| json!(v)).collect(),
            c.named
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
        None => (Vec::new(), Map::new()),
    };
    json!({ "unnamed": unnamed, "named": named })
}

impl RequestTermination {
    fn triggered(&self, cx: &RequestCx<'_>) -> bool {
        let Some((name, header)) = &self.trigger else {
            return true;
        };
        header
            .as_ref()
            .is_some_and(|h| cx.req.headers.contains_key(h))
            || query_table(cx.query()).contains_key(name)
    }

    fn echo_body(&self, cx: &RequestCx<'_>) -> Value {
        let req = &*cx.req;
        let host_header = req
            .headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or_default();
        let scheme = req.uri.scheme_str().unwrap_or("http");
        let (host, port) = match host_header.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || host_header.starts_with('[') => {
                (h, p.parse::<u16>().ok())
            }
            _ => (host_header, None),
        };
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        let ct_raw = req
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ct = ct_raw.to_ascii_lowercase();
        let raw = cx.body().map(|b| String::from_utf8_lossy(b).into_owned());
        let body = match cx.body() {
            Some(b) if ct.starts_with("application/json") => {
                serde_json::from_slice::<Value>(b).unwrap_or(Value::Null)
            }
            Some(b) if ct.starts_with("application/x-www-form-urlencoded") => {
                Value::Object(query_table(Some(&String::from_utf8_lossy(b))))
            }
            Some(b) if ct.starts_with("multipart/form-data") => {
                let mut m = Map::new();
                for (k, v) in crate::body::multipart_fields(ct_raw, b) {
                    m.insert(k, Value::String(v));
                }
                Value::Object(m)
            }
            _ => Value::Null,
        };
        let (node_id, hostname) = crate::node();
        json!({
            "message": self.message,
            "kong": {
                "node_id": node_id,
                "worker_pid": std::process::id(),
                "hostname": hostname,
            },
            "request": {
                "scheme": scheme,
                "host": host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
                "port": port,
                "headers": header_table(&req.headers),
                "query": query_table(req.uri.query()),
                "body": body,
                "raw_body": raw.unwrap_or_default(),
                "method": req.method.as_str(),
                "path": req.uri.path(),
                "uri_captures": uri_captures(cx),
            },
            // Kong's `kong.router.get_route()` / `get_service()`: the whole rows.
            "matched_route": cx.route_row(),
            "matched_service": cx.service_row(),
        })
    }
}

impl Plugin for RequestTermination {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        if !self.triggered(cx) {
            return Ok(Flow::Continue);
        }
        let body = if self.echo {
            ExitBody::Json(self.echo_body(cx))
        } else if let Some((ct, b)) = &self.body {
            ExitBody::Raw {
                content_type: ct.clone(),
                body: b.clone(),
            }
        } else {
            match &self.message {
                Some(m) => ExitBody::Json(json!({ "message": m })),
                None => ExitBody::Empty,
            }
        };
        Ok(Flow::Exit(Exit {
            status: self.status,
            body,
            headers: Vec::new(),
        }))
    }

    fn reads_body(&self) -> bool {
        self.echo
    }

    fn reads_router_rows(&self) -> bool {
        self.echo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};
    use tollgate_model::schema::{Context, Operation};

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn json_body(e: &Exit) -> &Value {
        match &e.body {
            ExitBody::Json(v) => v,
            other => panic!("not json: {other:?}"),
        }
    }

    #[test]
    fn default_message_per_status() {
        let ix = fixture();
        let (f, _, _) = run_access(&*plugin(json!({})), &ix, parts("GET", "/", &[]), None);
        let e = f.unwrap_exit();
        assert_eq!(e.status, 503);
        assert_eq!(json_body(&e), &json!({"message": "Service unavailable"}));
        let p = plugin(json!({"status_code": 404}));
        let e = run_access(&*p, &ix, parts("GET", "/", &[]), None)
            .0
            .unwrap_exit();
        assert_eq!(json_body(&e)["message"], "Not found");
        // No default for 418: an empty body.
        let p = plugin(json!({"status_code": 418}));
        let e = run_access(&*p, &ix, parts("GET", "/", &[]), None)
            .0
            .unwrap_exit();
        assert!(matches!(e.body, ExitBody::Empty));
        let p = plugin(json!({"status_code": 403, "message": "Go away"}));
        let e = run_access(&*p, &ix, parts("GET", "/", &[]), None)
            .0
            .unwrap_exit();
        assert_eq!(
            (e.status, json_body(&e)["message"].as_str()),
            (403, Some("Go away"))
        );
    }

    #[test]
    fn raw_body_with_content_type() {
        let ix = fixture();
        let p =
            plugin(json!({"status_code": 200, "body": "<h1>hi</h1>", "content_type": "text/html"}));
        let e = run_access(&*p, &ix, parts("GET", "/", &[]), None)
            .0
            .unwrap_exit();
        match e.body {
            ExitBody::Raw { content_type, body } => {
                assert_eq!(content_type.unwrap(), "text/html");
                assert_eq!(&body[..], b"<h1>hi</h1>");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trigger_by_header_or_query_and_echo() {
        let ix = fixture();
        let p = plugin(json!({"trigger": "X-Debug", "echo": true, "status_code": 200}));
        assert!(p.reads_body());
        let (f, _, _) = run_access(&*p, &ix, parts("GET", "/a?b=1", &[]), None);
        assert!(f.is_continue(), "no trigger, proxied");
        let (f, _, _) = run_access(&*p, &ix, parts("GET", "/a?X-Debug", &[]), None);
        assert!(!f.is_continue(), "query trigger");
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts(
                "POST",
                "/a?b=1&b=2",
                &[
                    ("x-debug", "1"),
                    ("host", "example.com:8000"),
                    ("content-type", "application/json"),
                ],
            ),
            Some(Bytes::from_static(br#"{"k":"v"}"#)),
        );
        let e = f.unwrap_exit();
        let v = json_body(&e);
        assert_eq!(e.status, 200);
        assert_eq!(v["request"]["method"], "POST");
        assert_eq!(v["request"]["path"], "/a");
        assert_eq!(v["request"]["host"], "example.com");
        assert_eq!(v["request"]["port"], 8000);
        assert_eq!(v["request"]["query"]["b"], json!(["1", "2"]));
        assert_eq!(v["request"]["headers"]["x-debug"], "1");
        assert_eq!(v["request"]["body"], json!({"k": "v"}));
        assert_eq!(v["request"]["raw_body"], r#"{"k":"v"}"#);
    }

    #[test]
    fn schema_rejects_kongs_conflicts() {
        let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
        for (cfg, msg) in [
            (json!({"message": "x", "body": "y"}), ERR_MESSAGE_WITH_BODY),
            (
                json!({"content_type": "text/plain"}),
                ERR_CONTENT_TYPE_WITHOUT_BODY,
            ),
            (json!({"echo": true, "body": "y"}), ERR_ECHO_WITH_BODY),
            (
                json!({"status_code": 600}),
                "value should be between 100 and 599",
            ),
            (json!({"trigger": "bad header"}), "bad header name"),
        ] {
            let mut row = Map::new();
            row.insert("name".into(), json!(NAME));
            row.insert("config".into(), cfg.clone());
            let err = cat
                .validate(&mut row, &Context::new(Operation::Insert))
                .expect_err(&cfg.to_string());
            assert!(format!("{err:?}").contains(msg), "{cfg}: {err:?}");
        }
    }
}
