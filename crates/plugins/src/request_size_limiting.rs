//! request-size-limiting (`kong/plugins/request-size-limiting/{schema,handler}.lua`):
//! rejects requests whose body is larger than `allowed_payload_size` (in `size_unit`s),
//! judged by `Content-Length`, or by the body itself when there is none.

use crate::api::{Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "request-size-limiting";
pub const PRIORITY: i32 = 951;

pub const ERR_TOO_LARGE: &str = "Request size limit exceeded";
pub const ERR_LENGTH_REQUIRED: &str = "A valid Content-Length header is required";

/// Kong's `size_units` (the first is the default).
pub const SIZE_UNITS: &[&str] = &["megabytes", "kilobytes", "bytes"];

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

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("allowed_payload_size", Type::Integer)
                .default(json!(128))
                .describe("Allowed request payload size in megabytes. Default is `128` megabytes (128000000 bytes)."),
            Field::new("size_unit", Type::String)
                .required()
                .default(json!("megabytes"))
                .one_of(SIZE_UNITS)
                .describe("Size unit can be set either in `bytes`, `kilobytes`, or `megabytes` (default). This configuration is not available in versions prior to Kong Gateway 1.3 and Kong Gateway (OSS) 2.0."),
            Field::new("require_content_length", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("Set to `true` to ensure a valid `Content-Length` header exists before reading the request body."),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub struct RequestSizeLimitingConfig {
    pub allowed_payload_size: Option<i64>,
    pub size_unit: String,
    pub require_content_length: bool,
}

impl Default for RequestSizeLimitingConfig {
    fn default() -> Self {
        RequestSizeLimitingConfig {
            allowed_payload_size: Some(128),
            size_unit: "megabytes".into(),
            require_content_length: false,
        }
    }
}

/// request-size-limiting compiled.
pub struct RequestSizeLimiting {
    /// The largest accepted body, in bytes (Kong's `allowed_size * unit`).
    allowed: f64,
    require_content_length: bool,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: RequestSizeLimitingConfig =
        serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let unit: f64 = match c.size_unit.as_str() {
        "bytes" => 1.0,
        "kilobytes" => 1024.0,
        "megabytes" => 1_048_576.0,
        other => return Err(format!("unknown size_unit '{other}'")),
    };
    // A null size (Kong's field is not required) fails Kong's arithmetic at run time.
    let size = c
        .allowed_payload_size
        .ok_or("allowed_payload_size is required")?;
    Ok(Box::new(RequestSizeLimiting {
        allowed: size as f64 * unit,
        require_content_length: c.require_content_length,
    }))
}

/// Lua's `tonumber` on a header value (decimal, possibly fractional, surrounding spaces).
fn lua_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("nan") {
        return None;
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|n| n as f64);
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

impl RequestSizeLimiting {
    fn check(&self, cx: &RequestCx<'_>, length: f64) -> Flow {
        if length <= self.allowed {
            return Flow::Continue;
        }
        let expect_continue = cx
            .req
            .headers
            .get(EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        Flow::Exit(Exit::error(
            if expect_continue { 417 } else { 413 },
            ERR_TOO_LARGE,
        ))
    }
}

impl Plugin for RequestSizeLimiting {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let h = &cx.req.headers;
        // `get_headers()["content-length"]` is a table (not a number) when repeated.
        let mut cls = h.get_all(CONTENT_LENGTH).iter();
        let cl = match (cls.next(), cls.next()) {
            (Some(v), None) => v.to_str().ok().and_then(lua_number),
            _ => None,
        };
        if let Some(cl) = cl {
            return Ok(self.check(cx, cl));
        }
        let mut te = h.get_all(TRANSFER_ENCODING).iter();
        let chunked = matches!((te.next(), te.next()), (Some(v), None) if v == "chunked");
        if self.require_content_length && !chunked {
            return Ok(Flow::Exit(Exit::error(411, ERR_LENGTH_REQUIRED)));
        }
        Ok(match cx.body() {
            Some(b) => self.check(cx, b.len() as f64),
            None => Flow::Continue,
        })
    }

    /// Without a `Content-Length` the body itself is measured (Kong's `get_raw_body`).
    fn reads_body(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};
    use bytes::Bytes;

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    #[test]
    fn content_length_against_units() {
        let ix = fixture();
        let p = plugin(json!({"allowed_payload_size": 1, "size_unit": "kilobytes"}));
        let run = |cl: &str, extra: &[(&str, &str)]| {
            let mut h = vec![("content-length", cl)];
            h.extend_from_slice(extra);
            run_access(&*p, &ix, parts("POST", "/", &h), None).0
        };
        assert!(run("1024", &[]).is_continue());
        let e = run("1025", &[]).unwrap_exit();
        assert_eq!((e.status, e.message()), (413, ERR_TOO_LARGE));
        let e = run("1025", &[("expect", " 100-Continue ")]).unwrap_exit();
        assert_eq!(e.status, 417);
        // The default: 128 megabytes.
        let p = plugin(json!({}));
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("POST", "/", &[("content-length", "134217728")]),
            None,
        );
        assert!(f.is_continue());
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("POST", "/", &[("content-length", "134217729")]),
            None,
        );
        assert_eq!(f.unwrap_exit().status, 413);
    }

    #[test]
    fn no_content_length_measures_the_body_or_requires_one() {
        let ix = fixture();
        let p = plugin(json!({"allowed_payload_size": 4, "size_unit": "bytes"}));
        assert!(p.reads_body());
        let chunked = [("transfer-encoding", "chunked")];
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("POST", "/", &chunked),
            Some(Bytes::from_static(b"12345")),
        );
        assert_eq!(f.unwrap_exit().status, 413);
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("POST", "/", &chunked),
            Some(Bytes::from_static(b"1234")),
        );
        assert!(f.is_continue());
        // A garbage Content-Length is ignored and the body measured.
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("POST", "/", &[("content-length", "abc")]),
            Some(Bytes::from_static(b"123456")),
        );
        assert_eq!(f.unwrap_exit().status, 413);

        let p = plugin(json!({"require_content_length": true}));
        let e = run_access(&*p, &ix, parts("POST", "/", &[]), None)
            .0
            .unwrap_exit();
        assert_eq!((e.status, e.message()), (411, ERR_LENGTH_REQUIRED));
        let (f, _, _) = run_access(&*p, &ix, parts("POST", "/", &chunked), None);
        assert!(f.is_continue(), "chunked is exempt");
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("POST", "/", &[("content-length", "10")]),
            None,
        );
        assert!(f.is_continue());
    }

    #[test]
    fn lua_tonumber() {
        assert_eq!(lua_number(" 12 "), Some(12.0));
        assert_eq!(lua_number("0x10"), Some(16.0));
        assert_eq!(lua_number("1e3"), Some(1000.0));
        assert_eq!(lua_number("12abc"), None);
        assert_eq!(lua_number(""), None);
    }
}
