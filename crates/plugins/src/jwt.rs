//! jwt (`kong/plugins/jwt/{schema,handler,jwt_parser}.lua`): a JSON Web Token from the
//! query string, a cookie or a header, verified with the consumer's `jwt_secrets`
//! credential found by the token's key claim (`iss` by default).

use crate::api::RequestCx;
use crate::api::{Credential, Exit, ExitBody, Flow, Phases, Plugin, PluginError, PluginSpec};
use crate::auth;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::{HeaderName, HeaderValue, COOKIE, WWW_AUTHENTICATE};
use regex::Regex;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::LazyLock;
use tollgate_model::schema::{EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "jwt";
pub const PRIORITY: i32 = 1450;

pub const ERR_UNAUTHORIZED: &str = "Unauthorized";
pub const ERR_MULTIPLE_TOKENS: &str = "Multiple tokens provided";
pub const ERR_UNRECOGNIZABLE: &str = "Unrecognizable token";
pub const ERR_INVALID_ALGORITHM: &str = "Invalid algorithm";
pub const ERR_INVALID_KEY: &str = "Invalid key/secret";
pub const ERR_INVALID_SIGNATURE: &str = "Invalid signature";

/// The algorithms Kong's jwt_parser knows (`alg_verify`).
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

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
    let set = |name, default: Value, d| {
        Field::new(
            name,
            Type::Set(Box::new(Field::new("element", Type::String))),
        )
        .default(default)
        .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            set("uri_param_names", json!(["jwt"]), "A list of querystring parameters that Kong will inspect to retrieve JWTs."),
            set("cookie_names", json!([]), "A list of cookie names that Kong will inspect to retrieve JWTs."),
            Field::new("key_claim_name", Type::String)
                .default(json!("iss"))
                .describe("The name of the claim in which the key identifying the secret must be passed. The plugin will attempt to read this claim from the JWT payload and the header, in that order."),
            Field::new("secret_is_base64", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("If true, the plugin assumes the credential’s secret to be base64 encoded. You will need to create a base64-encoded secret for your Consumer, and sign your JWT with the original secret."),
            Field::new(
                "claims_to_verify",
                Type::Set(Box::new(Field::new("element", Type::String).one_of(&["exp", "nbf"]))),
            )
            .describe("A list of registered claims (according to RFC 7519) that Kong can verify as well. Accepted values: one of exp or nbf."),
            Field::new("anonymous", Type::String).describe("An optional string (consumer UUID or username) value to use as an “anonymous” consumer if authentication fails."),
            Field::new("run_on_preflight", Type::Boolean)
                .required()
                .default(json!(true))
                .describe("A boolean value that indicates whether the plugin should run (and try to authenticate) on OPTIONS preflight requests. If set to false, then OPTIONS requests will always be allowed."),
            Field::new("maximum_expiration", Type::Number)
                .default(json!(0))
                .between(0, 31_536_000)
                .describe("A value between 0 and 31536000 (365 days) limiting the lifetime of the JWT to maximum_expiration seconds in the future."),
            set("header_names", json!(["authorization"]), "A list of HTTP header names that Kong will inspect to retrieve JWTs."),
            Field::new("realm", Type::String).describe("When authentication fails the plugin sends `WWW-Authenticate` header with `realm` attribute value."),
        ],
        // Kong's conditional: maximum_expiration > 0 needs claims_to_verify to contain exp.
        config_checks: vec![EntityCheck::Custom(|cfg| {
            let max = cfg
                .get("maximum_expiration")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let has_exp = cfg
                .get("claims_to_verify")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "exp"));
            if max > 0.0 && !has_exp {
                Err((Some("claims_to_verify"), "expected to contain: exp".into()))
            } else {
                Ok(())
            }
        })],
        checks: Vec::new(),
        no_consumer: true,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    pub uri_param_names: Vec<String>,
    pub cookie_names: Vec<String>,
    pub key_claim_name: String,
    pub secret_is_base64: bool,
    pub claims_to_verify: Option<Vec<String>>,
    pub anonymous: Option<String>,
    pub run_on_preflight: bool,
    pub maximum_expiration: f64,
    pub header_names: Vec<String>,
    pub realm: Option<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            uri_param_names: vec!["jwt".into()],
            cookie_names: Vec::new(),
            key_claim_name: "iss".into(),
            secret_is_base64: false,
            claims_to_verify: None,
            anonymous: None,
            run_on_preflight: true,
            maximum_expiration: 0.0,
            header_names: vec!["authorization".into()],
            realm: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Claim {
    Exp,
    Nbf,
}

/// jwt compiled.
pub struct Jwt {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    header_names: Vec<HeaderName>,
    key_claim_name: String,
    secret_is_base64: bool,
    claims_to_verify: Vec<Claim>,
    anonymous: Option<String>,
    run_on_preflight: bool,
    maximum_expiration: f64,
    www_base: HeaderValue,
    www_error: HeaderValue,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: JwtConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let (base, with_error) = match &c.realm {
        Some(r) => (
            format!("Bearer realm=\"{r}\""),
            format!("Bearer realm=\"{r}\", error=\"invalid_token\""),
        ),
        None => ("Bearer".into(), "Bearer error=\"invalid_token\"".into()),
    };
    let claims_to_verify = c
        .claims_to_verify
        .unwrap_or_default()
        .iter()
        .map(|c| match c.as_str() {
            "exp" => Ok(Claim::Exp),
            "nbf" => Ok(Claim::Nbf),
            other => Err(format!("unknown claim '{other}'")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Box::new(Jwt {
        uri_param_names: c.uri_param_names,
        cookie_names: c.cookie_names,
        // A name that cannot be a header is never sent.
        header_names: c
            .header_names
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
            .collect(),
        key_claim_name: c.key_claim_name,
        secret_is_base64: c.secret_is_base64,
        claims_to_verify,
        anonymous: c.anonymous,
        run_on_preflight: c.run_on_preflight,
        maximum_expiration: c.maximum_expiration,
        www_base: HeaderValue::from_str(&base).map_err(|e| e.to_string())?,
        www_error: HeaderValue::from_str(&with_error).map_err(|e| e.to_string())?,
    }))
}

/// `ngx.decode_base64url` after Kong pads the input: URL-safe alphabet, padding optional.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    B64URL.decode(s).ok()
}

static BEARER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s*[Bb]earer\s+(.+)").expect("bearer regex"));

/// A token candidate: `?jwt` without a value is Lua's `true`, not a string.
#[derive(PartialEq, Eq)]
enum Token {
    Text(String),
    NotText,
}

/// A decoded token (Kong's `jwt_parser:new`).
pub(crate) struct Decoded<'t> {
    /// `header_64 .. "." .. claims_64`, what the signature covers.
    pub(crate) signed: &'t str,
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    pub(crate) signature: Vec<u8>,
}

/// Kong's `decode_token`; the error is the text after `Bad token; `.
pub(crate) fn decode(token: &str) -> Result<Decoded<'_>, &'static str> {
    // At most three parts: a signature may itself contain dots.
    let mut it = token.splitn(3, '.');
    let (Some(h64), Some(c64), Some(s64)) = (it.next(), it.next(), it.next()) else {
        return Err("invalid JSON");
    };
    let json = |s: &str| -> Option<Value> { serde_json::from_slice(&b64url_decode(s)?).ok() };
    let (Some(header), Some(claims), Some(signature)) = (json(h64), json(c64), b64url_decode(s64))
    else {
        return Err("invalid JSON");
    };
    let Value::Object(header) = header else {
        return Err("invalid alg");
    };
    if !header
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| ALGORITHMS.contains(&a))
    {
        return Err("invalid alg");
    }
    let Value::Object(claims) = claims else {
        return Err("invalid claims");
    };
    Ok(Decoded {
        signed: &token[..h64.len() + 1 + c64.len()],
        header,
        claims,
        signature,
    })
}

/// The raw key of a PEM public key: PKCS#1 `RSAPublicKey` for RSA, the point for EC,
/// the 32 bytes for Ed25519 (what ring verifies with).
fn public_key_bytes(pem: &str) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
    match pem.label.as_str() {
        "RSA PUBLIC KEY" => Some(pem.contents),
        "PUBLIC KEY" => {
            let (_, spki) =
                x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents).ok()?;
            Some(spki.subject_public_key.data.to_vec())
        }
        _ => None,
    }
}

/// Kong's `alg_verify`. A key that does not parse or a signature of the wrong size
/// (assertion failures, so 500s, in Kong) is simply not valid.
fn verify(alg: &str, signed: &[u8], sig: &[u8], key: &[u8]) -> bool {
    use ring::hmac;
    let hmac_alg = match alg {
        "HS256" => Some(hmac::HMAC_SHA256),
        "HS384" => Some(hmac::HMAC_SHA384),
        "HS512" => Some(hmac::HMAC_SHA512),
        _ => None,
    };
    if let Some(a) = hmac_alg {
        return hmac::verify(&hmac::Key::new(a, key), signed, sig).is_ok();
    }
    let Some(raw) = std::str::from_utf8(key).ok().and_then(public_key_bytes) else {
        return false;
    };
    let v: &dyn signature::VerificationAlgorithm = match alg {
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
        "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        "EdDSA" => &signature::ED25519,
        // ring has no P-521.
        "ES512" => return es512_verify(signed, sig, &raw),
        _ => return false,
    };
    UnparsedPublicKey::new(v, raw).verify(signed, sig).is_ok()
}

/// ES512: ECDSA P-521 with SHA-512 over the raw 132-byte `r || s` (RFC 7518 §3.4);
/// `point` is the SEC1 public point. Any other size, or a point not on P-521, fails.
fn es512_verify(signed: &[u8], sig: &[u8], point: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier;
    use p521::ecdsa::{Signature, VerifyingKey};
    if sig.len() != 132 {
        return false;
    }
    let (Ok(key), Ok(sig)) = (
        VerifyingKey::from_sec1_bytes(point),
        Signature::from_slice(sig),
    ) else {
        return false;
    };
    key.verify(signed, &sig).is_ok()
}

/// An authentication failure: Kong's `{status, message | errors, headers}`.
struct Failure {
    body: Value,
    www: HeaderValue,
}

impl Jwt {
    fn fail(&self, message: impl Into<String>, with_error: bool) -> Failure {
        Failure {
            body: json!({ "message": message.into() }),
            www: if with_error {
                self.www_error.clone()
            } else {
                self.www_base.clone()
            },
        }
    }

    /// Kong's `retrieve_tokens`: every distinct non-empty candidate.
    fn tokens(&self, cx: &RequestCx<'_>) -> Vec<Token> {
        let mut set: Vec<Token> = Vec::new();
        let mut add = |t: Token| {
            if !set.contains(&t) {
                set.push(t);
            }
        };
        if let Some(q) = cx.query() {
            for pair in q.split('&') {
                let has_eq = pair.contains('=');
                let Some((k, v)) = form_urlencoded::parse(pair.as_bytes()).next() else {
                    continue;
                };
                if self.uri_param_names.iter().any(|n| *n == k) {
                    if !has_eq {
                        add(Token::NotText);
                    } else if !v.is_empty() {
                        add(Token::Text(v.into_owned()));
                    }
                }
            }
        }
        for name in &self.cookie_names {
            if let Some(v) = cookie(&cx.req.headers, name) {
                if !v.is_empty() {
                    add(Token::Text(v.to_owned()));
                }
            }
        }
        for name in &self.header_names {
            let Some(v) = cx.req.headers.get(name) else {
                continue;
            };
            let v = String::from_utf8_lossy(v.as_bytes());
            if let Some(m) = BEARER.captures(&v).and_then(|c| c.get(1)) {
                add(Token::Text(m.as_str().to_owned()));
            }
        }
        set
    }

    /// Kong's `do_authentication`.
    fn authenticate(&self, cx: &mut RequestCx<'_>) -> Result<(), Failure> {
        let mut tokens = self.tokens(cx);
        let token = match tokens.len() {
            0 => return Err(self.fail(ERR_UNAUTHORIZED, false)),
            1 => match tokens.pop() {
                Some(Token::Text(t)) => t,
                _ => return Err(self.fail(ERR_UNRECOGNIZABLE, true)),
            },
            _ => return Err(self.fail(ERR_MULTIPLE_TOKENS, true)),
        };
        let jwt = decode(&token).map_err(|e| self.fail(format!("Bad token; {e}"), true))?;
        let kc = &self.key_claim_name;
        let key = match jwt.claims.get(kc).or_else(|| jwt.header.get(kc)) {
            None | Some(Value::Null) => {
                return Err(self.fail(format!("No mandatory '{kc}' in claims"), true))
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(self.fail(format!("Invalid '{kc}' in claims"), true))
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let ix = cx.consumers;
        let Some((secret, consumer)) = ix.jwt_secret(&key) else {
            return Err(self.fail(format!("No credentials found for given '{kc}'"), true));
        };
        let alg = jwt.header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != &*secret.algorithm {
            return Err(self.fail(ERR_INVALID_ALGORITHM, true));
        }
        let key_material: Option<Vec<u8>> = if alg.starts_with("HS") {
            match &secret.secret {
                Some(s) if self.secret_is_base64 => b64url_decode(s),
                Some(s) => Some(s.as_bytes().to_vec()),
                None => None,
            }
        } else {
            secret
                .rsa_public_key
                .as_ref()
                .map(|k| k.as_bytes().to_vec())
        };
        let Some(key_material) = key_material else {
            return Err(self.fail(ERR_INVALID_KEY, true));
        };
        if !verify(alg, jwt.signed.as_bytes(), &jwt.signature, &key_material) {
            return Err(self.fail(ERR_INVALID_SIGNATURE, true));
        }
        let now = cx.now() as f64;
        let mut errors = Map::new();
        for claim in &self.claims_to_verify {
            let (name, v) = match claim {
                Claim::Exp => ("exp", jwt.claims.get("exp")),
                Claim::Nbf => ("nbf", jwt.claims.get("nbf")),
            };
            let err = match v.and_then(Value::as_f64) {
                None => "must be a number",
                Some(t) if *claim == Claim::Exp && t <= now => "token expired",
                Some(t) if *claim == Claim::Nbf && t > now => "token not valid yet",
                Some(_) => continue,
            };
            errors.insert(name.into(), err.into());
        }
        if errors.is_empty() && self.maximum_expiration > 0.0 {
            let exp = jwt.claims.get("exp").and_then(Value::as_f64);
            if exp.is_none_or(|e| e - now > self.maximum_expiration) {
                errors.insert("exp".into(), "exceeds maximum allowed expiration".into());
            }
        }
        if !errors.is_empty() {
            return Err(Failure {
                body: Value::Object(errors),
                www: self.www_error.clone(),
            });
        }
        cx.authenticate(
            consumer,
            Some(Credential {
                id: &secret.id,
                consumer_id: &consumer.id,
                identifier: &secret.key,
            }),
        );
        Ok(())
    }
}

/// `ngx.var.cookie_<name>`: the first cookie of that name.
fn cookie<'h>(h: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Plugin for Jwt {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        if !self.run_on_preflight && cx.req.method == http::Method::OPTIONS {
            return Ok(Flow::Continue);
        }
        auth::access(cx, self.anonymous.as_deref(), |cx| {
            self.authenticate(cx).map_err(|f| Exit {
                status: 401,
                body: ExitBody::Json(f.body),
                headers: vec![(WWW_AUTHENTICATE, f.www)],
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{parts, run_access, ALICE, BOB};
    use crate::ConsumerIndex;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
    use std::collections::BTreeMap;

    pub(crate) const RSA_PK8: &[u8] = include_bytes!("testdata/rsa.pk8.der");
    pub(crate) const RSA_PUB: &str = include_str!("testdata/rsa.pub.pem");
    const RSA_PKCS1_PUB: &str = include_str!("testdata/rsa.pkcs1.pem");

    fn pem(label: &str, der: &[u8]) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// Signs `claims` with `alg` and `key` (an HMAC secret or a PKCS#8 private key).
    pub(crate) fn sign(alg: &str, key: &[u8], claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": alg}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{h}.{c}");
        let rng = SystemRandom::new();
        let sig = match alg {
            "HS256" | "HS384" | "HS512" => {
                let a = match alg {
                    "HS256" => ring::hmac::HMAC_SHA256,
                    "HS384" => ring::hmac::HMAC_SHA384,
                    _ => ring::hmac::HMAC_SHA512,
                };
                ring::hmac::sign(&ring::hmac::Key::new(a, key), signed.as_bytes())
                    .as_ref()
                    .to_vec()
            }
            "RS256" | "RS384" | "RS512" | "PS256" => {
                let kp = RsaKeyPair::from_pkcs8(key).unwrap();
                let pad: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(pad, &rng, signed.as_bytes(), &mut sig).unwrap();
                sig
            }
            "ES256" | "ES384" => {
                let a = if alg == "ES256" {
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let kp = EcdsaKeyPair::from_pkcs8(a, key, &rng).unwrap();
                kp.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec()
            }
            _ => panic!("{alg}"),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A fresh EC key: (PKCS#8 private key, SPKI PEM public key).
    fn ec_key(alg: &str) -> (Vec<u8>, String) {
        let rng = SystemRandom::new();
        let (a, prefix) = if alg == "ES256" {
            (
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                "3059301306072a8648ce3d020106082a8648ce3d030107034200",
            )
        } else {
            (
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                "3076301006072a8648ce3d020106052b81040022036200",
            )
        };
        let pk8 = EcdsaKeyPair::generate_pkcs8(a, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(a, pk8.as_ref(), &rng).unwrap();
        let mut spki = hex::decode(prefix).unwrap();
        spki.extend_from_slice(kp.public_key().as_ref());
        (pk8.as_ref().to_vec(), pem("PUBLIC KEY", &spki))
    }

    fn index(secrets: Value) -> ConsumerIndex {
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
            rows(json!([
                {"id": ALICE, "username": "alice"},
                {"id": BOB, "username": "bob"},
                {"id": crate::testing::ANON, "username": "anon"},
            ])),
        );
        d.insert("jwt_secrets".into(), rows(secrets));
        ConsumerIndex::build(&d)
    }

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn bearer(p: &dyn Plugin, ix: &ConsumerIndex, token: &str) -> (Flow, http::HeaderMap) {
        let auth = format!("Bearer {token}");
        let (f, h, _) = run_access(p, ix, parts("GET", "/", &[("authorization", &auth)]), None);
        (f, h)
    }

    fn json_of(e: &Exit) -> &Value {
        match &e.body {
            ExitBody::Json(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn hs_index() -> ConsumerIndex {
        index(json!([
            {"id": "j1", "key": "alice-iss", "secret": "s3cr3t", "algorithm": "HS256", "consumer": {"id": ALICE}},
            {"id": "j2", "key": "bob-384", "secret": "bobsecret", "algorithm": "HS384", "consumer": {"id": BOB}},
            {"id": "j3", "key": "b64", "secret": "c2VjcmV0LWJ5dGVz", "algorithm": "HS512", "consumer": {"id": BOB}},
        ]))
    }

    #[test]
    fn hmac_tokens_from_header_query_and_cookie() {
        let ix = hs_index();
        let p = plugin(json!({"cookie_names": ["session"]}));
        let t = sign("HS256", b"s3cr3t", json!({"iss": "alice-iss"}));
        let (f, h) = bearer(&*p, &ix, &t);
        assert!(f.is_continue());
        assert_eq!(h["x-consumer-username"], "alice");
        assert_eq!(h["x-credential-identifier"], "alice-iss");
        let (f, _, _) = run_access(&*p, &ix, parts("GET", &format!("/?jwt={t}"), &[]), None);
        assert!(f.is_continue(), "query");
        let c = format!("a=b; session={t}");
        let (f, _, _) = run_access(&*p, &ix, parts("GET", "/", &[("cookie", &c)]), None);
        assert!(f.is_continue(), "cookie");
        // The same token twice is one token.
        let a = format!("Bearer {t}");
        let (f, _, _) = run_access(
            &*p,
            &ix,
            parts("GET", &format!("/?jwt={t}"), &[("authorization", &a)]),
            None,
        );
        assert!(f.is_continue());
        let t384 = sign("HS384", b"bobsecret", json!({"iss": "bob-384"}));
        let (f, h) = bearer(&*p, &ix, &t384);
        assert!(f.is_continue());
        assert_eq!(h["x-consumer-username"], "bob");
    }

    #[test]
    fn failures_and_messages() {
        let ix = hs_index();
        let p = plugin(json!({}));
        let msg = |f: Flow| {
            let e = f.unwrap_exit();
            assert_eq!(e.status, 401);
            (
                json_of(&e)["message"].as_str().unwrap_or("").to_owned(),
                e.headers[0].1.clone(),
            )
        };
        let (m, www) = msg(run_access(&*p, &ix, parts("GET", "/", &[]), None).0);
        assert_eq!(
            (m.as_str(), www.to_str().unwrap()),
            (ERR_UNAUTHORIZED, "Bearer")
        );
        let good = sign("HS256", b"s3cr3t", json!({"iss": "alice-iss"}));
        let other = sign("HS256", b"s3cr3t", json!({"iss": "alice-iss", "x": 1}));
        let a = format!("Bearer {good}");
        let (m, www) = msg(run_access(
            &*p,
            &ix,
            parts("GET", &format!("/?jwt={other}"), &[("authorization", &a)]),
            None,
        )
        .0);
        assert_eq!(m, ERR_MULTIPLE_TOKENS);
        assert_eq!(www, "Bearer error=\"invalid_token\"");
        assert_eq!(
            msg(run_access(&*p, &ix, parts("GET", "/?jwt", &[]), None).0).0,
            ERR_UNRECOGNIZABLE
        );
        for garbage in [
            "x",
            "a.b",
            "a.b.c",
            "!!!.???.***",
            "e30.e30",
            &"A".repeat(100_000),
        ] {
            assert_eq!(
                msg(bearer(&*p, &ix, garbage).0).0,
                "Bad token; invalid JSON",
                "{garbage:.20}"
            );
        }
        let hdr = |h: Value, c: Value| {
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(h.to_string()),
                URL_SAFE_NO_PAD.encode(c.to_string())
            )
        };
        assert_eq!(
            msg(bearer(&*p, &ix, &hdr(json!({"alg": "none"}), json!({}))).0).0,
            "Bad token; invalid alg"
        );
        assert_eq!(
            msg(bearer(&*p, &ix, &hdr(json!([1]), json!({}))).0).0,
            "Bad token; invalid alg"
        );
        assert_eq!(
            msg(bearer(&*p, &ix, &hdr(json!({"alg": "HS256"}), json!(5))).0).0,
            "Bad token; invalid claims"
        );
        assert_eq!(
            msg(bearer(&*p, &ix, &hdr(json!({"alg": "HS256"}), json!({}))).0).0,
            "No mandatory 'iss' in claims"
        );
        assert_eq!(
            msg(bearer(&*p, &ix, &hdr(json!({"alg": "HS256"}), json!({"iss": ""}))).0).0,
            "Invalid 'iss' in claims"
        );
        assert_eq!(
            msg(bearer(
                &*p,
                &ix,
                &hdr(json!({"alg": "HS256"}), json!({"iss": "who"}))
            )
            .0)
            .0,
            "No credentials found for given 'iss'"
        );
        assert_eq!(
            msg(bearer(
                &*p,
                &ix,
                &hdr(json!({"alg": "HS512"}), json!({"iss": "alice-iss"}))
            )
            .0)
            .0,
            ERR_INVALID_ALGORITHM
        );
        let forged = sign("HS256", b"wrong", json!({"iss": "alice-iss"}));
        assert_eq!(msg(bearer(&*p, &ix, &forged).0).0, ERR_INVALID_SIGNATURE);
        // The key claim can come from the header.
        let p = plugin(json!({"key_claim_name": "kid", "realm": "api"}));
        let t = sign("HS256", b"s3cr3t", json!({"sub": 1}));
        let (m, www) = msg(bearer(&*p, &ix, &t).0);
        assert_eq!(m, "No mandatory 'kid' in claims");
        assert_eq!(www, "Bearer realm=\"api\", error=\"invalid_token\"");
    }

    #[test]
    fn base64_secret() {
        let ix = hs_index();
        let p = plugin(json!({"secret_is_base64": true}));
        let t = sign("HS512", b"secret-bytes", json!({"iss": "b64"}));
        assert!(bearer(&*p, &ix, &t).0.is_continue());
        let p = plugin(json!({}));
        assert!(!bearer(&*p, &ix, &t).0.is_continue(), "secret used as text");
    }

    #[test]
    fn registered_claims_and_maximum_expiration() {
        let ix = hs_index();
        let now = crate::testing::now();
        let p = plugin(json!({"claims_to_verify": ["exp", "nbf"]}));
        let t = |c: Value| sign("HS256", b"s3cr3t", c);
        let errs = |f: Flow| json_of(&f.unwrap_exit()).clone();
        assert!(bearer(
            &*p,
            &ix,
            &t(json!({"iss": "alice-iss", "exp": now + 60, "nbf": now - 1}))
        )
        .0
        .is_continue());
        assert_eq!(
            errs(
                bearer(
                    &*p,
                    &ix,
                    &t(json!({"iss": "alice-iss", "exp": now - 1, "nbf": now + 60}))
                )
                .0
            ),
            json!({"exp": "token expired", "nbf": "token not valid yet"})
        );
        assert_eq!(
            errs(bearer(&*p, &ix, &t(json!({"iss": "alice-iss", "exp": "soon"}))).0),
            json!({"exp": "must be a number", "nbf": "must be a number"})
        );
        let p = plugin(json!({"claims_to_verify": ["exp"], "maximum_expiration": 100}));
        assert!(
            bearer(&*p, &ix, &t(json!({"iss": "alice-iss", "exp": now + 50})))
                .0
                .is_continue()
        );
        assert_eq!(
            errs(bearer(&*p, &ix, &t(json!({"iss": "alice-iss", "exp": now + 500}))).0),
            json!({"exp": "exceeds maximum allowed expiration"})
        );
    }

    #[test]
    fn rsa_and_ecdsa() {
        let (es256, es256_pub) = ec_key("ES256");
        let (es384, es384_pub) = ec_key("ES384");
        let ix = index(json!([
            {"id": "r1", "key": "rs256", "algorithm": "RS256", "rsa_public_key": RSA_PUB, "consumer": {"id": ALICE}},
            {"id": "r2", "key": "rs384", "algorithm": "RS384", "rsa_public_key": RSA_PKCS1_PUB, "consumer": {"id": ALICE}},
            {"id": "r3", "key": "rs512", "algorithm": "RS512", "rsa_public_key": RSA_PUB, "consumer": {"id": ALICE}},
            {"id": "r4", "key": "ps256", "algorithm": "PS256", "rsa_public_key": RSA_PUB, "consumer": {"id": ALICE}},
            {"id": "e1", "key": "es256", "algorithm": "ES256", "rsa_public_key": es256_pub, "consumer": {"id": BOB}},
            {"id": "e2", "key": "es384", "algorithm": "ES384", "rsa_public_key": es384_pub, "consumer": {"id": BOB}},
            {"id": "x1", "key": "broken", "algorithm": "RS256", "rsa_public_key": "not a pem", "consumer": {"id": BOB}},
            {"id": "x2", "key": "nokey", "algorithm": "RS256", "consumer": {"id": BOB}},
        ]));
        let p = plugin(json!({}));
        for (alg, key, iss) in [
            ("RS256", RSA_PK8, "rs256"),
            ("RS384", RSA_PK8, "rs384"),
            ("RS512", RSA_PK8, "rs512"),
            ("PS256", RSA_PK8, "ps256"),
            ("ES256", &es256[..], "es256"),
            ("ES384", &es384[..], "es384"),
        ] {
            let t = sign(alg, key, json!({"iss": iss}));
            let (f, h) = bearer(&*p, &ix, &t);
            assert!(f.is_continue(), "{alg}");
            assert_eq!(h["x-credential-identifier"], iss);
            // Tampered claims fail.
            let mut parts3: Vec<&str> = t.split('.').collect();
            let evil = URL_SAFE_NO_PAD.encode(json!({"iss": iss, "admin": true}).to_string());
            parts3[1] = &evil;
            let e = bearer(&*p, &ix, &parts3.join(".")).0.unwrap_exit();
            assert_eq!(json_of(&e)["message"], ERR_INVALID_SIGNATURE, "{alg}");
        }
        // A broken public key or a truncated signature is a 401, never a 500.
        let t = sign("RS256", RSA_PK8, json!({"iss": "broken"}));
        assert_eq!(
            json_of(&bearer(&*p, &ix, &t).0.unwrap_exit())["message"],
            ERR_INVALID_SIGNATURE
        );
        let t = sign("RS256", RSA_PK8, json!({"iss": "nokey"}));
        assert_eq!(
            json_of(&bearer(&*p, &ix, &t).0.unwrap_exit())["message"],
            ERR_INVALID_KEY
        );
        let t = sign("ES256", &es256, json!({"iss": "es256"}));
        let short = &t[..t.len() - 10];
        assert_eq!(
            json_of(&bearer(&*p, &ix, short).0.unwrap_exit())["message"],
            ERR_INVALID_SIGNATURE
        );
    }

    /// An ES512 key made by the `openssl` CLI (an independent implementation): its
    /// private key PEM path and SPKI public key PEM.
    pub(crate) fn openssl_p521(dir: &std::path::Path) -> (std::path::PathBuf, String) {
        let key = dir.join("p521.pem");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl CLI");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
            out.stdout
        };
        let k = key.to_str().unwrap();
        run(&[
            "ecparam",
            "-name",
            "secp521r1",
            "-genkey",
            "-noout",
            "-out",
            k,
        ]);
        let public = run(&["ec", "-in", k, "-pubout"]);
        (key, String::from_utf8(public).unwrap())
    }

    /// An ES512 token signed by `openssl dgst -sha512`, its DER signature turned into
    /// JWS's raw 132-byte `r || s`.
    pub(crate) fn openssl_es512(key: &std::path::Path, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "ES512"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{h}.{c}");
        let data = key.with_extension(format!("{}.txt", std::process::id()));
        std::fs::write(&data, &signed).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha512", "-sign", key.to_str().unwrap()])
            .arg(&data)
            .output()
            .expect("openssl CLI");
        assert!(out.status.success(), "{out:?}");
        let der = out.stdout;
        // SEQUENCE { INTEGER r, INTEGER s }; the length may take one extra byte.
        let mut at = if der[1] & 0x80 != 0 {
            2 + (der[1] & 0x7f) as usize
        } else {
            2
        };
        let mut raw = Vec::new();
        for _ in 0..2 {
            assert_eq!(der[at], 2, "INTEGER");
            let len = der[at + 1] as usize;
            let int = &der[at + 2..at + 2 + len];
            let int = &int[int.iter().take_while(|&&b| b == 0).count()..];
            raw.extend(std::iter::repeat_n(0, 66 - int.len()));
            raw.extend_from_slice(int);
            at += 2 + len;
        }
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw))
    }

    #[test]
    fn es512_with_an_openssl_key() {
        let dir = std::env::temp_dir().join(format!("tollgate-es512-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, public) = openssl_p521(&dir);
        let (_, p256_pub) = ec_key("ES256");
        let ix = index(json!([
            {"id": "e5", "key": "es512", "algorithm": "ES512", "rsa_public_key": public, "consumer": {"id": BOB}},
            {"id": "e6", "key": "wrongcurve", "algorithm": "ES512", "rsa_public_key": p256_pub, "consumer": {"id": BOB}},
        ]));
        let p = plugin(json!({}));
        let t = openssl_es512(&key, json!({"iss": "es512"}));
        let (f, h) = bearer(&*p, &ix, &t);
        assert!(f.is_continue());
        assert_eq!(h["x-credential-identifier"], "es512");
        let invalid = |token: &str| {
            let e = bearer(&*p, &ix, token).0.unwrap_exit();
            assert_eq!(e.status, 401, "{token}");
            assert_eq!(json_of(&e)["message"], ERR_INVALID_SIGNATURE, "{token}");
        };
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        // Tampered claims, a flipped bit, a truncated, a DER-sized, an all-zero and an
        // oversized signature: all 401.
        let evil = URL_SAFE_NO_PAD.encode(json!({"iss": "es512", "admin": true}).to_string());
        let h64 = signed.split('.').next().unwrap();
        invalid(&format!("{h64}.{evil}.{sig}"));
        let mut flipped = raw.clone();
        flipped[40] ^= 1;
        for bad in [
            flipped,
            raw[..131].to_vec(),
            raw[..70].to_vec(),
            vec![0; 132],
            vec![0xff; 132],
            [raw.clone(), vec![0]].concat(),
        ] {
            invalid(&format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bad)));
        }
        // A P-256 key stored for ES512 verifies nothing.
        let t = openssl_es512(&key, json!({"iss": "wrongcurve"}));
        invalid(&t);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn anonymous_and_preflight() {
        let ix = hs_index();
        let p = plugin(json!({"anonymous": "anon", "run_on_preflight": false}));
        let (f, h) = bearer(&*p, &ix, "garbage");
        assert!(f.is_continue());
        assert_eq!(h["x-anonymous-consumer"], "true");
        assert_eq!(h["x-consumer-username"], "anon");
        let (f, h, _) = run_access(&*p, &ix, parts("OPTIONS", "/", &[]), None);
        assert!(f.is_continue());
        assert!(!h.contains_key("x-consumer-id"));
    }

    #[test]
    fn schema_needs_exp_with_maximum_expiration() {
        use tollgate_model::schema::{Context, Operation};
        let cat = tollgate_model::PluginCatalog::new(vec![schema()], &["bundled".into()]).unwrap();
        let mut row = Map::new();
        row.insert("name".into(), json!(NAME));
        row.insert("config".into(), json!({"maximum_expiration": 10}));
        let err = cat
            .validate(&mut row, &Context::new(Operation::Insert))
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("expected to contain: exp"),
            "{err:?}"
        );
        let mut row = Map::new();
        row.insert("name".into(), json!(NAME));
        row.insert("config".into(), json!({"claims_to_verify": ["iat"]}));
        assert!(cat
            .validate(&mut row, &Context::new(Operation::Insert))
            .is_err());
    }
}
