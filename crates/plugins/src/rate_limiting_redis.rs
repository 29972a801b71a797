//! rate-limiting's `redis` policy on the request path: one connection per `redis` record,
//! driven by one task that sends the increments of every request waiting at that moment
//! as one pipeline (one write and one read for many requests) and answers each request
//! its own counters.
//!
//! Each window is still Kong's script (`INCR`, `EXPIRE` on the first increment, the count
//! before this request), in the order the requests queued, so the counters a request sees
//! are exactly those of one round trip per request.
//!
//! The task runs on the runtime of the request that first needed it (the proxy's), not on
//! the runtime of the other Redis calls ([`crate::rate_limiting_store::RedisPool::run`]):
//! there, every request cost a wake-up of that runtime's thread and one back. The task
//! holds nothing of a snapshot or a request, so it outlives both (the reason for the
//! separate runtime); when the runtime hosting it ends (tests run one per test), the task
//! is dropped, fails what waits on it, and the next request starts one on its own runtime.
//! No request waits longer than `redis.timeout` for connecting, writing or its reply.

use crate::rate_limiting_store::{LocalWindow, RedisConf};
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// At most this many windows per request (the six periods).
pub const MAX_WINDOWS: usize = 6;
/// The counts before this request, one per window.
pub type Counts = [u64; MAX_WINDOWS];
type Answer = Result<Counts, String>;

/// Kong's usage script: count this request and answer the count before it; the first
/// increment of a window sets its expiry.
pub(crate) const USAGE_SCRIPT: &str = r#"
local cache_key, expiration = KEYS[1], ARGV[1]
local result_incr = redis.call("incr", cache_key)
if result_incr == 1 then
  redis.call("expire", cache_key, expiration)
end
return result_incr - 1
"#;

/// `EVAL <script> 1`, RESP-encoded once: each window adds its key and expiry.
static EVAL_HEAD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut b = Vec::new();
    b.extend_from_slice(b"*5\r\n");
    bulk(&mut b, b"EVAL");
    bulk(&mut b, USAGE_SCRIPT.as_bytes());
    bulk(&mut b, b"1");
    b
});

fn bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(s.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// A request waiting for its windows' replies.
struct Waiter {
    windows: u8,
    got: u8,
    counts: Counts,
    /// The first error reply: the request fails as a whole (as a failed pipeline does).
    error: Option<String>,
    tx: oneshot::Sender<Answer>,
}

struct Queue {
    /// The queued requests' commands, RESP-encoded, in queue order.
    buf: Vec<u8>,
    waiters: Vec<Waiter>,
    /// When the first of `waiters` queued: `redis.timeout` runs from there.
    since: Instant,
    /// Whether a task drives the connection.
    running: bool,
}

/// The request-path connection of one `redis` record.
pub struct Coalescer {
    conf: RedisConf,
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Coalescer {
    pub fn new(conf: RedisConf) -> Arc<Self> {
        Arc::new(Coalescer {
            conf,
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                waiters: Vec::new(),
                since: Instant::now(),
                running: false,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts this request in every window (keys `prefix` + `<start ms>:<period>`, `prefix`
    /// left as it was) and answers the counts before it, or why Redis could not.
    pub fn usage(
        self: &Arc<Self>,
        prefix: &mut String,
        windows: &[LocalWindow],
    ) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let n = windows.len().min(MAX_WINDOWS);
        let start = prefix.len();
        let mut q = self.lock();
        for w in &windows[..n] {
            w.key(prefix, start);
            q.buf.extend_from_slice(&EVAL_HEAD);
            bulk(&mut q.buf, prefix.as_bytes());
            bulk(&mut q.buf, itoa::Buffer::new().format(w.ttl).as_bytes());
        }
        prefix.truncate(start);
        if n == 0 {
            // Nothing to count (rate-limiting always has a window; kept total anyway).
            drop(q);
            return answer_of(None);
        }
        if q.waiters.is_empty() {
            q.since = Instant::now();
        }
        q.waiters.push(Waiter {
            windows: n as u8,
            got: 0,
            counts: [0; MAX_WINDOWS],
            error: None,
            tx,
        });
        let spawn = !q.running;
        q.running = true;
        let wake = q.waiters.len() == 1;
        drop(q);
        if spawn {
            let task = self.clone().drive(Running(self.clone()));
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn(task)),
                Err(_) => drop(crate::rate_limiting_store::RUNTIME.spawn(task)),
            }
        } else if wake {
            self.notify.notify_one();
        }
        answer_of(Some(rx))
    }

    /// The connection's task: sends what is queued, reads the replies, enforces the
    /// timeout; after a failure, the next request reconnects.
    async fn drive(self: Arc<Self>, _running: Running) {
        let t = Duration::from_millis(self.conf.timeout_ms);
        let mut conn: Option<Box<dyn Stream>> = None;
        let mut inflight: VecDeque<Waiter> = VecDeque::new();
        // (deadline, waiters left) per pipeline sent, oldest first
        let mut batches: VecDeque<(Instant, usize)> = VecDeque::new();
        let mut rbuf: Vec<u8> = Vec::new();
        let mut wbuf: Vec<u8> = Vec::new();
        let mut waiters: Vec<Waiter> = Vec::new();
        loop {
            let since = {
                let mut q = self.lock();
                std::mem::swap(&mut q.buf, &mut wbuf);
                std::mem::swap(&mut q.waiters, &mut waiters);
                q.since
            };
            if !waiters.is_empty() {
                // The oldest request of the batch decides (it queued first).
                let deadline = since + t;
                let sent = async {
                    if conn.is_none() {
                        conn = Some(connect(&self.conf).await?);
                    }
                    let c = conn.as_mut().expect("connected above");
                    c.write_all(&wbuf).await.map_err(|e| e.to_string())?;
                    // (TLS: the records rustls still holds)
                    c.flush().await.map_err(|e| e.to_string())
                };
                let failed = match tokio::time::timeout_at(deadline, sent).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("timeout".to_owned()),
                };
                wbuf.clear();
                match failed {
                    None => {
                        batches.push_back((deadline, waiters.len()));
                        inflight.extend(waiters.drain(..));
                    }
                    Some(e) => {
                        fail(&mut inflight, &mut waiters, &mut batches, &e);
                        conn = None;
                        rbuf.clear();
                        continue;
                    }
                }
                // On to the replies: what queued meanwhile has notified.
            }
            let Some(c) = conn.as_mut() else {
                self.notify.notified().await;
                // Let the requests made ready with this one queue too: one pipeline.
                tokio::task::yield_now().await;
                continue;
            };
            // Also while idle, so a connection Redis closed is noticed before it is used.
            let deadline = batches.front().map(|b| b.0);
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(4096);
            }
            tokio::select! {
                biased;
                r = c.read_buf(&mut rbuf) => {
                    let failed = match r {
                        Ok(0) => Some("connection closed by Redis".to_owned()),
                        Ok(_) => answer(&mut rbuf, &mut inflight, &mut batches).err(),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = failed {
                        fail(&mut inflight, &mut waiters, &mut batches, &e);
                        conn = None;
                        rbuf.clear();
                    }
                }
                _ = self.notify.notified() => tokio::task::yield_now().await,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => {
                    fail(&mut inflight, &mut waiters, &mut batches, "timeout");
                    conn = None;
                    rbuf.clear();
                }
            }
        }
    }
}

/// The answer `rx` will carry; no windows (`None`) count nothing.
async fn answer_of(rx: Option<oneshot::Receiver<Answer>>) -> Answer {
    match rx {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| Err("redis connection task ended".to_owned())),
        None => Ok([0; MAX_WINDOWS]),
    }
}

/// Clears `running` when the task ends (or is dropped with its runtime) and fails the
/// requests still queued, so the next request starts a new task.
struct Running(Arc<Coalescer>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.running = false;
        q.buf.clear();
        for w in q.waiters.drain(..) {
            let _ = w.tx.send(Err("redis connection task ended".to_owned()));
        }
    }
}

/// Every request sent or about to be fails with `e` (its replies are lost with the
/// connection).
fn fail(
    inflight: &mut VecDeque<Waiter>,
    waiters: &mut Vec<Waiter>,
    batches: &mut VecDeque<(Instant, usize)>,
    e: &str,
) {
    for w in inflight.drain(..).chain(waiters.drain(..)) {
        let _ = w.tx.send(Err(e.to_owned()));
    }
    batches.clear();
}

/// Hands the complete replies in `buf` to the oldest requests; keeps a partial reply.
fn answer(
    buf: &mut Vec<u8>,
    inflight: &mut VecDeque<Waiter>,
    batches: &mut VecDeque<(Instant, usize)>,
) -> Result<(), String> {
    let mut at = 0;
    while let Some((reply, used)) = parse(&buf[at..])? {
        at += used;
        let w = inflight
            .front_mut()
            .ok_or("a reply from Redis that nothing asked for")?;
        match reply {
            Reply::Int(n) => w.counts[w.got as usize] = n.max(0) as u64,
            Reply::Nil => {}
            Reply::Error(e) => {
                w.error.get_or_insert(e);
            }
            Reply::Status(s) => return Err(format!("unexpected reply from Redis: {s}")),
        }
        w.got += 1;
        if w.got == w.windows {
            let w = inflight.pop_front().expect("the front waiter");
            let _ = w.tx.send(match w.error {
                Some(e) => Err(e),
                None => Ok(w.counts),
            });
            if let Some(b) = batches.front_mut() {
                b.1 -= 1;
                if b.1 == 0 {
                    batches.pop_front();
                }
            }
        }
    }
    buf.drain(..at);
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Reply {
    Int(i64),
    Nil,
    Status(String),
    Error(String),
}

/// One RESP2 reply at the start of `b` and its length, `None` when incomplete. Only the
/// replies of the commands sent here (integers, nil, status, errors, a short bulk).
fn parse(b: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &b[1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let int = || {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("invalid reply from Redis: {}", text()))
    };
    let reply = match b.first() {
        Some(b':') => Reply::Int(int()?),
        Some(b'+') => Reply::Status(text()),
        Some(b'-') => Reply::Error(text()),
        Some(b'$') => match int()? {
            -1 => Reply::Nil,
            n => {
                let n = usize::try_from(n).map_err(|_| "invalid bulk length from Redis")?;
                if b.len() < end + 2 + n + 2 {
                    return Ok(None);
                }
                let s = &b[end + 2..end + 2 + n];
                let v = std::str::from_utf8(s).ok().and_then(|s| s.parse().ok());
                let used = end + 2 + n + 2;
                return Ok(Some((
                    v.map_or_else(
                        || Reply::Status(String::from_utf8_lossy(s).into()),
                        Reply::Int,
                    ),
                    used,
                )));
            }
        },
        _ => return Err(format!("unexpected reply from Redis: {}", text())),
    };
    Ok(Some((reply, end + 2)))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects as the redis crate does for this record: TCP or TLS (the web roots when
/// verifying, as its `tls-rustls-webpki-roots`), `AUTH` when a password is set (with the
/// username when one is), `SELECT` a database other than 0.
async fn connect(conf: &RedisConf) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::net::TcpStream::connect((conf.host.as_str(), conf.port))
        .await
        .map_err(|e| format!("cannot connect to Redis {}:{}: {e}", conf.host, conf.port))?;
    let _ = tcp.set_nodelay(true);
    let mut s: Box<dyn Stream> = if conf.ssl {
        let name = rustls::pki_types::ServerName::try_from(conf.host.clone())
            .map_err(|e| format!("invalid server name '{}': {e}", conf.host))?;
        let cfg = if conf.ssl_verify {
            VERIFIED.clone()
        } else {
            UNVERIFIED.clone()
        };
        Box::new(
            tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with Redis failed: {e}"))?,
        )
    } else {
        Box::new(tcp)
    };
    fn some(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    let mut hello = Vec::new();
    let mut replies = 0;
    if let Some(password) = some(&conf.password) {
        match some(&conf.username) {
            Some(user) => {
                hello.extend_from_slice(b"*3\r\n");
                bulk(&mut hello, b"AUTH");
                bulk(&mut hello, user.as_bytes());
            }
            None => {
                hello.extend_from_slice(b"*2\r\n");
                bulk(&mut hello, b"AUTH");
            }
        }
        bulk(&mut hello, password.as_bytes());
        replies += 1;
    }
    if conf.database != 0 {
        hello.extend_from_slice(b"*2\r\n");
        bulk(&mut hello, b"SELECT");
        bulk(
            &mut hello,
            itoa::Buffer::new().format(conf.database).as_bytes(),
        );
        replies += 1;
    }
    if replies > 0 {
        s.write_all(&hello).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        while replies > 0 {
            match parse(&buf)? {
                Some((reply, used)) => {
                    buf.drain(..used);
                    replies -= 1;
                    if let Reply::Error(e) = reply {
                        return Err(e);
                    }
                }
                None => {
                    if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err("connection closed by Redis".to_owned());
                    }
                }
            }
        }
    }
    Ok(s)
}

fn tls_config(verify: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    Arc::new(if verify {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tollgate_tls::NoVerify(provider)))
            .with_no_client_auth()
    })
}

static VERIFIED: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| tls_config(true));
static UNVERIFIED: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| tls_config(false));

#[cfg(test)]
#[path = "rate_limiting_redis_tests.rs"]
mod tests;
