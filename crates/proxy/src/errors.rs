//! Kong's client-visible error responses (`kong/tools/http.lua` templates,
//! `kong/pdk/response.lua` `error`, `kong/error_handlers.lua`).

use crate::{full_body, Body};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

pub const MIME_JSON: &str = "application/json; charset=utf-8";
pub const MIME_HTML: &str = "text/html; charset=utf-8";
pub const MIME_PLAIN: &str = "text/plain; charset=utf-8";
pub const MIME_XML: &str = "application/xml; charset=utf-8";

pub const NO_ROUTE: &str = "no Route matched with those values";
pub const NO_SERVICE: &str = "no Service found with those values";
pub const USE_HTTPS: &str = "Please use HTTPS protocol";
pub const USE_HTTP2: &str = "Please use HTTP2 protocol";
pub const NON_GRPC: &str = "Non-gRPC request matched gRPC route";
pub const NAME_RESOLUTION_FAILED: &str = "name resolution failed";
pub const NO_PEER: &str = "failure to get a peer from the ring-balancer";

/// `kong/error_handlers.lua` BODIES (494 is reported as 400 with its own text).
pub fn handler_message(status: u16) -> String {
    match status {
        400 => "Bad request".into(),
        404 => "Not found".into(),
        405 => "Method not allowed".into(),
        408 => "Request timeout".into(),
        411 => "Length required".into(),
        412 => "Precondition failed".into(),
        413 => "Payload too large".into(),
        414 => "URI too long".into(),
        417 => "Expectation failed".into(),
        494 => "Request header or cookie too large".into(),
        500 => "An unexpected error occurred".into(),
        502 => "An invalid response was received from the upstream server".into(),
        503 => "The upstream server is currently unavailable".into(),
        504 => "The upstream server is timing out".into(),
        s => format!("The upstream server responded with {s}"),
    }
}

fn mime_of_type(t: &str) -> Option<&'static str> {
    match t {
        "text/html" => Some(MIME_HTML),
        "application/json" | "application" => Some(MIME_JSON),
        "text/plain" | "text" => Some(MIME_PLAIN),
        "application/xml" => Some(MIME_XML),
        _ => None,
    }
}

/// `get_mime_type(media_type)` with the default.
fn mime_type(media: &str) -> &'static str {
    let media = media.split(';').next().unwrap_or("").trim();
    let mut it = media.splitn(3, '/');
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        return MIME_JSON;
    };
    if b == "*" {
        if a == "*" {
            return MIME_JSON;
        }
        return mime_of_type(a).unwrap_or(MIME_JSON);
    }
    mime_of_type(media).unwrap_or(MIME_JSON)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-!#$&^_+.".contains(c)
}

fn media_token(s: &str) -> bool {
    s == "*"
        || (s.len() >= 2
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(is_token_char))
}

/// Parses one Accept element like Kong's ACCEPT_PATTERN: returns the media
/// type (lower-cased) and its quality.
fn parse_accept_value(v: &str) -> Option<(String, f64)> {
    let v = v.trim().to_ascii_lowercase();
    let mut parts = v.split(';');
    let media = parts.next()?.trim();
    let (a, b) = media.split_once('/')?;
    let (a, b) = (a.trim(), b.trim());
    if !media_token(a) || !media_token(b) {
        return None;
    }
    let mut q = 1.0;
    for p in parts {
        let p = p.trim();
        if let Some(val) = p.strip_prefix('q').map(str::trim_start) {
            if let Some(val) = val.strip_prefix('=') {
                let val = val.trim();
                let ok = (val.starts_with('1')
                    && val[1..].trim_start_matches('.').chars().all(|c| c == '0'))
                    || (val.starts_with('0') && {
                        let r = &val[1..];
                        r.is_empty()
                            || (r.starts_with('.')
                                && r.len() <= 4
                                && r[1..].chars().all(|c| c.is_ascii_digit()))
                    });
                if ok {
                    q = val.parse().unwrap_or(1.0);
                }
            }
        }
    }
    Some((format!("{a}/{b}"), q))
}

/// Kong's `get_response_type(accept)`: the MIME type (with charset) of the
/// error body, JSON by default.
pub fn response_type(accept: Option<&str>) -> &'static str {
    let mut content_type = MIME_JSON;
    let Some(accept) = accept else {
        return content_type;
    };
    let mut max_q = 0.0;
    for v in accept.split(',') {
        if let Some((media, q)) = parse_accept_value(v) {
            if q > max_q {
                max_q = q;
                content_type = mime_type(&media);
            }
        }
    }
    content_type
}

/// The body for `message` in the format `mime` (one of the MIME_* consts).
pub fn error_body(mime: &str, message: &str, request_id: &str) -> String {
    match mime {
        MIME_HTML => format!(
            "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
        ),
        MIME_PLAIN => format!("{message}\nrequest_id: {request_id}\n"),
        MIME_XML => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n  <requestid>{request_id}</requestid>\n</error>\n"
        ),
        _ => format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}"),
    }
}

/// Where the error body's format comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// `kong.response.error`: `Accept` only, JSON by default (router errors).
    Accept,
    /// `kong/error_handlers.lua`: `Accept`, then `Content-Type`, then
    /// `error_default_type` (upstream errors: 502, 504, 413 …).
    Handler,
}

/// Builds an error response (without the Kong response headers, which the
/// handler adds).
pub fn error_response(
    status: u16,
    message: &str,
    req_headers: &HeaderMap,
    how: Negotiation,
    error_default_type: &str,
    request_id: &str,
) -> Response<Body> {
    let get = |n: http::header::HeaderName| req_headers.get(n).and_then(|v| v.to_str().ok());
    let accept = match how {
        Negotiation::Accept => get(http::header::ACCEPT),
        Negotiation::Handler => get(http::header::ACCEPT)
            .or_else(|| get(CONTENT_TYPE))
            .or(Some(error_default_type)),
    };
    let status = if status == 494 { 400 } else { status };
    let grpc =
        how == Negotiation::Handler && accept.is_some_and(|a| a.starts_with("application/grpc"));
    let mut resp = Response::new(crate::empty_body());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if grpc {
        let body = serde_json::json!({ "message": message }).to_string();
        set_body(&mut resp, body, None);
        return resp;
    }
    let mime = response_type(accept);
    let body = error_body(mime, message, request_id);
    set_body(&mut resp, body, Some(mime));
    resp
}

/// `kong/pdk/response.lua` `HTTP_TO_GRPC_STATUS`, with its fallbacks by class.
pub fn grpc_status(http: u16) -> u8 {
    const HTTP_TO_GRPC_STATUS: [(u16, u8); 12] = [
        (200, 0),
        (400, 3),
        (401, 16),
        (403, 7),
        (404, 5),
        (409, 6),
        (429, 8),
        (499, 1),
        (500, 13),
        (501, 12),
        (503, 14),
        (504, 4),
    ];
    if let Some(&(_, code)) = HTTP_TO_GRPC_STATUS.iter().find(|(h, _)| *h == http) {
        return code;
    }
    match http {
        500..=599 => 13,
        400..=499 => 3,
        200..=299 => 0,
        _ => 2,
    }
}

/// `kong/pdk/response.lua` `GRPC_MESSAGES`.
pub fn grpc_message(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Kong's answer to a gRPC request (HTTP/2 with an `application/grpc*`
/// content type) that it generates itself: no body, the outcome in
/// `grpc-status` and `grpc-message` headers (a gRPC "trailers-only"
/// response). `kong.response.error` gives the status's gRPC name as the
/// message (`message: None`); `kong/error_handlers.lua` gives its own text.
///
/// Kong sets `content-type: application/grpc` only in the first case; it is
/// set in both here because gRPC clients require it in a response.
pub fn grpc_error_response(status: u16, message: Option<&str>) -> Response<Body> {
    let status = if status == 494 { 400 } else { status };
    let code = grpc_status(status);
    let mut resp = Response::new(crate::empty_body());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let msg = message
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or_else(|| HeaderValue::from_static(grpc_message(code)));
    h.insert("grpc-message", msg);
    resp
}

/// Whether `kong/error_handlers.lua` answers in the gRPC form: its `Accept`,
/// else `Content-Type`, starts with `application/grpc`.
pub fn handler_wants_grpc(req_headers: &HeaderMap) -> bool {
    req_headers
        .get(http::header::ACCEPT)
        .or_else(|| req_headers.get(CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn set_body(resp: &mut Response<Body>, body: String, mime: Option<&'static str>) {
    let h = resp.headers_mut();
    if let Some(m) = mime {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(m));
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *resp.body_mut() = full_body(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_types() {
        assert_eq!(response_type(None), MIME_JSON);
        assert_eq!(response_type(Some("*/*")), MIME_JSON);
        assert_eq!(response_type(Some("text/plain")), MIME_PLAIN);
        assert_eq!(response_type(Some("text/*")), MIME_PLAIN);
        assert_eq!(
            response_type(Some("text/html,application/xml;q=0.9")),
            MIME_HTML
        );
        assert_eq!(
            response_type(Some("text/html;q=0.5, application/xml")),
            MIME_XML
        );
        assert_eq!(response_type(Some("image/png")), MIME_JSON);
        assert_eq!(response_type(Some("garbage")), MIME_JSON);
    }

    #[test]
    fn grpc_errors() {
        assert_eq!(grpc_status(404), 5);
        assert_eq!(grpc_status(502), 13);
        assert_eq!(grpc_status(503), 14);
        assert_eq!(grpc_status(422), 3);
        assert_eq!(grpc_status(302), 2);
        let r = grpc_error_response(404, None);
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["grpc-status"], "5");
        assert_eq!(r.headers()["grpc-message"], "NotFound");
        assert_eq!(r.headers()["content-length"], "0");
        let r = grpc_error_response(504, Some("The upstream server is timing out"));
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(
            r.headers()["grpc-message"],
            "The upstream server is timing out"
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(
            error_body(MIME_JSON, NO_ROUTE, "abc"),
            "{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"abc\"\n}"
        );
        assert_eq!(error_body(MIME_PLAIN, "x", "r"), "x\nrequest_id: r\n");
        assert!(error_body(MIME_HTML, "x", "r").contains("<p>x.</p>"));
    }
}
