//! Entry points for the `jwt` and `basic_auth` cargo-fuzz targets in `fuzz/` and for the
//! seed-corpus test: arbitrary bytes through each plugin's credential parsing and then
//! through its access phase against a consumer index with known credentials. Never panics
//! on any input; asserts its own invariants, chief among them that a request is let
//! through only with a credential checked here independently.

use crate::{basic_auth, jwt, ConsumerIndex, Flow, Plugin, PluginSpec, RequestCx};
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use tollgate_model::schema::{Context, Operation};
use tollgate_model::PluginCatalog;

const ALICE: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const BOB: &str = "bbbbbbbb-0000-4000-8000-000000000002";
/// The JWT credentials: key (the `iss` claim), algorithm, secret.
const JWT_SECRETS: &[(&str, &str, &str)] = &[
    ("hs256", "HS256", "s3cr3t"),
    ("hs384", "HS384", "another-secret"),
    ("hs512", "HS512", "third"),
];

fn rows(v: Value) -> Vec<Map<String, Value>> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_object().cloned())
        .collect()
}

/// Consumers alice and bob; alice has every JWT secret and basic-auth `alice:pw`.
fn index() -> &'static ConsumerIndex {
    static IX: OnceLock<ConsumerIndex> = OnceLock::new();
    IX.get_or_init(|| {
        let mut d = BTreeMap::new();
        d.insert(
            "consumers".into(),
            rows(json!([{"id": ALICE, "username": "alice"}, {"id": BOB, "username": "bob"}])),
        );
        let secrets: Vec<Value> = JWT_SECRETS
            .iter()
            .map(|(key, alg, secret)| {
                json!({"id": format!("jwt-{key}"), "key": key, "algorithm": alg,
                       "secret": secret, "consumer": {"id": ALICE}})
            })
            .collect();
        d.insert("jwt_secrets".into(), rows(Value::Array(secrets)));
        d.insert(
            "basicauth_credentials".into(),
            rows(
                json!([{"id": "basic-alice", "username": "alice", "consumer": {"id": ALICE},
                         "password": basic_auth::hash(ALICE, b"pw")}]),
            ),
        );
        ConsumerIndex::build(&d)
    })
}

/// A plugin compiled from `config` as the Admin API would store it (validated, defaulted).
fn compiled(spec: &PluginSpec, config: Value) -> Box<dyn Plugin> {
    let cat = PluginCatalog::new(vec![(spec.schema)()], &["bundled".into()]).expect("catalog");
    let mut row = Map::new();
    row.insert("name".into(), json!(spec.name));
    row.insert("config".into(), config);
    cat.validate(&mut row, &Context::new(Operation::Insert))
        .unwrap_or_else(|e| panic!("{}: {}", spec.name, e.message()));
    (spec.compile)(&row["config"]).expect("compiles")
}

/// Runs `access` on a GET of `uri` with `headers`; whether it continued, with whom, and
/// the exit status otherwise.
fn access(
    p: &dyn Plugin,
    uri: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> Option<Result<Option<String>, u16>> {
    let mut b = http::Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let mut parts = b.body(()).ok()?.into_parts().0;
    let mut cx = RequestCx::new(&mut parts, [127, 0, 0, 1].into(), index());
    let flow = p.access(&mut cx).expect("no run-time error");
    Some(match flow {
        Flow::Continue => Ok(cx.consumer().map(|c| c.id.to_string())),
        Flow::Exit(e) => Err(e.status),
        // Auth plugins never wait (only the redis and cluster rate-limiting policies do).
        Flow::Await(_) => panic!("an auth plugin waited"),
    })
}

/// HMAC of `signed` with the JWT secret the token's algorithm and `iss` pick, computed
/// here with ring, not by the plugin.
fn hmac_ok(token: &str) -> bool {
    let mut it = token.splitn(3, '.');
    let (Some(h), Some(c), Some(s)) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    let lenient = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let json = |x: &str| -> Option<Value> { serde_json::from_slice(&lenient.decode(x).ok()?).ok() };
    let (Some(header), Some(claims), Ok(sig)) = (json(h), json(c), lenient.decode(s)) else {
        return false;
    };
    let iss = match claims.get("iss").or_else(|| header.get("iss")) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => return false,
    };
    let Some((_, alg, secret)) = JWT_SECRETS.iter().find(|(k, _, _)| *k == iss) else {
        return false;
    };
    if header.get("alg").and_then(Value::as_str) != Some(alg) {
        return false;
    }
    let a = match *alg {
        "HS256" => ring::hmac::HMAC_SHA256,
        "HS384" => ring::hmac::HMAC_SHA384,
        _ => ring::hmac::HMAC_SHA512,
    };
    let signed = &token[..h.len() + 1 + c.len()];
    ring::hmac::verify(
        &ring::hmac::Key::new(a, secret.as_bytes()),
        signed.as_bytes(),
        &sig,
    )
    .is_ok()
}

/// Fuzzes JWT decoding and the jwt plugin's access phase.
///
/// Input layout: byte 0 is the mode. Even: the rest is the token. Odd: the rest is
/// `header JSON \n claims JSON`, signed here with the secret of credential `byte 0 >> 1`
/// (so the claim checks after the signature are reached too).
pub fn jwt(data: &[u8]) {
    let (&mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let text = String::from_utf8_lossy(rest);
        let (h, c) = text.split_once('\n').unwrap_or((&text, "{}"));
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c)
        );
        let (_, alg, secret) = JWT_SECRETS[(mode as usize >> 1) % JWT_SECRETS.len()];
        let a = match alg {
            "HS256" => ring::hmac::HMAC_SHA256,
            "HS384" => ring::hmac::HMAC_SHA384,
            _ => ring::hmac::HMAC_SHA512,
        };
        let sig = ring::hmac::sign(
            &ring::hmac::Key::new(a, secret.as_bytes()),
            signed.as_bytes(),
        );
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };

    if let Ok(d) = jwt::decode(&token) {
        assert!(token.starts_with(d.signed), "signed part is a prefix");
        assert_eq!(token.as_bytes().get(d.signed.len()), Some(&b'.'));
        assert_eq!(d.signed.matches('.').count(), 1, "header.claims");
        let alg = d.header.get("alg").and_then(Value::as_str).unwrap_or("");
        assert!(jwt::ALGORITHMS.contains(&alg), "{alg}");
    }

    static PLUGINS: OnceLock<Vec<Box<dyn Plugin>>> = OnceLock::new();
    let plugins = PLUGINS.get_or_init(|| {
        vec![
            compiled(&jwt::SPEC, json!({"cookie_names": ["jwt"]})),
            compiled(
                &jwt::SPEC,
                json!({"claims_to_verify": ["exp", "nbf"], "maximum_expiration": 3600,
                       "header_names": ["authorization", "x-jwt"]}),
            ),
        ]
    });
    // Each way in carries exactly `token` to the plugin (checked below against it): the
    // query escaped; the header when `Bearer\s+(.+)` captures all of it; the cookie when
    // no `;` cuts it and no trimming changes it.
    let escaped = tollgate_model::fuzzing::escape(&token);
    let exact = |t: &str| t.trim() == t && !t.is_empty();
    let bearer = exact(&token)
        .then(|| http::HeaderValue::from_str(&format!("Bearer {token}")).ok())
        .flatten();
    let cookie = (exact(&token) && !token.contains(';'))
        .then(|| http::HeaderValue::from_str(&format!("jwt={token}")).ok())
        .flatten();
    for p in plugins {
        let mut tries: Vec<(String, Vec<(http::HeaderName, http::HeaderValue)>)> =
            vec![(format!("/?jwt={escaped}"), Vec::new())];
        if let Some(v) = &bearer {
            tries.push(("/".into(), vec![(AUTHORIZATION, v.clone())]));
        }
        if let Some(v) = &cookie {
            tries.push(("/".into(), vec![(COOKIE, v.clone())]));
        }
        for (uri, headers) in tries {
            match access(p.as_ref(), &uri, &headers) {
                None => {}
                Some(Ok(consumer)) => {
                    assert_eq!(
                        consumer.as_deref(),
                        Some(ALICE),
                        "let through as {consumer:?}"
                    );
                    assert!(
                        hmac_ok(&token),
                        "let through without a valid signature: {token:?}"
                    );
                }
                Some(Err(status)) => assert_eq!(status, 401, "{token:?} via {uri} {headers:?}"),
            }
        }
    }
}

/// `ngx.decode_base64` as the base64 crate reads it: standard alphabet, padding
/// optional, stray low bits allowed.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Fuzzes basic-auth's `Authorization` parsing and the plugin's access phase.
///
/// Input: byte 0 picks the headers (Authorization, Proxy-Authorization or both), the rest
/// is the header value.
pub fn basic_auth(data: &[u8]) {
    let (&mode, value) = data.split_first().unwrap_or((&0, &[]));

    // The decoder agrees with the base64 crate on everything up to the first `=`.
    let end = value.iter().position(|&c| c == b'=').unwrap_or(value.len());
    assert_eq!(
        basic_auth::decode_base64(value),
        STANDARD_LENIENT.decode(&value[..end]).ok(),
        "{value:?}"
    );

    let parsed = basic_auth::parse(value);
    if let Some((user, pw)) = &parsed {
        assert!(!user.is_empty() && !user.contains(&b':'), "user {user:?}");
        assert!(!pw.contains(&b'\n'), "password {pw:?}");
        // Encoded again, the pair reads back the same.
        let mut plain = user.clone();
        plain.push(b':');
        plain.extend_from_slice(pw);
        let header = format!("Basic {}", STANDARD.encode(&plain));
        assert_eq!(
            basic_auth::parse(header.as_bytes()).as_ref(),
            Some(&(user.clone(), pw.clone()))
        );
    }

    static PLUGIN: OnceLock<Box<dyn Plugin>> = OnceLock::new();
    let p = PLUGIN.get_or_init(|| compiled(&basic_auth::SPEC, json!({})));
    let Ok(v) = http::HeaderValue::from_bytes(value) else {
        return;
    };
    let headers = match mode % 3 {
        0 => vec![(AUTHORIZATION, v)],
        1 => vec![(PROXY_AUTHORIZATION, v)],
        _ => vec![(PROXY_AUTHORIZATION, v.clone()), (AUTHORIZATION, v)],
    };
    match access(p.as_ref(), "/", &headers) {
        None => {}
        Some(Ok(consumer)) => {
            assert_eq!(consumer.as_deref(), Some(ALICE));
            assert_eq!(
                parsed,
                Some((b"alice".to_vec(), b"pw".to_vec())),
                "{value:?}"
            );
        }
        Some(Err(status)) => assert_eq!(status, 401, "{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness is not vacuous: its credentials do let requests through.
    #[test]
    fn known_credentials_pass() {
        let p = compiled(&basic_auth::SPEC, json!({}));
        let h = http::HeaderValue::from_static("Basic YWxpY2U6cHc=");
        assert_eq!(
            access(p.as_ref(), "/", &[(AUTHORIZATION, h)]),
            Some(Ok(Some(ALICE.to_string())))
        );
        let p = compiled(&jwt::SPEC, json!({}));
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"hs256"}"#)
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cr3t");
        let sig = ring::hmac::sign(&key, signed.as_bytes());
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        assert!(hmac_ok(&token));
        assert_eq!(
            access(p.as_ref(), &format!("/?jwt={token}"), &[]),
            Some(Ok(Some(ALICE.to_string())))
        );
    }
}
