//! The one place where errors become HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tollgate_model::{Error, ErrorCode};

/// An Admin API failure: a Kong DAO error, or a plain `{"message": …}` answer.
#[derive(Debug)]
pub enum ApiError {
    Model(Error),
    Message(StatusCode, String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Model(e)
    }
}

impl ApiError {
    pub fn not_found() -> Self {
        ApiError::Message(StatusCode::NOT_FOUND, "Not found".into())
    }
    pub fn method_not_allowed() -> Self {
        ApiError::Message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed".into())
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::Message(StatusCode::BAD_REQUEST, msg.into())
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, serde_json::to_string(body).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Model(e) if e.is_database_unreachable() => {
                tracing::error!(error = %e, "admin API: database unreachable");
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "message": "The database is unreachable: this node keeps proxying with its last configuration, but cannot read or change the configuration until the database is back" }),
                )
            }
            ApiError::Model(e) if e.is_storage_full() => {
                tracing::error!(error = %e, "admin API: the database's disk is full");
                json_response(
                    StatusCode::INSUFFICIENT_STORAGE,
                    &json!({ "message": "The database's disk is full: this change was not saved. Free space on the disk that holds the database (the prefix, for the embedded store); reads and proxying go on meanwhile" }),
                )
            }
            ApiError::Model(e) if e.code() == ErrorCode::DatabaseError => {
                // The cause is for the operator's log, never for the client.
                tracing::error!(error = %e, "admin API: database error");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({ "message": "An unexpected error occurred" }),
                )
            }
            ApiError::Model(e) => {
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
                json_response(status, &e.to_json())
            }
            ApiError::Message(status, msg) => json_response(status, &json!({ "message": msg })),
        }
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;
