//! The upstream connection pool: HTTP/1.1 keep-alive connections (and shared
//! HTTP/2 connections for gRPC) keyed by address, TLS server name and TLS
//! settings. It lives outside the snapshot, so it survives rebuilds.

pub mod h1;
pub mod outgoing;
pub mod raw;

use crate::{Body, BoxError};
use h1::{Io, H1};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// TLS server name: sent as SNI (unless an IP literal) and verified
    /// against the certificate. Empty for plain-text targets.
    pub host: String,
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Identifies the TLS settings in the pool key.
    pub tls_profile: String,
    /// Speak HTTP/2 (gRPC).
    pub h2: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PoolKey {
    addr: SocketAddr,
    tls: bool,
    sni: String,
    profile: String,
    h2: bool,
}

/// Two hasher calls for the address and flags, the names only when set: the pool
/// is looked up twice per request, and each SipHash call costs more than the
/// rest of a look-up (equal keys still hash alike: every part comes from a field).
impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
            std::net::IpAddr::V6(a) => u128::from(a),
        };
        h.write_u128(ip);
        h.write_u32(
            u32::from(self.addr.port())
                | u32::from(self.addr.is_ipv6()) << 16
                | u32::from(self.tls) << 17
                | u32::from(self.h2) << 18,
        );
        if !self.sni.is_empty() || !self.profile.is_empty() {
            std::hash::Hash::hash(&self.sni, h);
            std::hash::Hash::hash(&self.profile, h);
        }
    }
}

impl PoolKey {
    fn of(t: &Target) -> PoolKey {
        PoolKey {
            addr: t.addr,
            tls: t.tls.is_some(),
            sni: if t.tls.is_some() {
                t.host.clone()
            } else {
                String::new()
            },
            profile: t.tls_profile.clone(),
            h2: t.h2,
        }
    }
}

/// A request sender on one upstream connection.
pub enum Sender {
    /// `None` while a response body holds the connection (see [`PooledBody`]).
    H1(Option<H1>),
    H2(http2::SendRequest<Body>),
}

struct Idle {
    sender: Sender,
    since: Instant,
    used: u32,
    timer: Option<Timer>,
}

/// A connection's timer for the requests it carries (see [`Conn::take_timer`]).
pub type Timer = Pin<Box<tokio::time::Sleep>>;

/// A connection checked out of the pool.
pub struct Conn {
    key: PoolKey,
    pub sender: Sender,
    used: u32,
    /// Whether the connection came from the pool (a stale one may fail
    /// without having sent the request).
    pub reused: bool,
    timer: Option<Timer>,
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Refused(std::io::Error),
    Tls(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => write!(f, "connect timed out"),
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake failed: {e}"),
        }
    }
}

/// Pool settings (`upstream_keepalive_*`).
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Data-plane workers: each keeps its own idle connections (see [`Pool`]).
    pub workers: usize,
    /// Idle connections kept per key (0 disables keep-alive).
    pub max_idle_per_key: usize,
    /// Requests per connection before it is closed (0 = unlimited).
    pub max_requests: u32,
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            workers: 1,
            max_idle_per_key: 512,
            max_requests: 10000,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Keys are addresses and TLS names from the configuration and its DNS answers, not
/// from clients: FxHash, a few instructions, rather than SipHash (~300 per look-up, two
/// look-ups per request).
type IdleMap = HashMap<PoolKey, Vec<Idle>, rustc_hash::FxBuildHasher>;
type IdleLists = Mutex<IdleMap>;

/// The pool. Each data-plane worker ([`crate::worker`]) has its own idle lists, as each
/// nginx worker has its own `keepalive` cache (`upstream_keepalive_pool_size` is per
/// worker): a connection's socket and timer belong to the runtime of the worker that made
/// it, which alone polls them, so another worker must not pick it up. List 0 serves any
/// other thread.
pub struct Pool {
    settings: PoolSettings,
    idle: Box<[IdleLists]>,
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Arc<Pool> {
        let lists = settings.workers + 1;
        Arc::new(Pool {
            settings,
            idle: (0..lists).map(|_| Mutex::default()).collect(),
        })
    }

    /// This thread's idle lists.
    fn idle(&self) -> std::sync::MutexGuard<'_, IdleMap> {
        let i = crate::worker::index();
        self.idle.get(i).unwrap_or(&self.idle[0]).lock().unwrap()
    }

    /// Number of idle connections (all workers, all keys).
    pub fn idle_count(&self) -> usize {
        let count = |l: &IdleLists| l.lock().unwrap().values().map(Vec::len).sum::<usize>();
        self.idle.iter().map(count).sum()
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        for l in self.idle.iter() {
            l.lock().unwrap().clear();
        }
    }

    fn checkout(&self, key: &PoolKey, now: Instant) -> Option<Conn> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if now.saturating_duration_since(entry.since) > self.settings.idle_timeout {
                continue;
            }
            match entry.sender {
                Sender::H1(s) => {
                    if s.as_ref().is_none_or(H1::is_closed) {
                        continue;
                    }
                    return Some(Conn {
                        key: key.clone(),
                        sender: Sender::H1(s),
                        used: entry.used,
                        reused: true,
                        timer: entry.timer,
                    });
                }
                Sender::H2(s) => {
                    if s.is_closed() {
                        continue;
                    }
                    // HTTP/2 connections are shared: keep the entry.
                    let c = s.clone();
                    list.push(Idle {
                        sender: Sender::H2(s),
                        since: now,
                        used: entry.used,
                        timer: None,
                    });
                    return Some(Conn {
                        key: key.clone(),
                        sender: Sender::H2(c),
                        used: entry.used,
                        reused: true,
                        timer: None,
                    });
                }
            }
        }
        None
    }

    /// A pooled connection to `target`, or a new one made within `connect_timeout`;
    /// `now`: a recent clock reading (the caller's).
    pub async fn get(
        &self,
        target: &Target,
        connect_timeout: Duration,
        now: Instant,
    ) -> Result<Conn, ConnectError> {
        let key = PoolKey::of(target);
        if let Some(c) = self.checkout(&key, now) {
            return Ok(c);
        }
        // Boxed: the connect future is large and rarely polled; inline, it would make
        // every request's future bigger (hyper moves it), ~10% more instructions per
        // proxied request under callgrind.
        let sender = Box::pin(tokio::time::timeout(connect_timeout, connect(target)))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        if let Sender::H2(s) = &sender {
            let mut idle = self.idle();
            idle.entry(key.clone()).or_default().push(Idle {
                sender: Sender::H2(s.clone()),
                since: Instant::now(),
                used: 0,
                timer: None,
            });
        }
        Ok(Conn {
            key,
            sender,
            used: 0,
            reused: false,
            timer: None,
        })
    }

    /// Returns an HTTP/1.1 connection whose response body was read to its end.
    /// Nothing watches it while idle: the checkout finds it closed, or `send`
    /// finds it stale and the request is retried on another.
    fn checkin(&self, conn: Conn) {
        let Conn {
            key,
            sender,
            used,
            timer,
            ..
        } = conn;
        let Sender::H1(s @ Some(_)) = sender else {
            return;
        };
        let used = used + 1;
        if self.settings.max_idle_per_key == 0
            || (self.settings.max_requests > 0 && used >= self.settings.max_requests)
        {
            return;
        }
        let mut idle = self.idle();
        let list = idle.entry(key).or_default();
        if list.len() < self.settings.max_idle_per_key {
            list.push(Idle {
                sender: Sender::H1(s),
                since: Instant::now(),
                used,
                timer,
            });
        }
    }
}

/// An upstream response body: read from its HTTP/1.1 connection, or an HTTP/2 stream.
pub enum UpBody {
    H1(h1::H1Body),
    H2(hyper::body::Incoming),
    /// After `101 Switching Protocols`.
    Empty,
}

impl hyper::body::Body for UpBody {
    type Data = bytes::Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::H1(b) => Pin::new(b).poll_frame(cx),
            UpBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            UpBody::Empty => std::task::Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::H1(b) => b.is_end_stream(),
            UpBody::H2(b) => b.is_end_stream(),
            UpBody::Empty => true,
        }
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpBody::H1(b) => b.size_hint(),
            UpBody::H2(b) => b.size_hint(),
            UpBody::Empty => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// The upstream side of a tunnel, taken out of a `101` response.
#[derive(Clone)]
struct UpgradeSlot(Arc<Mutex<Option<h1::Upgraded>>>);

/// The upstream connection of a `101 Switching Protocols` response.
pub fn take_upgrade<B>(resp: &mut http::Response<B>) -> Option<h1::Upgraded> {
    let slot = resp.extensions_mut().remove::<UpgradeSlot>()?;
    let mut g = slot.0.lock().unwrap_or_else(|e| e.into_inner());
    g.take()
}

/// A response body that gives its connection back to the pool once read to
/// its end — never earlier, so no second request is sent on the connection
/// while this response is still streaming. A body dropped before its end (or
/// failing) drops the connection, which closes it.
pub struct PooledBody {
    inner: UpBody,
    conn: Option<(Arc<Pool>, Conn)>,
}

impl PooledBody {
    /// `conn` is `None` for a connection that must not be reused (upgraded).
    pub fn new(inner: UpBody, conn: Option<(Arc<Pool>, Conn)>) -> PooledBody {
        PooledBody { inner, conn }
    }

    fn release(&mut self) {
        let Some((pool, mut c)) = self.conn.take() else {
            return;
        };
        match std::mem::replace(&mut self.inner, UpBody::Empty) {
            UpBody::H1(b) => {
                if let Some(h) = b.reusable() {
                    c.sender = Sender::H1(Some(h));
                    pool.checkin(c);
                }
            }
            other => self.inner = other,
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        use std::task::Poll;
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
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

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper does not poll a body that is already at its end (empty, or
        // the last frame known by its length).
        if self.conn.is_some() && hyper::body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

async fn connect(target: &Target) -> Result<Sender, ConnectError> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(ConnectError::Refused)?;
    let _ = tcp.set_nodelay(true);
    let io = match &target.tls {
        None => Io::Tcp(tcp),
        Some(cfg) => {
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    ConnectError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Io::Tls(Box::new(tls))
        }
    };
    if !target.h2 {
        return Ok(Sender::H1(Some(H1::new(io))));
    }
    let (s, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream h2 connection: {e}");
        }
    });
    Ok(Sender::H2(s))
}

/// The largest read from an upstream HTTP/1.1 connection (see [`h1::MAX_READ`]).
pub const UPSTREAM_READ_BUF: usize = h1::MAX_READ;

/// The outcome of sending on a connection.
pub enum SendError {
    /// The request was not sent (stale pooled connection): retry it.
    NotSent(Box<http::Request<Body>>, BoxError),
    Failed(BoxError),
}

impl Conn {
    /// For an HTTP/1.1 connection, its timer, due no later than `deadline`, to put back with
    /// [`Conn::put_timer`]; `None` for HTTP/2 (shared by concurrent requests). One
    /// timer serves all the connection's requests: moving a timer's deadline later
    /// costs tokio no timer-wheel work, where a new timer per request costs an
    /// insertion and a removal under the timer lock.
    pub fn take_timer(&mut self, deadline: tokio::time::Instant) -> Option<Timer> {
        if !matches!(self.sender, Sender::H1(_)) {
            return None;
        }
        Some(match self.timer.take() {
            // One set sooner is left as it is: it may fire early, and the caller
            // sets it again for the rest (`handler::send_watched`). So a busy
            // connection's requests move it seldom, not one reset each.
            Some(mut t) => {
                if t.deadline() > deadline {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        })
    }

    /// Keeps `timer` for the connection's next request.
    pub fn put_timer(&mut self, timer: Timer) {
        self.timer = Some(timer);
    }

    /// Sends the request; on a connection that failed before the request
    /// went out, hands the request back.
    /// `out`: the request's headers (its own map is not read).
    /// `raw`: an HTTP/1.1 response's header lines are kept as bytes, put
    /// there, and its head's map left empty (where they can be: not for a
    /// tunnel, nor when `Connection` names other headers).
    pub async fn send(
        &mut self,
        req: http::Request<Body>,
        out: &outgoing::Outgoing<'_>,
        raw: Option<&mut Option<raw::RawHeaders>>,
    ) -> Result<http::Response<UpBody>, SendError> {
        match &mut self.sender {
            Sender::H1(slot) => {
                let Some(conn) = slot.as_mut() else {
                    return Err(SendError::Failed("upstream connection busy".into()));
                };
                let mut head = conn
                    .send(req, out, self.reused, raw.is_some())
                    .await
                    .map_err(|e| match e {
                        h1::Failure::NotSent(r, e) => SendError::NotSent(r, e),
                        h1::Failure::Failed(e) => SendError::Failed(e),
                    })?;
                let Some(conn) = slot.take() else {
                    unreachable!("checked above");
                };
                if let Some(slot) = raw {
                    *slot = head.take_raw();
                }
                let (mut parts, body) = head.finish(conn);
                let body = match body {
                    Ok(b) => UpBody::H1(b),
                    Err(up) => {
                        parts
                            .extensions
                            .insert(UpgradeSlot(Arc::new(Mutex::new(Some(up)))));
                        UpBody::Empty
                    }
                };
                Ok(http::Response::from_parts(parts, body))
            }
            Sender::H2(s) => {
                let mut req = req;
                *req.headers_mut() = out.to_map();
                if let Err(e) = s.ready().await {
                    return Err(SendError::NotSent(Box::new(req), Box::new(e)));
                }
                s.try_send_request(req)
                    .await
                    .map(|r| r.map(UpBody::H2))
                    .map_err(|mut e| match e.take_message() {
                        Some(m) => SendError::NotSent(Box::new(m), Box::new(e.into_error())),
                        None => SendError::Failed(Box::new(e.into_error())),
                    })
            }
        }
    }
}
