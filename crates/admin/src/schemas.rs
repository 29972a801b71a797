//! `/schemas/...`, `/plugins/enabled`.

use crate::body;
use crate::error::{json_response, ApiError, ApiResult};
use crate::SharedState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use tollgate_model::entities;
use tollgate_model::schema::{json as schema_json, Context, Operation};

fn no_entity(name: &str) -> ApiError {
    ApiError::Message(StatusCode::NOT_FOUND, format!("No entity named '{name}'"))
}

pub(crate) async fn entity(Path(name): Path<String>) -> ApiResult {
    let s = entities::by_name(&name).ok_or_else(|| no_entity(&name))?;
    Ok(json_response(StatusCode::OK, &schema_json::entity_json(s)))
}

pub(crate) async fn plugin(State(st): State<SharedState>, Path(name): Path<String>) -> ApiResult {
    let def = st.catalog.get(&name).ok_or_else(|| {
        ApiError::Message(StatusCode::NOT_FOUND, format!("No plugin named '{name}'"))
    })?;
    Ok(json_response(StatusCode::OK, &def.schema_json()))
}

pub(crate) async fn plugins_enabled(State(st): State<SharedState>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        &json!({ "enabled_plugins": st.catalog.enabled() }),
    ))
}

fn ok() -> axum::response::Response {
    json_response(
        StatusCode::OK,
        &json!({ "message": "schema validation successful" }),
    )
}

pub(crate) async fn validate_entity(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    let s = entities::by_name(&name).ok_or_else(|| no_entity(&name))?;
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let b = body::parse(ct, &bytes).await?;
    let cx = Context::new(Operation::Insert).coerce(b.coerce);
    let mut row = s.process(b.map, &cx)?;
    if s.name == "plugins" {
        st.catalog.validate(&mut row, &cx)?;
    }
    Ok(ok())
}

pub(crate) async fn validate_plugin(
    State(st): State<SharedState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    let s = entities::by_name("plugins").ok_or_else(|| no_entity("plugins"))?;
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let b = body::parse(ct, &bytes).await?;
    let cx = Context::new(Operation::Insert).coerce(b.coerce);
    let mut row = s.process(b.map, &cx)?;
    st.catalog.validate(&mut row, &cx)?;
    Ok(ok())
}
