//! proxy-cache (`kong/plugins/proxy-cache/{schema,handler,cache_key,api}.lua`) with
//! the memory strategy: a cacheable request whose key is in the dictionary is answered
//! from it in the access phase, without the upstream; otherwise the upstream's response,
//! when cacheable, is stored as it goes out.
//!
//! * access: method (and, with `cache_control`, the request's Cache-Control) decides
//!   Bypass; the key is looked up; Hit answers, Miss / Refresh keep the key in the
//!   plugin's state.
//! * header_filter: status, Content-Type (and Cache-Control) decide whether to store;
//!   otherwise Bypass.
//! * body_filter: copies the chunks as they pass (the client is not held back, unlike
//!   Kong's `get_raw_body`) and stores the response at its end.

mod cache_key;
mod directives;
pub mod memory;

use crate::api::{
    BodyCx, BodyMode, Exit, ExitBody, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx,
    ResponseCx,
};
use crate::mime::{self, MediaType};
use crate::template::decode_args;
use bytes::BytesMut;
use directives::{resource_ttl, Directives};
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, EXPIRES};
use http::HeaderMap;
pub use memory::{caches, install, parse_shared_dicts, Caches, Dict, Entry};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::schema::{Check, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "proxy-cache";
pub const PRIORITY: i32 = 100;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        access: true,
        header_filter: true,
        body_filter: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

static X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
static X_CACHE_KEY: HeaderName = HeaderName::from_static("x-cache-key");
static AGE: HeaderName = HeaderName::from_static("age");
static KONG_DEBUG: HeaderName = HeaderName::from_static("kong-debug");

/// The schema's entity check: the dictionary must exist (Kong's `check_shdict`).
fn check_shdict(rec: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    let config = rec.get("config");
    let name = config
        .and_then(|c| c.get("memory"))
        .and_then(|m| m.get("dictionary_name"))
        .and_then(Value::as_str);
    let memory = config
        .and_then(|c| c.get("strategy"))
        .and_then(Value::as_str)
        == Some("memory");
    match name {
        Some(n) if memory && caches().dict(n).is_none() => {
            Err((None, format!("missing shared dict '{n}'")))
        }
        _ => Ok(()),
    }
}

fn schema() -> PluginDef {
    let strings = |name| {
        Field::new(
            name,
            Type::Array(Box::new(Field::new("element", Type::String))),
        )
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new(
                "response_code",
                Type::Array(Box::new(Field::new("element", Type::Integer).between(100, 900))),
            )
            .required()
            .default(json!([200, 301, 404]))
            .check(Check::LenMin(1))
            .describe("Upstream response status code considered cacheable."),
            Field::new(
                "request_method",
                Type::Array(Box::new(
                    Field::new("element", Type::String).one_of(&["HEAD", "GET", "POST", "PATCH", "PUT"]),
                )),
            )
            .required()
            .default(json!(["GET", "HEAD"]))
            .describe("Downstream request methods considered cacheable."),
            strings("content_type")
                .required()
                .default(json!(["text/plain", "application/json"]))
                .describe("Upstream response content types considered cacheable. The plugin performs an **exact match** against each specified value."),
            Field::new("cache_ttl", Type::Integer)
                .default(json!(300))
                .check(Check::Gt(0.0))
                .describe("TTL, in seconds, of cache entities."),
            Field::new("strategy", Type::String)
                .required()
                .one_of(&["memory"])
                .describe("The backing data store in which to hold cache entities."),
            Field::new("cache_control", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("When enabled, respect the Cache-Control behaviors defined in RFC7234."),
            Field::new("ignore_uri_case", Type::Boolean).default(json!(false)),
            Field::new("storage_ttl", Type::Integer)
                .describe("Number of seconds to keep resources in the storage backend. This value is independent of `cache_ttl` or resource TTLs defined by Cache-Control behaviors."),
            Field::new(
                "memory",
                Type::Record(
                    vec![Field::new("dictionary_name", Type::String)
                        .required()
                        .default(json!("kong_db_cache"))
                        .describe("The name of the shared dictionary in which to hold cache entities when the memory strategy is selected. Note that this dictionary currently must be defined manually in the Kong Nginx template.")],
                    Vec::new(),
                ),
            ),
            strings("vary_query_params").describe("Relevant query parameters considered for the cache key. If undefined, all params are taken into consideration."),
            strings("vary_headers").describe("Relevant headers considered for the cache key. If undefined, none of the headers are taken into consideration."),
            Field::new(
                "response_headers",
                Type::Record(
                    vec![
                        Field::new("age", Type::Boolean).default(json!(true)),
                        Field::new("X-Cache-Status", Type::Boolean).default(json!(true)),
                        Field::new("X-Cache-Key", Type::Boolean).default(json!(true)),
                    ],
                    Vec::new(),
                ),
            )
            .describe("Caching related diagnostic headers that should be included in cached responses"),
        ],
        config_checks: Vec::new(),
        checks: vec![EntityCheck::Custom(check_shdict)],
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct ResponseHeaders {
    #[serde(default = "yes")]
    age: bool,
    #[serde(rename = "X-Cache-Status", default = "yes")]
    status: bool,
    #[serde(rename = "X-Cache-Key", default = "yes")]
    key: bool,
}

#[derive(Deserialize)]
struct Memory {
    dictionary_name: String,
}

#[derive(Deserialize)]
struct Config {
    response_code: Vec<u16>,
    request_method: Vec<String>,
    content_type: Vec<String>,
    cache_ttl: Option<u64>,
    cache_control: bool,
    ignore_uri_case: Option<bool>,
    storage_ttl: Option<i64>,
    memory: Option<Memory>,
    vary_query_params: Option<Vec<String>>,
    vary_headers: Option<Vec<String>>,
    response_headers: Option<ResponseHeaders>,
}

/// A configured content type, parsed once (`None`: it never parses, so never matches).
type Expected = Option<(String, String, Vec<(String, String)>)>;

/// proxy-cache compiled.
pub struct ProxyCache {
    methods: Vec<http::Method>,
    codes: Vec<u16>,
    content_types: Vec<Expected>,
    cache_ttl: u64,
    cache_control: bool,
    ignore_uri_case: bool,
    storage_ttl: Option<i64>,
    dict: Arc<Dict>,
    vary_query: Vec<String>,
    vary_headers: Vec<String>,
    age: bool,
    status_header: bool,
    key_header: bool,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    Ok(Box::new(build(config)?))
}

fn build(config: &Value) -> Result<ProxyCache, String> {
    let c: Config = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let name = c
        .memory
        .map_or_else(|| "kong_db_cache".to_owned(), |m| m.dictionary_name);
    let dict = caches()
        .dict(&name)
        .ok_or_else(|| format!("missing shared dict '{name}'"))?
        .clone();
    let methods = c
        .request_method
        .iter()
        .map(|m| http::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let content_types = c
        .content_type
        .iter()
        .map(|ct| {
            mime::parse(ct).map(|m| {
                let params = m.params.into_iter().map(|(k, v)| (k, v.to_owned()));
                (m.kind, m.subtype, params.collect())
            })
        })
        .collect();
    let rh = c.response_headers.unwrap_or(ResponseHeaders {
        age: true,
        status: true,
        key: true,
    });
    Ok(ProxyCache {
        methods,
        codes: c.response_code,
        content_types,
        cache_ttl: c.cache_ttl.unwrap_or(300),
        cache_control: c.cache_control,
        ignore_uri_case: c.ignore_uri_case.unwrap_or(false),
        storage_ttl: c.storage_ttl,
        dict,
        vary_query: c.vary_query_params.unwrap_or_default(),
        vary_headers: c.vary_headers.unwrap_or_default(),
        age: rh.age,
        status_header: rh.status,
        key_header: rh.key,
    })
}

/// `kong.ctx.plugin.proxy_cache`: a request whose response may be stored.
struct Pending {
    key: String,
    /// Set by header_filter once the response is cacheable.
    cacheable: Option<Cacheable>,
}

struct Cacheable {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    ttl: f64,
    body: BytesMut,
    /// The body outgrew the dictionary: it will not be stored.
    too_big: bool,
}

fn first<'h>(h: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn now() -> f64 {
    tollgate_model::schema::now_secs()
}

/// Kong's `overwritable_header`, plus the cache's own headers (`reset_res_header`):
/// what a hit replays.
fn replayable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "age"
            | "x-cache-status"
            | "x-cache-key"
    ) && !name.as_str().contains("ratelimit-remaining")
}

impl ProxyCache {
    /// Kong's `set_header(conf, …)`: on when configured or when the client sent
    /// `Kong-Debug`.
    fn shows(&self, on: bool, request: &HeaderMap) -> bool {
        on || request.contains_key(&KONG_DEBUG)
    }

    fn cacheable_request(&self, method: &http::Method, cc: &Directives) -> bool {
        self.methods.contains(method)
            && !(self.cache_control && (cc.has("no-store") || cc.has("no-cache")))
    }

    fn content_type_matches(&self, ct: &str) -> bool {
        let actual: Option<MediaType<'_>> = mime::parse(ct);
        let (t, st) = actual.as_ref().map_or((None, None), |m| {
            (Some(m.kind.as_str()), Some(m.subtype.as_str()))
        });
        let params: &[(String, &str)] = actual.as_ref().map_or(&[], |m| &m.params);
        self.content_types.iter().flatten().any(|(et, est, ep)| {
            (et == "*" || t == Some(et.as_str()))
                && (est == "*" || st == Some(est.as_str()))
                && ep.len() == params.len()
                && ep
                    .iter()
                    .all(|(k, v)| params.iter().any(|(pk, pv)| pk == k && pv == v))
        })
    }

    /// Kong's `cacheable_response`; the resource TTL when it is.
    fn cacheable_response(&self, status: u16, h: &HeaderMap) -> Option<f64> {
        if !self.codes.contains(&status) {
            return None;
        }
        match first(h, &CONTENT_TYPE) {
            Some(ct) if !ct.is_empty() && self.content_type_matches(ct) => {}
            _ => return None,
        }
        if !self.cache_control {
            return Some(self.cache_ttl as f64);
        }
        let cc = Directives::parse(first(h, &CACHE_CONTROL));
        if cc.has("private") || cc.has("no-store") || cc.has("no-cache") {
            return None;
        }
        let ttl = resource_ttl(&cc, first(h, &EXPIRES), now());
        (ttl > 0.0).then_some(ttl)
    }

    /// `signal_cache_req`: the response may be stored under `key`.
    fn signal(&self, cx: &mut RequestCx<'_>, key: String, status: &'static str) {
        if self.shows(self.status_header, &cx.req.headers) {
            cx.set_response_header(X_CACHE_STATUS.clone(), HeaderValue::from_static(status));
        }
        cx.set_plugin_state(Box::new(Pending {
            key,
            cacheable: None,
        }));
    }

    /// Whether an entry stored at `e.timestamp` is too old for this request.
    fn stale(&self, e: &Entry, cc: &Directives) -> bool {
        let age = now().floor() - e.timestamp as f64;
        if !self.cache_control {
            return age > self.cache_ttl as f64;
        }
        cc.number("max-age").is_some_and(|m| age > m)
            || cc.number("max-stale").is_some_and(|m| age - e.ttl > m)
            || cc.number("min-fresh").is_some_and(|m| e.ttl - age < m)
    }

    fn hit(&self, e: &Entry, key: &str, request: &HeaderMap) -> Exit {
        let mut headers = e.headers.clone();
        if self.shows(self.age, request) {
            let age = (now().floor() as u64).saturating_sub(e.timestamp);
            headers.push((AGE.clone(), HeaderValue::from(age)));
        }
        if self.shows(self.status_header, request) {
            headers.push((X_CACHE_STATUS.clone(), HeaderValue::from_static("Hit")));
        }
        if self.shows(self.key_header, request) {
            if let Ok(v) = HeaderValue::from_str(key) {
                headers.push((X_CACHE_KEY.clone(), v));
            }
        }
        Exit {
            status: e.status,
            body: ExitBody::Raw {
                content_type: None,
                body: e.body.clone(),
            },
            headers,
        }
    }

    fn key(&self, cx: &RequestCx<'_>) -> String {
        let req = &*cx.req;
        let method = req.method.as_str();
        // `$request` as the client sent it; method, query and headers as they are now.
        let (sent_method, target) = cx.request_line();
        let mut uri = cache_key::request_uri(sent_method.as_str(), target, req.version);
        if self.ignore_uri_case {
            uri = uri.to_lowercase();
        }
        let query = decode_args(req.uri.query().unwrap_or_default());
        cache_key::build(
            &cache_key::KeyParts {
                consumer_id: cx.consumer().map(|c| &*c.id),
                route_id: cx.route_id,
                method,
                uri: &uri,
                query: &query,
                headers: &req.headers,
            },
            &self.vary_query,
            &self.vary_headers,
        )
    }

    /// How long the dictionary keeps an entry; `None` inside: forever. `None`: it
    /// cannot be stored (a negative `storage_ttl`, which the shared dict refuses).
    fn storage_ttl(&self, res_ttl: f64) -> Option<Option<Duration>> {
        match self.storage_ttl {
            Some(n) if n < 0 => None,
            Some(0) => Some(None),
            Some(n) => Some(Some(Duration::from_secs(n as u64))),
            None if self.cache_control => Some(Some(Duration::from_secs_f64(res_ttl))),
            None => Some(Some(Duration::from_secs(self.cache_ttl))),
        }
    }
}

impl Plugin for ProxyCache {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let cc = if self.cache_control {
            Directives::parse(first(&cx.req.headers, &CACHE_CONTROL))
        } else {
            Directives::default()
        };
        if !self.cacheable_request(&cx.req.method, &cc) {
            if self.shows(self.status_header, &cx.req.headers) {
                cx.set_response_header(X_CACHE_STATUS.clone(), HeaderValue::from_static("Bypass"));
            }
            return Ok(Flow::Continue);
        }
        let key = self.key(cx);
        if self.shows(self.key_header, &cx.req.headers) {
            if let Ok(v) = HeaderValue::from_str(&key) {
                cx.set_response_header(X_CACHE_KEY.clone(), v);
            }
        }
        let Some(e) = self.dict.fetch(&key) else {
            // RFC 7234 5.2.1.7: the client only wanted what is cached.
            if self.cache_control && cc.has("only-if-cached") {
                return Ok(Flow::Exit(Exit {
                    status: 504,
                    body: ExitBody::Empty,
                    headers: Vec::new(),
                }));
            }
            self.signal(cx, key, "Miss");
            return Ok(Flow::Continue);
        };
        if self.stale(&e, &cc) {
            self.signal(cx, key, "Refresh");
            return Ok(Flow::Continue);
        }
        Ok(Flow::Exit(self.hit(&e, &key, &cx.req.headers)))
    }

    fn header_filter(&self, cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        let Some(p) = cx.state.as_mut().and_then(|s| s.downcast_mut::<Pending>()) else {
            return Ok(());
        };
        let status = cx.resp.status.as_u16();
        match self.cacheable_response(status, &cx.resp.headers) {
            Some(ttl) => {
                let headers = cx
                    .resp
                    .headers
                    .iter()
                    .filter(|(k, _)| replayable(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                p.cacheable = Some(Cacheable {
                    status,
                    headers,
                    ttl,
                    body: BytesMut::new(),
                    too_big: false,
                });
            }
            None => {
                if self.shows(self.status_header, cx.request_headers) {
                    cx.resp
                        .headers
                        .insert(X_CACHE_STATUS.clone(), HeaderValue::from_static("Bypass"));
                }
                *cx.state = None;
            }
        }
        Ok(())
    }

    fn body_mode(&self, cx: &ResponseCx<'_>) -> BodyMode {
        let pending = cx.state.as_ref().and_then(|s| s.downcast_ref::<Pending>());
        match pending {
            Some(Pending {
                cacheable: Some(_), ..
            }) => BodyMode::Read,
            _ => BodyMode::Skip,
        }
    }

    fn body_filter(&self, cx: &mut BodyCx<'_>) -> Result<(), PluginError> {
        let chunk = cx.chunk().clone();
        let eof = cx.is_eof();
        let Some(p) = cx.state::<Pending>() else {
            return Ok(());
        };
        let Some(c) = p.cacheable.as_mut() else {
            return Ok(());
        };
        if !c.too_big {
            if (c.body.len() + chunk.len()) as u64 > self.dict.capacity() {
                c.too_big = true;
                c.body = BytesMut::new();
            } else {
                c.body.extend_from_slice(&chunk);
            }
        }
        if !eof {
            return Ok(());
        }
        let Some(c) = p.cacheable.take() else {
            return Ok(());
        };
        if c.too_big {
            return Ok(());
        }
        let Some(storage_ttl) = self.storage_ttl(c.ttl) else {
            return Ok(());
        };
        let entry = Entry {
            status: c.status,
            headers: c.headers,
            body: c.body.freeze(),
            timestamp: now().floor() as u64,
            ttl: c.ttl,
            storage_ttl,
        };
        if !self.dict.store(&p.key, entry) {
            tracing::warn!(key = %p.key, "proxy-cache: the response does not fit the dictionary");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
