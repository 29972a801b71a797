//! The plugin phase runner: where [`crate::handler`] hands the request to the plugins of
//! the snapshot (`tollgate-plugins`), at the points Kong runs each phase.
//!
//! * [`rewrite`]: after the request is read, before routing (global plugins only).
//! * [`access`]: after routing, before the upstream request is built; runs the matched
//!   route's chain (consumer-scoped configurations resolved as plugins authenticate) and
//!   may answer instead of proxying.
//! * [`header_filter`]: on the upstream response head, for the plugins access collected.
//! * [`log`]: after the response.
//!
//! A route without plugins costs a length check per phase: no allocation, no lock, no
//! future beyond the handler's own.

use crate::errors::{self, Negotiation};
use crate::snapshot::{RouteInfo, Snapshot};
use crate::{full_body, Body};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use std::net::IpAddr;
pub use tollgate_plugins::Collected;
use tollgate_plugins::{Exit, ExitBody, LogCx, RequestCx, ResponseCx};

/// Outcome of a phase that may short-circuit.
pub enum Flow {
    Continue,
    Respond(http::Response<Body>),
}

/// What the plugin phases know about the request being proxied.
pub struct PhaseCx<'a> {
    pub request_id: &'a str,
    pub route_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    /// The router's regex path captures (access phase only).
    pub captures: Option<&'a tollgate_plugins::Captures>,
}

/// Kong's rewrite phase (global plugins only).
#[inline]
pub fn rewrite(cx: &PhaseCx<'_>, snap: &Snapshot, client_ip: IpAddr, req: &mut Parts) -> Flow {
    if !snap.plugins.has_rewrite() {
        return Flow::Continue;
    }
    let consumers = snap.consumers.load();
    let mut rcx = RequestCx::new(req, client_ip, &consumers);
    match snap.plugins.rewrite(&mut rcx) {
        tollgate_plugins::Flow::Continue => Flow::Continue,
        tollgate_plugins::Flow::Exit(e) => {
            let h = rcx.req.headers.clone();
            Flow::Respond(exit_response(cx, e, &h))
        }
    }
}

/// What the access phase decided.
pub enum Access {
    /// Proxy; with the body the plugins read (and maybe changed), to send instead of
    /// the client's stream.
    Continue(Option<Bytes>),
    Respond(Response<Body>),
}

/// Kong's access phase: the route's chain, in priority order.
///
/// When a plugin needs the body it is read here, within `max_body` (0 = unlimited), and
/// `body` is left drained.
#[allow(clippy::too_many_arguments)]
pub async fn access<'s, B>(
    cx: &PhaseCx<'_>,
    snap: &Snapshot,
    route: &'s RouteInfo,
    client_ip: IpAddr,
    req: &mut Parts,
    body: &mut B,
    max_body: u64,
    collected: &mut Collected<'s>,
) -> Access
where
    B: hyper::body::Body + Unpin,
{
    let chain = &route.plugins;
    if chain.is_empty() {
        return Access::Continue(None);
    }
    let read = if chain.reads_body() {
        match read_body(body, max_body).await {
            Ok(b) => b,
            Err(code) => {
                let msg = errors::handler_message(code);
                let r = errors::error_response(
                    code,
                    &msg,
                    &req.headers,
                    Negotiation::Handler,
                    "",
                    cx.request_id,
                );
                return Access::Respond(r);
            }
        }
    } else {
        None
    };
    let consumers = snap.consumers.load();
    let mut rcx = RequestCx::new(req, client_ip, &consumers)
        .with_route(cx.route_id, cx.service_id)
        .with_captures(cx.captures)
        .with_body(read);
    match chain.access(&mut rcx, collected) {
        tollgate_plugins::Flow::Continue => Access::Continue(rcx.into_body()),
        tollgate_plugins::Flow::Exit(e) => {
            let h = rcx.req.headers.clone();
            let mut r = exit_response(cx, e, &h);
            // Kong runs the collected plugins' response phases on an exit too.
            if !collected.is_empty() {
                let (mut parts, b) = r.into_parts();
                header_filter(cx, collected, &h, &mut parts);
                r = Response::from_parts(parts, b);
            }
            Access::Respond(r)
        }
    }
}

/// Reads the whole request body. `Err(413)` past `max` (0 = unlimited), `Err(400)` when
/// the client's body breaks off.
async fn read_body<B>(body: &mut B, max: u64) -> Result<Option<Bytes>, u16>
where
    B: hyper::body::Body + Unpin,
{
    use http_body_util::BodyExt;
    if body.is_end_stream() {
        return Ok(None);
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| 400u16)?;
        if let Ok(mut data) = frame.into_data() {
            if max > 0 && (buf.len() + data.remaining()) as u64 > max {
                return Err(413);
            }
            while data.has_remaining() {
                let n = data.chunk().len();
                buf.extend_from_slice(data.chunk());
                data.advance(n);
            }
        }
    }
    Ok(Some(buf.freeze()))
}

/// A plugin's exit as Kong sends it (`kong.response.error` / `kong.response.exit`).
fn exit_response(cx: &PhaseCx<'_>, e: Exit, req_headers: &HeaderMap) -> Response<Body> {
    let mut r = match e.body {
        ExitBody::Error(msg) => errors::error_response(
            e.status,
            &msg,
            req_headers,
            Negotiation::Accept,
            "",
            cx.request_id,
        ),
        ExitBody::Json(v) => body_response(
            e.status,
            Some(HeaderValue::from_static(errors::MIME_JSON)),
            Bytes::from(v.to_string()),
        ),
        ExitBody::Raw { content_type, body } => body_response(e.status, content_type, body),
        ExitBody::Empty => body_response(e.status, None, Bytes::new()),
    };
    for (k, v) in e.headers {
        r.headers_mut().insert(k, v);
    }
    r
}

fn body_response(status: u16, ct: Option<HeaderValue>, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full_body(body.clone()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = ct {
        r.headers_mut().insert(CONTENT_TYPE, ct);
    }
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

/// Kong's header_filter phase.
#[inline]
pub fn header_filter(
    _cx: &PhaseCx<'_>,
    collected: &Collected<'_>,
    request_headers: &HeaderMap,
    resp: &mut http::response::Parts,
) {
    for (k, v) in &collected.response_headers {
        resp.headers.insert(k.clone(), v.clone());
    }
    for inst in collected.iter().filter(|i| i.spec.phases.header_filter) {
        let mut rcx = ResponseCx {
            resp,
            request_headers,
        };
        if let Err(e) = inst.plugin.header_filter(&mut rcx) {
            // The head may already be committed in Kong too; the error is logged.
            tracing::error!(plugin = inst.spec.name, id = %inst.id, "header_filter failed: {e}");
        }
    }
}

/// Kong's log phase (never blocks the response).
#[inline]
pub fn log(cx: &PhaseCx<'_>, collected: &Collected<'_>, status: u16) {
    if collected.is_empty() {
        return;
    }
    let lcx = LogCx {
        status,
        request_id: cx.request_id,
        route_id: cx.route_id,
        service_id: cx.service_id,
    };
    for inst in collected.iter().filter(|i| i.spec.phases.log) {
        inst.plugin.log(&lcx);
    }
}
