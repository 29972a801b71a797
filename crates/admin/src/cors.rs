//! CORS on the Admin API, as Kong does it (`kong/api/api_helpers.lua` `cors_filter` and
//! `options_method`): Kong Manager and other browser tools call the Admin API from another
//! origin, so every answer names the allowed origin, and `OPTIONS` on any Admin route is a
//! preflight answered with that route's methods.

use crate::info::all_paths;
use crate::SharedState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

/// The `Origin` allowed for a request: with `admin_gui_url` set, the request's origin when it
/// is one of those, else the first of them; without it, the request's origin, or `*`.
fn allowed_origin(origins: &[String], request: Option<&HeaderValue>) -> HeaderValue {
    if let Some(first) = origins.first() {
        let listed = request
            .and_then(|o| o.to_str().ok())
            .filter(|o| origins.iter().any(|a| a == o));
        let chosen = listed.unwrap_or(first);
        return HeaderValue::from_str(chosen).unwrap_or(HeaderValue::from_static("*"));
    }
    request.cloned().unwrap_or(HeaderValue::from_static("*"))
}

/// Path templates (`/services/{services}/routes`) split into segments, with the methods
/// Kong lists for each: the route's own, `HEAD` where there is `GET`, and `OPTIONS`.
type Templates = Vec<(Vec<Option<String>>, String)>;

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        all_paths()
            .into_iter()
            .map(|(path, methods)| {
                let segs = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                    .collect();
                let mut m: Vec<&str> = methods;
                if m.contains(&"GET") {
                    m.push("HEAD");
                }
                m.push("OPTIONS");
                m.sort_unstable();
                m.dedup();
                (segs, m.join(", "))
            })
            .collect()
    })
}

/// The methods of the Admin route a path belongs to; the template with the most literal
/// segments wins (`/services/{id}/routes` over `/services/{id}/{field}`).
fn route_methods(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    templates()
        .iter()
        .filter(|(t, _)| {
            t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(t, s)| t.as_deref().is_none_or(|t| t == *s))
        })
        .max_by_key(|(t, _)| t.iter().filter(|s| s.is_some()).count())
        .map(|(_, m)| m.as_str())
}

pub(crate) async fn layer(State(st): State<SharedState>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if req.method() == Method::OPTIONS {
        match route_methods(req.uri().path()) {
            Some(methods) => preflight(methods, req.headers()),
            None => crate::error::ApiError::not_found().into_response(),
        }
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allowed_origin(&st.gui_origins, origin.as_ref()),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    resp
}

/// `OPTIONS`: 204 with the route's methods; the requested headers are echoed.
fn preflight(methods: &'static str, req: &HeaderMap) -> Response {
    let allow = HeaderValue::from_static(methods);
    let allow_headers = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("Content-Type"));
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ALLOW, allow.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_follow_the_route() {
        assert_eq!(route_methods("/services"), Some("GET, HEAD, OPTIONS, POST"));
        assert_eq!(
            route_methods("/services/abc"),
            Some("DELETE, GET, HEAD, OPTIONS, PATCH, PUT")
        );
        assert_eq!(
            route_methods("/services/abc/routes"),
            Some("GET, HEAD, OPTIONS, POST")
        );
        assert_eq!(route_methods("/"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(route_methods("/nope/a/b/c/d"), None);
    }

    #[test]
    fn origin_choice() {
        let o = HeaderValue::from_static("http://a.example:8002");
        assert_eq!(allowed_origin(&[], Some(&o)), o);
        assert_eq!(allowed_origin(&[], None), "*");
        let list = vec!["http://gui.example".to_string()];
        assert_eq!(allowed_origin(&list, Some(&o)), "http://gui.example");
        let listed = HeaderValue::from_static("http://gui.example");
        assert_eq!(allowed_origin(&list, Some(&listed)), listed);
    }
}
