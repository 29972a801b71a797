//! The request path: route, Kong's checks, forward, respond.

use crate::balancer::address::AddrSet;
use crate::balancer::hash::HashInput;
use crate::balancer::state::{Outcome, TargetState};
use crate::balancer::{mark_tried, Algorithm, BTarget, Balancer};
use crate::buffering::buffer_response;
use crate::downstream::BodyBytes;
use crate::errors::{self, Negotiation};
use crate::headers::{self, escape_uri, X_FORWARDED_FOR};
use crate::phases::{self, Flow, PhaseCx, Plan};
use crate::snapshot::{RouteInfo, SharedSnapshot, Snapshot};
use crate::upstream::outgoing::{Outgoing, Val};
use crate::upstream::raw::{Kind as RawKind, RawHeaders};
use crate::upstream::{ConnectError, Pool, PooledBody, SendError, Target, UpBody};
use crate::{Body, BoxError, Stats, KONG_VERSION, SERVER_TOKEN};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, LOCATION, SERVER, UPGRADE, VIA};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tollgate_config::{Config, TrustedIp};
use tollgate_router::{check_protocols, upstream_path, ProtocolVerdict, RequestInfo};

static X_KONG_REQUEST_ID: HeaderName = HeaderName::from_static("x-kong-request-id");
static X_KONG_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-kong-proxy-latency");
static X_KONG_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-kong-upstream-latency");
static X_KONG_RESPONSE_LATENCY: HeaderName = HeaderName::from_static("x-kong-response-latency");
static X_KONG_UPSTREAM_STATUS: HeaderName = HeaderName::from_static("x-kong-upstream-status");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The proxy-relevant part of the configuration, resolved once.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trusted_ips: Vec<TrustedIp>,
    pub real_ip_header: String,
    pub real_ip_recursive: bool,
    /// 0 = unlimited.
    pub client_max_body_size: u64,
    pub error_default_type: String,
    pub via: bool,
    pub server: bool,
    pub proxy_latency: bool,
    pub upstream_latency: bool,
    pub response_latency: bool,
    pub upstream_status: bool,
    pub request_id: bool,
    pub request_id_upstream: bool,
    /// nginx `client_body_timeout`: the longest pause between two reads of
    /// the request body (408 after it).
    pub client_body_timeout: Duration,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let on = c.enabled_headers();
        let get = |n: &str| on.get(n).copied().unwrap_or(false);
        let up = c.enabled_headers_upstream();
        Settings {
            trusted_ips: c.trusted_ips.clone(),
            real_ip_header: c.real_ip_header.clone(),
            real_ip_recursive: c.real_ip_recursive,
            client_max_body_size: c.client_max_body_size,
            error_default_type: c.error_default_type.clone(),
            via: get("Via"),
            server: get("Server"),
            proxy_latency: get("X-Kong-Proxy-Latency"),
            upstream_latency: get("X-Kong-Upstream-Latency"),
            response_latency: get("X-Kong-Response-Latency"),
            upstream_status: get("X-Kong-Upstream-Status"),
            request_id: get("X-Kong-Request-Id"),
            request_id_upstream: up.get("X-Kong-Request-Id").copied().unwrap_or(false),
            client_body_timeout: nginx_time(
                c,
                &[
                    "nginx_proxy_client_body_timeout",
                    "nginx_http_client_body_timeout",
                ],
            )
            .unwrap_or(DEFAULT_CLIENT_BODY_TIMEOUT),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_ips.iter().any(|t| t.contains(ip))
    }
}

/// nginx's default `client_body_timeout`.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The first of Kong's injected nginx directives `keys` that is set, as an
/// nginx time (`60`, `30s`, `500ms`, `1m30s`).
pub fn nginx_time(c: &Config, keys: &[&str]) -> Option<Duration> {
    keys.iter()
        .find_map(|k| c.raw.get(*k))
        .and_then(|v| parse_nginx_time(v))
}

/// Parses an nginx time value (`ngx_parse_time`): numbers with the units
/// ms, s, m, h, d, w, M, y; a bare number is seconds.
pub fn parse_nginx_time(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(ms)?)?;
        rest = rest[unit_len..].trim_start();
    }
    Some(Duration::from_millis(total_ms))
}

/// State shared by every connection.
pub struct Shared {
    pub settings: Settings,
    pub snapshot: SharedSnapshot,
    pub pool: Arc<Pool>,
    pub stats: Arc<Stats>,
}

/// What the listener knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub sni: Option<String>,
    /// The peer's IP as a header value (`X-Real-IP`, `X-Forwarded-For`):
    /// formatted once per connection rather than per request.
    pub peer_ip_value: HeaderValue,
    /// The listener's port as a header value (`X-Forwarded-Port`), formatted once.
    pub local_port_value: HeaderValue,
    /// TLS version and cipher, OpenSSL's names (the log phase's `request.tls`).
    pub tls_info: Option<(&'static str, &'static str)>,
    /// nginx's `$connection`: this connection's serial number.
    pub serial: u64,
    /// Requests made on this connection (`$connection_requests`).
    pub requests: AtomicU64,
}

/// Connections accepted so far, for [`ConnInfo::serial`].
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool, sni: Option<String>) -> ConnInfo {
        let peer_ip_value = HeaderValue::from_maybe_shared(Bytes::from(peer.ip().to_string()))
            .unwrap_or(HeaderValue::from_static(""));
        ConnInfo {
            peer,
            local,
            tls,
            sni,
            peer_ip_value,
            local_port_value: HeaderValue::from(local.port()),
            tls_info: None,
            serial: CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1,
            requests: AtomicU64::new(0),
        }
    }

    /// The connection as plugins see it, on its `requests`th request.
    pub fn connection(&self, requests: u64) -> tollgate_plugins::Connection {
        tollgate_plugins::Connection {
            local: self.local,
            serial: self.serial,
            requests,
        }
    }

    pub fn with_tls_info(mut self, info: Option<(&'static str, &'static str)>) -> ConnInfo {
        self.tls_info = info;
        self
    }
}

/// nginx's `$host` (lower-cased, without the port) and `$server_port`, as the log
/// serializer builds `request.url` from them.
pub(crate) fn request_host(head: &http::request::Parts, conn: &ConnInfo) -> (String, u16) {
    let raw = head
        .headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()));
    let host = match raw.and_then(split_host_port) {
        Some((h, _)) => h.to_ascii_lowercase(),
        None => conn.sni.clone().unwrap_or_default(),
    };
    (host, conn.local.port())
}

// `http`'s names as statics: what the upstream request sets refers to them.
static VIA_NAME: HeaderName = VIA;
static TE_NAME: HeaderName = http::header::TE;
static UPGRADE_NAME: HeaderName = UPGRADE;
static CONNECTION_NAME: HeaderName = http::header::CONNECTION;
static CONTENT_LENGTH_NAME: HeaderName = CONTENT_LENGTH;

/// Adds `v` to what the proxy sets, when it is a value.
fn push<'a>(
    set: &mut Vec<(&'static HeaderName, Val<'a>)>,
    name: &'static HeaderName,
    v: Option<Val<'a>>,
) {
    if let Some(v) = v {
        set.push((name, v));
    }
}

/// `s` as an owned value, if it is one.
fn owned(s: &str) -> Option<Val<'static>> {
    HeaderValue::from_str(s).ok().map(Val::Owned)
}

/// The `Via` value Kong adds: upstream (`{ver} kong/{KONG_VERSION}`) or on
/// the response (`{ver} {SERVER_TOKEN}`). Built once, then static values:
/// no formatting and no reference counting per request.
fn via_value(v: Version, response: bool) -> &'static HeaderValue {
    static VIA: std::sync::OnceLock<[HeaderValue; 6]> = std::sync::OnceLock::new();
    let all = VIA.get_or_init(|| {
        let mk = |s: String| HeaderValue::from_static(Box::leak(s.into_boxed_str()));
        [
            mk(format!("2 kong/{KONG_VERSION}")),
            mk(format!("1.0 kong/{KONG_VERSION}")),
            mk(format!("1.1 kong/{KONG_VERSION}")),
            mk(format!("2 {SERVER_TOKEN}")),
            mk(format!("1.0 {SERVER_TOKEN}")),
            mk(format!("1.1 {SERVER_TOKEN}")),
        ]
    });
    let i = match v {
        Version::HTTP_2 => 0,
        Version::HTTP_10 => 1,
        _ => 2,
    };
    &all[i + if response { 3 } else { 0 }]
}

fn ms_since(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

struct Ctx<'a> {
    shared: &'a Shared,
    start: Instant,
    /// Kong's request id as the value of the `X-Kong-Request-Id` headers (made
    /// once, cloned by reference count into the upstream request and the
    /// response); [`Ctx::request_id`] reads it as text.
    request_id_value: HeaderValue,
    /// Kong's `is_grpc_request()`: HTTP/2 with an `application/grpc*`
    /// content type. Kong's own errors then take the gRPC form.
    grpc: bool,
    /// Requests made on the connection so far, this one included.
    conn_requests: u64,
    /// The client is served by `fast.rs`, which writes an upstream's header
    /// lines as bytes ([`Reply::raw`]).
    raw_ok: bool,
}

impl Ctx<'_> {
    fn request_id(&self) -> &str {
        // (32 hex digits: always text)
        self.request_id_value.to_str().unwrap_or_default()
    }

    /// A Kong-generated response with Kong's response headers.
    fn kong_response(&self, mut resp: Response<Body>) -> Response<Body> {
        let s = &self.shared.settings;
        let h = resp.headers_mut();
        if s.response_latency {
            h.insert(
                &X_KONG_RESPONSE_LATENCY,
                headers::number_value(ms_since(self.start) as u64),
            );
        }
        if s.server {
            h.insert(SERVER, HeaderValue::from_static(SERVER_TOKEN));
        } else {
            h.remove(SERVER);
        }
        if s.request_id {
            h.insert(&X_KONG_REQUEST_ID, self.request_id_value.clone());
        }
        resp
    }

    fn error(
        &self,
        status: u16,
        message: &str,
        req: &HeaderMap,
        how: Negotiation,
    ) -> Response<Body> {
        if self.grpc {
            // kong.response.error → the status's gRPC name; error_handlers.lua
            // (when it picks gRPC) → its own message.
            match how {
                Negotiation::Accept => {
                    return self.kong_response(errors::grpc_error_response(status, None))
                }
                Negotiation::Handler if errors::handler_wants_grpc(req) => {
                    return self.kong_response(errors::grpc_error_response(status, Some(message)))
                }
                Negotiation::Handler => {}
            }
        }
        let resp = errors::error_response(
            status,
            message,
            req,
            how,
            &self.shared.settings.error_default_type,
            self.request_id(),
        );
        self.kong_response(resp)
    }
}

/// A client's request body: hyper's, or none (a bodiless HTTP/1.1 request
/// served without hyper, see `fast.rs`).
pub enum ClientBody {
    Hyper(Incoming),
    Empty,
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Empty => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// A response, and the upstream's header lines when they were kept as bytes:
/// the response's own map then holds only the headers the proxy added, which
/// replace lines of the same name (see `upstream/raw.rs`).
pub struct Reply {
    pub resp: Response<Body>,
    pub raw: Option<RawHeaders>,
    /// The fast path's request header map, done with, for its next request to
    /// fill again (two allocations fewer per request).
    pub spare: Option<HeaderMap>,
}

impl Reply {
    /// The response with every header in its map (for a client hyper serves).
    pub fn into_response(self) -> Response<Body> {
        let Some(raw) = self.raw else {
            return self.resp;
        };
        let (mut parts, body) = self.resp.into_parts();
        match raw.merge(std::mem::take(&mut parts.headers)) {
            Ok(h) => {
                parts.headers = h;
                Response::from_parts(parts, body)
            }
            Err(e) => {
                tracing::error!("upstream response head: {e}");
                let mut r = Response::new(crate::empty_body());
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                r
            }
        }
    }
}

/// Serves one request. `fast`: the client is served by `fast.rs`, which takes
/// a [`Reply`] with raw header lines.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
    fast: bool,
) -> Reply {
    shared.stats.total_requests.fetch_add(1, Ordering::Relaxed);
    // (encoded straight into a buffer: `to_string` goes through fmt)
    let mut id_buf = uuid::Uuid::encode_buffer();
    let request_id: &str = uuid::Uuid::new_v4().simple().encode_lower(&mut id_buf);
    let cx = Ctx {
        shared: &shared,
        start: Instant::now(),
        request_id_value: request_id_value(request_id),
        grpc: req.version() == Version::HTTP_2
            && req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
        conn_requests: conn.requests.fetch_add(1, Ordering::Relaxed) + 1,
        raw_ok: fast,
    };
    // (`fast.rs` hands every request with the verdict header to hyper)
    if let Some(r) = (!fast)
        .then(|| req.headers().get(&crate::guard::REJECT))
        .flatten()
        .and_then(|v| crate::guard::parse_reject(v.as_bytes()))
    {
        return Reply {
            resp: reject_response(&cx, r, req.headers()),
            raw: None,
            spare: None,
        };
    }
    let snap = shared.snapshot.load_full();
    // The head stays here, for the response phases; the body goes on.
    let (mut head, body) = req.into_parts();
    let mut plan = Plan::default();
    let resp = proxy(&cx, &snap, &conn, &mut head, body, &mut plan).await;
    // (kept only when no response phase reads or changes the head: `phases::keeps_lines`)
    let mut raw = plan.raw_headers.take();
    let facts = phases::Facts {
        request_id: cx.request_id(),
        start: cx.start,
        conn: &conn,
        conn_requests: cx.conn_requests,
        settings: &shared.settings,
    };
    let resp = phases::respond(&facts, &snap, &head, plan, resp, raw.as_mut());
    Reply {
        resp,
        raw,
        spare: fast.then(|| std::mem::take(&mut head.headers)),
    }
}

/// The request id as a header value. It goes on the upstream request and the
/// response: built on a buffer the clones share (one allocation), not on a copy
/// that the first clone would move into a shared one (two).
fn request_id_value(id: &str) -> HeaderValue {
    match <[u8; 32]>::try_from(id.as_bytes()) {
        Ok(own) => HeaderValue::from_maybe_shared(Bytes::from_owner(own)),
        Err(_) => HeaderValue::from_str(id),
    }
    .unwrap_or(HeaderValue::from_static(""))
}

/// The answer to a head refused by [`crate::head`] (nginx's error page
/// through Kong's error handler), closing the connection.
fn reject_response(cx: &Ctx<'_>, r: crate::head::Reject, h: &HeaderMap) -> Response<Body> {
    let msg = match r {
        crate::head::Reject::NotImplemented => "Not implemented".to_owned(),
        _ => errors::handler_message(r.nginx_status()),
    };
    let mut resp = cx.error(r.status(), &msg, h, Negotiation::Handler);
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// [`crate::snapshot::split_host_port`], borrowed.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        return Some((h, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        _ => Some((s, None)),
    }
}

/// `X-Forwarded-Proto` and `-Host`, and a trusted peer's `-Port`, `-Path`,
/// `-Prefix`.
type Forwarded<'a> = (
    Cow<'a, str>,
    Cow<'a, str>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn header_str<'h>(h: &'h HeaderMap, n: &HeaderName) -> Option<&'h str> {
    h.get(n).and_then(|v| v.to_str().ok())
}

async fn proxy<'s>(
    cx: &Ctx<'_>,
    snap: &'s Snapshot,
    conn: &ConnInfo,
    head: &mut http::request::Parts,
    mut body: ClientBody,
    plan: &mut Plan<'s>,
) -> Response<Body> {
    let settings = &cx.shared.settings;
    let scheme = if conn.tls { "https" } else { "http" };
    let is_h2 = head.version == Version::HTTP_2;

    // Host (nginx `$host`: lower-cased, without the port) and port. The
    // header value and the URI are cloned (reference counts), not copied:
    // plugins may change the head below.
    let host_value: Option<HeaderValue> = head
        .headers
        .get(HOST)
        .filter(|v| v.to_str().is_ok())
        .cloned();
    let client_uri = head.uri.clone();
    let raw_host: Option<&str> = host_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .or_else(|| client_uri.authority().map(|a| a.as_str()));
    let (host, host_port): (Cow<'_, str>, _) = match raw_host.and_then(split_host_port) {
        Some((h, p)) if h.bytes().any(|b| b.is_ascii_uppercase()) => {
            (Cow::Owned(h.to_ascii_lowercase()), p)
        }
        Some((h, p)) => (Cow::Borrowed(h), p),
        None => (Cow::Borrowed(conn.sni.as_deref().unwrap_or_default()), None),
    };
    let port = host_port.unwrap_or(conn.local.port());

    let raw_path = client_uri.path();
    let mut query: Option<Cow<'_, str>> = client_uri.query().map(Cow::Borrowed);
    let norm = tollgate_router::normalize_path(raw_path);

    {
        let pcx = PhaseCx {
            request_id: cx.request_id(),
            route_id: None,
            service_id: None,
            captures: None,
            connection: conn.connection(cx.conn_requests),
        };
        if let Flow::Respond(r) = phases::rewrite(&pcx, snap, conn.peer.ip(), head) {
            return cx.kong_response(r);
        }
    }

    let m = {
        let h = &head.headers;
        let lookup = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        let info = RequestInfo {
            scheme,
            method: head.method.as_str(),
            host: &host,
            port,
            path: &norm,
            sni: conn.sni.as_deref(),
            headers: &lookup,
        };
        snap.router
            .find(&info)
            .map(|m| (m.route_index, m.prefix_len, m.protocols, m.captures))
    };
    let Some((route_index, prefix_len, protocols, captures)) = m else {
        return cx.error(404, errors::NO_ROUTE, &head.headers, Negotiation::Accept);
    };
    let route: &'s RouteInfo = &snap.routes[route_index];
    plan.route = Some(route);

    // X-Forwarded-* (incoming values kept only from trusted peers).
    let peer_ip = conn.peer.ip();
    let trusted = settings.is_trusted(peer_ip);
    let h = &head.headers;
    // Owned copies only for a trusted peer's incoming values (the request is
    // taken apart below); otherwise borrowed, the port kept as a number.
    let (fwd_proto, fwd_host, fwd_port, fwd_path, fwd_prefix): Forwarded<'_> = if trusted {
        (
            header_str(h, &X_FORWARDED_PROTO)
                .map_or(Cow::Borrowed(scheme), |v| Cow::Owned(v.to_owned())),
            Cow::Owned(header_str(h, &X_FORWARDED_HOST).unwrap_or(&host).to_owned()),
            header_str(h, &X_FORWARDED_PORT).map(str::to_owned),
            header_str(h, &X_FORWARDED_PATH).map(str::to_owned),
            header_str(h, &X_FORWARDED_PREFIX).map(str::to_owned),
        )
    } else {
        (
            Cow::Borrowed(scheme),
            Cow::Borrowed(&*host),
            None,
            None,
            None,
        )
    };
    let matched_prefix = if route.strip_path && prefix_len > 0 {
        norm.get(..prefix_len)
    } else {
        None
    };
    let fwd_prefix: Option<&str> = fwd_prefix
        .as_deref()
        .or(matched_prefix.filter(|p| *p != "/"));

    match check_protocols(
        protocols,
        &fwd_proto,
        || header_str(h, &http::header::CONTENT_TYPE),
        is_h2,
    ) {
        ProtocolVerdict::Ok => {}
        ProtocolVerdict::HttpsRequired => {
            let code = route.https_redirect_status_code;
            if code == 426 {
                let mut r = cx.error(426, errors::USE_HTTPS, h, Negotiation::Accept);
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    HeaderValue::from_static("Upgrade"),
                );
                r.headers_mut()
                    .insert(UPGRADE, HeaderValue::from_static("TLS/1.2, HTTP/1.1"));
                return r;
            }
            let mut r = Response::new(crate::empty_body());
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let request_uri = match client_uri.query() {
                Some(q) => format!("{raw_path}?{q}"),
                None => raw_path.to_owned(),
            };
            if let Ok(v) = HeaderValue::from_str(&format!("https://{fwd_host}{request_uri}")) {
                r.headers_mut().insert(LOCATION, v);
            }
            r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
            return cx.kong_response(r);
        }
        ProtocolVerdict::Http2Required => {
            let mut r = cx.error(426, errors::USE_HTTP2, h, Negotiation::Accept);
            r.headers_mut().insert(
                http::header::CONNECTION,
                HeaderValue::from_static("Upgrade"),
            );
            r.headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("HTTP/2"));
            return r;
        }
        ProtocolVerdict::NonGrpcRequest => {
            return cx.error(415, errors::NON_GRPC, h, Negotiation::Accept);
        }
        ProtocolVerdict::GrpcsRequired => {
            let mut r = Response::new(crate::empty_body());
            let hm = r.headers_mut();
            hm.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            hm.insert("grpc-status", HeaderValue::from_static("1"));
            hm.insert(
                "grpc-message",
                HeaderValue::from_static("gRPC request matched gRPCs route"),
            );
            return cx.kong_response(r);
        }
    }

    // Plugins' access phase (before Kong's "no Service" check, as in Kong.Access).
    // From here on the response phases are the collected plugins' (maybe none).
    plan.collected = Some(phases::Collected::new());
    let mut pre_read: Option<Bytes> = None;
    if !route.plugins.is_empty() {
        let pcx = PhaseCx {
            request_id: cx.request_id(),
            route_id: Some(&route.id),
            service_id: route.service.as_ref().map(|s| s.id.as_str()),
            captures: Some(&captures),
            connection: conn.connection(cx.conn_requests),
        };
        let max = settings.client_max_body_size;
        // Plugins see nginx's `$remote_addr`: the realip-processed client address.
        let ip = headers::real_ip(
            peer_ip,
            &head.headers,
            &settings.trusted_ips,
            &settings.real_ip_header,
            settings.real_ip_recursive,
        );
        match phases::access(&pcx, snap, route, ip, head, &mut body, max, plan).await {
            phases::Access::Continue(b) => pre_read = b,
            phases::Access::Respond(r) => return cx.kong_response(r),
        }
        // Plugins may have edited the query (hide_credentials).
        query = head.uri.query().map(|q| Cow::Owned(q.to_owned()));
    }

    let Some(service) = route.service.clone() else {
        return cx.error(503, errors::NO_SERVICE, &head.headers, Negotiation::Accept);
    };
    if service.client_cert_missing {
        tracing::error!(service = %service.id, "the service's client certificate could not be loaded (its error is logged when the configuration was compiled): not connecting without it");
        let msg = errors::handler_message(500);
        return cx.error(500, &msg, &head.headers, Negotiation::Accept);
    }

    // The client headers read below, in one pass (plugins are done with them).
    let seen = headers::Seen::scan(&head.headers);

    // client_max_body_size
    let max = settings.client_max_body_size;
    if max > 0 {
        let cl = seen
            .content_length
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if cl.is_some_and(|n| n > max) {
            return cx.error(
                413,
                &errors::handler_message(413),
                &head.headers,
                Negotiation::Handler,
            );
        }
    }

    // Upgrade (WebSocket) tunnel?
    let upgrade_to: Option<HeaderValue> = if !is_h2 && seen.connection_has(&head.headers, "upgrade")
    {
        head.headers
            .get(UPGRADE)
            .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"h2c"))
            .cloned()
    } else {
        None
    };
    // (what `hyper::upgrade::on` takes out of the request)
    let client_upgrade = upgrade_to
        .as_ref()
        .and_then(|_| head.extensions.remove::<hyper::upgrade::OnUpgrade>());

    // Upstream URI.
    let mut path = upstream_path(
        service.path.as_deref(),
        &norm,
        prefix_len,
        route.strip_path,
        route.path_handling,
    );
    if let Cow::Owned(e) = escape_uri(&path) {
        path = Cow::Owned(e);
    }
    // The client's own target when nothing changed it (its path kept whole,
    // the request's URI not replaced by a plugin): borrowed, not rebuilt.
    let client_target = client_uri.path_and_query().map(|pq| pq.as_str());
    let target_kept = client_target.is_some()
        && head.uri.path_and_query().map(|pq| pq.as_str().as_ptr())
            == client_target.map(str::as_ptr);
    let uri: Cow<'_, str> = match path {
        Cow::Borrowed(p) if target_kept && std::ptr::eq(p, raw_path) => {
            Cow::Borrowed(client_target.unwrap_or(raw_path))
        }
        path => {
            let mut uri = path.into_owned();
            if let Some(q) = &query {
                uri.push('?');
                uri.push_str(q);
            } else if head
                .uri
                .path_and_query()
                .is_some_and(|pq| pq.as_str().ends_with('?'))
            {
                // (what `Uri`'s Display ends with, without formatting it)
                uri.push('?');
            }
            Cow::Owned(uri)
        }
    };

    if let Some(log) = plan.log.as_mut().filter(|l| l.details) {
        log.upstream_uri = uri.clone().into_owned();
    }
    // HTTP/1.1: the target is written as it is (`Outgoing::target`), without a
    // `Uri` parse; it must be one: nothing that could end the request line.
    let h1_target_ok = uri.starts_with('/') && uri.bytes().all(|b| b.is_ascii_graphic());
    let head: &http::request::Parts = head;
    // The client's headers stay as they came (error pages, plugins'
    // header_filter); the upstream copy is built from them per attempt, so a
    // request that goes out at the first try costs one copy of the map.
    let client_headers = &head.headers;
    let te_trailers = seen.wants_trailers(client_headers);

    // realip
    let remote_addr = headers::real_ip(
        peer_ip,
        client_headers,
        &settings.trusted_ips,
        &settings.real_ip_header,
        settings.real_ip_recursive,
    );
    let h2_up = service.is_grpc();
    let http_version = match head.version {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let preserved_host: Option<&str> = if route.preserve_host {
        raw_host.or(conn.sni.as_deref())
    } else {
        None
    };

    // Request body, bounded by client_max_body_size.
    let has_body = match &pre_read {
        Some(b) => !b.is_empty(),
        None => !body_is_empty(client_headers, &body),
    };
    // What went wrong reading the body: shared with it, so only when there is one.
    let flags = has_body.then(|| Arc::new(BodyFlags::default()));
    let client_status = || flags.as_ref().and_then(|f| f.client_status());
    // The log phase reports the request body's size: counted only when it runs.
    let counted = (plan.log.is_some() && has_body && pre_read.is_none()).then(Default::default);
    let mut limited = flags.as_ref().map(|flags| LimitedBody {
        inner: body,
        left: if max > 0 { max } else { u64::MAX },
        flags: flags.clone(),
        idle: IdleTimer::new(settings.client_body_timeout),
        counted: counted.clone(),
    });
    // request_buffering (nginx `proxy_request_buffering`): read the whole
    // body before choosing an upstream, so that it can be sent again on a
    // retry. gRPC (nginx `grpc_pass`) and tunnels always stream.
    let buffered: Option<Bytes> = if let Some(b) = pre_read {
        // Read (and maybe changed) by a plugin already.
        Some(b)
    } else if has_body && route.request_buffering && !h2_up && upgrade_to.is_none() {
        match limited.take().map(|l| l.collect()) {
            None => None,
            Some(f) => match f.await {
                Ok(c) => Some(c.to_bytes()),
                Err(_) => {
                    let code = client_status().unwrap_or(400);
                    return client_body_error(cx, code, client_headers);
                }
            },
        }
    } else {
        None
    };
    let mut body: Option<Body> = Some(match limited {
        Some(l) if has_body => l.boxed_unsync(),
        _ => crate::empty_body(),
    });
    // nginx `proxy_next_upstream error timeout`: a request whose body went
    // (partly) out is sent again only if that body can be replayed, and
    // never for non-idempotent methods (nginx ≥ 1.9.13).
    let replayable = !has_body || buffered.is_some();
    let idempotent = !matches!(head.method.as_str(), "POST" | "LOCK" | "PATCH");
    if let Some(log) = plan.log.as_mut() {
        log.request_body = match (&buffered, counted) {
            (Some(b), _) => BodyBytes::Known(b.len() as u64),
            (None, Some(c)) => BodyBytes::Counted(c),
            (None, None) => BodyBytes::None,
        };
    }

    // Balancer: targets to try.
    let mut tries: u32 = 0;
    let mut last_connect_err: Option<ConnectError> = None;
    let upstream_entity: Option<&Arc<Balancer>> = snap.upstreams.get(&service.host);
    // Consistent hashing: the value is hashed once, on the first try (Kong).
    let (hash, hash_cookie) = match upstream_entity {
        Some(b) if b.algorithm == Algorithm::ConsistentHashing => b.hash.value(&HashInput {
            consumer: plan.auth.as_ref().map(|a| &*a.consumer_id),
            ip: remote_addr,
            // (the connection's peer, already formatted once per connection)
            ip_text: (remote_addr == peer_ip)
                .then(|| conn.peer_ip_value.to_str().ok())
                .flatten(),
            headers: client_headers,
            path: &norm,
            query: query.as_deref(),
            captures: &captures,
        }),
        _ => (None, None),
    };
    // The upstream's header lines go to the client as bytes when nothing else
    // reads or changes them (`upstream/raw.rs`): a client `fast.rs` serves, no
    // response phase, no tunnel, no trailers, no cookie to add.
    let raw_head = cx.raw_ok
        && client_upgrade.is_none()
        && !te_trailers
        && hash_cookie.is_none()
        && phases::keeps_lines(snap, plan);
    let mut raw: Option<RawHeaders> = None;
    // The upstream request's headers (its `Host` set per try).
    // What the proxy sets over the client's headers (`upstream/outgoing.rs`),
    // borrowed where it can be; a value that is no header value leaves the
    // client's as it is.
    let mut set: Vec<(&'static HeaderName, Val<'_>)> = Vec::with_capacity(13);
    {
        let uh = &mut set;
        // The peer's address is formatted once per connection.
        let client_ip = if remote_addr == peer_ip {
            Val::Shared(&conn.peer_ip_value)
        } else {
            owned(&remote_addr.to_string()).unwrap_or(Val::Removed)
        };
        match seen.x_forwarded_for.and_then(|v| v.to_str().ok()) {
            Some(v) => push(uh, &X_FORWARDED_FOR, owned(&format!("{v}, {peer_ip}"))),
            None => uh.push((&X_FORWARDED_FOR, client_ip.clone())),
        }
        push(uh, &X_FORWARDED_PROTO, Val::text(&fwd_proto));
        match &host_value {
            // (the client's own value when it is the same)
            Some(v) if v.as_bytes() == fwd_host.as_bytes() => {
                uh.push((&X_FORWARDED_HOST, Val::Shared(v)))
            }
            _ => push(uh, &X_FORWARDED_HOST, Val::text(&fwd_host)),
        }
        match &fwd_port {
            Some(p) => push(uh, &X_FORWARDED_PORT, Val::text(p)),
            // (the listener's port is formatted once per connection)
            None if port == conn.local.port() => {
                uh.push((&X_FORWARDED_PORT, Val::Shared(&conn.local_port_value)))
            }
            None => uh.push((&X_FORWARDED_PORT, Val::Owned(HeaderValue::from(port)))),
        }
        push(
            uh,
            &X_FORWARDED_PATH,
            Val::text(fwd_path.as_deref().unwrap_or(raw_path)),
        );
        match fwd_prefix {
            Some(p) => push(uh, &X_FORWARDED_PREFIX, Val::text(p)),
            None => uh.push((&X_FORWARDED_PREFIX, Val::Removed)),
        }
        uh.push((&X_REAL_IP, client_ip));
        match seen.via.and_then(|v| v.to_str().ok()) {
            Some(v) => push(
                uh,
                &VIA_NAME,
                owned(&format!("{v}, {http_version} kong/{KONG_VERSION}")),
            ),
            None => uh.push((&VIA_NAME, Val::Shared(via_value(head.version, false)))),
        }
        if settings.request_id_upstream {
            uh.push((&X_KONG_REQUEST_ID, Val::Shared(&cx.request_id_value)));
        }
        if te_trailers || h2_up {
            static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
            uh.push((&TE_NAME, Val::Shared(&TRAILERS)));
        }
        if !h2_up {
            static KEEP_ALIVE: HeaderValue = HeaderValue::from_static("keep-alive");
            static KEEP_ALIVE_UPGRADE: HeaderValue =
                HeaderValue::from_static("keep-alive, Upgrade");
            let connection = match &upgrade_to {
                Some(u) => {
                    uh.push((&UPGRADE_NAME, Val::Shared(u)));
                    &KEEP_ALIVE_UPGRADE
                }
                None => &KEEP_ALIVE,
            };
            uh.push((&CONNECTION_NAME, Val::Shared(connection)));
        }
        if let Some(b) = &buffered {
            uh.push((&CONTENT_LENGTH_NAME, Val::Owned(HeaderValue::from(b.len()))));
        }
    }
    let mut outgoing = Outgoing::new(client_headers, seen.lists_others(client_headers), set);
    if !h2_up {
        outgoing.target = Some(&uri);
    }
    // Addresses this request failed on: retries move to the next one.
    let mut tried: u64 = 0;
    // The target picked for this try and, for a name, its address.
    let mut picked: Option<&BTarget> = None;
    let mut picked_addr: Option<(Arc<AddrSet>, usize)> = None;
    let mut in_flight: Option<InFlight> = None;
    if let Some(u) = upstream_entity {
        // (named targets whose DNS answer ran out are resolved again first)
        u.refresh_names().await;
    }
    // (one clock reading for both)
    let mut sent_at = Instant::now();
    let proxy_latency = sent_at.saturating_duration_since(cx.start).as_millis();
    // Kong's KONG_PROXIED: the response is the upstream's from here on, or a failure
    // to reach it.
    plan.proxied = true;
    if let Some(log) = plan.log.as_mut() {
        log.kong_latency = Some(proxy_latency as u64);
    }
    let mut pending: Option<Request<Body>> = None;
    let mut last_send_err: Option<u16> = None;

    let result = loop {
        if tries > service.retries {
            if let Some(code) = last_send_err {
                break Err(code);
            }
            break Err(match last_connect_err.take() {
                Some(ConnectError::Timeout) => 504,
                _ => 502,
            });
        }
        tries += 1;
        // Whether this try waited for a DNS answer.
        let mut resolved_now = false;
        let try_start = plan
            .log
            .as_ref()
            .is_some_and(|l| l.details)
            .then(Instant::now);
        // pick an address
        let mut target_host: Cow<'_, str> = Cow::Borrowed(&service.host);
        let mut target_port = service.port;
        let resolved = match upstream_entity {
            Some(u) => {
                let plan = u.plan();
                match u.pick(&plan, hash, tried) {
                    Some(p) => {
                        mark_tried(&mut tried, p.slot);
                        let t = &u.targets[p.target];
                        picked = Some(t);
                        target_host = Cow::Borrowed(t.host.as_str());
                        target_port = t.port;
                        picked_addr = p.addr.zip(plan.sets[p.target].clone()).map(|(k, s)| (s, k));
                        // (only the algorithms that read them pay for these counts)
                        if matches!(
                            u.algorithm,
                            Algorithm::LeastConnections | Algorithm::Latency
                        ) {
                            let st = plan.state(&u.targets, &plan.slots[p.slot]);
                            in_flight = Some(InFlight::new(st.clone()));
                        }
                        match (&picked_addr, t.ip) {
                            (Some((set, k)), _) => set.socket(*k).map(|(a, srv_name)| {
                                if let (true, Some(n)) = (u.use_srv_name, srv_name) {
                                    target_host = Cow::Owned(n.to_owned());
                                }
                                // (an SRV record's port; Kong's Host carries it)
                                target_port = a.port();
                                a
                            }),
                            (None, Some(ip)) => Some(SocketAddr::new(ip, t.port)),
                            (None, None) => None,
                        }
                    }
                    None if tries == 1 => {
                        return cx.error(503, errors::NO_PEER, client_headers, Negotiation::Accept);
                    }
                    // Every address went unhealthy while retrying: the last failure stands.
                    None => {
                        break Err(last_send_err.unwrap_or(match last_connect_err.take() {
                            Some(ConnectError::Timeout) => 504,
                            _ => 502,
                        }));
                    }
                }
            }
            // The service's own host: a name goes through the same resolver
            // (`dns_resolver`, `dns_order`, TTLs).
            None => {
                let h = target_host.trim_start_matches('[').trim_end_matches(']');
                // (the service's own address was parsed with the snapshot)
                let ip = if *target_host == service.host {
                    service.host_ip
                } else {
                    h.parse::<IpAddr>().ok()
                };
                match ip {
                    Some(ip) => Some(SocketAddr::new(ip, target_port)),
                    None => {
                        resolved_now = true;
                        match crate::balancer::dns::resolve_in(&service.resolved, h).await {
                            Ok(r) => r.pick(target_port).map(|(a, _)| {
                                target_port = a.port();
                                a
                            }),
                            Err(e) => {
                                tracing::debug!(host = %h, "service host resolution failed: {e}");
                                None
                            }
                        }
                    }
                }
            }
        };
        // Passive health check report on the target (address) picked for this try.
        let report = |o: Outcome| {
            if let (Some(u), Some(t)) = (upstream_entity, picked) {
                u.report_passive(t, picked_addr.as_ref().map(|(s, k)| &s.addrs[*k]), o);
            }
        };
        let addr = match resolved {
            Some(a) => {
                if let Some(t) = try_start {
                    if let Some(log) = plan.log.as_mut() {
                        log.tries.push(new_try(a, t));
                    }
                }
                a
            }
            None => {
                // Kong leaves a target whose name does not resolve out of the
                // balancer: no peer, rather than a resolution failure.
                let msg = if picked.is_some() {
                    errors::NO_PEER
                } else {
                    errors::NAME_RESOLUTION_FAILED
                };
                return cx.error(503, msg, client_headers, Negotiation::Accept);
            }
        };
        // The service's own host and port: its `Host` was built with the snapshot.
        let own_host = service.host_header.as_ref().filter(|_| {
            preserved_host.is_none()
                && upstream_entity.is_none()
                && target_port == service.port
                && *target_host == service.host
        });
        let host_header: Cow<'_, str> = match (preserved_host, own_host) {
            (Some(h), _) => Cow::Borrowed(h),
            (None, Some(v)) => Cow::Borrowed(v.to_str().unwrap_or_default()),
            (None, None) => {
                let name: &str = upstream_entity
                    .as_ref()
                    .and_then(|u| u.host_header.as_deref())
                    .unwrap_or(&target_host);
                crate::snapshot::host_header(name, target_port, &service.protocol)
            }
        };
        let target = Target {
            // nginx `proxy_ssl_name $upstream_host` (port stripped): the Host
            // sent upstream, so the preserved Host with `preserve_host`.
            // Plain-text targets need no name (and no allocation).
            host: if service.tls.is_some() {
                crate::snapshot::split_host_port(&host_header)
                    .map(|(h, _)| h)
                    .unwrap_or_else(|| host_header.to_string())
            } else {
                String::new()
            },
            addr,
            tls: service.tls.clone(),
            tls_profile: service.tls_profile.clone(),
            h2: h2_up,
        };
        // (the clock read at the first try serves it unless a wait came between)
        if tries > 1 || resolved_now {
            sent_at = Instant::now();
        }
        let mut c = match cx
            .shared
            .pool
            .get(&target, service.connect_timeout, sent_at)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(target = %addr, "upstream connect failed: {e}");
                report(if matches!(e, ConnectError::Timeout) {
                    Outcome::Timeout
                } else {
                    Outcome::TcpFailure
                });
                try_failed(
                    plan,
                    if matches!(e, ConnectError::Timeout) {
                        504
                    } else {
                        502
                    },
                );
                last_connect_err = Some(e);
                continue;
            }
        };
        let ureq = match pending.take() {
            // not sent: its headers are built already
            Some(r) => r,
            None => {
                // (its URI for HTTP/2 only: HTTP/1.1 writes `outgoing.target`)
                let h2_uri = if h2_up {
                    let sch = if service.is_tls() { "https" } else { "http" };
                    http::Uri::try_from(format!("{sch}://{host_header}{uri}"))
                        .ok()
                        .map(Some)
                } else {
                    h1_target_ok.then_some(None)
                };
                let Some(h2_uri) = h2_uri else {
                    tracing::error!(uri = %uri, "the upstream request target is not a valid one");
                    return cx.error(
                        500,
                        &errors::handler_message(500),
                        client_headers,
                        Negotiation::Handler,
                    );
                };
                let this_body = match &buffered {
                    Some(bytes) => SlicedBody::new(bytes.clone()).boxed_unsync(),
                    None => body.take().unwrap_or_else(crate::empty_body),
                };
                // Built in place, not through `Request::builder` (which moves its
                // parts at every step); its headers come from `outgoing` as it is
                // sent.
                let mut r = Request::new(this_body);
                *r.method_mut() = head.method.clone();
                match h2_uri {
                    Some(u) => {
                        *r.uri_mut() = u;
                        *r.version_mut() = Version::HTTP_2;
                    }
                    None => *r.version_mut() = Version::HTTP_11,
                }
                r
            }
        };
        // (HTTP/2 carries the authority in its URI)
        outgoing.host = if h2_up {
            None
        } else {
            let built = match own_host {
                Some(v) => Some(Val::Shared(v)),
                // (an owned name moves into the value without a copy)
                None => match host_header {
                    Cow::Owned(s) => HeaderValue::from_maybe_shared(Bytes::from(s)).ok(),
                    Cow::Borrowed(s) => HeaderValue::from_str(s).ok(),
                }
                .map(Val::Owned),
            };
            built.or_else(|| client_headers.get(HOST).map(Val::Shared))
        };
        if !c.reused {
            // (connecting took a while)
            sent_at = Instant::now();
        }
        let reused = c.reused;
        // A request without a body is never polled for one: its progress
        // stays "reading" and needs neither sharing nor a tracking wrapper.
        let shared_progress;
        let local_progress;
        let (ureq, progress): (_, &Progress) = if body_done(&ureq) {
            local_progress = Progress::new(false, sent_at);
            (ureq, &local_progress)
        } else {
            let p = Arc::new(Progress::new(true, sent_at));
            let ureq = ureq.map(|b| {
                TrackedBody {
                    inner: b,
                    progress: p.clone(),
                }
                .boxed_unsync()
            });
            shared_progress = p;
            (ureq, &*shared_progress)
        };
        let can_retry = replayable && idempotent;
        match send_watched(
            &mut c,
            ureq,
            &outgoing,
            raw_head.then_some(&mut raw),
            progress,
            service.write_timeout,
            service.read_timeout,
        )
        .await
        {
            Watched::TimedOut(phase) => {
                tracing::debug!("upstream {phase} timed out");
                report(Outcome::Timeout);
                try_failed(plan, 504);
                if can_retry {
                    last_send_err = Some(504);
                    continue;
                }
                break Err(504);
            }
            Watched::Sent(Ok(resp)) => {
                if let (Some(u), Some(t)) = (upstream_entity, picked) {
                    let a = picked_addr.as_ref().map(|(s, k)| &s.addrs[*k]);
                    u.report_status(t, a, resp.status().as_u16());
                    if let Some(f) = &in_flight {
                        if u.algorithm == Algorithm::Latency {
                            f.0.record_latency(sent_at.elapsed().as_micros() as u64);
                        }
                    }
                }
                // The connection goes back to the pool when the response body ends.
                let keep = upgrade_to.is_none() || resp.status() != StatusCode::SWITCHING_PROTOCOLS;
                break Ok((resp, keep.then_some(c)));
            }
            Watched::Sent(Err(SendError::NotSent(r, e))) => {
                tracing::debug!("upstream request not sent: {e}");
                try_failed(plan, 502);
                pending = Some(*r);
                if reused {
                    // a stale keep-alive connection does not count as a try
                    tries -= 1;
                }
                continue;
            }
            Watched::Sent(Err(SendError::Failed(e))) => {
                if let Some(code) = client_status() {
                    return client_body_error(cx, code, client_headers);
                }
                tracing::debug!("upstream request failed: {e}");
                let code = if is_timeout(&e) { 504 } else { 502 };
                report(if code == 504 {
                    Outcome::Timeout
                } else {
                    Outcome::TcpFailure
                });
                try_failed(plan, code);
                if can_retry {
                    last_send_err = Some(code);
                    continue;
                }
                break Err(code);
            }
        }
    };
    drop(in_flight);
    let upstream_latency = ms_since(sent_at);

    let (mut resp, up_conn) = match result {
        Ok(r) => r,
        Err(code) => {
            return cx.error(
                code,
                &errors::handler_message(code),
                client_headers,
                Negotiation::Handler,
            );
        }
    };

    // Tunnel
    let upstream_status = resp.status().as_u16();
    if let Some(log) = plan.log.as_mut() {
        log.upstream_status = Some(upstream_status);
        log.upstream_latency = Some(upstream_latency as u64);
    }
    if let (Some(client_up), true) = (
        client_upgrade,
        resp.status() == StatusCode::SWITCHING_PROTOCOLS,
    ) {
        let upstream_up = crate::upstream::take_upgrade(&mut resp);
        tokio::spawn(async move {
            match (client_up.await, upstream_up) {
                (Ok(a), Some(mut b)) => {
                    let mut a = hyper_util::rt::TokioIo::new(a);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                (a, b) => tracing::debug!(
                    "upgrade failed: client {:?}, upstream connection {}",
                    a.err(),
                    if b.is_some() { "ready" } else { "missing" }
                ),
            }
        });
    }

    let (mut rparts, rbody) = resp.into_parts();
    // With the lines kept as bytes, `rparts.headers` holds only what the proxy
    // adds; the lines' hop-by-hop ones and `Trailer` are left out as they are
    // written (`fast.rs`).
    let is_upgrade = rparts.status == StatusCode::SWITCHING_PROTOCOLS;
    let up_via = match &raw {
        Some(r) => r
            .get(RawKind::Via)
            .and_then(|v| std::str::from_utf8(v).ok()),
        None => rparts.headers.get(VIA).and_then(|v| v.to_str().ok()),
    }
    .map(str::to_owned);
    let up_upgrade = rparts.headers.get(UPGRADE).cloned();
    headers::remove_hop_by_hop(&mut rparts.headers);
    if is_upgrade {
        rparts.headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        if let Some(u) = up_upgrade {
            rparts.headers.insert(UPGRADE, u);
        }
    }
    if !te_trailers {
        rparts.headers.remove(&headers::TRAILER);
    }
    let rh = &mut rparts.headers;
    if let Some(c) = hash_cookie.and_then(|c| HeaderValue::try_from(c).ok()) {
        rh.append(http::header::SET_COOKIE, c);
    }
    let add_server = settings.server
        && !rh.contains_key(SERVER)
        && raw
            .as_ref()
            .is_none_or(|r| r.get(RawKind::Server).is_none());
    // The proxy's own headers: with the lines kept as bytes, a short list that
    // goes with them (no map to hash them into); else into the map.
    let mut own: Option<crate::upstream::raw::Own> =
        raw.as_ref().map(|_| crate::upstream::raw::own_buffer());
    let mut set = |n: &HeaderName, v: HeaderValue| match own.as_mut() {
        Some(o) => o.push((n.clone(), v)),
        None => {
            rh.insert(n, v);
        }
    };
    if settings.upstream_status {
        set(
            &X_KONG_UPSTREAM_STATUS,
            headers::number_value(upstream_status.into()),
        );
    }
    if settings.upstream_latency {
        set(
            &X_KONG_UPSTREAM_LATENCY,
            headers::number_value(upstream_latency as u64),
        );
    }
    if settings.proxy_latency {
        set(
            &X_KONG_PROXY_LATENCY,
            headers::number_value(proxy_latency as u64),
        );
    }
    if settings.via {
        let ver = if h2_up {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        match up_via {
            Some(u) => {
                let v = format!("{u}, {}", via_value(ver, true).to_str().unwrap_or_default());
                if let Ok(v) = HeaderValue::from_str(&v) {
                    set(&VIA, v);
                }
            }
            // (a static value: no formatting)
            None => set(&VIA, via_value(ver, true).clone()),
        }
    }
    if add_server {
        set(&SERVER, HeaderValue::from_static(SERVER_TOKEN));
    }
    if settings.request_id {
        set(&X_KONG_REQUEST_ID, cx.request_id_value.clone());
    }
    if let (Some(r), Some(own)) = (raw.as_mut(), own) {
        r.set_own(own);
    }

    let small = match &raw {
        Some(r) => r.length_at_most(SMALL_RESPONSE),
        None => rparts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= SMALL_RESPONSE),
    };
    let rbody = PooledBody::new(rbody, up_conn.map(|c| (cx.shared.pool.clone(), c)));
    let body: Body = if is_upgrade {
        crate::empty_body()
    } else if route.response_buffering
        && !h2_up
        && !small
        && !hyper::body::Body::is_end_stream(&rbody)
    {
        buffer_response(ReadTimeoutBody::new(rbody, service.read_timeout))
    } else {
        ReadTimeoutBody::new(rbody, service.read_timeout).boxed_unsync()
    };
    plan.raw_headers = raw;
    Response::from_parts(rparts, body)
}

/// A request in flight to a target (least-connections), counted until the
/// response head arrives or the try fails.
struct InFlight(Arc<TargetState>);

impl InFlight {
    fn new(s: Arc<TargetState>) -> Self {
        s.active.fetch_add(1, Ordering::Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A balancer try, for the log phase.
fn new_try(addr: SocketAddr, start: Instant) -> tollgate_plugins::log::Try {
    let (ms, ns) = crate::downstream::epoch_of(start);
    let latency = start.elapsed();
    tollgate_plugins::log::Try {
        ip: addr.ip(),
        port: addr.port(),
        balancer_start: ms,
        balancer_start_ns: ns,
        balancer_latency: latency.as_millis() as u64,
        balancer_latency_ns: latency.as_nanos(),
        failed: None,
    }
}

/// The last try failed with `code` (Kong's `state = "failed"`).
fn try_failed(plan: &mut Plan<'_>, code: u16) {
    if let Some(t) = plan.log.as_mut().and_then(|l| l.tries.last_mut()) {
        t.failed = Some(code);
    }
}

fn client_body_error(cx: &Ctx<'_>, code: u16, h: &HeaderMap) -> Response<Body> {
    let mut r = cx.error(
        code,
        &errors::handler_message(code),
        h,
        Negotiation::Handler,
    );
    // the rest of the request body is not read: close
    r.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn body_is_empty(h: &HeaderMap, body: &ClientBody) -> bool {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return true;
    }
    !h.contains_key(CONTENT_LENGTH)
        && !h.contains_key(http::header::TRANSFER_ENCODING)
        && body.size_hint().exact() == Some(0)
}

fn is_timeout(e: &BoxError) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// What went wrong with the client's request body.
#[derive(Default, Debug)]
struct BodyFlags {
    /// More than `client_max_body_size` arrived (413).
    too_large: AtomicBool,
    /// Reading it failed (bad chunking, reset): 400.
    client_failed: AtomicBool,
    /// The client paused longer than `client_body_timeout`: 408.
    timed_out: AtomicBool,
}

impl BodyFlags {
    /// The status for a request body that could not be read, if the client
    /// is to blame.
    fn client_status(&self) -> Option<u16> {
        if self.too_large.load(Ordering::Relaxed) {
            Some(413)
        } else if self.timed_out.load(Ordering::Relaxed) {
            Some(408)
        } else if self.client_failed.load(Ordering::Relaxed) {
            Some(400)
        } else {
            None
        }
    }
}

/// The request body, failing once more than `left` bytes arrive or when the
/// client pauses longer than `timeout` (nginx `client_body_timeout`).
struct LimitedBody {
    inner: ClientBody,
    left: u64,
    flags: Arc<BodyFlags>,
    /// Time spent while the upstream is not taking data (we do not poll)
    /// does not count.
    idle: IdleTimer,
    /// Bytes read, when the log phase wants them.
    counted: Option<Arc<AtomicU64>>,
}

/// A timeout between two reads of a body, started only when a read has to
/// wait: a body already in the socket buffer costs no timer (nor its
/// allocation).
struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last poll found no data: the timer runs.
    waiting: bool,
}

impl IdleTimer {
    fn new(timeout: Duration) -> IdleTimer {
        IdleTimer {
            timeout,
            sleep: None,
            waiting: false,
        }
    }

    /// A read made progress: the next wait starts a fresh timeout.
    fn progress(&mut self) {
        self.waiting = false;
    }

    /// A read is waiting: `Ready` once it has waited `timeout`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let fresh = !std::mem::replace(&mut self.waiting, true);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sleep = match &mut self.sleep {
            Some(s) => {
                if fresh {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if r.is_ready() {
            self.idle.progress();
        }
        match r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let n = d.len() as u64;
                    if n > self.left {
                        self.flags.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("request body too large".into())));
                    }
                    self.left -= n;
                    if let Some(c) = &self.counted {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.flags.client_failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.poll_expired(cx) {
                Poll::Ready(()) => {
                    self.flags.timed_out.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err("client body timed out".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A buffered request body handed out in slices, so that an upstream that
/// stops reading is noticed (`write_timeout`) instead of the whole body
/// vanishing into one write.
struct SlicedBody {
    data: Bytes,
}

const SLICE: usize = 64 * 1024;

impl SlicedBody {
    fn new(data: Bytes) -> SlicedBody {
        SlicedBody { data }
    }
}

impl hyper::body::Body for SlicedBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(SLICE);
        let chunk = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// Where sending a request upstream stands, for `write_timeout` (nginx
/// `proxy_send_timeout`: between two writes) and `read_timeout` (nginx
/// `proxy_read_timeout`: after the request went out, until the response head).
#[derive(Debug)]
struct Progress {
    state: std::sync::Mutex<(Phase, Instant)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A frame was handed to hyper: waiting for the upstream to take it.
    Writing,
    /// Waiting for the client's next body bytes (no upstream timeout runs).
    ClientWait,
    /// The whole request went out: waiting for the response head.
    Reading,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Writing => "write",
            Phase::ClientWait => "client body",
            Phase::Reading => "read",
        })
    }
}

impl Progress {
    /// `now`: the time the request starts out.
    fn new(has_body: bool, now: Instant) -> Progress {
        let p = if has_body {
            Phase::Writing
        } else {
            Phase::Reading
        };
        Progress {
            state: std::sync::Mutex::new((p, now)),
        }
    }
    fn set(&self, p: Phase) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 != p || p == Phase::Writing {
            *s = (p, Instant::now());
        }
    }
    fn get(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn body_done(req: &Request<Body>) -> bool {
    use hyper::body::Body as _;
    req.body().is_end_stream()
}

/// The request body on its way upstream, reporting progress.
struct TrackedBody {
    inner: Body,
    progress: Arc<Progress>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(_))) => self.progress.set(if self.inner.is_end_stream() {
                Phase::Reading
            } else {
                Phase::Writing
            }),
            Poll::Ready(None) => self.progress.set(Phase::Reading),
            Poll::Pending => self.progress.set(Phase::ClientWait),
            Poll::Ready(Some(Err(_))) => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

// (the response is moved once, on the stack: boxing it would cost an allocation)
#[allow(clippy::large_enum_variant)]
enum Watched {
    Sent(Result<Response<UpBody>, SendError>),
    TimedOut(Phase),
}

/// Sends on `c`, failing with the phase that stalled past its timeout.
async fn send_watched(
    c: &mut crate::upstream::Conn,
    req: Request<Body>,
    out: &Outgoing<'_>,
    raw: Option<&mut Option<RawHeaders>>,
    progress: &Progress,
    write_timeout: Duration,
    read_timeout: Duration,
) -> Watched {
    let deadline = |(phase, since): (Phase, Instant)| -> tokio::time::Instant {
        match phase {
            Phase::Writing => since + write_timeout,
            Phase::Reading => since + read_timeout,
            // look again later: the client may resume
            Phase::ClientWait => Instant::now() + write_timeout.max(Duration::from_millis(50)),
        }
        .into()
    };
    let mut seen = progress.get();
    let first = deadline(seen);
    // The connection's own timer (HTTP/1.1), or this request's (HTTP/2).
    let mut kept = c.take_timer(first);
    let mut own = std::pin::pin!(None::<tokio::time::Sleep>);
    let result = {
        let mut timer = match kept.as_mut() {
            Some(t) => t.as_mut(),
            None => {
                own.set(Some(tokio::time::sleep_until(first)));
                match own.as_mut().as_pin_mut() {
                    Some(t) => t,
                    None => unreachable!("set above"),
                }
            }
        };
        let send = c.send(req, out, raw);
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                r = &mut send => break Watched::Sent(r),
                _ = timer.as_mut() => {
                    let now = progress.get();
                    if now == seen && seen.0 != Phase::ClientWait {
                        // (a connection's timer may be set sooner than this
                        // request's deadline: `Conn::take_timer`)
                        let due = deadline(seen);
                        if tokio::time::Instant::now() < due {
                            timer.as_mut().reset(due);
                            continue;
                        }
                        break Watched::TimedOut(seen.0);
                    }
                    seen = now;
                    timer.as_mut().reset(deadline(seen));
                }
            }
        }
    };
    if let Some(t) = kept {
        c.put_timer(t);
    }
    result
}

/// Responses up to this size are not given a reader task by
/// `response_buffering`: the socket buffers hold them anyway.
const SMALL_RESPONSE: u64 = 64 * 1024;

/// The upstream response body with the service's `read_timeout` between
/// two reads (like nginx's `proxy_read_timeout`).
pub struct ReadTimeoutBody {
    inner: PooledBody,
    idle: IdleTimer,
}

impl ReadTimeoutBody {
    fn new(inner: PooledBody, timeout: Duration) -> Self {
        ReadTimeoutBody {
            inner,
            idle: IdleTimer::new(timeout),
        }
    }
}

impl hyper::body::Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.idle.progress();
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err("upstream read timed out".into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_nginx_time;
    use std::time::Duration;

    #[test]
    fn nginx_times() {
        assert_eq!(parse_nginx_time("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_nginx_time("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_nginx_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_nginx_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_nginx_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_nginx_time(""), None);
        assert_eq!(parse_nginx_time("5x"), None);
        assert_eq!(parse_nginx_time("s"), None);
    }
}
