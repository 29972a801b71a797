//! Tollgate's Admin API: Kong's endpoints, JSON shapes, error bodies, pagination and tags,
//! generated from the entity schemas; plus the status listener's routes.

pub mod audit;
pub mod auth;
mod body;
mod cors;
mod crud;
mod declarative;
mod error;
mod foreign;
pub mod fuzzing;
pub mod gui;
mod info;
mod openapi;
mod schemas;
pub mod tls;
pub mod upstream_health;

pub use error::{ApiError, ApiResult};
pub use info::rss_bytes;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use tollgate_model::PluginCatalog;
use tollgate_store::Store;

/// What `GET /` says about this node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The Kong version we are compatible with (tools gate features on it).
    pub kong_version: String,
    pub tollgate_version: String,
    pub hostname: String,
    pub node_id: String,
    /// `configuration` of `GET /`, sensitive values already masked.
    pub configuration: Value,
}

/// Live counters the proxy keeps, rendered for `/status`'s `server` section.
pub type ServerStatusFn = Arc<dyn Fn() -> Value + Send + Sync>;

/// Renders the Prometheus exposition served on `/metrics` (the prometheus plugin's
/// `api.lua` / `status_api.lua`); gathers its gauges at call time.
pub type MetricsFn = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<PluginCatalog>,
    pub node: NodeInfo,
    /// Hash of the declarative configuration in force (DB-less mode).
    pub config_hash: RwLock<String>,
    pub server_status: ServerStatusFn,
    /// Largest accepted request body.
    pub max_body: usize,
    /// `Ok` when this node can serve traffic, else the reason (`/status/ready`).
    pub readiness: ReadinessFn,
    /// Origins (scheme://authority) of `admin_gui_url`: CORS answers name one of these.
    pub gui_origins: Vec<String>,
    /// `GET /metrics` on the Admin and status listeners.
    pub metrics: MetricsFn,
    /// The proxy's balancer health (`/upstreams/{u}/health`); `None`: no proxy here.
    pub upstream_health: Option<Arc<dyn upstream_health::UpstreamHealth>>,
    /// `admin_auth` and the audit log.
    pub auth: auth::Guard,
}

pub type ReadinessFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl AdminState {
    pub fn new(store: Arc<dyn Store>, catalog: Arc<PluginCatalog>, node: NodeInfo) -> Self {
        AdminState {
            store,
            catalog,
            node,
            config_hash: RwLock::new(String::new()),
            server_status: Arc::new(|| serde_json::json!({})),
            max_body: 10 * 1024 * 1024,
            readiness: Arc::new(|| Ok(())),
            gui_origins: Vec::new(),
            metrics: Arc::new(|| Box::pin(async { String::new() })),
            upstream_health: None,
            auth: auth::Guard::default(),
        }
    }
}

pub type SharedState = Arc<AdminState>;

/// The Admin API router.
pub fn router(state: SharedState) -> Router {
    let limit = state.max_body;
    Router::new()
        .route("/", get(info::root))
        .route("/status", get(info::status))
        .route("/endpoints", get(info::endpoints))
        .route("/schemas/{entity}", get(schemas::entity))
        .route("/schemas/{entity}/validate", post(schemas::validate_entity))
        .route("/schemas/plugins/{name}", get(schemas::plugin))
        .route("/schemas/plugins/validate", post(schemas::validate_plugin))
        .route("/plugins/schema/{name}", get(schemas::plugin))
        .route("/plugins/enabled", get(schemas::plugins_enabled))
        .route("/tags", get(info::tags))
        .route("/tags/{tag}", get(info::tags_by_name))
        .route(
            "/config",
            get(declarative::get_config).post(declarative::post_config),
        )
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(info::metrics))
        .fallback(generic)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(kong_error_bodies))
        // Inside CORS: preflights are answered before it, and its refusals carry the
        // CORS headers a browser needs to read them.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::layer,
        ))
        .with_state(state)
}

/// axum answers a wrong method on a fixed route and an oversized body with a plain-text or
/// empty body; Kong's clients expect `{"message": …}` JSON for those too.
async fn kong_error_bodies(resp: Response) -> Response {
    let message = match resp.status() {
        http::StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
        http::StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
        _ => return resp,
    };
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let fresh = error::ApiError::Message(parts.status, message.into()).into_response();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    if parts.status == http::StatusCode::PAYLOAD_TOO_LARGE {
        // The unread rest of the body makes the connection unusable: tell the client.
        parts.headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Response::from_parts(parts, body)
}

/// The status listener: readiness and node status, never configuration.
pub fn status_router(state: SharedState) -> Router {
    Router::new()
        .route("/status", get(info::status))
        .route("/status/ready", get(info::ready))
        .route("/metrics", get(info::metrics))
        .with_state(state)
}

fn decode_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

pub(crate) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn generic(
    State(st): State<SharedState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Kong answers HEAD wherever it answers GET (hyper drops the body).
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method
    };
    let req = crud::Request {
        method: &method,
        segments: decode_segments(uri.path()),
        query: query_pairs(&uri),
        content_type: headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        body: &body,
    };
    // A known path with a method it does not answer: 405 with `Allow` (RFC 9110), before
    // any lookup of the ids in the path.
    if let Some(allowed) = info::allowed_methods(&req.segments) {
        if !allowed.contains(&method.as_str()) && method != Method::OPTIONS {
            return method_not_allowed(&allowed);
        }
    }
    if let Some(r) = upstream_health::dispatch(&st, &req).await {
        return r;
    }
    match crud::dispatch(&st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn method_not_allowed(allowed: &[&str]) -> Response {
    let mut r = error::ApiError::method_not_allowed().into_response();
    let mut list: Vec<&str> = allowed.to_vec();
    if list.contains(&"GET") {
        list.push("HEAD");
    }
    list.push("OPTIONS");
    if let Ok(v) = http::HeaderValue::from_str(&list.join(", ")) {
        r.headers_mut().insert(http::header::ALLOW, v);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_decoded() {
        assert_eq!(
            super::decode_segments("/services/a%20b/routes/"),
            vec!["services", "a b", "routes"]
        );
    }
}
