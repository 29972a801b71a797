//! The upstream connection pool: HTTP/1.1 keep-alive connections (and shared
//! HTTP/2 connections for gRPC) keyed by address, TLS server name and TLS
//! settings. It lives outside the snapshot, so it survives rebuilds.

use crate::Body;
use hyper::client::conn::{http1, http2};
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
    H1(http1::SendRequest<Body>),
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

type IdleLists = Mutex<HashMap<PoolKey, Vec<Idle>>>;

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
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Idle>>> {
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

    fn checkout(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() > self.settings.idle_timeout {
                continue;
            }
            match entry.sender {
                Sender::H1(s) => {
                    // Not `is_ready()`: a connection checked in as its body
                    // ended may not have been polled to idle yet; `send` waits.
                    if s.is_closed() {
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
                        since: Instant::now(),
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

    /// A pooled connection to `target`, or a new one made within `connect_timeout`.
    pub async fn get(
        &self,
        target: &Target,
        connect_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let key = PoolKey::of(target);
        if let Some(c) = self.checkout(&key) {
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
    /// No task waits for it to become ready: `Conn::send` awaits that, so a
    /// connection the upstream closes instead is found stale there and retried.
    fn checkin(&self, conn: Conn) {
        let Conn {
            key,
            sender,
            used,
            timer,
            ..
        } = conn;
        let Sender::H1(s) = sender else {
            return;
        };
        let used = used + 1;
        if self.settings.max_idle_per_key == 0
            || (self.settings.max_requests > 0 && used >= self.settings.max_requests)
            || s.is_closed()
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

/// A response body that gives its connection back to the pool once read to
/// its end — never earlier, so no second request is sent on the connection
/// while this response is still streaming. A body dropped before its end (or
/// failing) drops the connection, which hyper then closes.
pub struct PooledBody {
    inner: hyper::body::Incoming,
    conn: Option<(Arc<Pool>, Conn)>,
}

impl PooledBody {
    /// `conn` is `None` for a connection that must not be reused (upgraded).
    pub fn new(inner: hyper::body::Incoming, conn: Option<(Arc<Pool>, Conn)>) -> PooledBody {
        PooledBody { inner, conn }
    }

    fn release(&mut self) {
        if let Some((pool, c)) = self.conn.take() {
            pool.checkin(c);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
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
    match &target.tls {
        None => handshake(tcp, target.h2).await,
        Some(cfg) => {
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    ConnectError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            handshake(tls, target.h2).await
        }
    }
}

/// The largest read from an upstream HTTP/1.1 connection, so the largest body frame
/// a response holds while its client is slow (hyper's default is ~400 KiB), and the
/// largest response head accepted (nginx's `proxy_buffer_size` is one page, 4 or 8 KiB).
const UPSTREAM_READ_BUF: usize = 64 * 1024;

async fn handshake<S>(io: S, h2: bool) -> Result<Sender, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
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
    } else {
        let (s, conn) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUF)
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection: {e}");
            }
        });
        Ok(Sender::H1(s))
    }
}

/// The outcome of sending on a connection.
pub enum SendError {
    /// The request was not sent (stale pooled connection): retry it.
    NotSent(Box<http::Request<Body>>, hyper::Error),
    Failed(hyper::Error),
}

impl Conn {
    /// For an HTTP/1.1 connection, its timer set to `deadline`, to put back with
    /// [`Conn::put_timer`]; `None` for HTTP/2 (shared by concurrent requests). One
    /// timer serves all the connection's requests: moving a timer's deadline later
    /// costs tokio no timer-wheel work, where a new timer per request costs an
    /// insertion and a removal under the timer lock.
    pub fn take_timer(&mut self, deadline: tokio::time::Instant) -> Option<Timer> {
        if !matches!(self.sender, Sender::H1(_)) {
            return None;
        }
        Some(match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
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
    pub async fn send(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        match &mut self.sender {
            Sender::H1(s) => {
                if s.ready().await.is_err() {
                    return match s.try_send_request(req).await {
                        Ok(r) => Ok(r),
                        Err(mut e) => match e.take_message() {
                            Some(m) => Err(SendError::NotSent(Box::new(m), e.into_error())),
                            None => Err(SendError::Failed(e.into_error())),
                        },
                    };
                }
                s.try_send_request(req)
                    .await
                    .map_err(|mut e| match e.take_message() {
                        Some(m) => SendError::NotSent(Box::new(m), e.into_error()),
                        None => SendError::Failed(e.into_error()),
                    })
            }
            Sender::H2(s) => {
                if let Err(e) = s.ready().await {
                    return Err(SendError::NotSent(Box::new(req), e));
                }
                s.try_send_request(req)
                    .await
                    .map_err(|mut e| match e.take_message() {
                        Some(m) => SendError::NotSent(Box::new(m), e.into_error()),
                        None => SendError::Failed(e.into_error()),
                    })
            }
        }
    }
}
