//! basic-auth (`kong/plugins/basic-auth/{schema,access,crypto}.lua`): `Proxy-Authorization`
//! then `Authorization`, checked against the snapshot's `basicauth_credentials` index,
//! whose passwords are stored as Kong hashes them (hex SHA-1 of password .. consumer id).

use crate::api::{Credential, Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use crate::auth;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, PROXY_AUTHORIZATION, WWW_AUTHENTICATE};
use serde::Deserialize;
use serde_json::json;
use sha1::{Digest, Sha1};
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "basic-auth";
pub const PRIORITY: i32 = 1100;

pub const ERR_UNAUTHORIZED: &str = "Unauthorized";

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
            Field::new("anonymous", Type::String).describe("An optional string (Consumer UUID or username) value to use as an “anonymous” consumer if authentication fails. If empty (default null), the request will fail with an authentication failure `4xx`. Please note that this value must refer to the Consumer `id` or `username` attribute, and **not** its `custom_id`."),
            Field::new("hide_credentials", Type::Boolean)
                .required()
                .default(json!(false))
                .describe("An optional boolean value telling the plugin to show or hide the credential from the upstream service. If `true`, the plugin will strip the credential from the request (i.e. the `Authorization` header) before proxying it."),
            Field::new("realm", Type::String)
                .required()
                .default(json!("service"))
                .describe("When authentication fails the plugin sends `WWW-Authenticate` header with `realm` attribute value."),
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
pub struct BasicAuthConfig {
    #[serde(default)]
    pub anonymous: Option<String>,
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "service".into()
}

/// basic-auth compiled.
pub struct BasicAuth {
    anonymous: Option<String>,
    hide_credentials: bool,
    www_authenticate: HeaderValue,
}

fn compile(config: &serde_json::Value) -> Result<Box<dyn Plugin>, String> {
    let c: BasicAuthConfig = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let www = HeaderValue::from_str(&format!("Basic realm=\"{}\"", c.realm))
        .map_err(|e| format!("realm: {e}"))?;
    Ok(Box::new(BasicAuth {
        anonymous: c.anonymous,
        hide_credentials: c.hide_credentials,
        www_authenticate: www,
    }))
}

/// Kong's `hash(consumer_id, password)`.
pub fn hash(consumer_id: &str, password: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(password);
    h.update(consumer_id.as_bytes());
    hex::encode(h.finalize())
}

/// `ngx.decode_base64`: the alphabet up to the first `=`, padding optional; anything
/// else (or a length of 4n+1) is not base64.
pub(crate) fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let end = s.iter().position(|&c| c == b'=').unwrap_or(s.len());
    let s = &s[..end];
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// `\s*[Bb]asic\s*(.+)` (unanchored), base64, then `([^:]+):(.*)` (unanchored; `.`
/// stops at a newline).
pub(crate) fn parse(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let at = header
        .windows(5)
        .position(|w| w[0].eq_ignore_ascii_case(&b'b') && &w[1..] == b"asic")?;
    let rest = &header[at + 5..];
    let rest = &rest[rest.iter().position(|c| !c.is_ascii_whitespace())?..];
    // `.+` stops at a newline, which a header value cannot hold anyway.
    let decoded = decode_base64(rest)?;
    let start = decoded.iter().position(|&c| c != b':')?;
    let colon = start + decoded[start..].iter().position(|&c| c == b':')?;
    let user = decoded[start..colon].to_vec();
    let pw = &decoded[colon + 1..];
    let pw = &pw[..pw.iter().position(|&c| c == b'\n').unwrap_or(pw.len())];
    Some((user, pw.to_vec()))
}

impl BasicAuth {
    fn retrieve(&self, cx: &mut RequestCx<'_>, name: &HeaderName) -> Option<(Vec<u8>, Vec<u8>)> {
        let found = cx.req.headers.get(name).and_then(|v| parse(v.as_bytes()));
        if self.hide_credentials {
            cx.req.headers.remove(name);
        }
        found
    }

    fn unauthorized(&self) -> Exit {
        Exit::error(401, ERR_UNAUTHORIZED)
            .with_header(WWW_AUTHENTICATE, self.www_authenticate.clone())
    }

    /// Kong's `do_authentication`: `Some(exit)` is an authentication failure.
    fn authenticate(&self, cx: &mut RequestCx<'_>) -> Option<Exit> {
        let h = &cx.req.headers;
        if !h.contains_key(AUTHORIZATION) && !h.contains_key(PROXY_AUTHORIZATION) {
            return Some(self.unauthorized());
        }
        let ix = cx.consumers;
        let lookup = |user: &[u8]| std::str::from_utf8(user).ok().and_then(|u| ix.basicauth(u));
        let mut found = None;
        if let Some((user, pw)) = self.retrieve(cx, &PROXY_AUTHORIZATION) {
            found = lookup(&user).map(|c| (c, pw));
        }
        if found.is_none() {
            let (user, pw) = match self.retrieve(cx, &AUTHORIZATION) {
                Some(up) => up,
                None => return Some(self.unauthorized()),
            };
            found = lookup(&user).map(|c| (c, pw));
        }
        let Some(((cred, consumer), pw)) = found else {
            return Some(self.unauthorized());
        };
        if !auth::ct_eq(hash(&consumer.id, &pw).as_bytes(), cred.password.as_bytes()) {
            return Some(self.unauthorized());
        }
        cx.authenticate(
            consumer,
            Some(Credential {
                id: &cred.id,
                consumer_id: &consumer.id,
                identifier: &cred.username,
            }),
        );
        None
    }
}

impl Plugin for BasicAuth {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        auth::access(cx, self.anonymous.as_deref(), |cx| {
            self.authenticate(cx).map_or(Ok(()), Err)
        })
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

    fn basic(s: &str) -> String {
        use std::fmt::Write;
        // A tiny encoder for the tests (the plugin only decodes).
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::from("Basic ");
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
            for _ in c.len()..3 {
                let _ = write!(out, "=");
            }
        }
        out
    }

    #[test]
    fn decodes_like_nginx() {
        assert_eq!(decode_base64(b"YWxpY2U6cHc=").unwrap(), b"alice:pw");
        assert_eq!(decode_base64(b"YWxpY2U6cHc").unwrap(), b"alice:pw");
        assert!(decode_base64(b"YWxp!2U6").is_none());
        assert!(decode_base64(b"YWxpY").is_none());
        assert_eq!(
            parse(b"Basic YWxpY2U6cHc6eA==").unwrap(),
            (b"alice".to_vec(), b"pw:x".to_vec())
        );
        assert_eq!(parse(b"basic Ojpib2I6cHc=").unwrap().0, b"bob");
        assert!(parse(b"Bearer abc").is_none());
        assert!(parse(b"Basic bm9jb2xvbg==").is_none(), "no colon");
    }

    #[test]
    fn authenticates_and_rejects() {
        let ix = crate::testing::fixture();
        let p = plugin(json!({}));
        let (flow, _, _) = run_access(&*p, &ix, parts("GET", "/", &[]), None);
        let e = flow.unwrap_exit();
        assert_eq!((e.status, e.message()), (401, "Unauthorized"));
        assert_eq!(e.headers[0].1, "Basic realm=\"service\"");
        for bad in [
            basic("alice:wrong"),
            basic("nobody:pw"),
            "Basic %%%".into(),
            "Basic".into(),
            "x".repeat(10_000),
        ] {
            let (flow, _, _) = run_access(
                &*p,
                &ix,
                parts("GET", "/", &[("authorization", &bad)]),
                None,
            );
            assert_eq!(flow.unwrap_exit().status, 401, "{bad:.40}");
        }
        let good = basic("alice:pw");
        let (flow, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("authorization", &good)]),
            None,
        );
        assert!(flow.is_continue());
        assert_eq!(h["x-credential-identifier"], "alice");
        assert_eq!(h["authorization"], good.as_str());
        // Proxy-Authorization is tried first; a miss there falls back to Authorization.
        let (flow, _, _) = run_access(
            &*p,
            &ix,
            parts(
                "GET",
                "/",
                &[
                    ("proxy-authorization", &basic("nobody:x")),
                    ("authorization", &good),
                ],
            ),
            None,
        );
        assert!(flow.is_continue());
        let _ = fixture;
    }

    #[test]
    fn hides_and_anonymous() {
        let ix = crate::testing::fixture();
        let p = plugin(json!({"hide_credentials": true}));
        let (flow, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("authorization", &basic("alice:pw"))]),
            None,
        );
        assert!(flow.is_continue());
        assert!(!h.contains_key("authorization"));
        let p = plugin(json!({"anonymous": "anon"}));
        let (flow, h, _) = run_access(
            &*p,
            &ix,
            parts("GET", "/", &[("authorization", &basic("alice:no"))]),
            None,
        );
        assert!(flow.is_continue());
        assert_eq!(h["x-anonymous-consumer"], "true");
    }
}
