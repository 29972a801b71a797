//! The response phases after the head: body_filter over the body's chunks as they go
//! out, and the log phase once the body is over (sent, failed, or the client left).
//!
//! Only a response with a body_filter or log plugin gets the wrapping [`PhaseBody`];
//! the log phase runs on a task of its own, so it never holds the response back.

use crate::{Body, BoxError};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use hyper::body::Frame;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tollgate_plugins::chain::Row;
use tollgate_plugins::log::{Latencies, LogConsumer, LogRequest, LogResponse, Try};
use tollgate_plugins::{BodyCx, Instance, LogCx, PluginState};

/// The consumer and credential the access phase authenticated, kept for the log phase.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub consumer_id: Arc<str>,
    pub username: Option<Box<str>>,
    pub custom_id: Option<Box<str>>,
    pub credential_id: Option<Box<str>>,
}

/// How many request body bytes the client sent: known when read whole, counted as they
/// stream otherwise.
#[derive(Clone, Debug, Default)]
pub enum BodyBytes {
    #[default]
    None,
    Known(u64),
    Counted(Arc<AtomicU64>),
}

impl BodyBytes {
    fn get(&self) -> u64 {
        match self {
            BodyBytes::None => 0,
            BodyBytes::Known(n) => *n,
            BodyBytes::Counted(c) => c.load(Ordering::Relaxed),
        }
    }
}

/// Everything the log phase reports, owned: it outlives the request's task.
pub struct LogData {
    /// Everything below was captured (else only what a metrics logger reads: see
    /// `Plugin::log_reads_details`).
    pub details: bool,
    pub request_id: String,
    pub method: Method,
    pub request_uri: String,
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    pub request_headers: HeaderMap,
    pub request_head_size: u64,
    pub request_body: BodyBytes,
    pub tls: Option<(&'static str, &'static str)>,
    pub route_id: Option<Box<str>>,
    pub service_id: Option<Box<str>>,
    pub route: Option<Arc<Row>>,
    pub service: Option<Arc<Row>>,
    pub auth: Option<Authenticated>,
    pub upstream_uri: String,
    pub upstream_status: Option<u16>,
    pub tries: Vec<Try>,
    pub client_ip: IpAddr,
    pub proxied: bool,
    pub start: Instant,
    /// Kong's proxy latency (to the upstream request) or response latency (to its own
    /// response).
    pub kong_latency: u64,
    /// Time waiting for the upstream's head.
    pub upstream_latency: Option<u64>,
    /// When the response head was ready.
    pub head_at: Instant,
}

/// Milliseconds and nanoseconds since the epoch of an `Instant` in the past.
pub fn epoch_of(t: Instant) -> (u64, u128) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let at = now.saturating_sub(t.elapsed());
    (at.as_millis() as u64, at.as_nanos())
}

/// The size of an HTTP/1.1 head with these headers (nginx counts the bytes on the wire;
/// this is their HTTP/1.1 form).
pub fn head_size(first_line: usize, h: &HeaderMap) -> u64 {
    let fields: usize = h
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    (first_line + 2 + fields + 2) as u64
}

/// The status line's length (`HTTP/1.1 200 OK`).
pub fn status_line_len(status: u16) -> usize {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    13 + reason.len()
}

/// The request line's length (`GET /path HTTP/1.1`).
pub fn request_line_len(method: &Method, uri: &str) -> usize {
    method.as_str().len() + 1 + uri.len() + 9
}

/// The log phase, waiting for the end of the body.
pub struct PendingLog {
    pub loggers: Vec<Arc<Instance>>,
    pub data: LogData,
    /// The response head's size, measured when the head went out because no logger reads
    /// headers and so the map was not kept (`None`: measured from the kept map).
    pub response_head_size: Option<u64>,
}

impl PendingLog {
    /// Runs the log phase with the response as it went out.
    fn run(self, status: u16, headers: &HeaderMap, body_sent: u64) {
        let d = &self.data;
        let now = Instant::now();
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_millis() as u64;
        let consumer = d.auth.as_ref().map(|a| LogConsumer {
            id: &a.consumer_id,
            username: a.username.as_deref(),
            custom_id: a.custom_id.as_deref(),
        });
        let cx = LogCx {
            request_id: &d.request_id,
            status,
            route_id: d.route_id.as_deref(),
            service_id: d.service_id.as_deref(),
            request: LogRequest {
                method: d.method.as_str(),
                uri: &d.request_uri,
                scheme: d.scheme,
                host: &d.host,
                port: d.port,
                headers: &d.request_headers,
                size: d.request_head_size + d.request_body.get(),
                tls: d.tls,
            },
            response: LogResponse {
                status,
                headers,
                size: self
                    .response_head_size
                    .unwrap_or_else(|| head_size(status_line_len(status), headers))
                    + body_sent,
            },
            upstream_uri: &d.upstream_uri,
            upstream_status: d.upstream_status,
            route: d.route.as_deref(),
            service: d.service.as_deref(),
            consumer,
            credential_id: d.auth.as_ref().and_then(|a| a.credential_id.as_deref()),
            latencies: Latencies {
                kong: d.kong_latency,
                proxy: d.upstream_latency,
                request: ms(d.start, now),
                receive: if d.proxied { ms(d.head_at, now) } else { 0 },
            },
            tries: &d.tries,
            client_ip: d.client_ip,
            started_at: if d.details { epoch_of(d.start).0 } else { 0 },
            proxied: d.proxied,
        };
        for inst in &self.loggers {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inst.plugin.log(&cx);
            }));
            if r.is_err() {
                tracing::error!(plugin = inst.spec.name, id = %inst.id, "log phase panicked");
            }
        }
    }
}

/// One body_filter instance, the chunks it holds back and its per-request state.
pub struct Filter {
    pub inst: Arc<Instance>,
    held: Option<BytesMut>,
    state: Option<PluginState>,
}

impl Filter {
    pub fn new(inst: Arc<Instance>, state: Option<PluginState>) -> Filter {
        Filter {
            inst,
            held: None,
            state,
        }
    }
}

/// The response body through the body_filter plugins, then the log phase.
pub struct PhaseBody {
    inner: Option<Body>,
    status: u16,
    /// The response head as sent (body filters and the log read it).
    headers: HeaderMap,
    filters: Vec<Filter>,
    /// Trailers that came after the last data, sent after the filters' last chunk.
    trailers: Option<HeaderMap>,
    /// Body bytes handed to the client.
    sent: u64,
    log: Option<Box<PendingLog>>,
}

impl PhaseBody {
    pub fn new(
        inner: Body,
        status: u16,
        headers: HeaderMap,
        filters: Vec<Filter>,
        log: Option<Box<PendingLog>>,
    ) -> PhaseBody {
        PhaseBody {
            inner: Some(inner),
            status,
            headers,
            filters,
            trailers: None,
            sent: 0,
            log,
        }
    }

    /// Passes a chunk through every filter. `Ok((out, ended))`: what goes to the client,
    /// and whether the body is over (the last chunk, or a filter set the whole body).
    fn filter(&mut self, chunk: Bytes, mut eof: bool) -> Result<(Bytes, bool), BoxError> {
        let mut chunk = chunk;
        for f in &mut self.filters {
            let mut bcx = BodyCx::new(self.status, &self.headers, chunk, eof, &mut f.held)
                .with_state(f.state.as_mut());
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f.inst.plugin.body_filter(&mut bcx)
            }));
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(plugin = f.inst.spec.name, id = %f.inst.id, "body_filter failed: {e}");
                    return Err("body_filter failed".into());
                }
                Err(_) => {
                    tracing::error!(plugin = f.inst.spec.name, id = %f.inst.id, "body_filter panicked");
                    return Err("body_filter failed".into());
                }
            }
            let (c, ended) = bcx.finish();
            chunk = c;
            // The filters after it see the end of the body.
            eof |= ended;
        }
        Ok((chunk, eof))
    }

    fn data(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.sent += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl hyper::body::Body for PhaseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let (chunk, eof) = match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.inner = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // The last data frame is the filters' last call: with a known
                    // length the server stops polling once it is written.
                    Ok(d) => (d, this.inner.as_ref().is_some_and(|b| b.is_end_stream())),
                    Err(frame) => {
                        // Trailers end the body.
                        this.trailers = frame.into_trailers().ok();
                        (Bytes::new(), true)
                    }
                },
                Poll::Ready(None) => (Bytes::new(), true),
            };
            let (out, ended) = if this.filters.is_empty() {
                (chunk, eof)
            } else {
                match this.filter(chunk, eof) {
                    Ok(r) => r,
                    Err(e) => {
                        this.inner = None;
                        this.trailers = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            };
            if ended {
                this.inner = None;
            }
            if !out.is_empty() {
                return this.data(out);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            None => self.trailers.is_none(),
            // Filters may still add to an empty body at its end.
            Some(b) => self.filters.is_empty() && b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.inner, self.filters.is_empty()) {
            (Some(b), true) => b.size_hint(),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

impl Drop for PhaseBody {
    /// The body is over one way or another: the log phase runs, off this task.
    fn drop(&mut self) {
        let Some(log) = self.log.take() else { return };
        let status = self.status;
        let headers = std::mem::take(&mut self.headers);
        let sent = self.sent;
        // Cheap loggers (prometheus' atomic adds) run here: a task costs more than they do.
        if log.loggers.iter().all(|i| i.plugin.log_inline()) {
            log.run(status, &headers, sent);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { log.run(status, &headers, sent) });
            }
            Err(_) => log.run(status, &headers, sent),
        }
    }
}
