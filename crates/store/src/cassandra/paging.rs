//! `size`/`offset` pages on Cassandra's own paging state.
//!
//! The `offset` token is the paging state Cassandra hands back after a page's last row,
//! base64url-encoded behind a version byte and a fingerprint of the listing it belongs to
//! (so a token from `/services` is refused by `/routes` instead of silently skipping
//! rows). The paging state names a position in the partition, not a coordinator: any
//! node resumes it, and rows written or deleted meanwhile neither repeat nor shift the
//! rows after it.
//!
//! Cassandra cuts pages by rows read, before our filters (expired rows, tags, children
//! that moved to another parent), and may return short pages: a page is filled by asking
//! again until it holds `size` rows or the listing ends. The `size`-th row must end a
//! Cassandra page (the token is the state after it), so a read that overshoots is
//! repeated from the same state, cut right after that row. Cassandra also hands a
//! paging state after an exactly full last page: the token is given only when a kept
//! row follows it (read ahead).

use super::cerr;
use super::conn::{decode, Conn, Kind};
use base64::Engine;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use tollgate_model::{Error, Result};

const VERSION: u8 = 1;
/// Rows asked per round trip when rows may be filtered out (a tag filter).
const FILTER_BATCH: usize = 200;
/// Kong's reason when Cassandra refuses a paging state.
const BAD_STATE: &str = "Invalid value for the paging state";

/// One listing: a single-partition query and what tells its tokens apart.
pub(crate) struct Listing<V> {
    pub cql: String,
    pub values: V,
    /// The entity and parent the rows come from (fingerprinted into the token).
    pub scope: String,
    /// Whether most rows may be filtered out (read in bigger batches).
    pub filtered: bool,
}

/// Which rows of a listing a page shows (and what it shows of them).
pub(crate) trait Keep<R> {
    type Out;
    fn keep(&self, row: R) -> impl std::future::Future<Output = Result<Option<Self::Out>>> + Send;
}

/// FNV-1a: a stable fingerprint (the same on every node and build).
fn fingerprint(scope: &str) -> [u8; 4] {
    let mut h: u32 = 0x811c_9dc5;
    for b in scope.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h.to_be_bytes()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

pub(crate) fn encode_token(scope: &str, state: &PagingState) -> Option<String> {
    let raw = state.as_bytes_slice()?;
    let mut bytes = Vec::with_capacity(5 + raw.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&fingerprint(scope));
    bytes.extend_from_slice(raw);
    Some(b64().encode(bytes))
}

pub(crate) fn decode_token(scope: &str, token: &str) -> Result<PagingState> {
    let bytes = b64()
        .decode(token.trim_end_matches('='))
        .map_err(|_| Error::invalid_offset(token, "bad base64 encoding"))?;
    match bytes.split_first() {
        Some((&VERSION, rest)) if rest.len() > 4 && rest[..4] == fingerprint(scope) => {
            Ok(PagingState::new_from_raw_bytes(&rest[4..]))
        }
        _ => Err(Error::invalid_offset(token, BAD_STATE)),
    }
}

/// Whether Cassandra refused the paging state itself.
fn refused_state(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::ProtocolError | DbError::Invalid | DbError::ServerError,
            _
        ))
    )
}

/// One Cassandra page of `l` from `state`; `token` is the client's offset when `state`
/// came from it.
async fn fetch<R, V>(
    conn: &Conn,
    l: &Listing<V>,
    state: &PagingState,
    ask: usize,
    token: Option<&str>,
) -> Result<(Vec<R>, Option<PagingState>)>
where
    R: for<'f> DeserializeRow<'f, 'f>,
    V: SerializeRow,
{
    match conn
        .page(&l.cql, Kind::Read, &l.values, state.clone(), ask)
        .await?
    {
        Ok((rows, next)) => Ok((decode::<R>(&rows)?, next)),
        Err(e) => match token {
            Some(t) if refused_state(&e) => Err(Error::invalid_offset(t, BAD_STATE)),
            _ => Err(cerr(e)),
        },
    }
}

/// Up to `size` rows of `l` that `keep` keeps, from the position `token` names, and the
/// token of the next page (`None` when no kept row follows).
pub(crate) async fn page<R, V, K>(
    conn: &Conn,
    l: &Listing<V>,
    token: Option<&str>,
    size: usize,
    keep: &K,
) -> Result<(Vec<K::Out>, Option<String>)>
where
    R: for<'f> DeserializeRow<'f, 'f>,
    V: SerializeRow,
    K: Keep<R>,
{
    let mut state = match token {
        Some(t) => decode_token(&l.scope, t)?,
        None => PagingState::start(),
    };
    // The client's state until Cassandra accepted it.
    let mut from_client = token;
    let mut out = Vec::with_capacity(size);
    let batch = |need: usize| {
        if l.filtered {
            need.max(FILTER_BATCH)
        } else {
            need
        }
    };
    let mut ask = batch(size);
    while out.len() < size {
        let need = size - out.len();
        let (rows, next) = fetch::<R, V>(conn, l, &state, ask, from_client).await?;
        let read = rows.len();
        let mut kept = Vec::new();
        let mut cut = None;
        for (i, r) in rows.into_iter().enumerate() {
            if let Some(t) = keep.keep(r).await? {
                kept.push(t);
                if kept.len() == need {
                    cut = Some(i + 1);
                    break;
                }
            }
        }
        if let Some(c) = cut.filter(|c| *c < read) {
            // The page's last row is inside this read: read again, ending on it.
            ask = c;
            continue;
        }
        from_client = None;
        out.extend(kept);
        match next {
            Some(s) => state = s,
            None => return Ok((out, None)),
        }
        ask = batch(size - out.len());
    }
    // Full: an offset only if a kept row follows.
    let mut peek = state.clone();
    let mut ask = batch(1);
    loop {
        let (rows, next) = fetch::<R, V>(conn, l, &peek, ask, None).await?;
        for r in rows {
            if keep.keep(r).await?.is_some() {
                return Ok((out, encode_token(&l.scope, &state)));
            }
        }
        match next {
            Some(s) => peek = s,
            None => return Ok((out, None)),
        }
        ask = FILTER_BATCH;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage_and_other_listings() {
        let state = PagingState::new_from_raw_bytes(&[0u8, 1, 2, 250, 251][..]);
        let t = encode_token("services", &state).unwrap();
        assert!(!t.contains(['+', '/', '=']), "{t}");
        let back = decode_token("services", &t).unwrap();
        assert_eq!(back.as_bytes_slice(), state.as_bytes_slice());
        let e = decode_token("routes", &t).unwrap_err();
        assert_eq!(
            e.message(),
            format!("'{t}' is not a valid offset: Invalid value for the paging state")
        );
        assert_eq!(e.to_json()["code"], 7);
        let e = decode_token("services", "!!!").unwrap_err();
        assert_eq!(
            e.message(),
            "'!!!' is not a valid offset: bad base64 encoding"
        );
        assert_eq!(e.http_status(), 400);
        // The last-id tokens of the other stores are not paging states.
        let legacy = crate::paging::encode_offset("6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a");
        assert_eq!(
            decode_token("services", &legacy).unwrap_err().http_status(),
            400
        );
        assert!(encode_token("services", &PagingState::start()).is_none());
    }
}
