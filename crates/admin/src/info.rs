//! `GET /`, `/status`, `/status/ready`, `/endpoints`, `/tags`.

use crate::error::{json_response, ApiResult};
use crate::{crud, query_pairs, SharedState};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use tollgate_model::entities;
use tollgate_store::PageQuery;

pub(crate) async fn root(State(st): State<SharedState>) -> ApiResult {
    let mut available = Map::new();
    for d in st.catalog.available() {
        available.insert(
            d.name.into(),
            json!({ "version": d.version, "priority": d.priority }),
        );
    }
    let mut in_cluster = BTreeSet::new();
    if let Some(plugins) = entities::by_name("plugins") {
        let mut q = PageQuery {
            size: 1000,
            ..Default::default()
        };
        loop {
            let page = st.store.page(plugins, &q).await?;
            for r in &page.rows {
                if let Some(n) = r.get("name").and_then(Value::as_str) {
                    in_cluster.insert(n.to_string());
                }
            }
            match page.next_offset {
                Some(o) => q.offset = Some(o),
                None => break,
            }
        }
    }
    let n = &st.node;
    let body = json!({
        "tagline": "Welcome to kong",
        "version": n.kong_version,
        "edition": "community",
        "tollgate_version": n.tollgate_version,
        "hostname": n.hostname,
        "node_id": n.node_id,
        "lua_version": "tollgate (no Lua)",
        "timers": { "running": 0, "pending": 0 },
        "pids": { "master": std::process::id(), "workers": [std::process::id()] },
        "plugins": {
            "available_on_server": available,
            "enabled_in_cluster": in_cluster.into_iter().collect::<Vec<_>>(),
        },
        "configuration": n.configuration,
    });
    Ok(json_response(StatusCode::OK, &body))
}

pub(crate) async fn status(State(st): State<SharedState>) -> Response {
    let mut body = json!({
        "server": (st.server_status)(),
        "memory": {
            "workers_lua_vms": [],
            "lua_shared_dicts": {},
            "resident_set_size": rss_bytes(),
        },
    });
    if st.store.kind() == "off" {
        let hash = st.config_hash.read().map(|h| h.clone()).unwrap_or_default();
        body["configuration_hash"] = json!(if hash.is_empty() {
            "00000000000000000000000000000000".into()
        } else {
            hash
        });
    } else {
        body["database"] = json!({ "reachable": st.store.ping().await.is_ok() });
    }
    json_response(StatusCode::OK, &body)
}

/// Resident memory from /proc (Linux); 0 elsewhere.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// `GET /metrics`: the prometheus exposition (Kong's `exporter.collect`). Kong mounts it
/// with the plugin's `api.lua` / `status_api.lua`, so it exists only while the plugin is
/// in the `plugins` key.
pub(crate) async fn metrics(State(st): State<SharedState>) -> Response {
    if !st.catalog.is_enabled("prometheus") {
        return crate::ApiError::not_found().into_response();
    }
    let text = (st.metrics)().await;
    let mut r = Response::new(axum::body::Body::from(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

pub(crate) async fn ready(State(st): State<SharedState>) -> Response {
    match (st.readiness)() {
        Ok(()) => json_response(StatusCode::OK, &json!({ "message": "ready" })),
        Err(why) => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "message": why })),
    }
}

/// Every Admin API path, sorted, with `{param}` placeholders (Kong's `/endpoints`).
pub(crate) fn all_paths() -> Vec<(String, Vec<&'static str>)> {
    let mut paths: Vec<(String, Vec<&'static str>)> = crud::generated()
        .into_iter()
        .map(|g| (g.path, g.methods))
        .collect();
    for (p, m) in [
        ("/", vec!["GET"]),
        ("/status", vec!["GET"]),
        ("/endpoints", vec!["GET"]),
        ("/schemas/{db_entity_name}", vec!["GET"]),
        ("/schemas/{db_entity_name}/validate", vec!["POST"]),
        ("/schemas/plugins/{name}", vec!["GET"]),
        ("/schemas/plugins/validate", vec!["POST"]),
        ("/plugins/enabled", vec!["GET"]),
        ("/plugins/schema/{name}", vec!["GET"]),
        ("/tags", vec!["GET"]),
        ("/tags/{tags}", vec!["GET"]),
        ("/config", vec!["GET", "POST"]),
        ("/openapi.json", vec!["GET"]),
        ("/metrics", vec!["GET"]),
    ] {
        paths.push((p.to_string(), m));
    }
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    paths.dedup_by(|a, b| a.0 == b.0);
    paths
}

/// The methods a path answers, from the templates of `all_paths` (`{x}` matches any one
/// segment; where templates overlap, their methods add up). `None`: no template matches,
/// the path is unknown (404).
pub(crate) fn allowed_methods(segments: &[String]) -> Option<Vec<&'static str>> {
    static TEMPLATES: std::sync::OnceLock<Vec<(Vec<String>, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        all_paths()
            .into_iter()
            .map(|(p, m)| {
                (
                    p.split('/')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                    m,
                )
            })
            .collect()
    });
    let mut allowed: Vec<&'static str> = Vec::new();
    let mut matched = false;
    for (tpl, methods) in templates {
        let fits = tpl.len() == segments.len()
            && tpl
                .iter()
                .zip(segments)
                .all(|(t, s)| t.starts_with('{') || t == s);
        if fits {
            matched = true;
            allowed.extend(
                methods
                    .iter()
                    .filter(|m| !allowed.contains(m))
                    .collect::<Vec<_>>(),
            );
        }
    }
    matched.then_some(allowed)
}

pub(crate) async fn endpoints() -> Response {
    let data: Vec<String> = all_paths().into_iter().map(|(p, _)| p).collect();
    json_response(StatusCode::OK, &json!({ "data": data }))
}

async fn tag_page(st: &SharedState, tag: Option<&str>, uri: &Uri) -> ApiResult {
    let q = query_pairs(uri);
    let size = match q.iter().find(|(k, _)| k == "size") {
        None => 100,
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(tollgate_model::Error::invalid_size(
                    "size must be an integer between 1 and 1000",
                )
                .into())
            }
        },
    };
    let offset = q
        .iter()
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| v.as_str());
    let page = st.store.tags_page(tag, size, offset).await?;
    let data: Vec<Value> = page
        .rows
        .into_iter()
        .map(|(e, id, t)| json!({ "entity_name": e, "entity_id": id, "tag": t }))
        .collect();
    let mut body = json!({ "data": data, "next": null });
    if let Some(off) = page.next_offset {
        let base = match tag {
            Some(t) => format!("/tags/{t}"),
            None => "/tags".into(),
        };
        body["next"] = json!(format!("{base}?offset={off}"));
        body["offset"] = json!(off);
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub(crate) async fn tags(State(st): State<SharedState>, uri: Uri) -> ApiResult {
    tag_page(&st, None, &uri).await
}

pub(crate) async fn tags_by_name(
    State(st): State<SharedState>,
    Path(tag): Path<String>,
    uri: Uri,
) -> ApiResult {
    tag_page(&st, Some(&tag), &uri).await
}
