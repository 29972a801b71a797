//! cors (`kong/plugins/cors/{schema,handler}.lua`): answers preflight requests in the
//! access phase and adds the CORS headers to every other response in header_filter.

use crate::api::{Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx, ResponseCx};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "cors";
pub const PRIORITY: i32 = 2000;

/// Kong's `METHODS` (the default of `config.methods`).
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

static ACRPN: HeaderName = HeaderName::from_static("access-control-request-private-network");
static ACAPN: HeaderName = HeaderName::from_static("access-control-allow-private-network");

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: true,
    no_route: false,
    no_service: false,
    phases: Phases {
        access: true,
        header_filter: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

/// Kong's `validate_asterisk_or_regex`.
fn validate_origin(s: &str) -> Result<(), String> {
    if s == "*" || Regex::new(s).is_ok() {
        Ok(())
    } else {
        Err(format!("'{s}' is not a valid regex"))
    }
}

fn schema() -> PluginDef {
    let strings = |name, d| {
        Field::new(
            name,
            Type::Array(Box::new(Field::new("element", Type::String))),
        )
        .describe(d)
    };
    let b = |name, d| {
        Field::new(name, Type::Boolean)
            .required()
            .default(json!(false))
            .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new(
                "origins",
                Type::Array(Box::new(
                    Field::new("element", Type::String).custom(validate_origin),
                )),
            )
            .describe("List of allowed domains for the `Access-Control-Allow-Origin` header. If you want to allow all origins, add `*` as a single value to this configuration field. The accepted values can either be flat strings or PCRE regexes. NOTE: If you don't specify any allowed domains, all origins are allowed."),
            strings("headers", "Value for the `Access-Control-Allow-Headers` header."),
            strings("exposed_headers", "Value for the `Access-Control-Expose-Headers` header. If not specified, no custom headers are exposed."),
            Field::new(
                "methods",
                Type::Array(Box::new(Field::new("element", Type::String).one_of(METHODS))),
            )
            .default(json!(METHODS))
            .describe("'Value for the `Access-Control-Allow-Methods` header. Available options include `GET`, `HEAD`, `PUT`, `PATCH`, `POST`, `DELETE`, `OPTIONS`, `TRACE`, `CONNECT`. By default, all options are allowed.'"),
            Field::new("max_age", Type::Number).describe("Indicates how long the results of the preflight request can be cached, in `seconds`."),
            b("credentials", "Flag to determine whether the `Access-Control-Allow-Credentials` header should be sent with `true` as the value."),
            b("private_network", "Flag to determine whether the `Access-Control-Allow-Private-Network` header should be sent with `true` as the value."),
            b("preflight_continue", "A boolean value that instructs the plugin to proxy the `OPTIONS` preflight request to the Upstream service."),
            Field::new("allow_origin_absent", Type::Boolean)
                .required()
                .default(json!(true))
                .describe("A boolean value that skip cors response headers when origin header of request is empty"),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: true,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    pub origins: Option<Vec<String>>,
    pub headers: Option<Vec<String>>,
    pub exposed_headers: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub max_age: Option<f64>,
    pub credentials: bool,
    pub private_network: bool,
    pub preflight_continue: bool,
    pub allow_origin_absent: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            origins: None,
            headers: None,
            exposed_headers: None,
            methods: Some(METHODS.iter().map(|m| (*m).to_owned()).collect()),
            max_age: None,
            credentials: false,
            private_network: false,
            preflight_continue: false,
            allow_origin_absent: true,
        }
    }
}

/// An entry of `origins`, prepared as Kong caches it.
enum Domain {
    /// Matched anchored at the start, against the host alone when the entry has no `:`.
    Regex { re: Regex, by_host: bool },
    /// A normalized `scheme://host[:port]`, compared for equality.
    Literal(String),
}

enum Origins {
    /// No origins, or just `*`: `Access-Control-Allow-Origin: *`.
    All,
    /// A single plain origin, sent as configured whatever the request's.
    One(HeaderValue),
    /// Several (or a regex): the request's origin when it matches. A `*` among them
    /// allows every origin that is provided.
    List { domains: Vec<Domain>, star: bool },
}

/// cors compiled.
pub struct Cors {
    origins: Origins,
    allow_headers: Option<HeaderValue>,
    exposed_headers: Option<HeaderValue>,
    methods: HeaderValue,
    max_age: Option<HeaderValue>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
}

fn joined(list: Option<Vec<String>>) -> Result<Option<HeaderValue>, String> {
    match list {
        Some(l) if !l.is_empty() => HeaderValue::from_str(&l.join(","))
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-'))
}

/// `tostring(number)` as LuaJIT prints it.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: CorsConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let list = c.origins.unwrap_or_default();
    let origins = if list.is_empty() || (list.len() == 1 && list[0] == "*") {
        Origins::All
    } else if list.len() == 1 && plain(&list[0]) {
        Origins::One(HeaderValue::from_str(&list[0]).map_err(|e| e.to_string())?)
    } else {
        let mut domains = Vec::with_capacity(list.len());
        let star = list.iter().any(|e| e == "*");
        for entry in list.iter().filter(|e| *e != "*") {
            let by_host = !entry.contains(':');
            if plain(entry) {
                domains.push(Domain::Literal(normalize_origin(entry).0));
            } else {
                // Kong anchors the regex at both ends unless the user already did.
                let mut e = entry.strip_prefix('^').unwrap_or(entry).to_owned();
                if !e.ends_with('$') {
                    e.push('$');
                }
                let re = Regex::new(&format!("^(?:{e})")).map_err(|e| e.to_string())?;
                domains.push(Domain::Regex { re, by_host });
            }
        }
        Origins::List { domains, star }
    };
    let methods = match c.methods {
        Some(m) => m.join(","),
        None => METHODS.join(","),
    };
    Ok(Box::new(Cors {
        origins,
        allow_headers: joined(c.headers)?,
        exposed_headers: joined(c.exposed_headers)?,
        methods: HeaderValue::from_str(&methods).map_err(|e| e.to_string())?,
        max_age: c
            .max_age
            .map(|n| HeaderValue::from_str(&lua_number(n)))
            .transpose()
            .map_err(|e| e.to_string())?,
        credentials: c.credentials,
        private_network: c.private_network,
        preflight_continue: c.preflight_continue,
        allow_origin_absent: c.allow_origin_absent,
    }))
}

/// Kong's `normalize_origin` (LuaSocket's `url.parse`): `(domain, host)`, dropping a
/// default port; a value without `//authority` is its own domain and host.
fn normalize_origin(origin: &str) -> (String, String) {
    let (scheme, rest) = match origin.split_once(':') {
        Some((s, r))
            if !s.is_empty()
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            (Some(s), r)
        }
        _ => (None, origin),
    };
    let Some(auth) = rest.strip_prefix("//") else {
        return (origin.to_owned(), origin.to_owned());
    };
    let auth = auth.split(['/', '?', '#']).next().unwrap_or_default();
    let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (auth, None),
        }
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
            _ => (auth, None),
        }
    };
    if host.is_empty() {
        return (origin.to_owned(), origin.to_owned());
    }
    let port = port.filter(|p| {
        !(matches!(scheme, Some("http")) && *p == "80"
            || matches!(scheme, Some("https")) && *p == "443")
    });
    let mut domain = String::new();
    if let Some(s) = scheme {
        domain.push_str(s);
        domain.push_str("://");
    }
    domain.push_str(host);
    if let Some(p) = port {
        domain.push(':');
        domain.push_str(p);
    }
    (domain, host.to_owned())
}

fn origin_of(h: &HeaderMap) -> Option<&str> {
    h.get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| !o.is_empty())
}

/// Response headers being built: on a preflight exit or on the response in header_filter.
struct Out<'h> {
    h: &'h mut HeaderMap,
    /// header_filter appends `Vary`, the preflight sets it.
    append_vary: bool,
}

impl Out<'_> {
    fn set(&mut self, name: HeaderName, v: HeaderValue) {
        self.h.insert(name, v);
    }
    fn vary(&mut self) {
        let v = HeaderValue::from_static("Origin");
        if self.append_vary {
            self.h.append(VARY, v);
        } else {
            self.h.insert(VARY, v);
        }
    }
}

impl Cors {
    /// Kong's `configure_origin`: whether every origin is allowed.
    fn configure_origin(&self, out: &mut Out<'_>, req_origin: Option<&str>) -> bool {
        let (domains, star) = match &self.origins {
            Origins::All => {
                out.set(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                return true;
            }
            Origins::One(v) => {
                out.vary();
                out.set(ACCESS_CONTROL_ALLOW_ORIGIN, v.clone());
                return false;
            }
            Origins::List { domains, star } => (domains, *star),
        };
        out.vary();
        if let Some(origin) = req_origin {
            if star {
                out.set(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                return true;
            }
            let (domain, host) = normalize_origin(origin);
            let found = domains.iter().any(|d| match d {
                Domain::Regex { re, by_host } => {
                    re.is_match(if *by_host { &host } else { &domain })
                }
                Domain::Literal(l) => *l == domain,
            });
            if found {
                if let Ok(v) = HeaderValue::from_str(&domain) {
                    out.set(ACCESS_CONTROL_ALLOW_ORIGIN, v);
                    return false;
                }
            }
        }
        out.h.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
        false
    }

    /// Kong's `configure_credentials`.
    fn configure_credentials(&self, out: &mut Out<'_>, allow_all: bool, origin: Option<&str>) {
        if !self.credentials {
            return;
        }
        let t = HeaderValue::from_static("true");
        if !allow_all {
            out.set(ACCESS_CONTROL_ALLOW_CREDENTIALS, t);
            return;
        }
        // `*` cannot go with credentials: echo the origin instead.
        if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
            out.vary();
            out.set(ACCESS_CONTROL_ALLOW_ORIGIN, v);
            out.set(ACCESS_CONTROL_ALLOW_CREDENTIALS, t);
        }
    }
}

/// A CORS preflight: `OPTIONS` with an `Origin` and `Access-Control-Request-Method`.
fn is_preflight(headers: &HeaderMap) -> bool {
    origin_of(headers).is_some() && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

impl Plugin for Cors {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let h = &cx.req.headers;
        if cx.req.method != http::Method::OPTIONS || !is_preflight(h) || self.preflight_continue {
            return Ok(Flow::Continue);
        }
        let origin = origin_of(h);
        let mut headers = HeaderMap::new();
        let mut out = Out {
            h: &mut headers,
            append_vary: false,
        };
        let allow_all = self.configure_origin(&mut out, origin);
        self.configure_credentials(&mut out, allow_all, origin);
        match &self.allow_headers {
            Some(v) => out.set(ACCESS_CONTROL_ALLOW_HEADERS, v.clone()),
            None => {
                if let Some(v) = h.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    out.set(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
                }
            }
        }
        out.set(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        if let Some(v) = &self.max_age {
            out.set(ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.private_network && h.get(&ACRPN).is_some_and(|v| v == "true") {
            out.set(ACAPN.clone(), HeaderValue::from_static("true"));
        }
        let mut exit = Exit {
            status: 200,
            body: crate::ExitBody::Empty,
            headers: Vec::with_capacity(headers.len()),
        };
        let mut last = None;
        for (k, v) in headers {
            if let Some(k) = k {
                last = Some(k);
            }
            if let Some(k) = &last {
                exit.headers.push((k.clone(), v));
            }
        }
        Ok(Flow::Exit(exit))
    }

    fn header_filter(&self, cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        // A preflight was answered in access (or delegated upstream with
        // preflight_continue): its response gets no further CORS headers.
        if is_preflight(cx.request_headers) {
            return Ok(());
        }
        let origin = origin_of(cx.request_headers);
        if origin.is_none() && !self.allow_origin_absent {
            return Ok(());
        }
        let mut out = Out {
            h: &mut cx.resp.headers,
            append_vary: true,
        };
        let allow_all = self.configure_origin(&mut out, origin);
        self.configure_credentials(&mut out, allow_all, origin);
        if let Some(v) = &self.exposed_headers {
            out.set(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn preflight(p: &dyn Plugin, extra: &[(&str, &str)]) -> Flow {
        let ix = fixture();
        let mut h = vec![("access-control-request-method", "PUT")];
        h.extend_from_slice(extra);
        run_access(p, &ix, parts("OPTIONS", "/", &h), None).0
    }

    fn exit_headers(e: &Exit) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in &e.headers {
            m.append(k.clone(), v.clone());
        }
        m
    }

    /// Runs header_filter on an empty 200 response.
    fn response(p: &dyn Plugin, req: &[(&str, &str)]) -> HeaderMap {
        let mut rh = HeaderMap::new();
        for (k, v) in req {
            rh.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (mut resp, _) = http::Response::new(()).into_parts();
        resp.headers
            .insert(VARY, "Accept-Encoding".parse().unwrap());
        let mut cx = ResponseCx {
            resp: &mut resp,
            request_headers: &rh,
            state: &mut None,
            connection: None,
            empty_body: false,
        };
        p.header_filter(&mut cx).unwrap();
        resp.headers
    }

    #[test]
    fn preflight_with_defaults() {
        let p = plugin(json!({}));
        let e = preflight(
            &*p,
            &[
                ("origin", "http://a.com"),
                ("access-control-request-headers", "X-Foo"),
            ],
        )
        .unwrap_exit();
        assert_eq!(e.status, 200);
        assert!(matches!(e.body, crate::ExitBody::Empty));
        let h = exit_headers(&e);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-headers"], "X-Foo");
        assert_eq!(
            h["access-control-allow-methods"],
            "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
        );
        assert!(!h.contains_key("vary"));
        assert!(!h.contains_key("access-control-max-age"));
        // Not a preflight: no Origin, or not OPTIONS, or no request method.
        let ix = fixture();
        assert!(preflight(&*p, &[]).is_continue());
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("OPTIONS", "/", &[("origin", "http://a.com")]),
            None,
        );
        assert!(f.is_continue());
        let p = plugin(json!({"preflight_continue": true}));
        assert!(preflight(&*p, &[("origin", "http://a.com")]).is_continue());
    }

    #[test]
    fn preflight_with_everything_configured() {
        let p = plugin(json!({
            "origins": ["http://a.com", "https://(.*\\.)?b\\.org"],
            "headers": ["X-One", "X-Two"], "methods": ["GET", "POST"], "max_age": 3600,
            "credentials": true, "private_network": true
        }));
        let e = preflight(
            &*p,
            &[
                ("origin", "https://api.b.org:443"),
                ("access-control-request-private-network", "true"),
            ],
        )
        .unwrap_exit();
        let h = exit_headers(&e);
        assert_eq!(h["access-control-allow-origin"], "https://api.b.org");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-headers"], "X-One,X-Two");
        assert_eq!(h["access-control-allow-methods"], "GET,POST");
        assert_eq!(h["access-control-max-age"], "3600");
        assert_eq!(h["access-control-allow-private-network"], "true");
        assert_eq!(h["vary"], "Origin");
        // A non-matching origin: no ACAO at all.
        let e = preflight(&*p, &[("origin", "https://evil.com")]).unwrap_exit();
        let h = exit_headers(&e);
        assert!(!h.contains_key("access-control-allow-origin"));
        assert!(!h.contains_key("access-control-allow-private-network"));
    }

    #[test]
    fn response_headers() {
        let p = plugin(json!({"exposed_headers": ["X-Req-Id"]}));
        let h = response(&*p, &[("origin", "http://x.com")]);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-expose-headers"], "X-Req-Id");
        // A single plain origin is sent whatever the request's, with Vary appended.
        let p = plugin(json!({"origins": ["http://mine.com"]}));
        let h = response(&*p, &[("origin", "http://other.com")]);
        assert_eq!(h["access-control-allow-origin"], "http://mine.com");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        // Regex matched against the host when the entry has no ':'.
        let p = plugin(json!({"origins": ["^.*\\.example\\.com$", "http://plain.io:8080"]}));
        let h = response(&*p, &[("origin", "https://www.example.com")]);
        assert_eq!(h["access-control-allow-origin"], "https://www.example.com");
        let h = response(&*p, &[("origin", "http://plain.io:8080")]);
        assert_eq!(h["access-control-allow-origin"], "http://plain.io:8080");
        let h = response(&*p, &[("origin", "https://example.com.evil")]);
        assert!(!h.contains_key("access-control-allow-origin"));
        // `*` with credentials echoes the origin.
        let p = plugin(json!({"credentials": true}));
        let h = response(&*p, &[("origin", "http://z.com")]);
        assert_eq!(h["access-control-allow-origin"], "http://z.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        // allow_origin_absent = false: nothing without an Origin.
        let p = plugin(json!({"allow_origin_absent": false}));
        let h = response(&*p, &[]);
        assert!(!h.contains_key("access-control-allow-origin"));
        let h = response(&*plugin(json!({})), &[]);
        assert_eq!(h["access-control-allow-origin"], "*");
    }

    #[test]
    fn origin_normalization_and_schema() {
        assert_eq!(normalize_origin("http://a.com:80").0, "http://a.com");
        assert_eq!(
            normalize_origin("https://a.com:8443").0,
            "https://a.com:8443"
        );
        assert_eq!(normalize_origin("https://u@a.com/x").1, "a.com");
        assert_eq!(normalize_origin("null"), ("null".into(), "null".into()));
        assert_eq!(normalize_origin("http://[::1]:81").0, "http://::1:81");
        assert!(validate_origin("*").is_ok());
        assert_eq!(
            validate_origin("(").unwrap_err(),
            "'(' is not a valid regex"
        );
    }
}
