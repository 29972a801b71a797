//! proxy-cache's endpoints (`kong/plugins/proxy-cache/api.lua`):
//! `DELETE /proxy-cache` (purge everything), `GET|DELETE /proxy-cache/{cache_key}`
//! (in any proxy-cache instance's dictionary) and
//! `GET|DELETE /proxy-cache/{plugin_id}/caches/{cache_key}`. The dictionaries live in
//! each node; the binary plugs them in as [`ProxyCacheStore`].
//!
//! A purge reaches every node, as Kong's `proxy-cache:purge` cluster event does: the
//! endpoint finds the entry here, then broadcasts it ([`Store::broadcast`]); each node,
//! this one included, drops it in the subscriber [`follow_purges`] installs. The message
//! names the dictionary, not the plugin: that is what a purge acts on, and a node need
//! not have the plugin in its configuration yet to act on it.

use crate::crud::{self, Request};
use crate::error::{json_response, ApiError, ApiResult};
use crate::AdminState;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use tollgate_model::{entities, Row};
use tollgate_store::{Purge, Store};

/// The node's proxy-cache dictionaries, as the Admin API needs them.
pub trait ProxyCacheStore: Send + Sync {
    /// The object cached under `key` in `dictionary`, as Kong's API shows it.
    fn fetch(&self, dictionary: &str, key: &str) -> Option<Value>;
    /// Drops `key`; whether it was there.
    fn purge(&self, dictionary: &str, key: &str) -> bool;
    /// Drops everything in `dictionary`.
    fn flush(&self, dictionary: &str);
    /// Drops everything in every dictionary.
    fn flush_all(&self);
}

const NAME: &str = "proxy-cache";
/// Kong's cluster-event channel for purges.
pub const PURGE_CHANNEL: &str = "proxy-cache:purge";

/// Makes this node's dictionaries act on the purges broadcast by any node.
pub fn follow_purges(store: &dyn Store, caches: Arc<dyn ProxyCacheStore>) {
    store.subscribe(
        PURGE_CHANNEL,
        Arc::new(move |p: &Purge| match p {
            Purge::All => caches.flush_all(),
            Purge::Instance(dict) => caches.flush(dict),
            Purge::Key { instance, key } => {
                caches.purge(instance, key);
            }
        }),
    );
}

/// Answers the request when it is one of these endpoints (and the plugin is enabled).
pub(crate) async fn dispatch(st: &AdminState, req: &Request<'_>) -> Option<Response> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    if seg.first() != Some(&NAME) || !st.catalog.is_enabled(NAME) {
        return None;
    }
    let r = match (req.method, &seg[1..]) {
        (&Method::DELETE, []) => flush_all(st).await,
        (&Method::GET, [key]) => in_any(st, key, false).await,
        (&Method::DELETE, [key]) => in_any(st, key, true).await,
        (&Method::GET, [id, "caches", key]) => in_plugin(st, id, key, false).await,
        (&Method::DELETE, [id, "caches", key]) => in_plugin(st, id, key, true).await,
        _ => return None,
    };
    Some(r.unwrap_or_else(IntoResponse::into_response))
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// The dictionary a `plugins` row uses.
fn dictionary(row: &Row) -> &str {
    row.get("config")
        .and_then(|c| c.get("memory"))
        .and_then(|m| m.get("dictionary_name"))
        .and_then(Value::as_str)
        .unwrap_or("kong_db_cache")
}

/// Every proxy-cache instance's dictionary, each once.
async fn dictionaries(st: &AdminState) -> ApiResult<Vec<String>> {
    let schema = entities::by_name("plugins").ok_or_else(ApiError::not_found)?;
    let mut out: Vec<String> = Vec::new();
    for row in crud::every(st, schema, None).await? {
        if row.get("name").and_then(Value::as_str) == Some(NAME) {
            let d = dictionary(&row);
            if !out.iter().any(|o| o == d) {
                out.push(d.to_owned());
            }
        }
    }
    Ok(out)
}

/// Kong flushes every instance's dictionary, here and through the cluster, whether or
/// not this node serves traffic.
async fn flush_all(st: &AdminState) -> ApiResult<Response> {
    for d in dictionaries(st).await? {
        st.store
            .broadcast(PURGE_CHANNEL, Purge::Instance(d))
            .await?;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Found here: the object (GET) or 204 once purged on every node (DELETE); else 404.
async fn answer(
    st: &AdminState,
    dict: &str,
    key: &str,
    delete: bool,
) -> ApiResult<Option<Response>> {
    let Some(v) = st.proxy_cache.as_ref().and_then(|c| c.fetch(dict, key)) else {
        return Ok(None);
    };
    if !delete {
        return Ok(Some(json_response(StatusCode::OK, &v)));
    }
    let purge = Purge::Key {
        instance: dict.to_owned(),
        key: key.to_owned(),
    };
    st.store.broadcast(PURGE_CHANNEL, purge).await?;
    Ok(Some(empty(StatusCode::NO_CONTENT)))
}

async fn in_any(st: &AdminState, key: &str, delete: bool) -> ApiResult<Response> {
    for d in dictionaries(st).await? {
        if let Some(r) = answer(st, &d, key, delete).await? {
            return Ok(r);
        }
    }
    Ok(empty(StatusCode::NOT_FOUND))
}

async fn in_plugin(st: &AdminState, id: &str, key: &str, delete: bool) -> ApiResult<Response> {
    let schema = entities::by_name("plugins").ok_or_else(ApiError::not_found)?;
    let row = crud::find(st, schema, id, None).await?;
    let Some(row) = row.filter(|r| r.get("name").and_then(Value::as_str) == Some(NAME)) else {
        return Ok(empty(StatusCode::NOT_FOUND));
    };
    let found = answer(st, dictionary(&row), key, delete).await?;
    Ok(found.unwrap_or_else(|| empty(StatusCode::NOT_FOUND)))
}
