//! What a plugin implements ([`Plugin`]), what it is given ([`RequestCx`], [`ResponseCx`],
//! [`BodyCx`], [`LogCx`], [`CertificateCx`]) and what it answers ([`Flow`], [`Exit`]).

pub use crate::body_filter::BodyCx;
use crate::consumers::{Consumer, ConsumerIndex};
pub use crate::log::LogCx;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use std::any::Any;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use tollgate_model::PluginDef;
pub use tollgate_router::Captures;

/// A header value a plugin sets from configuration or request data, as OpenResty's
/// `ngx.req.set_header` / `ngx.header` store it: control bytes other than HTAB
/// (CR and LF above all) are percent-encoded, so a value can never end its header
/// line and start another (header injection, response splitting).
pub fn header_value(v: &str) -> HeaderValue {
    let unsafe_byte = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    if !v.bytes().any(unsafe_byte) {
        if let Ok(h) = HeaderValue::from_str(v) {
            return h;
        }
    }
    let mut out = Vec::with_capacity(v.len() + 8);
    for b in v.bytes() {
        if unsafe_byte(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    HeaderValue::from_bytes(&out).expect("no control bytes left")
}

/// An entity row as the snapshot holds it (`kong.router.get_route()`).
pub type Row = serde_json::Map<String, serde_json::Value>;

/// One bundled plugin: its registration, in the manner of Kong's `handler.lua` +
/// `schema.lua`. Listed once in [`crate::BUNDLED`].
pub struct PluginSpec {
    pub name: &'static str,
    /// Kong's PRIORITY: higher runs first.
    pub priority: i32,
    /// Kong's `no_consumer` / `no_route` / `no_service`: that dimension is ignored when
    /// resolving which configuration applies (and the Admin API refuses it).
    pub no_consumer: bool,
    pub no_route: bool,
    pub no_service: bool,
    /// The phases the plugin implements, so the runner never calls (or collects) the others.
    pub phases: Phases,
    /// The config schema (fields, defaults, checks) in the model's schema language.
    pub schema: fn() -> PluginDef,
    /// Compiles a validated, defaulted `config` object into a running instance.
    pub compile: fn(&serde_json::Value) -> Result<Box<dyn Plugin>, String>,
}

impl std::fmt::Debug for PluginSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSpec")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

/// Which phases a plugin has. Build it from [`Phases::NONE`] (`Phases { log: true,
/// ..Phases::NONE }`) so that adding a phase does not touch every plugin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Global instances only, during the TLS handshake.
    pub certificate: bool,
    pub rewrite: bool,
    pub access: bool,
    pub header_filter: bool,
    pub body_filter: bool,
    pub log: bool,
}

impl Phases {
    pub const NONE: Phases = Phases {
        certificate: false,
        rewrite: false,
        access: false,
        header_filter: false,
        body_filter: false,
        log: false,
    };
    pub const ACCESS: Phases = Phases {
        access: true,
        ..Phases::NONE
    };
    /// Phases that run after the access phase, for the plugins it collected.
    pub fn downstream(&self) -> bool {
        self.header_filter || self.body_filter || self.log
    }
}

/// A compiled plugin configuration: one per `plugins` row, built once per snapshot.
///
/// Phases are synchronous: every lookup a plugin needs is in the snapshot, and a body is
/// read for it before the access phase when [`Plugin::reads_body`] says so.
pub trait Plugin: Send + Sync + 'static {
    /// Kong's rewrite phase. Only global instances run it (no route is known yet).
    fn rewrite(&self, _cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        Ok(Flow::Continue)
    }
    /// Kong's access phase; may answer the client instead of proxying.
    fn access(&self, _cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        Ok(Flow::Continue)
    }
    /// Kong's header_filter phase, on the response head (upstream's or an exit's).
    fn header_filter(&self, _cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        Ok(())
    }
    /// Kong's body_filter phase: once per response body chunk, then once more with
    /// [`BodyCx::is_eof`]. A plugin may change the chunk, or hold the chunks back and
    /// replace the whole body ([`BodyCx::raw_body`], [`BodyCx::set_raw_body`]). Its
    /// presence drops the response's `Content-Length`.
    fn body_filter(&self, _cx: &mut BodyCx<'_>) -> Result<(), PluginError> {
        Ok(())
    }
    /// Asked after every header_filter ran, for a plugin with a body_filter phase: what
    /// its body_filter does with this response. Only [`BodyMode::Change`] costs the
    /// response its `Content-Length`.
    fn body_mode(&self, _cx: &ResponseCx<'_>) -> BodyMode {
        BodyMode::Change
    }
    /// Kong's log phase, after the response body went out (or the client went away).
    /// Never affects the response; runs off the request's task.
    fn log(&self, _cx: &LogCx<'_>) {}
    /// Whether [`Plugin::log`] is cheap and never blocks (a few atomic adds, no I/O), so
    /// it may run where the response body ends instead of on a task of its own. The
    /// runner spawns the task only when some logging plugin says no.
    fn log_inline(&self) -> bool {
        false
    }
    /// Whether [`Plugin::log`] reads more of [`LogCx`] than a metrics plugin counts: the
    /// status, sizes, latencies, source, route, service and consumer. When no logging
    /// plugin of a request does, the proxy captures nothing else for the log phase: the
    /// header maps are empty and the request id, URI, host, upstream URI and tries are
    /// empty, the start time 0 and the client IP the peer's (the sizes are still right).
    fn log_reads_details(&self) -> bool {
        true
    }
    /// Kong's certificate phase (global instances only), during the TLS handshake, after
    /// Kong picked a certificate by SNI: may pick another one or abort the handshake.
    fn certificate(&self, _cx: &mut CertificateCx<'_>) -> Result<(), PluginError> {
        Ok(())
    }
    /// Whether the access phase needs the request body (read once, before it runs).
    fn reads_body(&self) -> bool {
        false
    }
    /// Whether the access phase reads the matched route's and service's rows
    /// ([`RequestCx::route_row`]); the snapshot keeps them only when some plugin does.
    fn reads_router_rows(&self) -> bool {
        false
    }
    /// Called once after compiling, with the `plugins` row the instance came from (Kong's
    /// `conf.__plugin_id`, `conf.route_id`, `conf.service_id`).
    fn bind(&mut self, _scope: &InstanceScope<'_>) {}
}

/// What a body_filter does with one response ([`Plugin::body_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMode {
    /// Not called for this response.
    Skip,
    /// Reads the chunks and passes them on unchanged (the length stays known).
    Read,
    /// May change the body.
    Change,
}

/// A plugin's own per-request data, set in access and read by its later phases (Kong's
/// `kong.ctx.plugin`).
pub type PluginState = Box<dyn Any + Send>;

/// The client connection a request came on (nginx's `$server_addr`, `$server_port`,
/// `$connection`, `$connection_requests`).
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// The connection's serial number, counted from 1 per process.
    pub serial: u64,
    /// The requests made on it so far, this one included.
    pub requests: u64,
}

/// The `plugins` row an instance was compiled from.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstanceScope<'a> {
    pub id: &'a str,
    pub route: Option<&'a str>,
    pub service: Option<&'a str>,
    pub consumer: Option<&'a str>,
}

/// The outcome of a phase that may short-circuit the request.
#[derive(Debug)]
pub enum Flow {
    Continue,
    Exit(Exit),
    /// Access phase only: the plugin waits on a remote store (Redis) without holding the
    /// worker thread. The chain awaits the future on the request's task, then resumes the
    /// plugin with the context; the resumed phase may not wait again.
    Await(Deferred),
}

/// What a waiting plugin does once its I/O is done.
pub type Resume = Box<dyn FnOnce(&mut RequestCx<'_>) -> Result<Flow, PluginError> + Send>;

/// The I/O a plugin waits on ([`Flow::Await`]); its output resumes the plugin.
pub struct Deferred(pub std::pin::Pin<Box<dyn std::future::Future<Output = Resume> + Send>>);

impl Deferred {
    pub fn new(f: impl std::future::Future<Output = Resume> + Send + 'static) -> Self {
        Deferred(Box::pin(f))
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

/// A response produced by a plugin (`kong.response.exit` / `kong.response.error`).
#[derive(Debug)]
pub struct Exit {
    pub status: u16,
    pub body: ExitBody,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug)]
pub enum ExitBody {
    /// `kong.response.error(status, message)`: Kong's error template, negotiated on
    /// `Accept`, with the request id.
    Error(Cow<'static, str>),
    /// `kong.response.exit(status, table)`: the table as JSON.
    Json(serde_json::Value),
    /// `kong.response.exit(status, string)`.
    Raw {
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    Empty,
}

impl Exit {
    /// `kong.response.error(status, message)`.
    pub fn error(status: u16, message: impl Into<Cow<'static, str>>) -> Exit {
        Exit {
            status,
            body: ExitBody::Error(message.into()),
            headers: Vec::new(),
        }
    }
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Exit {
        self.headers.push((name, value));
        self
    }
    /// What a plugin failing at run time answers (Kong's `delayed_response` on a
    /// coroutine error).
    pub fn unexpected() -> Exit {
        Exit {
            status: 500,
            body: ExitBody::Json(serde_json::json!({ "message": "An unexpected error occurred" })),
            headers: Vec::new(),
        }
    }
}

/// A plugin's run-time failure: logged, and the request fails with 500.
#[derive(Debug)]
pub struct PluginError(Box<str>);

impl PluginError {
    pub fn new(msg: impl Into<String>) -> Self {
        PluginError(msg.into().into_boxed_str())
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginError {}

/// The credential an auth plugin authenticated with (`kong.client.get_credential()`).
#[derive(Clone, Copy, Debug)]
pub struct Credential<'a> {
    pub id: &'a str,
    pub consumer_id: &'a str,
    /// `X-Credential-Identifier`: the credential id for key-auth, the username for basic-auth.
    pub identifier: &'a str,
}

pub(crate) static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
pub(crate) static X_CONSUMER_CUSTOM_ID: HeaderName =
    HeaderName::from_static("x-consumer-custom-id");
pub(crate) static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
pub(crate) static X_CREDENTIAL_IDENTIFIER: HeaderName =
    HeaderName::from_static("x-credential-identifier");
pub(crate) static X_ANONYMOUS_CONSUMER: HeaderName =
    HeaderName::from_static("x-anonymous-consumer");
pub(crate) static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
pub(crate) static X_AUTHENTICATED_GROUPS: HeaderName =
    HeaderName::from_static("x-authenticated-groups");

/// The request as the rewrite and access phases see it. Changes to `req` (headers, URI)
/// are what the upstream receives.
pub struct RequestCx<'a> {
    pub req: &'a mut http::request::Parts,
    pub client_ip: IpAddr,
    pub route_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    pub consumers: &'a ConsumerIndex,
    /// Groups set by an authentication plugin that has no consumer (Kong's
    /// `authenticated_groups`, read by acl).
    pub authenticated_groups: Option<Vec<String>>,
    consumer: Option<&'a Consumer>,
    credential: Option<Credential<'a>>,
    body: Option<Bytes>,
    body_replaced: bool,
    /// Seconds since the epoch, read once for the request (credential expiry).
    now: u64,
    /// Headers set for the response during access (`kong.response.set_header`).
    response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The router's regex path captures (`kong.request.get_uri_captures()`).
    captures: Option<&'a Captures>,
    /// The matched route and service rows, set by the chain that runs the request.
    route_row: Option<&'a Row>,
    service_row: Option<&'a Row>,
    connection: Option<Connection>,
    /// The running plugin's `kong.ctx.plugin`, collected by the chain after its access.
    plugin_state: Option<PluginState>,
    /// The method and target as the client sent them (nginx's `$request`), before any
    /// plugin changed the request (cheap clones: both share the request's bytes).
    original: (http::Method, Option<http::uri::PathAndQuery>),
}

impl<'a> RequestCx<'a> {
    pub fn new(
        req: &'a mut http::request::Parts,
        client_ip: IpAddr,
        consumers: &'a ConsumerIndex,
    ) -> Self {
        let original = (req.method.clone(), req.uri.path_and_query().cloned());
        RequestCx {
            req,
            client_ip,
            route_id: None,
            service_id: None,
            consumers,
            authenticated_groups: None,
            consumer: None,
            credential: None,
            body: None,
            body_replaced: false,
            now: 0,
            response_headers: Vec::new(),
            captures: None,
            route_row: None,
            service_row: None,
            connection: None,
            plugin_state: None,
            original,
        }
    }

    /// The method and target (`/path?query`) of nginx's `$request`, as the client sent
    /// them.
    pub fn request_line(&self) -> (&http::Method, &str) {
        let target = self.original.1.as_ref().map_or("/", |pq| pq.as_str());
        (&self.original.0, target)
    }

    /// The client connection (absent in unit tests).
    pub fn with_connection(mut self, connection: Option<Connection>) -> Self {
        self.connection = connection;
        self
    }
    pub fn connection(&self) -> Option<Connection> {
        self.connection
    }
    /// Keeps `state` for this plugin's header_filter and body_filter on this request.
    pub fn set_plugin_state(&mut self, state: PluginState) {
        self.plugin_state = Some(state);
    }
    pub(crate) fn take_plugin_state(&mut self) -> Option<PluginState> {
        self.plugin_state.take()
    }

    /// The router's regex path captures for the matched route.
    pub fn with_captures(mut self, captures: Option<&'a Captures>) -> Self {
        self.captures = captures;
        self
    }
    /// `kong.request.get_uri_captures()`; `None` when the route path had no group.
    pub fn uri_captures(&self) -> Option<&'a Captures> {
        self.captures.filter(|c| !c.is_empty())
    }
    /// `kong.router.get_route()` / `kong.router.get_service()`: the matched rows.
    pub fn route_row(&self) -> Option<&'a Row> {
        self.route_row
    }
    pub fn service_row(&self) -> Option<&'a Row> {
        self.service_row
    }
    pub(crate) fn set_rows(&mut self, route: Option<&'a Row>, service: Option<&'a Row>) {
        self.route_row = route;
        self.service_row = service;
    }

    pub fn with_route(mut self, route_id: Option<&'a str>, service_id: Option<&'a str>) -> Self {
        self.route_id = route_id;
        self.service_id = service_id;
        self
    }

    /// The body read before the access phase (see [`Plugin::reads_body`]).
    pub fn with_body(mut self, body: Option<Bytes>) -> Self {
        self.body = body;
        self
    }

    /// The current time in seconds since the epoch (read once per request).
    pub fn now(&mut self) -> u64 {
        if self.now == 0 {
            self.now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1);
        }
        self.now
    }

    /// `kong.client.get_consumer()`.
    pub fn consumer(&self) -> Option<&'a Consumer> {
        self.consumer
    }
    /// `kong.client.get_credential()`.
    pub fn credential(&self) -> Option<Credential<'a>> {
        self.credential
    }

    /// `kong.client.authenticate(consumer, credential)` plus the upstream headers every
    /// Kong auth plugin sets (`set_consumer` in key-auth/basic-auth). `credential = None`
    /// means the anonymous consumer.
    pub fn authenticate(&mut self, consumer: &'a Consumer, credential: Option<Credential<'a>>) {
        self.consumer = Some(consumer);
        self.credential = credential;
        let h = &mut self.req.headers;
        set_or_clear(h, &X_CONSUMER_ID, Some(&consumer.id));
        set_or_clear(h, &X_CONSUMER_CUSTOM_ID, consumer.custom_id.as_deref());
        set_or_clear(h, &X_CONSUMER_USERNAME, consumer.username.as_deref());
        set_or_clear(
            h,
            &X_CREDENTIAL_IDENTIFIER,
            credential.map(|c| c.identifier),
        );
        if credential.is_some() {
            h.remove(&X_ANONYMOUS_CONSUMER);
        } else {
            h.insert(
                X_ANONYMOUS_CONSUMER.clone(),
                HeaderValue::from_static("true"),
            );
        }
    }

    /// `kong.response.set_header` during access: the header is set on the response the
    /// client gets (the upstream's), replacing the upstream's own.
    pub fn set_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.response_headers.push((name, value));
    }

    /// [`RequestCx::set_response_header`] for each of `headers`, in order.
    pub fn set_response_headers(&mut self, mut headers: Vec<(HeaderName, HeaderValue)>) {
        if self.response_headers.is_empty() {
            // (the common case: no copy)
            std::mem::swap(&mut self.response_headers, &mut headers);
        } else {
            self.response_headers.append(&mut headers);
        }
    }

    /// The headers queued by [`RequestCx::set_response_header`].
    pub fn take_response_headers(&mut self) -> Vec<(HeaderName, HeaderValue)> {
        std::mem::take(&mut self.response_headers)
    }

    /// The request body read for this phase, as replaced by a plugin if it was.
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }
    /// `kong.service.request.set_body`: the upstream gets this body instead.
    pub fn set_body(&mut self, body: Bytes) {
        self.body = Some(body);
        self.body_replaced = true;
    }
    /// The body to send upstream, if one was read.
    pub fn into_body(self) -> Option<Bytes> {
        self.body
    }

    /// The first value of a request header as text (`kong.request.get_header`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The raw query string.
    pub fn query(&self) -> Option<&str> {
        self.req.uri.query()
    }

    /// `kong.service.request.clear_query_arg(name)`: drops every `name` argument from the
    /// upstream query, keeping the others as they were sent.
    pub fn clear_query_arg(&mut self, name: &str) {
        let Some(q) = self.req.uri.query() else {
            return;
        };
        let kept: Vec<&str> = q
            .split('&')
            .filter(|pair| {
                let k = pair.split('=').next().unwrap_or_default();
                let k = form_urlencoded::parse(k.as_bytes())
                    .next()
                    .map(|(k, _)| k)
                    .unwrap_or_default();
                k != name
            })
            .collect();
        let path = self.req.uri.path();
        let pq = if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        let mut parts = std::mem::take(&mut self.req.uri).into_parts();
        parts.path_and_query = pq.parse().ok();
        self.req.uri = http::Uri::from_parts(parts).unwrap_or_default();
    }
}

fn set_or_clear(h: &mut http::HeaderMap, name: &HeaderName, v: Option<&str>) {
    match v.and_then(|v| HeaderValue::from_str(v).ok()) {
        Some(v) => {
            h.insert(name.clone(), v);
        }
        None => {
            h.remove(name);
        }
    }
}

/// The response head as the header_filter phase sees it.
pub struct ResponseCx<'a> {
    pub resp: &'a mut http::response::Parts,
    /// The client's request headers.
    pub request_headers: &'a http::HeaderMap,
    /// What this plugin's access kept for the request ([`RequestCx::set_plugin_state`]).
    pub state: &'a mut Option<PluginState>,
    pub connection: Option<Connection>,
    /// Set by [`ResponseCx::exit_empty`]: the body is dropped.
    pub empty_body: bool,
}

impl ResponseCx<'_> {
    /// `kong.response.exit(status)` in header_filter: this status, no body.
    pub fn exit_empty(&mut self, status: http::StatusCode) {
        self.resp.status = status;
        self.empty_body = true;
    }
}

/// What the certificate phase sees (`ngx.ssl`): the handshake's SNI and client, and
/// the certificate to serve.
pub struct CertificateCx<'a> {
    pub sni: Option<&'a str>,
    pub client_ip: IpAddr,
    choice: CertificateChoice,
}

/// The certificate a certificate phase asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CertificateChoice {
    /// What Kong picked (`snis` by SNI, else the default certificate).
    #[default]
    Kong,
    /// A `certificates` row by id.
    Id(Box<str>),
    /// The certificate of an `snis` name (exact or wildcard, as Kong matches it).
    Sni(Box<str>),
    /// Abort the handshake (`ngx.exit(ngx.ERROR)`).
    Abort,
}

impl<'a> CertificateCx<'a> {
    pub fn new(sni: Option<&'a str>, client_ip: IpAddr) -> Self {
        CertificateCx {
            sni,
            client_ip,
            choice: CertificateChoice::Kong,
        }
    }
    /// Serve the `certificates` row `id` (an unknown id aborts the handshake).
    pub fn use_certificate(&mut self, id: &str) {
        self.choice = CertificateChoice::Id(id.into());
    }
    /// Serve the certificate Kong would serve for `sni` (none aborts the handshake).
    pub fn use_sni(&mut self, sni: &str) {
        self.choice = CertificateChoice::Sni(sni.into());
    }
    pub fn abort(&mut self) {
        self.choice = CertificateChoice::Abort;
    }
    pub fn choice(&self) -> &CertificateChoice {
        &self.choice
    }
    pub fn into_choice(self) -> CertificateChoice {
        self.choice
    }
}

#[cfg(test)]
mod tests {
    use super::header_value;

    #[test]
    fn header_values_cannot_inject_lines() {
        assert_eq!(header_value("a\tb c"), "a\tb c");
        assert_eq!(header_value("v\r\nX-Injected: 1"), "v%0D%0AX-Injected: 1");
        assert_eq!(header_value("\u{0}\u{7f}é"), "%00%7Fé".as_bytes());
    }
}
