//! Admin API access control (`admin_auth`): who is calling, whether they may, and the audit
//! line of every write.
//!
//! `token`: requests carry `Kong-Admin-Token` (the header Kong Enterprise's RBAC reads, so
//! decK's `--headers` and Kong Manager work). Tokens are 256-bit random strings, stored as
//! their SHA-256: a slow password hash buys nothing against a secret that cannot be guessed,
//! and the digest of a presented token is compared with every known digest in constant time,
//! so timing says nothing about how close a guess came. `mtls`: the TLS listener has already
//! required and verified a client certificate; its subject names the caller.
//!
//! `OPTIONS` preflights never reach this layer (the CORS layer outside it answers them):
//! browsers send no credentials on a preflight.

use crate::audit::{self, AuditLog};
use crate::error::ApiError;
use crate::SharedState;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The request header carrying the token (Kong Enterprise's `admin_gui_auth_header`).
pub const TOKEN_HEADER: &str = "kong-admin-token";

/// Kong Enterprise's answer to a request without valid credentials.
const UNAUTHORIZED: &str = "Invalid credentials. Token or User credentials required";

/// How the Admin API authenticates (`admin_auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    Token,
    Mtls,
}

/// One usable token: its digest, never the token.
#[derive(Clone, Debug)]
pub struct TokenEntry {
    pub name: String,
    pub digest: [u8; 32],
    pub read_only: bool,
}

/// The tokens in force, swapped whole when the store's table changes.
pub type SharedTokens = Arc<ArcSwap<Vec<TokenEntry>>>;

/// The certificate subject of a mutual-TLS caller, put on the request by the TLS listener.
#[derive(Clone, Debug)]
pub struct ClientCert(pub Arc<str>);

/// `admin_auth` with what it needs.
#[derive(Clone)]
pub struct Guard {
    pub mode: Mode,
    pub tokens: SharedTokens,
    /// `admin_audit_log`; `None` when off.
    pub audit: Option<AuditLog>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            mode: Mode::Off,
            tokens: Arc::new(ArcSwap::from_pointee(Vec::new())),
            audit: None,
        }
    }
}

/// SHA-256 of a token, as raw bytes.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// SHA-256 of a token in hex: the stored form.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest(token))
}

/// The set built from the stored rows; a row whose hash is not 64 hex digits is left out.
pub fn token_set(rows: &[tollgate_store::AdminToken]) -> Vec<TokenEntry> {
    rows.iter()
        .filter_map(|r| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&r.hash, &mut digest).ok()?;
            Some(TokenEntry {
                name: r.name.clone(),
                digest,
                read_only: r.read_only,
            })
        })
        .collect()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token whose digest matches, comparing against every entry (no early exit).
fn find<'a>(tokens: &'a [TokenEntry], presented: &str) -> Option<&'a TokenEntry> {
    let d = digest(presented);
    let mut found = None;
    for t in tokens {
        if ct_eq(&t.digest, &d) {
            found = Some(t);
        }
    }
    found
}

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Kong RBAC's action names, for its 403 message.
fn action(m: &Method) -> &'static str {
    match *m {
        Method::POST => "create",
        Method::DELETE => "delete",
        Method::PUT | Method::PATCH => "update",
        _ => "read",
    }
}

/// Why a request is refused.
enum Refusal {
    /// No token, an unknown one, no client certificate: 401.
    Unauthorized,
    /// A read-only token writing: 403, naming the token.
    ReadOnly { name: String, action: &'static str },
}

impl Refusal {
    fn who(&self) -> &str {
        match self {
            Refusal::Unauthorized => "unknown",
            Refusal::ReadOnly { name, .. } => name,
        }
    }

    fn response(&self) -> Response {
        match self {
            Refusal::Unauthorized => {
                ApiError::Message(StatusCode::UNAUTHORIZED, UNAUTHORIZED.into())
            }
            Refusal::ReadOnly { name, action } => ApiError::Message(
                StatusCode::FORBIDDEN,
                format!("{name}, you do not have permissions to {action} this resource"),
            ),
        }
        .into_response()
    }
}

/// Who is calling, or why not.
fn identify(guard: &Guard, req: &Request) -> Result<String, Refusal> {
    match guard.mode {
        Mode::Off => Ok("anonymous".into()),
        Mode::Mtls => req
            .extensions()
            .get::<ClientCert>()
            .map(|c| c.0.to_string())
            .ok_or(Refusal::Unauthorized),
        Mode::Token => {
            let presented = req
                .headers()
                .get(TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or(Refusal::Unauthorized)?;
            let tokens = guard.tokens.load();
            let t = find(&tokens, presented).ok_or(Refusal::Unauthorized)?;
            if t.read_only && is_write(req.method()) {
                return Err(Refusal::ReadOnly {
                    name: t.name.clone(),
                    action: action(req.method()),
                });
            }
            Ok(t.name.clone())
        }
    }
}

pub(crate) async fn layer(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    let guard = &st.auth;
    let write = is_write(req.method());
    let who = identify(guard, &req);
    let Some(log) = guard.audit.as_ref().filter(|_| write) else {
        return match who {
            Ok(_) => next.run(req).await,
            Err(refusal) => refusal.response(),
        };
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (who, resp) = match who {
        Ok(who) => (who, next.run(req).await),
        // A refused write is recorded too: who tried is what an audit is for.
        Err(refusal) => (refusal.who().to_string(), refusal.response()),
    };
    let (resp, ids) = audit::entity_ids(resp).await;
    let line = audit::Line {
        who: &who,
        auth: guard.mode,
        method: method.as_str(),
        path: &path,
        status: resp.status().as_u16(),
        ids,
    };
    // Written before the answer leaves: an acknowledged write always has its line.
    log.record(line.to_json()).await;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_digest_only() {
        let rows = vec![tollgate_store::AdminToken {
            name: "ci".into(),
            hash: hash_token("s3cret"),
            read_only: true,
            created_at: 0,
        }];
        let set = token_set(&rows);
        assert_eq!(find(&set, "s3cret").map(|t| t.name.as_str()), Some("ci"));
        assert!(find(&set, "s3crex").is_none());
        assert!(find(&set, "").is_none());
        assert_eq!(hash_token("abc").len(), 64);
    }

    #[test]
    fn writes_and_actions() {
        assert!(is_write(&Method::DELETE) && !is_write(&Method::GET));
        assert_eq!(action(&Method::PATCH), "update");
        assert_eq!(action(&Method::POST), "create");
    }
}
