//! Kong's balancer endpoints (`kong/api/routes/upstreams.lua`):
//! `GET /upstreams/{u}/health`, `GET /upstreams/{u}/targets/all` and
//! `PUT /upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy`. The health
//! itself lives in the proxy; the binary plugs it in as [`UpstreamHealth`].

use crate::crud::{self, Request};
use crate::error::{json_response, ApiError, ApiResult};
use crate::AdminState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tollgate_model::{entities, Row};

/// One address of a target as the proxy sees it.
#[derive(Clone, Debug)]
pub struct AddressHealth {
    /// The target entity's `target`.
    pub target: String,
    pub ip: String,
    pub port: u16,
    /// The address's weight (an SRV record's own).
    pub weight: u32,
    /// The target's weight (Kong's `nodeWeight`).
    pub node_weight: u32,
    /// `HEALTHY`, `UNHEALTHY`, `HEALTHCHECKS_OFF` or `DNS_ERROR`.
    pub health: &'static str,
}

/// The proxy's balancer health, as the Admin API needs it.
pub trait UpstreamHealth: Send + Sync {
    /// Every target address of the upstream; `None` when the proxy does not
    /// have the upstream (yet).
    fn addresses(&self, upstream_id: &str) -> Option<Vec<AddressHealth>>;
    /// Whether health checks are on for the upstream (Kong's
    /// `is_upstream_using_healthcheck`).
    fn checks_enabled(&self, upstream_id: &str) -> bool;
    /// The balancer's own health (`healthchecks.threshold`); `None`: unknown.
    fn balancer_healthy(&self, upstream_id: &str) -> Option<bool>;
    /// Sets a target (or one address of it) healthy or unhealthy.
    fn set(
        &self,
        upstream_id: &str,
        target: &str,
        address: Option<&str>,
        healthy: bool,
    ) -> Result<(), String>;
}

/// Answers the request when it is one of these endpoints.
pub(crate) async fn dispatch(st: &AdminState, req: &Request<'_>) -> Option<Response> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let r = match (req.method, seg.as_slice()) {
        (&Method::GET, ["upstreams", u, "health"]) => health(st, u, &req.query).await,
        (&Method::GET, ["upstreams", u, "targets", "all"]) => all(st, u).await,
        (&Method::PUT, ["upstreams", u, "targets", t, verb @ ("healthy" | "unhealthy")]) => {
            set(st, u, t, None, *verb == "healthy").await
        }
        (&Method::PUT, ["upstreams", u, "targets", t, a, verb @ ("healthy" | "unhealthy")]) => {
            set(st, u, t, Some(a), *verb == "healthy").await
        }
        _ => return None,
    };
    Some(r.unwrap_or_else(IntoResponse::into_response))
}

async fn upstream(st: &AdminState, key: &str) -> ApiResult<Row> {
    let schema = entities::by_name("upstreams").ok_or_else(ApiError::not_found)?;
    crud::find(st, schema, key, None)
        .await?
        .ok_or_else(ApiError::not_found)
}

async fn targets(st: &AdminState, upstream_id: &str) -> ApiResult<Vec<Row>> {
    let schema = entities::by_name("targets").ok_or_else(ApiError::not_found)?;
    crud::every(st, schema, Some(("upstream", upstream_id.to_owned()))).await
}

fn id(r: &Row) -> &str {
    r.get("id").and_then(Value::as_str).unwrap_or_default()
}

async fn all(st: &AdminState, u: &str) -> ApiResult<Response> {
    let up = upstream(st, u).await?;
    let data = targets(st, id(&up)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": data, "next": null }),
    ))
}

async fn health(st: &AdminState, u: &str, query: &[(String, String)]) -> ApiResult<Response> {
    let up = upstream(st, u).await?;
    let uid = id(&up).to_owned();
    let node_id = st.node.node_id.clone();
    let info = st.upstream_health.as_ref().and_then(|h| h.addresses(&uid));
    let enabled = st
        .upstream_health
        .as_ref()
        .is_some_and(|h| h.checks_enabled(&uid));
    if query
        .iter()
        .any(|(k, v)| k == "balancer_health" && v == "1")
    {
        let healthy = st
            .upstream_health
            .as_ref()
            .and_then(|h| h.balancer_healthy(&uid))
            .unwrap_or(false);
        let bh = if healthy { "HEALTHY" } else { "UNHEALTHY" };
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "data": {
                    "health": if enabled { bh } else { "HEALTHCHECKS_OFF" },
                    "balancer_health": bh,
                    "id": uid,
                },
                "next": null,
                "node_id": node_id,
            }),
        ));
    }
    let mut data = targets(st, &uid).await?;
    if let Some(info) = info {
        for t in &mut data {
            let name = t
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            // (an unresolved name has no addresses in Kong's balancer)
            let addrs: Vec<&AddressHealth> = info
                .iter()
                .filter(|a| a.target == name && a.health != "DNS_ERROR")
                .collect();
            // kong/db/dao/targets.lua page_for_upstream_with_health
            let health = if addrs.is_empty() {
                "DNS_ERROR"
            } else if addrs.iter().any(|a| a.health == "HEALTHY") {
                "HEALTHY"
            } else if addrs.iter().any(|a| a.health == "UNHEALTHY") {
                "UNHEALTHY"
            } else {
                "HEALTHCHECKS_OFF"
            };
            t.insert("health".into(), json!(health));
            if let Some(first) = addrs.first() {
                let total: u32 = addrs.iter().map(|a| a.weight).sum();
                let unavailable: u32 = addrs
                    .iter()
                    .filter(|a| a.health == "UNHEALTHY")
                    .map(|a| a.weight)
                    .sum();
                let (host, port) = match name.rsplit_once(':') {
                    Some((h, p)) => (h.to_owned(), p.parse::<u16>().unwrap_or(first.port)),
                    None => (name.clone(), first.port),
                };
                t.insert(
                    "data".into(),
                    json!({
                        "host": host,
                        "port": port,
                        "nodeWeight": first.node_weight,
                        "weight": {
                            "total": total,
                            "unavailable": unavailable,
                            "available": total - unavailable,
                        },
                        "addresses": addrs.iter().map(|a| json!({
                            "ip": a.ip,
                            "port": a.port,
                            "weight": a.weight,
                            "health": a.health,
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": data, "next": null, "node_id": node_id }),
    ))
}

async fn set(
    st: &AdminState,
    u: &str,
    t: &str,
    address: Option<&str>,
    healthy: bool,
) -> ApiResult<Response> {
    let up = upstream(st, u).await?;
    let uid = id(&up).to_owned();
    let schema = entities::by_name("targets").ok_or_else(ApiError::not_found)?;
    let parent = ("upstream", uid.clone());
    let target = crud::find(st, schema, t, Some(&parent))
        .await?
        .ok_or_else(ApiError::not_found)?;
    let name = target
        .get("target")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(h) = st.upstream_health.as_ref() else {
        return Err(ApiError::bad_request(format!(
            "Upstream {u} has no balancer"
        )));
    };
    h.set(&uid, name, address, healthy)
        .map_err(ApiError::bad_request)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
