//! The connection wrapper that runs the [`Framer`](crate::head::Framer)
//! between the client socket and hyper's HTTP/1 parser.
//!
//! Bytes reach hyper only once the framer has accepted them. A refused head
//! never reaches hyper: in its place hyper reads a synthetic request that
//! carries the verdict in a header whose value holds a per-process secret
//! ([`reject_token`]), then end-of-stream. hyper so answers the earlier
//! (pipelined) requests first, then hands the synthetic one to the request
//! handler, which answers it with Kong's error body and closes the
//! connection. A malformed chunked body makes the read fail, which fails the
//! request body (the handler answers 400 when it can).

use crate::head::{Framer, Reject, Step};
use futures_util::task::AtomicWaker;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Name of the header of synthetic requests.
pub const REJECT_HEADER: &str = "x-tollgate-reject";
/// [`REJECT_HEADER`] parsed (looked up on every request).
pub static REJECT: http::HeaderName = http::HeaderName::from_static(REJECT_HEADER);

/// The per-process secret that marks synthetic requests (a client cannot
/// forge one).
pub fn reject_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

/// If `value` is a genuine verdict header value, the verdict.
pub fn parse_reject(value: &[u8]) -> Option<Reject> {
    let v = std::str::from_utf8(value).ok()?;
    let (tok, status) = v.split_once(' ')?;
    if tok != reject_token() {
        return None;
    }
    Reject::from_status(status.parse().ok()?)
}

fn synthetic(r: Reject, accept: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!(
        "GET / HTTP/1.1\r\nhost: tollgate\r\n{REJECT_HEADER}: {} {}\r\nconnection: close\r\n",
        reject_token(),
        r.nginx_status()
    )
    .into_bytes();
    if let Some(a) = accept {
        if a.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)) {
            out.extend_from_slice(b"accept: ");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Shared between the wrapper and the request service of one connection:
/// the outcome of a request that asked for an upgrade.
#[derive(Default, Debug)]
pub struct UpgradeSignal {
    /// 0 unknown, 1 upgraded, 2 not upgraded.
    state: AtomicU8,
    waker: AtomicWaker,
}

impl UpgradeSignal {
    /// Records the response to an upgrade request.
    pub fn resolve(&self, upgraded: bool) {
        self.state
            .store(if upgraded { 1 } else { 2 }, Ordering::Release);
        self.waker.wake();
    }

    fn take(&self) -> Option<bool> {
        match self.state.swap(0, Ordering::AcqRel) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }
}

/// Whether hyper treats `req` as an upgrade request (its own rule).
pub fn is_upgrade_request<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        || (req.version() == http::Version::HTTP_11
            && req.headers().contains_key(http::header::UPGRADE))
}

/// Whether `status` answered an upgrade request by upgrading.
pub fn upgraded<B>(req_method: &http::Method, resp: &http::Response<B>) -> bool {
    resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
        || (req_method == http::Method::CONNECT && resp.status().is_success())
}

/// The guarded connection.
pub struct Guarded<I> {
    inner: I,
    framer: Framer,
    /// Received, not yet released.
    pending: Vec<u8>,
    /// Front bytes of `pending` already accepted.
    ready: usize,
    synthetic: Option<(Vec<u8>, usize)>,
    closed: bool,
    /// The synthetic request went out: no more reads.
    parked: bool,
    failed: bool,
    passthrough: bool,
    signal: Arc<UpgradeSignal>,
    /// nginx `client_header_timeout`, from the first bytes of a head (the idle time
    /// before them is hyper's, `keepalive_timeout`).
    head_timer: HeadTimer,
}

/// The timeout of a head in progress, armed only when a head has to wait for more
/// bytes: a head that arrives in one read costs nothing.
struct HeadTimer {
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl HeadTimer {
    /// A head is waiting for bytes: `Ready` once it has waited `timeout` in all.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + timeout;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<I> Guarded<I> {
    pub fn new(inner: I, framer: Framer, signal: Arc<UpgradeSignal>) -> Guarded<I> {
        Guarded {
            inner,
            framer,
            pending: Vec::new(),
            ready: 0,
            synthetic: None,
            closed: false,
            parked: false,
            failed: false,
            passthrough: false,
            signal,
            head_timer: HeadTimer {
                timeout: None,
                sleep: None,
                armed: false,
            },
        }
    }

    /// Closes the connection when a head takes longer than `d` from its first bytes
    /// (nginx `client_header_timeout`).
    pub fn with_header_timeout(mut self, d: Duration) -> Guarded<I> {
        self.head_timer.timeout = Some(d);
        self
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// Runs the framer over `data`; returns how many front bytes are
    /// accepted (the decision about the rest is left in `self`) and whether
    /// it is blocked waiting for an upgrade decision.
    fn run(&mut self, data: &[u8], cx: &mut Context<'_>) -> (usize, bool) {
        let mut off = 0;
        while off < data.len() {
            match self.framer.step(&data[off..]) {
                Step::Release(n) => off += n,
                Step::NeedMore => return (off, false),
                Step::Passthrough => {
                    self.passthrough = true;
                    return (data.len(), false);
                }
                Step::UpgradeWait => match self.signal.take() {
                    Some(u) => self.framer.upgrade_resolved(u),
                    None => {
                        self.signal.waker.register(cx.waker());
                        match self.signal.take() {
                            Some(u) => self.framer.upgrade_resolved(u),
                            None => return (off, true),
                        }
                    }
                },
                Step::Reject(r, accept) => {
                    let a = accept.and_then(|a| data[off..].get(a));
                    self.synthetic = Some((synthetic(r, a), 0));
                    return (off, false);
                }
                Step::BadChunk => {
                    self.failed = true;
                    return (off, false);
                }
            }
        }
        (off, false)
    }
}

fn copy_out(src: &[u8], buf: &mut ReadBuf<'_>) -> usize {
    let n = src.len().min(buf.remaining());
    buf.put_slice(&src[..n]);
    n
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = copy_out(&this.pending[..this.ready], buf);
                this.pending.drain(..n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some((s, at)) = &mut this.synthetic {
                let n = copy_out(&s[*at..], buf);
                *at += n;
                if *at == s.len() {
                    this.synthetic = None;
                    this.parked = true;
                    this.pending = Vec::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.parked {
                // Not EOF: hyper (without half-close) would drop the
                // connection before answering the synthetic request, whose
                // `connection: close` ends the connection once answered.
                return Poll::Pending;
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "invalid chunked request body",
                )));
            }
            if this.passthrough {
                if !this.pending.is_empty() {
                    let n = copy_out(&this.pending, buf);
                    this.pending.drain(..n);
                    return Poll::Ready(Ok(()));
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if !this.pending.is_empty() {
                let data = std::mem::take(&mut this.pending);
                let (n, blocked) = this.run(&data, cx);
                this.pending = data;
                this.ready = n;
                if n > 0 {
                    // a head went through whole
                    this.head_timer.armed = false;
                }
                if blocked && n == 0 {
                    return Poll::Pending;
                }
                if n > 0 || this.synthetic.is_some() || this.failed || this.passthrough || blocked {
                    continue;
                }
                // need more bytes: read them behind the pending ones
                let mut tmp = [0u8; 8192];
                let mut rb = ReadBuf::new(&mut tmp);
                match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        if this.framer.in_head() && this.head_timer.poll_expired(cx).is_ready() {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "client header timed out",
                            )));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        if rb.filled().is_empty() {
                            // EOF inside a head: let hyper see what there is
                            this.ready = this.pending.len();
                            this.closed = true;
                            if this.ready == 0 {
                                return Poll::Ready(Ok(()));
                            }
                        } else {
                            this.pending.extend_from_slice(rb.filled());
                        }
                        continue;
                    }
                }
            }
            // Nothing pending: read straight into hyper's buffer and check
            // the new bytes in place.
            let start = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Pending => {
                    // A new connection waits for its first request under the header
                    // timeout too (nginx), not the keep-alive one.
                    if this.framer.at_start() && this.head_timer.poll_expired(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client header timed out",
                        )));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let end = buf.filled().len();
            if end == start {
                return Poll::Ready(Ok(()));
            }
            let n = {
                let new = &buf.filled()[start..end];
                let (n, _blocked) = this.run(new, cx);
                if n < new.len() {
                    this.pending.extend_from_slice(&new[n..]);
                }
                n
            };
            if this.passthrough {
                // everything read is fine as is
                this.pending.clear();
                return Poll::Ready(Ok(()));
            }
            buf.set_filled(start + n);
            if n > 0 {
                // a head went through whole: the next one gets a timer of its own (this
                // one may have been armed while the connection waited for its first)
                this.head_timer.armed = false;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
