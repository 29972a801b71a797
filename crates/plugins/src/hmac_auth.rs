//! hmac-auth (`kong/plugins/hmac-auth/{schema,handler,access}.lua`): an HTTP signature in
//! `Proxy-Authorization` or `Authorization` over chosen request headers, verified with
//! the `hmacauth_credentials` secret of its username; optionally a `Digest` of the body.

use crate::api::{Credential, Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use crate::auth;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, PROXY_AUTHORIZATION, WWW_AUTHENTICATE};
use regex::Regex;
use ring::hmac;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::LazyLock;
use tollgate_model::schema::{Check, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "hmac-auth";
pub const PRIORITY: i32 = 1030;

pub const ERR_UNAUTHORIZED: &str = "Unauthorized";
pub const ERR_DATE: &str = "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";
pub const ERR_SIGNATURE_NOT_VALID: &str = "HMAC signature cannot be verified";
pub const ERR_SIGNATURE_NOT_SAME: &str = "HMAC signature does not match";

pub const ALGORITHMS: &[&str] = &["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];

static X_DATE: HeaderName = HeaderName::from_static("x-date");
static DATE: HeaderName = HeaderName::from_static("date");
static DIGEST: HeaderName = HeaderName::from_static("digest");

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
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("hide_credentials", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("An optional boolean value telling the plugin to show or hide the credential from the upstream service."),
            Field::new("clock_skew", Type::Number)
                .default(json!(300))
                .check(Check::Gt(0.0))
                .describe("Clock skew in seconds to prevent replay attacks."),
            Field::new("anonymous", Type::String).describe("An optional string (Consumer UUID or username) value to use as an “anonymous” consumer if authentication fails."),
            Field::new("validate_request_body", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("A boolean value telling the plugin to enable body validation."),
            Field::new(
                "enforce_headers",
                Type::Array(Box::new(Field::new("element", Type::String))),
            )
            .default(json!([]))
            .describe("A list of headers that the client should at least use for HTTP signature creation."),
            Field::new(
                "algorithms",
                Type::Array(Box::new(Field::new("element", Type::String).one_of(ALGORITHMS))),
            )
            .default(json!(ALGORITHMS))
            .describe("A list of HMAC digest algorithms that the user wants to support. Allowed values are `hmac-sha1`, `hmac-sha256`, `hmac-sha384`, and `hmac-sha512`"),
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

#[derive(Deserialize)]
#[serde(default)]
pub struct HmacAuthConfig {
    pub hide_credentials: bool,
    pub clock_skew: f64,
    pub anonymous: Option<String>,
    pub validate_request_body: bool,
    pub enforce_headers: Vec<String>,
    pub algorithms: Vec<String>,
    pub realm: Option<String>,
}

impl Default for HmacAuthConfig {
    fn default() -> Self {
        HmacAuthConfig {
            hide_credentials: false,
            clock_skew: 300.0,
            anonymous: None,
            validate_request_body: false,
            enforce_headers: Vec::new(),
            algorithms: ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
            realm: None,
        }
    }
}

/// hmac-auth compiled.
pub struct HmacAuth {
    hide_credentials: bool,
    clock_skew: f64,
    anonymous: Option<String>,
    validate_request_body: bool,
    enforce_headers: Vec<String>,
    algorithms: Vec<String>,
    www_authenticate: HeaderValue,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: HmacAuthConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let www = match &c.realm {
        Some(r) => format!("hmac realm=\"{r}\""),
        None => "hmac".into(),
    };
    Ok(Box::new(HmacAuth {
        hide_credentials: c.hide_credentials,
        clock_skew: c.clock_skew,
        anonymous: c.anonymous,
        validate_request_body: c.validate_request_body,
        enforce_headers: c.enforce_headers,
        algorithms: c.algorithms,
        www_authenticate: HeaderValue::from_str(&www).map_err(|e| e.to_string())?,
    }))
}

static HMAC_FIELDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"\s*[Hh]mac\s*username="(.+)",\s*algorithm="(.+)",\s*headers="(.+)",\s*signature="(.+)""#,
    )
    .expect("hmac regex")
});

/// `ngx.decode_base64`: padding optional.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The parameters of an `hmac username="…", algorithm="…", headers="…", signature="…"`.
struct Params {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: String,
}

fn parse_params(value: Option<&HeaderValue>) -> Option<Params> {
    let v = String::from_utf8_lossy(value?.as_bytes());
    let m = HMAC_FIELDS.captures(&v)?;
    Some(Params {
        username: m[1].to_owned(),
        algorithm: m[2].to_owned(),
        headers: m[3].split(' ').map(str::to_owned).collect(),
        signature: m[4].to_owned(),
    })
}

fn hmac_algorithm(name: &str) -> Option<hmac::Algorithm> {
    Some(match name {
        "hmac-sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "hmac-sha256" => hmac::HMAC_SHA256,
        "hmac-sha384" => hmac::HMAC_SHA384,
        "hmac-sha512" => hmac::HMAC_SHA512,
        _ => return None,
    })
}

/// Kong's signing string: `name: value` per listed header, `@request-target` and
/// `request-line` pseudo-headers, joined by newlines.
pub(crate) fn signing_string(req: &http::request::Parts, headers: &[String]) -> String {
    let uri = match req.uri.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}", req.uri.path()),
        _ => req.uri.path().to_owned(),
    };
    let mut out = String::new();
    for (i, h) in headers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let value = HeaderName::from_bytes(h.as_bytes())
            .ok()
            .and_then(|n| req.headers.get(n))
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        match value {
            Some(v) => {
                out.push_str(h);
                out.push_str(": ");
                out.push_str(&v);
            }
            None if h == "@request-target" => {
                out.push_str("@request-target: ");
                out.push_str(&req.method.as_str().to_ascii_lowercase());
                out.push(' ');
                out.push_str(&uri);
            }
            None if h == "request-line" => {
                let version = match req.version {
                    http::Version::HTTP_09 => "0.9",
                    http::Version::HTTP_10 => "1.0",
                    http::Version::HTTP_2 => "2.0",
                    http::Version::HTTP_3 => "3.0",
                    _ => "1.1",
                };
                out.push_str(&format!("{} {uri} HTTP/{version}", req.method));
            }
            None => {
                out.push_str(h);
                out.push(':');
            }
        }
    }
    out
}

impl HmacAuth {
    fn unauthorized(&self, msg: &'static str) -> Exit {
        Exit::error(401, msg).with_header(WWW_AUTHENTICATE, self.www_authenticate.clone())
    }

    fn clock_ok(&self, cx: &mut RequestCx<'_>, name: &HeaderName) -> bool {
        let Some(t) = cx
            .req
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
        else {
            return false;
        };
        let t = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as f64)
            .unwrap_or(-1.0);
        (cx.now() as f64 - t).abs() <= self.clock_skew
    }

    fn body_ok(&self, cx: &RequestCx<'_>) -> bool {
        let body: &[u8] = cx.body().map(|b| &b[..]).unwrap_or_default();
        match cx.req.headers.get(&DIGEST) {
            // No digest is fine only without a body.
            None => body.is_empty(),
            Some(got) => {
                let d = ring::digest::digest(&ring::digest::SHA256, body);
                let want = format!("SHA-256={}", STANDARD.encode(d.as_ref()));
                auth::ct_eq(want.as_bytes(), got.as_bytes())
            }
        }
    }

    /// Kong's `do_authentication`: `Err` is the failure response.
    fn authenticate(&self, cx: &mut RequestCx<'_>) -> Result<(), Exit> {
        let h = &cx.req.headers;
        if !h.contains_key(AUTHORIZATION) && !h.contains_key(PROXY_AUTHORIZATION) {
            return Err(self.unauthorized(ERR_UNAUTHORIZED));
        }
        if !(self.clock_ok(cx, &X_DATE) || self.clock_ok(cx, &DATE)) {
            return Err(self.unauthorized(ERR_DATE));
        }
        let params = match parse_params(cx.req.headers.get(PROXY_AUTHORIZATION)) {
            Some(p) => {
                if self.hide_credentials {
                    cx.req.headers.remove(PROXY_AUTHORIZATION);
                }
                Some(p)
            }
            None => {
                let p = parse_params(cx.req.headers.get(AUTHORIZATION));
                if self.hide_credentials {
                    cx.req.headers.remove(AUTHORIZATION);
                }
                p
            }
        };
        let Some(params) = params else {
            return Err(self.unauthorized(ERR_SIGNATURE_NOT_VALID));
        };
        // validate_params: enforced headers signed, algorithm allowed.
        let enforced = self
            .enforce_headers
            .iter()
            .all(|e| params.headers.iter().any(|h| h == e));
        let alg = self
            .algorithms
            .contains(&params.algorithm)
            .then(|| hmac_algorithm(&params.algorithm))
            .flatten();
        let Some(alg) = alg.filter(|_| enforced) else {
            return Err(self.unauthorized(ERR_SIGNATURE_NOT_VALID));
        };
        let ix = cx.consumers;
        let Some((cred, consumer)) = ix.hmacauth(&params.username) else {
            return Err(self.unauthorized(ERR_SIGNATURE_NOT_VALID));
        };
        let signing = signing_string(cx.req, &params.headers);
        let ok = B64.decode(params.signature.as_bytes()).is_ok_and(|sig| {
            hmac::verify(
                &hmac::Key::new(alg, cred.secret.as_bytes()),
                signing.as_bytes(),
                &sig,
            )
            .is_ok()
        });
        if !ok {
            return Err(self.unauthorized(ERR_SIGNATURE_NOT_SAME));
        }
        if self.validate_request_body && !self.body_ok(cx) {
            return Err(self.unauthorized(ERR_SIGNATURE_NOT_SAME));
        }
        cx.authenticate(
            consumer,
            Some(Credential {
                id: &cred.id,
                consumer_id: &consumer.id,
                identifier: &cred.username,
            }),
        );
        Ok(())
    }
}

impl Plugin for HmacAuth {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        auth::access(cx, self.anonymous.as_deref(), |cx| self.authenticate(cx))
    }

    fn reads_body(&self) -> bool {
        self.validate_request_body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{parts, run_access, ALICE, ANON};
    use crate::ConsumerIndex;
    use bytes::Bytes;
    use serde_json::Map;
    use std::collections::BTreeMap;

    fn index() -> ConsumerIndex {
        let rows = |v: Value| -> Vec<Map<String, Value>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_object().unwrap().clone())
                .collect()
        };
        let mut d = BTreeMap::new();
        d.insert(
            "consumers".into(),
            rows(json!([{"id": ALICE, "username": "alice"}, {"id": ANON, "username": "anon"}])),
        );
        d.insert(
            "hmacauth_credentials".into(),
            rows(json!([{"id": "h1", "username": "alice-hmac", "secret": "topsecret", "consumer": {"id": ALICE}}])),
        );
        ConsumerIndex::build(&d)
    }

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn date(offset: i64) -> String {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs((crate::testing::now() as i64 + offset) as u64);
        httpdate::fmt_http_date(t)
    }

    /// A signed request: `headers` are signed in order with `secret`.
    fn signed(
        method: &str,
        uri: &str,
        alg: &str,
        secret: &str,
        signed_headers: &[&str],
        mut headers: Vec<(&'static str, String)>,
    ) -> http::request::Parts {
        let mut pr = {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            parts(method, uri, &h)
        };
        let names: Vec<String> = signed_headers.iter().map(|s| (*s).to_owned()).collect();
        let s = signing_string(&pr, &names);
        let sig = hmac::sign(
            &hmac::Key::new(hmac_algorithm(alg).unwrap(), secret.as_bytes()),
            s.as_bytes(),
        );
        let auth = format!(
            "hmac username=\"alice-hmac\", algorithm=\"{alg}\", headers=\"{}\", signature=\"{}\"",
            signed_headers.join(" "),
            STANDARD.encode(sig.as_ref())
        );
        headers.push(("authorization", auth.clone()));
        pr.headers.insert(AUTHORIZATION, auth.parse().unwrap());
        pr
    }

    fn msg(f: Flow) -> (u16, String) {
        let e = f.unwrap_exit();
        (e.status, e.message().to_owned())
    }

    #[test]
    fn every_algorithm_authenticates() {
        let ix = index();
        let p = plugin(json!({}));
        for alg in ALGORITHMS {
            let pr = signed(
                "GET",
                "/r?a=1",
                alg,
                "topsecret",
                &["date", "@request-target", "request-line"],
                vec![("date", date(0))],
            );
            let (f, h, _) = run_access(&*p, &ix, pr, None);
            assert!(f.is_continue(), "{alg}");
            assert_eq!(h["x-consumer-username"], "alice");
            assert_eq!(h["x-credential-identifier"], "alice-hmac");
            assert!(h.contains_key("authorization"), "kept");
        }
    }

    #[test]
    fn failures() {
        let ix = index();
        let p = plugin(json!({"realm": "r"}));
        let e = run_access(&*p, &ix, parts("GET", "/", &[]), None)
            .0
            .unwrap_exit();
        assert_eq!((e.status, e.message()), (401, ERR_UNAUTHORIZED));
        assert_eq!(e.headers[0].1, "hmac realm=\"r\"");
        // No or stale date.
        let pr = signed("GET", "/", "hmac-sha256", "topsecret", &["date"], vec![]);
        assert_eq!(
            msg(run_access(&*p, &ix, pr, None).0),
            (401, ERR_DATE.into())
        );
        let pr = signed(
            "GET",
            "/",
            "hmac-sha256",
            "topsecret",
            &["date"],
            vec![("date", date(-400))],
        );
        assert_eq!(msg(run_access(&*p, &ix, pr, None).0).1, ERR_DATE);
        let pr = signed(
            "GET",
            "/",
            "hmac-sha256",
            "topsecret",
            &["x-date"],
            vec![("x-date", date(100)), ("date", "garbage".into())],
        );
        assert!(
            run_access(&*p, &ix, pr, None).0.is_continue(),
            "x-date within skew"
        );
        // Garbage authorization headers.
        for a in [
            "hmac",
            "Basic Zm9vOmJhcg==",
            "hmac username=\"x\"",
            &"x".repeat(20_000),
        ] {
            let pr = parts("GET", "/", &[("date", &date(0)), ("authorization", a)]);
            assert_eq!(
                msg(run_access(&*p, &ix, pr, None).0).1,
                ERR_SIGNATURE_NOT_VALID,
                "{a:.20}"
            );
        }
        let bad_sig = "hmac username=\"alice-hmac\", algorithm=\"hmac-sha256\", headers=\"date\", signature=\"%%%not base64\"";
        let pr = parts(
            "GET",
            "/",
            &[("date", &date(0)), ("authorization", bad_sig)],
        );
        assert_eq!(
            msg(run_access(&*p, &ix, pr, None).0).1,
            ERR_SIGNATURE_NOT_SAME
        );
        // Unknown user, wrong secret, tampered request.
        let pr = signed(
            "GET",
            "/",
            "hmac-sha256",
            "wrong",
            &["date"],
            vec![("date", date(0))],
        );
        assert_eq!(
            msg(run_access(&*p, &ix, pr, None).0).1,
            ERR_SIGNATURE_NOT_SAME
        );
        let mut pr = signed(
            "GET",
            "/a",
            "hmac-sha256",
            "topsecret",
            &["date", "@request-target"],
            vec![("date", date(0))],
        );
        pr.uri = "/b".parse().unwrap();
        assert_eq!(
            msg(run_access(&*p, &ix, pr, None).0).1,
            ERR_SIGNATURE_NOT_SAME
        );
        // Algorithms restricted, enforced headers missing.
        let p = plugin(json!({"algorithms": ["hmac-sha512"], "enforce_headers": ["date"]}));
        let pr = signed(
            "GET",
            "/",
            "hmac-sha256",
            "topsecret",
            &["date"],
            vec![("date", date(0))],
        );
        assert_eq!(
            msg(run_access(&*p, &ix, pr, None).0).1,
            ERR_SIGNATURE_NOT_VALID
        );
        let pr = signed(
            "GET",
            "/",
            "hmac-sha512",
            "topsecret",
            &["x-date"],
            vec![("x-date", date(0))],
        );
        assert_eq!(
            msg(run_access(&*p, &ix, pr, None).0).1,
            ERR_SIGNATURE_NOT_VALID
        );
        let pr = signed(
            "GET",
            "/",
            "hmac-sha512",
            "topsecret",
            &["date"],
            vec![("date", date(0))],
        );
        assert!(run_access(&*p, &ix, pr, None).0.is_continue());
    }

    #[test]
    fn body_digest_hide_credentials_and_anonymous() {
        let ix = index();
        let p = plugin(json!({"validate_request_body": true, "hide_credentials": true}));
        assert!(p.reads_body());
        let body = b"{\"a\":1}";
        let digest = format!(
            "SHA-256={}",
            STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, body).as_ref())
        );
        let mk = |d: Option<&str>| {
            let mut h = vec![("date", date(0))];
            if let Some(d) = d {
                h.push(("digest", d.to_owned()));
            }
            signed(
                "POST",
                "/",
                "hmac-sha256",
                "topsecret",
                &["date", "digest"],
                h,
            )
        };
        let (f, h, _) = run_access(&*p, &ix, mk(Some(&digest)), Some(Bytes::from_static(body)));
        assert!(f.is_continue());
        assert!(!h.contains_key("authorization"), "hidden");
        let (f, _, _) = run_access(&*p, &ix, mk(Some(&digest)), Some(Bytes::from_static(b"{}")));
        assert_eq!(msg(f).1, ERR_SIGNATURE_NOT_SAME, "body changed");
        let (f, _, _) = run_access(&*p, &ix, mk(None), Some(Bytes::from_static(body)));
        assert_eq!(msg(f).1, ERR_SIGNATURE_NOT_SAME, "body without digest");
        let (f, _, _) = run_access(&*p, &ix, mk(None), None);
        assert!(f.is_continue(), "no body, no digest");

        let p = plugin(json!({"anonymous": ANON}));
        let (f, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("authorization", "hmac junk")]),
            None,
        );
        assert!(f.is_continue());
        assert_eq!(h["x-anonymous-consumer"], "true");
        assert_eq!(h["x-consumer-id"], ANON);
    }

    #[test]
    fn schema_rejects_bad_values() {
        use tollgate_model::schema::{Context, Operation};
        let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
        for cfg in [
            json!({"clock_skew": 0}),
            json!({"algorithms": ["hmac-md5"]}),
        ] {
            let mut row = Map::new();
            row.insert("name".into(), json!(NAME));
            row.insert("config".into(), cfg.clone());
            assert!(
                cat.validate(&mut row, &Context::new(Operation::Insert))
                    .is_err(),
                "{cfg}"
            );
        }
    }
}
