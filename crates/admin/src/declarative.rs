//! `GET/POST /config` (DB-less mode): replace the whole configuration at once.

use crate::error::{json_response, ApiError, ApiResult};
use crate::{body, query_pairs, SharedState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tollgate_model::declarative;

fn only_dbless() -> ApiError {
    ApiError::bad_request(
        "this endpoint is only available when Kong is configured to not use a database",
    )
}

pub(crate) async fn get_config(State(st): State<SharedState>) -> ApiResult {
    if st.store.kind() != "off" {
        return Err(only_dbless());
    }
    let data = st.store.load_all().await?;
    let yaml = declarative::to_yaml(&declarative::export_dataset(&data));
    Ok(json_response(StatusCode::OK, &json!({ "config": yaml })))
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|s| matches!(s.as_str(), "1" | "true" | "on" | "yes"))
}

pub(crate) async fn post_config(
    State(st): State<SharedState>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    if st.store.kind() != "off" {
        return Err(only_dbless());
    }
    let q = query_pairs(&uri);
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v);
    let flatten = truthy(get("flatten_errors"));
    let check_hash = get("check_hash").is_some_and(|v| v == "1");
    let opts = declarative::ParseOptions {
        flatten_errors: flatten,
        ..Default::default()
    };
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // The configuration arrives as a raw YAML/JSON body, as a `config` field of a form or
    // JSON body, or as the JSON body itself.
    let parsed = if ct.starts_with("application/x-www-form-urlencoded")
        || ct.starts_with("multipart/form-data")
    {
        let b = body::parse(Some(&ct), &bytes).await?;
        match b.map.get("config") {
            Some(Value::String(text)) => declarative::parse_with(text, &st.catalog, &opts),
            _ => {
                return Err(ApiError::bad_request(
                    "expected a declarative configuration",
                ))
            }
        }
    } else {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "expected a declarative configuration",
            ));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(mut m))
                if !m.contains_key("_format_version") && m.contains_key("config") =>
            {
                match m.remove("config") {
                    Some(Value::String(text)) => declarative::parse_with(&text, &st.catalog, &opts),
                    Some(v) => declarative::parse_value_with(v, &st.catalog, &opts),
                    None => {
                        return Err(ApiError::bad_request(
                            "expected a declarative configuration",
                        ))
                    }
                }
            }
            Ok(v) => declarative::parse_value_with(v, &st.catalog, &opts),
            Err(_) => match std::str::from_utf8(&bytes) {
                Ok(text) => declarative::parse_with(text, &st.catalog, &opts),
                Err(_) => {
                    return Err(ApiError::bad_request(
                        "expected a declarative configuration",
                    ))
                }
            },
        }
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &declarative::error_body(&e),
            ));
        }
    };
    let current = st.config_hash.read().map(|h| h.clone()).unwrap_or_default();
    if check_hash && parsed.hash == current {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let export = declarative::export(&parsed.set);
    st.store.replace_all(parsed.set).await?;
    if let Ok(mut h) = st.config_hash.write() {
        *h = parsed.hash;
    }
    Ok(json_response(StatusCode::CREATED, &export))
}
