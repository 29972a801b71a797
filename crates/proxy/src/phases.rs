//! The plugin phase runner: where [`crate::handler`] hands the request to the plugins of
//! the snapshot (`tollgate-plugins`), at the points Kong runs each phase.
//!
//! * [`rewrite`]: after the request is read, before routing (global plugins only).
//! * [`access`]: after routing, before the upstream request is built; runs the matched
//!   route's chain (consumer-scoped configurations resolved as plugins authenticate) and
//!   may answer instead of proxying.
//! * [`respond`]: on every response, the upstream's or Kong's own: header_filter on the
//!   head, then body_filter and log through [`crate::downstream`], for the plugins
//!   access collected — or, when access did not run (no route matched, a redirect, a
//!   rewrite exit), for the global plugins, as Kong's `get_collected_iterator` does.
//!
//! A route without plugins costs a length check per phase: no allocation, no lock, no
//! future beyond the handler's own.

use crate::downstream::{Authenticated, BodyBytes, Filter, LogData, PendingLog, PhaseBody};
use crate::errors::{self, Negotiation};
use crate::handler::{ConnInfo, Settings};
use crate::snapshot::{RouteInfo, Snapshot};
use crate::upstream::raw::RawHeaders;
use crate::{full_body, Body};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tollgate_plugins::log::Try;
pub use tollgate_plugins::Collected;
use tollgate_plugins::{BodyMode, Connection, Exit, ExitBody, Instance, RequestCx, ResponseCx};

/// What the request path learned that the response phases need. Small and free for a
/// request that no plugin sees.
#[derive(Default)]
pub struct Plan<'s> {
    /// What access collected; `None` when access did not run (the globals then run).
    pub collected: Option<Collected<'s>>,
    pub route: Option<&'s RouteInfo>,
    /// The request went to the upstream (Kong's `KONG_PROXIED`).
    pub proxied: bool,
    /// Present when a collected plugin has a log phase: what only the log reports.
    pub log: Option<Box<LogPlan>>,
    /// The consumer an auth plugin authenticated (the log, and consistent hashing on
    /// `consumer`).
    pub auth: Option<Authenticated>,
    /// The upstream's header lines, kept as bytes when [`quiet`] (`handler::Reply`).
    pub raw_headers: Option<crate::upstream::raw::RawHeaders>,
}

/// What the request path records for the log phase only.
#[derive(Default)]
pub struct LogPlan {
    /// A logger reads the details (`Plugin::log_reads_details`): the upstream URI and the
    /// tries are recorded only then.
    pub details: bool,
    pub upstream_uri: String,
    pub upstream_status: Option<u16>,
    pub tries: Vec<Try>,
    pub kong_latency: Option<u64>,
    pub upstream_latency: Option<u64>,
    pub request_body: BodyBytes,
}

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
    pub connection: Connection,
}

/// Kong's rewrite phase (global plugins only).
#[inline]
pub fn rewrite(cx: &PhaseCx<'_>, snap: &Snapshot, client_ip: IpAddr, req: &mut Parts) -> Flow {
    if !snap.plugins.has_rewrite() {
        return Flow::Continue;
    }
    let consumers = snap.consumers.load();
    let mut rcx = RequestCx::new(req, client_ip, &consumers).with_connection(Some(cx.connection));
    let e = match snap.plugins.rewrite(&mut rcx) {
        tollgate_plugins::Flow::Continue => return Flow::Continue,
        tollgate_plugins::Flow::Exit(e) => e,
        // The chain resolves waits itself; one left over is a bug, never a pass.
        tollgate_plugins::Flow::Await(_) => Exit::unexpected(),
    };
    let h = rcx.req.headers.clone();
    Flow::Respond(exit_response(cx, e, &h))
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
    plan: &mut Plan<'s>,
) -> Access
where
    B: hyper::body::Body + Unpin,
{
    let chain = &route.plugins;
    if chain.is_empty() {
        return Access::Continue(None);
    }
    let collected = plan.collected.get_or_insert_with(Collected::new);
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
        .with_connection(Some(cx.connection))
        .with_body(read);
    let flow = chain.access(&mut rcx, collected).await;
    if collected.any(|p| p.log) {
        let details = collected
            .iter()
            .any(|i| i.spec.phases.log && i.plugin.log_reads_details());
        plan.log.get_or_insert_with(Default::default).details = details;
    }
    // (also read by consistent hashing on `consumer`)
    {
        if let Some(c) = rcx.consumer() {
            plan.auth = Some(Authenticated {
                consumer_id: c.id.clone(),
                username: c.username.clone(),
                custom_id: c.custom_id.clone(),
                credential_id: rcx.credential().map(|c| c.id.into()),
            });
        }
    }
    let e = match flow {
        tollgate_plugins::Flow::Continue => return Access::Continue(rcx.into_body()),
        tollgate_plugins::Flow::Exit(e) => e,
        tollgate_plugins::Flow::Await(_) => Exit::unexpected(),
    };
    // The collected plugins' response phases run on it in `respond`.
    Access::Respond(exit_response(cx, e, &rcx.req.headers))
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
    // Each name replaces the response's own; repeated in a row, the values all go out
    // (a Lua table value in `kong.response.exit`).
    let mut last: Option<http::HeaderName> = None;
    for (k, v) in e.headers {
        if last.as_ref() == Some(&k) {
            r.headers_mut().append(k, v);
        } else {
            r.headers_mut().insert(k.clone(), v);
            last = Some(k);
        }
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

/// Kong's header_filter phase. Each instance sees the state its access kept. Answers
/// whether a plugin dropped the body (`kong.response.exit` during header_filter).
fn header_filter(
    collected: &mut Collected<'_>,
    request_headers: &HeaderMap,
    connection: Connection,
    resp: &mut http::response::Parts,
) -> bool {
    let mut empty = false;
    for i in 0..collected.len() {
        let inst = collected[i];
        if !inst.spec.phases.header_filter {
            continue;
        }
        let mut state = collected.take_state(i);
        let mut rcx = ResponseCx {
            resp,
            request_headers,
            state: &mut state,
            connection: Some(connection),
            empty_body: false,
        };
        if let Err(e) = inst.plugin.header_filter(&mut rcx) {
            // The head may already be committed in Kong too; the error is logged.
            tracing::error!(plugin = inst.spec.name, id = %inst.id, "header_filter failed: {e}");
        }
        empty |= rcx.empty_body;
        if let Some(s) = state {
            collected.put_state(i, s);
        }
    }
    empty
}

/// The body filters for this response, each with its state, and whether one of them
/// may change the body.
fn body_filters(
    collected: &mut Collected<'_>,
    request_headers: &HeaderMap,
    connection: Connection,
    resp: &mut http::response::Parts,
) -> (Vec<Filter>, bool) {
    let mut filters = Vec::new();
    let mut changes = false;
    for i in 0..collected.len() {
        let inst = collected[i];
        if !inst.spec.phases.body_filter {
            continue;
        }
        let mut state = collected.take_state(i);
        let mode = inst.plugin.body_mode(&ResponseCx {
            resp,
            request_headers,
            state: &mut state,
            connection: Some(connection),
            empty_body: false,
        });
        match mode {
            BodyMode::Skip => continue,
            BodyMode::Read => {}
            BodyMode::Change => changes = true,
        }
        filters.push(Filter::new(Arc::clone(inst), state));
    }
    (filters, changes)
}

/// What [`respond`] needs to know about the request besides the plan.
pub struct Facts<'a> {
    pub request_id: &'a str,
    pub start: Instant,
    pub conn: &'a ConnInfo,
    /// Requests made on the connection so far, this one included.
    pub conn_requests: u64,
    pub settings: &'a Settings,
}

/// The response phases on a response about to be sent: header_filter now, body_filter
/// and log as the body goes out.
#[inline]
pub fn respond<'s>(
    f: &Facts<'_>,
    snap: &'s Snapshot,
    head: &Parts,
    plan: Plan<'s>,
    resp: Response<Body>,
    raw: Option<&mut RawHeaders>,
) -> Response<Body> {
    if quiet(snap, &plan) {
        return resp;
    }
    run_response_phases(f, snap, head, plan, resp, raw)
}

/// Whether no plugin has a response phase to run (nothing reads or changes
/// the response on its way out).
pub fn quiet(snap: &Snapshot, plan: &Plan<'_>) -> bool {
    match &plan.collected {
        Some(c) => c.is_empty() && c.response_headers.is_empty(),
        None => !snap.plugins.has_global_downstream(),
    }
}

/// Whether the upstream's header lines may reach the client as bytes
/// (`upstream/raw.rs`) with these response phases: no plugin reads or changes
/// the head (a header_filter, a body filter, a logger that reads the headers),
/// and the headers plugins set for the response are end-to-end ones, which go
/// with the proxy's own over the lines of the same name. Rate limiting's
/// headers and a metrics logger keep the lines; http-log or CORS do not.
pub fn keeps_lines(snap: &Snapshot, plan: &Plan<'_>) -> bool {
    let Some(c) = &plan.collected else {
        return !snap.plugins.has_global_downstream();
    };
    c.iter().all(|i| {
        let p = &i.spec.phases;
        !(p.header_filter || p.body_filter || p.log && i.plugin.log_reads_details())
    }) && c
        .response_headers
        .iter()
        .all(|(n, _)| crate::upstream::raw::Kind::of(n.as_str().as_bytes()).settable())
}

fn run_response_phases<'s>(
    f: &Facts<'_>,
    snap: &'s Snapshot,
    head: &Parts,
    mut plan: Plan<'s>,
    resp: Response<Body>,
    mut raw: Option<&mut RawHeaders>,
) -> Response<Body> {
    let mut collected = match plan.collected.take() {
        Some(c) => c,
        None => Collected::globals(&snap.plugins),
    };
    let (mut parts, mut body) = resp.into_parts();
    let connection = f.conn.connection(f.conn_requests);
    // (with the lines kept as bytes no plugin here reads the head: `keeps_lines`)
    let set = std::mem::take(&mut collected.response_headers);
    match raw.as_deref_mut() {
        Some(r) => set.into_iter().for_each(|(k, v)| r.set_header(k, v)),
        None => set.into_iter().for_each(|(k, v)| {
            parts.headers.insert(k, v);
        }),
    }
    if header_filter(&mut collected, &head.headers, connection, &mut parts) {
        body = crate::empty_body();
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        parts.headers.remove(http::header::TRANSFER_ENCODING);
    }
    // A tunnel's 101 has no body to filter.
    let (filters, changes) = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        (Vec::new(), false)
    } else {
        body_filters(&mut collected, &head.headers, connection, &mut parts)
    };
    let loggers: Vec<Arc<Instance>> = collected
        .iter()
        .filter(|i| i.spec.phases.log)
        .map(|i| Arc::clone(i))
        .collect();
    if filters.is_empty() && loggers.is_empty() {
        return Response::from_parts(parts, body);
    }
    if changes {
        // The filters may change the length: chunked (HTTP/1.1) or DATA frames (h2).
        parts.headers.remove(CONTENT_LENGTH);
    }
    // Header maps and the request's details are captured for the log phase only when a
    // logger reads them (http-log…); prometheus needs only figures and names. Body
    // filters always see the response head.
    let keep_headers = loggers.iter().any(|i| i.plugin.log_reads_details());
    let status = parts.status.as_u16();
    let log = if loggers.is_empty() {
        None
    } else {
        let response_head_size = (!keep_headers).then(|| {
            let line = crate::downstream::status_line_len(status);
            match raw.as_deref() {
                Some(r) => r.head_size(line, &parts.headers),
                None => crate::downstream::head_size(line, &parts.headers),
            }
        });
        Some(Box::new(PendingLog {
            loggers,
            data: log_data(f, head, plan, keep_headers),
            response_head_size,
        }))
    };
    let headers = if keep_headers || !filters.is_empty() {
        parts.headers.clone()
    } else {
        HeaderMap::new()
    };
    let body = PhaseBody::new(body, status, headers, filters, log);
    Response::from_parts(parts, body.boxed_unsync())
}

/// The request's side of the log, captured when the response head is ready; `details`
/// as [`tollgate_plugins::Plugin::log_reads_details`] (else only what a metrics plugin
/// reads).
fn log_data(f: &Facts<'_>, head: &Parts, plan: Plan<'_>, details: bool) -> LogData {
    let s = f.settings;
    let conn = f.conn;
    let uri = head
        .uri
        .path_and_query()
        .map_or_else(|| head.uri.path(), |pq| pq.as_str());
    let line = crate::downstream::request_line_len(&head.method, uri);
    let (host, port, request_uri, request_id) = if details {
        let (host, port) = crate::handler::request_host(head, conn);
        (host, port, uri.to_owned(), f.request_id.to_owned())
    } else {
        (
            String::new(),
            conn.local.port(),
            String::new(),
            String::new(),
        )
    };
    let now = Instant::now();
    let service = plan.route.and_then(|r| r.service.as_ref());
    let log = plan.log.map(|l| *l).unwrap_or_default();
    let client_ip = if details {
        crate::headers::real_ip(
            conn.peer.ip(),
            &head.headers,
            &s.trusted_ips,
            &s.real_ip_header,
            s.real_ip_recursive,
        )
    } else {
        conn.peer.ip()
    };
    LogData {
        details,
        request_id,
        method: head.method.clone(),
        request_head_size: crate::downstream::head_size(line, &head.headers),
        request_uri,
        scheme: if conn.tls { "https" } else { "http" },
        host,
        port,
        request_headers: if details {
            head.headers.clone()
        } else {
            HeaderMap::new()
        },
        request_body: log.request_body,
        tls: conn.tls_info,
        route_id: plan.route.map(|r| r.id.as_str().into()),
        service_id: service.map(|s| s.id.as_str().into()),
        route: plan.route.map(|r| r.row.clone()),
        service: service.map(|s| s.row.clone()),
        auth: plan.auth,
        upstream_uri: log.upstream_uri,
        upstream_status: log.upstream_status,
        tries: log.tries,
        client_ip,
        proxied: plan.proxied,
        start: f.start,
        kong_latency: log
            .kong_latency
            .unwrap_or_else(|| now.saturating_duration_since(f.start).as_millis() as u64),
        upstream_latency: log.upstream_latency,
        head_at: now,
    }
}
