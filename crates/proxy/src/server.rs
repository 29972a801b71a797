//! Listeners: HTTP/1.1 (keep-alive), h2c with prior knowledge on `http2`
//! listeners, TLS with ALPN and per-SNI certificates on `ssl` listeners, and
//! graceful shutdown.

use crate::fast;
use crate::guard::{self, Guarded, UpgradeSignal};
use crate::handler::{self, ClientBody, ConnInfo, Settings, Shared};
use crate::head::{Framer, Limits};
use crate::snapshot::SharedSnapshot;
use crate::tls::{self, read_pem, CertPair, SniResolver};
use crate::upstream::{Pool, PoolSettings};
use crate::{worker, Stats};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_config::{Config, Listen};

/// Default time allowed for in-flight requests after shutdown starts.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Time allowed to receive a request head (and to finish a TLS handshake): nginx's
/// `client_header_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle keep-alive connection stays open: nginx's `keepalive_timeout`
/// (Kong's template does not set it, so nginx's default applies; Kong's
/// `nginx_http_keepalive_timeout` / `nginx_proxy_keepalive_timeout` set it). It also
/// governs idle HTTP/2 connections (nginx ≥ 1.19.7).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest request head accepted (nginx: 4 × 8k `large_client_header_buffers`);
/// see [`crate::head`] for the exact rules.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most request headers accepted (see [`crate::head::DEFAULT_MAX_HEADERS`]).
pub const DEFAULT_MAX_HEADERS: usize = crate::head::DEFAULT_MAX_HEADERS;

/// nginx's `http2_max_concurrent_streams` default.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// h2's default, set explicitly: streams reset by the client before they were served.
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// hyper's default, set explicitly: streams we reset because the client erred.
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Response bytes buffered per HTTP/2 stream while the client's window is closed
/// (hyper's default is 400 KiB): 128 streams × 64 KiB = 8 MiB per connection at most.
pub const H2_MAX_SEND_BUF_SIZE: usize = 64 * 1024;

struct Bound {
    listen: Listen,
    listener: std::net::TcpListener,
}

/// The proxy server.
pub struct Proxy {
    listens: Vec<Listen>,
    shared: Arc<Shared>,
    default_cert: Option<Arc<CertPair>>,
    bound: Vec<Bound>,
    grace_period: Duration,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    limits: Limits,
    /// Data-plane worker threads (`nginx_worker_processes`).
    workers: usize,
}

struct ActiveGuard(Arc<Stats>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Relaxed);
    }
}

impl Proxy {
    pub fn new(
        config: &Config,
        snapshot: SharedSnapshot,
        stats: Arc<Stats>,
    ) -> Result<Proxy, String> {
        let needs_tls = config.proxy_listen.iter().any(|l| l.ssl);
        let default_cert = if !config.ssl_cert.is_empty() {
            if config.ssl_cert.len() != config.ssl_cert_key.len() {
                return Err(
                    "ssl_cert and ssl_cert_key must have the same number of entries".into(),
                );
            }
            let mut pairs = Vec::new();
            for (c, k) in config.ssl_cert.iter().zip(&config.ssl_cert_key) {
                pairs.push(tls::certified_key(&read_pem(c)?, &read_pem(k)?)?);
            }
            let mut it = pairs.into_iter();
            let primary = it.next().ok_or("ssl_cert is empty")?;
            Some(Arc::new(CertPair {
                primary,
                alt: it.next(),
            }))
        } else if needs_tls {
            Some(tls::self_signed_default()?)
        } else {
            None
        };
        let workers = config
            .nginx_worker_processes
            .resolve(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = Pool::new(PoolSettings {
            workers,
            max_idle_per_key: config.upstream_keepalive_pool_size as usize,
            max_requests: config.upstream_keepalive_max_requests,
            idle_timeout: config.upstream_keepalive_idle_timeout,
        });
        Ok(Proxy {
            listens: config.proxy_listen.clone(),
            shared: Arc::new(Shared {
                settings: Settings::from_config(config),
                snapshot,
                pool,
                stats,
            }),
            default_cert,
            bound: Vec::new(),
            grace_period: DEFAULT_GRACE_PERIOD,
            header_read_timeout: handler::nginx_time(
                config,
                &[
                    "nginx_proxy_client_header_timeout",
                    "nginx_http_client_header_timeout",
                ],
            )
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT),
            keepalive_timeout: handler::nginx_time(
                config,
                &[
                    "nginx_proxy_keepalive_timeout",
                    "nginx_http_keepalive_timeout",
                ],
            )
            .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            limits: limits_from_config(config)?,
            workers,
        })
    }

    /// How long in-flight requests may run after shutdown starts.
    pub fn set_grace_period(&mut self, d: Duration) {
        self.grace_period = d;
    }

    /// Time allowed to receive a request head (nginx `client_header_timeout`).
    /// hyper also runs it while an HTTP/1.1 connection waits for its next
    /// request, so it is the keep-alive timeout as well.
    pub fn set_header_read_timeout(&mut self, d: Duration) {
        self.header_read_timeout = d;
    }

    /// How long an idle keep-alive (or HTTP/2) connection stays open; zero disables
    /// keep-alive (nginx `keepalive_timeout 0`).
    pub fn set_keepalive_timeout(&mut self, d: Duration) {
        self.keepalive_timeout = d;
    }

    /// Longest pause between two reads of a request body (nginx
    /// `client_body_timeout`, 408 after it). Call before [`Proxy::serve`].
    pub fn set_client_body_timeout(&mut self, d: Duration) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.settings.client_body_timeout = d;
        }
    }

    /// Request head limits: total bytes of the head (each line may take at
    /// most 8 KiB of it, or all of it if smaller) and header count.
    pub fn set_header_limits(&mut self, max_bytes: usize, max_headers: usize) {
        self.limits.max_head = max_bytes.max(64);
        self.limits.max_request_line = self.limits.max_request_line.min(self.limits.max_head);
        self.limits.max_header_line = self.limits.max_header_line.min(self.limits.max_head);
        self.limits.max_headers = max_headers.max(1);
    }

    /// All request head limits (see [`crate::head`]).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The request head limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The upstream pool (for tests and metrics).
    pub fn pool(&self) -> Arc<Pool> {
        self.shared.pool.clone()
    }

    /// Binds every `proxy_listen` address; returns the bound addresses in
    /// order (useful with port 0).
    pub async fn bind(&mut self) -> Result<Vec<std::net::SocketAddr>, String> {
        let mut out = Vec::new();
        for l in &self.listens {
            let addrs = l
                .resolve()
                .map_err(|e| format!("could not resolve {}:{}: {e}", l.addr, l.port))?;
            for addr in addrs {
                let listener = bind_one(addr, l).map_err(|e| {
                    format!("could not bind {addr} (proxy_listen {}): {e}", l.listener)
                })?;
                out.push(listener.local_addr().map_err(|e| e.to_string())?);
                self.bound.push(Bound {
                    listen: l.clone(),
                    listener,
                });
            }
        }
        Ok(out)
    }

    /// Serves on the data-plane workers ([`crate::worker`]) until `shutdown` resolves,
    /// then stops accepting, lets in-flight requests finish (closing idle keep-alive
    /// connections) for at most the grace period, ends the workers (closing what is
    /// left) and returns. Only the wait runs on the caller's runtime.
    pub async fn serve(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        if self.bound.is_empty() {
            self.bind().await?;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
        let drain = Drain {
            stop: stop_rx.clone(),
            _alive: alive_tx,
        };
        let resolver = self.default_cert.clone().map(|default| {
            Arc::new(SniResolver {
                snapshot: self.shared.snapshot.clone(),
                default,
            })
        });
        // Each worker's sockets, and the listener each belongs to.
        let mut sockets: Vec<Vec<(std::net::TcpListener, Arc<ListenerCx>)>> =
            (0..self.workers).map(|_| Vec::new()).collect();
        for b in std::mem::take(&mut self.bound) {
            let tls = if b.listen.ssl {
                let r = resolver.clone().ok_or("no certificate for TLS listener")?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                    tls::server_config(r, b.listen.http2)?,
                )))
            } else {
                None
            };
            let lcx = Arc::new(ListenerCx {
                shared: self.shared.clone(),
                http2: b.listen.http2,
                tls,
                header_read_timeout: self.header_read_timeout,
                keepalive_timeout: self.keepalive_timeout,
                limits: self.limits.clone(),
            });
            for (w, s) in worker_sockets(b, self.workers)?.into_iter().enumerate() {
                sockets[w].push((s, lcx.clone()));
            }
        }
        let mut workers = Vec::with_capacity(sockets.len());
        for (i, socks) in sockets.into_iter().enumerate() {
            let rt = worker::runtime().map_err(|e| format!("cannot start a worker: {e}"))?;
            // Registered with the worker's own runtime, which alone polls them.
            let listeners = {
                let _in = rt.enter();
                socks
                    .into_iter()
                    .map(|(s, lcx)| Ok((TcpListener::from_std(s)?, lcx)))
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())?
            };
            let (drain, stop) = (drain.clone(), stop_rx.clone());
            let main = async move {
                for (listener, lcx) in listeners {
                    tokio::spawn(accept(listener, lcx, drain.clone(), stop.clone()));
                }
            };
            workers.push(
                worker::Worker::spawn(i + 1, rt, main)
                    .map_err(|e| format!("cannot start a worker: {e}"))?,
            );
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        drop(drain);
        if tokio::time::timeout(self.grace_period, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the remaining connections");
        }
        for w in workers {
            w.stop().await;
        }
        self.shared.pool.clear();
        Ok(())
    }
}

/// Kong's injected nginx directives (`nginx_proxy_*`, the proxy server block, before
/// `nginx_http_*`, the http block) that the proxy honours. A value nginx would refuse
/// stops the start here too, naming the key, rather than quietly falling back.
const TIME_DIRECTIVES: &[&str] = &[
    "client_header_timeout",
    "client_body_timeout",
    "keepalive_timeout",
];

/// The first of `nginx_proxy_<directive>`, `nginx_http_<directive>` that is set.
fn directive<'a>(config: &'a Config, directive: &str) -> Option<(String, &'a str)> {
    ["nginx_proxy_", "nginx_http_"].iter().find_map(|p| {
        let k = format!("{p}{directive}");
        config.raw.get(&k).map(|v| (k, v.as_str()))
    })
}

/// Checks the proxy's request limits and client timeouts (the `nginx_http_*` /
/// `nginx_proxy_*` keys) before anything starts, so a bad value is reported before any
/// port is bound or database touched.
pub fn check_limits(config: &Config) -> Result<(), String> {
    limits_from_config(config).map(|_| ())
}

/// Head limits from `large_client_header_buffers` (nginx's `4 8k` when unset) and
/// `max_headers` (freenginx's directive; [`crate::head::DEFAULT_MAX_HEADERS`] when
/// unset).
fn limits_from_config(config: &Config) -> Result<Limits, String> {
    let mut limits = match directive(config, "large_client_header_buffers") {
        Some((k, v)) => Limits::from_large_client_header_buffers(v).ok_or_else(|| {
            format!("invalid value for '{k}': '{v}' (expected a number and a size, e.g. '4 8k')")
        })?,
        None => Limits::default(),
    };
    if let Some((k, v)) = directive(config, "max_headers") {
        limits.max_headers = v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| {
                format!("invalid value for '{k}': '{v}' (expected an integer between 1 and 65535)")
            })?;
    }
    for d in TIME_DIRECTIVES {
        if let Some((k, v)) = directive(config, d) {
            if handler::parse_nginx_time(v).is_none() {
                return Err(format!(
                    "invalid value for '{k}': '{v}' (expected an nginx time, e.g. '60s')"
                ));
            }
        }
    }
    Ok(limits)
}

/// `b`'s socket for each of `workers`: with `reuseport`, a socket of its own per worker
/// bound to the same address; otherwise the one socket, shared.
fn worker_sockets(b: Bound, workers: usize) -> Result<Vec<std::net::TcpListener>, String> {
    let addr = b.listener.local_addr().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(workers);
    for _ in 1..workers {
        let s = if b.listen.reuseport {
            bind_one(addr, &b.listen).map_err(|e| {
                format!(
                    "could not bind {addr} (proxy_listen {}) for another worker: {e}",
                    b.listen.listener
                )
            })?
        } else {
            b.listener.try_clone().map_err(|e| e.to_string())?
        };
        out.push(s);
    }
    out.insert(0, b.listener);
    Ok(out)
}

/// A worker's accept loop on one listener, until shutdown starts.
async fn accept(
    listener: TcpListener,
    lcx: Arc<ListenerCx>,
    drain: Drain,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            acc = listener.accept() => match acc {
                Ok((stream, peer)) => {
                    let lcx = lcx.clone();
                    let drain = drain.clone();
                    tokio::spawn(async move { lcx.serve_conn(stream, peer, drain).await });
                    // One connection at a time (nginx's `multi_accept off`): the worker
                    // serves what it has before taking more, so a burst on a shared
                    // socket spreads over the workers.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

fn bind_one(addr: SocketAddr, l: &Listen) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    if l.reuseport {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        if let Some(v6) = l.ipv6only {
            s.set_only_v6(v6)?;
        }
    }
    s.bind(&addr.into())?;
    let backlog = l
        .backlog
        .map(|b| b.min(i32::MAX as u32) as i32)
        .unwrap_or(511);
    s.listen(backlog)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

struct ListenerCx {
    shared: Arc<Shared>,
    http2: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    limits: Limits,
}

impl ListenerCx {
    /// hyper's head timer runs while a connection waits for its next request, so it
    /// is the keep-alive timeout; the head itself is timed by [`Guarded`].
    fn idle_timeout(&self) -> Duration {
        if self.keepalive_timeout.is_zero() {
            self.header_read_timeout
        } else {
            self.keepalive_timeout
        }
    }

    /// hyper's own limits sit above ours, so that ours decide.
    fn hyper_buf(&self) -> usize {
        (self.limits.max_head + 16 * 1024).max(8192)
    }

    fn h1_builder(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .keep_alive(!self.keepalive_timeout.is_zero())
            .header_read_timeout(self.idle_timeout())
            .max_buf_size(self.hyper_buf())
            .max_headers(self.limits.max_headers + 1);
        b
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .keep_alive(!self.keepalive_timeout.is_zero())
            .header_read_timeout(self.idle_timeout())
            .max_buf_size(self.hyper_buf())
            .max_headers(self.limits.max_headers + 1);
        b.http2()
            .timer(TokioTimer::new())
            // HPACK bombs: the decoded header list is bounded like an HTTP/1.1 head, and
            // h2 refuses a header block spread over more CONTINUATION frames than fit it.
            .max_header_list_size(self.limits.max_head.min(u32::MAX as usize) as u32)
            // nginx's `http2_max_concurrent_streams`.
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            // Rapid reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671): GOAWAY
            // after this many streams reset before being served / reset for errors.
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            // A client that opens its windows to nobody (window abuse) makes response
            // bodies wait in this buffer: bounded per stream, so per connection.
            .max_send_buf_size(H2_MAX_SEND_BUF_SIZE);
        b
    }

    async fn serve_conn(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        drain: Drain,
    ) {
        let stats = self.shared.stats.clone();
        stats.connections_accepted.fetch_add(1, Relaxed);
        stats.connections_handled.fetch_add(1, Relaxed);
        stats.connections_active.fetch_add(1, Relaxed);
        let _active = ActiveGuard(stats);
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        match &self.tls {
            None => {
                let info = Arc::new(ConnInfo::new(peer, local, false, None));
                if self.http2 {
                    // (h2c with prior knowledge: the framer spots the preface)
                    let signal = Arc::new(UpgradeSignal::default());
                    let io = Guarded::new(
                        stream,
                        Framer::new(self.limits.clone(), true),
                        signal.clone(),
                    )
                    .with_header_timeout(self.header_read_timeout);
                    self.run(io, info, Proto::Auto, Some(signal), drain).await;
                } else {
                    self.run(stream, info, Proto::H1, None, drain).await;
                }
            }
            Some(acceptor) => {
                // Kong's certificate phase, only when a global plugin has it.
                let handshake = async {
                    if self.shared.snapshot.load().plugins.has_certificate() {
                        tls::accept_with_certificate_phase(
                            stream,
                            peer.ip(),
                            &self.shared.snapshot,
                            acceptor.config().clone(),
                            self.http2,
                        )
                        .await
                    } else {
                        acceptor.accept(stream).await
                    }
                };
                let tls = match tokio::time::timeout(self.header_read_timeout, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                let (_, sess) = tls.get_ref();
                let sni = sess.server_name().map(str::to_owned);
                let proto = if sess.alpn_protocol() == Some(b"h2") {
                    Proto::Auto
                } else {
                    Proto::H1
                };
                let info = Arc::new(
                    ConnInfo::new(peer, local, true, sni).with_tls_info(tls::tls_info(sess)),
                );
                self.run(tls, info, proto, None, drain).await;
            }
        }
    }

    /// Serves a connection. HTTP/1.1 (`Proto::H1`) starts on the fast path, whose
    /// hand-over puts the framer between the rest of the connection and hyper;
    /// with `Proto::Auto`, `signal` is the upgrade signal of the framer already
    /// around `io` (plaintext, where it spots an h2c preface), if any.
    async fn run<I>(
        &self,
        io: I,
        info: Arc<ConnInfo>,
        proto: Proto,
        signal: Option<Arc<UpgradeSignal>>,
        drain: Drain,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let signal = match proto {
            Proto::H1 => Some(Arc::new(UpgradeSignal::default())),
            Proto::Auto => signal,
        };
        let framer_signal = signal.clone();
        let fast_info = info.clone();
        let shared = self.shared.clone();
        // HTTP/2 connections have no head timer: their idleness is watched here.
        let activity = (matches!(proto, Proto::Auto) && !self.keepalive_timeout.is_zero())
            .then(|| Arc::new(Activity::default()));
        let act = activity.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let shared = shared.clone();
            let info = info.clone();
            let busy = act.clone().map(Busy::new);
            // the framer waits for the outcome of an upgrade request
            let signal = signal
                .clone()
                .filter(|_| guard::is_upgrade_request(&req))
                .map(|s| (s, req.method().clone()));
            async move {
                let _busy = busy;
                let resp = handle_counted(shared, info, req.map(ClientBody::Hyper), false)
                    .await
                    .into_response();
                if let Some((s, method)) = signal {
                    s.resolve(guard::upgraded(&method, &resp));
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let mut stop = drain.stop.clone();
        if *stop.borrow() {
            return;
        }
        match proto {
            Proto::H1 => {
                // Bodiless requests first, without hyper (`fast.rs`); hyper takes
                // over from the first request that needs it.
                let shared = self.shared.clone();
                let settings = fast::Settings {
                    limits: &self.limits,
                    idle: self.idle_timeout(),
                    header: self.header_read_timeout,
                    keep_alive: !self.keepalive_timeout.is_zero(),
                };
                let served = fast::serve(io, settings, &mut stop, |req| {
                    handle_counted(shared.clone(), fast_info.clone(), req, true)
                })
                .await;
                let fast::Outcome::HandOver(io) = served else {
                    return;
                };
                // (the framer reads again from the head the fast path did not serve)
                let signal = framer_signal.unwrap_or_default();
                let io = Guarded::new(io, Framer::new(self.limits.clone(), false), signal)
                    .with_header_timeout(self.header_read_timeout);
                let io = TokioIo::new(io);
                let conn = self.h1_builder().serve_connection(io, svc).with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { tracing::debug!("connection error: {e}") },
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            Proto::Auto => {
                let builder = self.builder();
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                tokio::pin!(conn);
                let idle = idle(activity, self.keepalive_timeout);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { tracing::debug!("connection error: {e}") },
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                    _ = idle => {
                        // nginx `keepalive_timeout` on an idle HTTP/2 connection: GOAWAY.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
        }
    }
}

/// One request through the handler, counted in `connections_writing` meanwhile.
async fn handle_counted(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    req: http::Request<ClientBody>,
    fast: bool,
) -> handler::Reply {
    let stats = shared.stats.clone();
    stats.connections_writing.fetch_add(1, Relaxed);
    let r = handler::handle(shared, info, req, fast).await;
    stats.connections_writing.fetch_sub(1, Relaxed);
    r
}

/// Requests of one connection: how many began, how many are being handled.
#[derive(Default)]
struct Activity {
    started: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// One request being handled (until its response head is ready; a streaming body
/// after that does not keep the connection busy, but graceful shutdown lets it end).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Busy {
        a.started.fetch_add(1, Relaxed);
        a.in_flight.fetch_add(1, Relaxed);
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Resolves once the connection has had no request for `timeout`, checked every
/// `timeout` (so between one and two timeouts after the last one): no clock is read
/// per request.
async fn idle(activity: Option<Arc<Activity>>, timeout: Duration) {
    let Some(a) = activity else {
        return std::future::pending().await;
    };
    let mut seen = a.started.load(Relaxed);
    loop {
        tokio::time::sleep(timeout).await;
        let now = a.started.load(Relaxed);
        if now == seen && a.in_flight.load(Relaxed) == 0 {
            return;
        }
        seen = now;
    }
}

/// Shutdown signal plus in-flight connection tracking: every connection holds
/// a clone of `_alive`; draining waits until all are dropped.
#[derive(Clone)]
struct Drain {
    stop: tokio::sync::watch::Receiver<bool>,
    _alive: tokio::sync::mpsc::Sender<()>,
}

#[derive(Clone, Copy)]
enum Proto {
    /// HTTP/1.1 only.
    H1,
    /// HTTP/1.1 or HTTP/2 (prior knowledge / ALPN h2), detected by the preface.
    Auto,
}
