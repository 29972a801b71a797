//! key-auth (`kong/plugins/key-auth/{schema,handler}.lua`): an API key in a header, the
//! query string or the body, looked up in the snapshot's `keyauth_credentials` index.

use crate::api::{Credential, Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use crate::auth;
use crate::body::{self, Arg};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde::Deserialize;
use serde_json::json;
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "key-auth";
pub const PRIORITY: i32 = 1250;

pub const ERR_DUPLICATE_API_KEY: &str = "Duplicate API key found";
pub const ERR_NO_API_KEY: &str = "No API key found in request";
pub const ERR_INVALID_AUTH_CRED: &str = "Unauthorized";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: true,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

fn schema() -> PluginDef {
    let key_name = Field::new("element", Type::String)
        .required()
        .custom(auth::validate_header_name)
        .describe("A string representing an HTTP header name.");
    let b = |name, default: bool, d| {
        Field::new(name, Type::Boolean)
            .required()
            .default(json!(default))
            .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("key_names", Type::Array(Box::new(key_name)))
                .required()
                .default(json!(["apikey"]))
                .describe("Describes an array of parameter names where the plugin will look for a key. The key names may only contain [a-z], [A-Z], [0-9], [_] underscore, and [-] hyphen."),
            b("hide_credentials", false, "An optional boolean value telling the plugin to show or hide the credential from the upstream service. If `true`, the plugin strips the credential from the request."),
            Field::new("anonymous", Type::String).describe("An optional string (consumer UUID or username) value to use as an “anonymous” consumer if authentication fails. If empty (default null), the request will fail with an authentication failure `4xx`."),
            b("key_in_header", true, "If enabled (default), the plugin reads the request header and tries to find the key in it."),
            b("key_in_query", true, "If enabled (default), the plugin reads the query parameter in the request and tries to find the key in it."),
            b("key_in_body", false, "If enabled, the plugin reads the request body. Supported MIME types: `application/www-form-urlencoded`, `application/json`, and `multipart/form-data`."),
            b("run_on_preflight", true, "A boolean value that indicates whether the plugin should run (and try to authenticate) on `OPTIONS` preflight requests. If set to `false`, then `OPTIONS` requests are always allowed."),
            Field::new("realm", Type::String).describe("When authentication fails the plugin sends `WWW-Authenticate` header with `realm` attribute value."),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: true,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

/// The user-facing config (the schema has validated and defaulted it).
#[derive(Deserialize)]
#[serde(default)]
pub struct KeyAuthConfig {
    pub key_names: Vec<String>,
    pub hide_credentials: bool,
    pub anonymous: Option<String>,
    pub key_in_header: bool,
    pub key_in_query: bool,
    pub key_in_body: bool,
    pub run_on_preflight: bool,
    pub realm: Option<String>,
}

impl Default for KeyAuthConfig {
    fn default() -> Self {
        KeyAuthConfig {
            key_names: vec!["apikey".into()],
            hide_credentials: false,
            anonymous: None,
            key_in_header: true,
            key_in_query: true,
            key_in_body: false,
            run_on_preflight: true,
            realm: None,
        }
    }
}

struct KeyName {
    /// As configured, for the query and the body.
    name: String,
    /// Lower-cased header name, and its `_` → `-` variant (ngx's header table falls back
    /// to it on a miss).
    header: Option<HeaderName>,
    header_alt: Option<HeaderName>,
}

/// key-auth compiled.
pub struct KeyAuth {
    names: Vec<KeyName>,
    hide_credentials: bool,
    anonymous: Option<String>,
    key_in_header: bool,
    key_in_query: bool,
    key_in_body: bool,
    run_on_preflight: bool,
    www_authenticate: HeaderValue,
}

fn compile(config: &serde_json::Value) -> Result<Box<dyn Plugin>, String> {
    let c: KeyAuthConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let www = match &c.realm {
        Some(r) => format!("Key realm=\"{r}\""),
        None => "Key".into(),
    };
    let names = c
        .key_names
        .iter()
        .map(|n| {
            let lower = n.to_ascii_lowercase();
            let alt = lower.replace('_', "-");
            KeyName {
                header: HeaderName::from_bytes(lower.as_bytes()).ok(),
                header_alt: (alt != lower)
                    .then(|| HeaderName::from_bytes(alt.as_bytes()).ok())
                    .flatten(),
                name: n.clone(),
            }
        })
        .collect();
    Ok(Box::new(KeyAuth {
        names,
        hide_credentials: c.hide_credentials,
        anonymous: c.anonymous,
        key_in_header: c.key_in_header,
        key_in_query: c.key_in_query,
        key_in_body: c.key_in_body,
        run_on_preflight: c.run_on_preflight,
        www_authenticate: HeaderValue::from_str(&www).map_err(|e| e.to_string())?,
    }))
}

enum Found {
    None,
    One(String),
    Many,
}

fn header_values(cx: &RequestCx<'_>, name: &HeaderName) -> Found {
    let mut it = cx.req.headers.get_all(name).iter();
    match (it.next(), it.next()) {
        (None, _) => Found::None,
        // Bytes that are not text cannot be any stored key.
        (Some(v), None) => Found::One(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        (Some(_), Some(_)) => Found::Many,
    }
}

fn query_values(query: &str, name: &str) -> Found {
    let mut found = Found::None;
    for pair in query.split('&') {
        let has_eq = pair.contains('=');
        let Some((k, v)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        if k != name {
            continue;
        }
        found = match found {
            Found::None if has_eq => Found::One(v.into_owned()),
            // `?apikey` is `true` to Kong: present but not a key.
            Found::None => Found::None,
            _ => Found::Many,
        };
    }
    found
}

impl KeyAuth {
    fn unauthorized(&self, msg: &'static str) -> Exit {
        Exit::error(401, msg).with_header(WWW_AUTHENTICATE, self.www_authenticate.clone())
    }

    /// Kong's `do_authentication`: `Some(exit)` is an authentication failure.
    fn authenticate(&self, cx: &mut RequestCx<'_>) -> Option<Exit> {
        let mut key: Option<String> = None;
        for n in &self.names {
            let mut v = Found::None;
            if self.key_in_header {
                for h in [&n.header, &n.header_alt].into_iter().flatten() {
                    v = header_values(cx, h);
                    if !matches!(v, Found::None) {
                        break;
                    }
                }
            }
            if matches!(v, Found::None) && self.key_in_query {
                if let Some(q) = cx.query() {
                    v = query_values(q, &n.name);
                }
            }
            if matches!(v, Found::None) && self.key_in_body {
                v = match self.body_arg(cx, &n.name) {
                    Arg::None => Found::None,
                    Arg::One(s) => Found::One(s),
                    Arg::Many => Found::Many,
                };
            }
            match v {
                Found::One(k) => {
                    if self.hide_credentials {
                        cx.clear_query_arg(&n.name);
                        for h in [&n.header, &n.header_alt].into_iter().flatten() {
                            cx.req.headers.remove(h);
                        }
                        if self.key_in_body {
                            let ct = content_type(cx);
                            if let Some(new) = cx.body().and_then(|b| body::remove(&ct, b, &n.name))
                            {
                                cx.set_body(new);
                            }
                        }
                    }
                    key = Some(k);
                    break;
                }
                Found::Many => return Some(self.unauthorized(ERR_DUPLICATE_API_KEY)),
                Found::None => {}
            }
        }
        let key = match key {
            Some(k) if !k.is_empty() => k,
            _ => return Some(self.unauthorized(ERR_NO_API_KEY)),
        };
        let ix = cx.consumers;
        let now = cx.now();
        let Some((cred, consumer)) = ix.keyauth(&key, now) else {
            return Some(self.unauthorized(ERR_INVALID_AUTH_CRED));
        };
        cx.authenticate(
            consumer,
            Some(Credential {
                id: cred.id(),
                consumer_id: &consumer.id,
                identifier: cred.id(),
            }),
        );
        None
    }

    fn body_arg(&self, cx: &RequestCx<'_>, name: &str) -> Arg {
        match cx.body() {
            Some(b) => body::get(&content_type(cx), b, name),
            None => Arg::None,
        }
    }
}

fn content_type(cx: &RequestCx<'_>) -> String {
    cx.req
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl Plugin for KeyAuth {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        if !self.run_on_preflight && cx.req.method == http::Method::OPTIONS {
            return Ok(Flow::Continue);
        }
        auth::access(cx, self.anonymous.as_deref(), |cx| {
            self.authenticate(cx).map_or(Ok(()), Err)
        })
    }

    fn reads_body(&self) -> bool {
        self.key_in_body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};

    fn plugin(config: serde_json::Value) -> Box<dyn Plugin> {
        compile(&serde_json::Value::Object(crate::testing::defaults(
            &SPEC, config,
        )))
        .unwrap()
    }

    #[test]
    fn missing_bad_and_good_keys() {
        let ix = fixture();
        let p = plugin(json!({}));
        let (flow, h, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        let e = flow.unwrap_exit();
        assert_eq!((e.status, e.message()), (401, ERR_NO_API_KEY));
        assert_eq!(e.headers[0].1, "Key");
        assert!(!h.contains_key("x-consumer-id"));

        let (flow, _, _) = run_access(&*p, &ix, parts("GET", "/?apikey=nope", &[]), None);
        assert_eq!(flow.unwrap_exit().message(), ERR_INVALID_AUTH_CRED);

        let (flow, _, _) = run_access(&*p, &ix, parts("GET", "/?apikey=a&apikey=b", &[]), None);
        assert_eq!(flow.unwrap_exit().message(), ERR_DUPLICATE_API_KEY);

        let (flow, h, _) = run_access(
            &*p,
            &ix,
            parts(
                "GET",
                "/",
                &[("apikey", "alice-key"), ("x-consumer-groups", "forged")],
            ),
            None,
        );
        assert!(flow.is_continue());
        assert_eq!(h["x-consumer-username"], "alice");
        assert_eq!(h["x-credential-identifier"], "cred-alice");
        assert!(!h.contains_key("x-anonymous-consumer"));
        assert_eq!(h["apikey"], "alice-key", "kept without hide_credentials");
    }

    #[test]
    fn hide_credentials_realm_and_header_underscores() {
        let ix = fixture();
        let p = plugin(json!({"hide_credentials": true, "key_names": ["api_key"], "realm": "r"}));
        let (flow, h, uri) = run_access(
            &*p,
            &ix,
            parts("GET", "/p?x=1&api_key=alice-key", &[]),
            None,
        );
        assert!(flow.is_continue());
        assert_eq!(uri, "/p?x=1");
        assert!(h.contains_key("x-consumer-id"));
        let (flow, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("api-key", "alice-key")]),
            None,
        );
        assert!(flow.is_continue());
        assert!(!h.contains_key("api-key"));
        let (flow, _, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        assert_eq!(flow.unwrap_exit().headers[0].1, "Key realm=\"r\"");
    }

    #[test]
    fn anonymous_and_preflight() {
        let ix = fixture();
        let p = plugin(json!({"anonymous": "anon", "run_on_preflight": false}));
        let (flow, h, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        assert!(flow.is_continue());
        assert_eq!(h["x-anonymous-consumer"], "true");
        assert_eq!(h["x-consumer-username"], "anon");
        let (flow, h, _) = run_access(&*p, &ix, parts("OPTIONS", "/", &[]), None);
        assert!(flow.is_continue());
        assert!(!h.contains_key("x-anonymous-consumer"));
        // An anonymous consumer that does not exist is a run-time failure.
        let p = plugin(json!({"anonymous": "ghost"}));
        let mut pr = parts("GET", "/", &[]);
        let mut cx = RequestCx::new(&mut pr, [127, 0, 0, 1].into(), &ix);
        assert!(p.access(&mut cx).is_err());
    }

    #[test]
    fn key_in_body() {
        let ix = fixture();
        let p = plugin(json!({"key_in_body": true, "hide_credentials": true}));
        assert!(p.reads_body());
        let (flow, _, body) = crate::testing::run_access_body(
            &*p,
            &ix,
            parts("POST", "/", &[("content-type", "application/json")]),
            br#"{"apikey":"alice-key","x":1}"#,
        );
        assert!(flow.is_continue());
        assert_eq!(&body[..], br#"{"x":1}"#);
    }
}
