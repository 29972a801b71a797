//! HTTP/1.1 requests without a body, served without hyper.
//!
//! Most API traffic is `GET`s: a head in, a response out. hyper's server
//! dispatch (its state machine, buffers and body channel) is about a quarter
//! of such a proxied request's instructions (bench/RESULTS.md, "Proxy
//! optimisations"). This loop reads the socket, parses each head once, judges it
//! as the [`Framer`] would (the same limits, the same framing rules) and serves
//! it when the framer would let it through as a bodiless request, calling the
//! request handler and writing the response itself. The first request it does
//! not serve, with a body, an upgrade, `Expect`, HTTP/1.0, trailers asked for,
//! a head it cannot parse or that a limit or a framing rule refuses, hands the
//! connection from that request on to hyper behind the [`Guarded`] framer,
//! which reads that head again from its start and gives the verdict (hygiene,
//! limits and error bodies do not change).
//!
//! [`Framer`]: crate::head::Framer
//! [`Guarded`]: crate::guard::Guarded

use crate::handler::{ClientBody, Reply};
use crate::head::Limits;
use crate::headers::token_is;
pub use crate::rewind::Rewind;
use bytes::BytesMut;
use futures_util::FutureExt;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING,
};
use http::{Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Heads with more headers than this go to hyper (behind the framer, which has
/// the configured limit).
const MAX_HEADERS: usize = 100;
// (`parse` tells the verdict header by its length)
const _: () = assert!(crate::guard::REJECT_HEADER.len() == 17);
/// The largest request header map a connection keeps for its next request.
const SPARE_CAPACITY: usize = 32;
/// Reads of the connection.
const READ_SIZE: usize = 8 * 1024;

/// How the loop ended.
pub enum Outcome<I> {
    /// The connection is over (closed, timed out, shut down, or failed).
    Done,
    /// hyper serves the rest, starting with the bytes already read.
    HandOver(Rewind<I>),
}

/// What [`serve`] needs to know of its listener.
pub struct Settings<'a> {
    /// The framer's limits.
    pub limits: &'a Limits,
    /// The longest wait for a request (hyper's `header_read_timeout` as the
    /// server sets it).
    pub idle: Duration,
    /// nginx's `client_header_timeout`: for the first head from the
    /// connection's start, for a later one from its first bytes.
    pub header: Duration,
    /// More than one request per connection.
    pub keep_alive: bool,
}

/// Serves bodiless HTTP/1.1 requests on `io` until the connection ends or a
/// request needs hyper; `stop`: graceful shutdown.
pub async fn serve<I, S, F>(
    mut io: I,
    settings: Settings<'_>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    mut service: S,
) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<ClientBody>) -> F,
    F: Future<Output = Reply>,
{
    let Settings {
        limits,
        idle,
        header,
        keep_alive,
    } = settings;
    let mut rbuf = BytesMut::with_capacity(READ_SIZE);
    let mut wbuf: Vec<u8> = Vec::with_capacity(1024);
    // One timer for the connection's waits. It is moved only when a wait must end
    // sooner than it is set for; one that fires early is set again for the rest. So
    // a request costs a clock read, not a timer re-registration.
    let mut timer = Box::pin(tokio::time::sleep(idle));
    // When the head being waited for is out of time: the first one counts from the
    // connection's start (nginx), a later one from its first bytes.
    let mut head_deadline = Some(tokio::time::Instant::now() + header);
    // The end of the last response (the keep-alive timeout counts from there).
    let mut idle_since = tokio::time::Instant::now();
    // Shutdown, as one future for the connection, polled only when it was woken.
    let mut stop_rx = stop.clone();
    let mut stopped = Gated::new(async move {
        let _ = stop_rx.changed().await;
    });
    // The last request's header map, emptied and filled again.
    let mut scratch = Scratch::default();
    loop {
        let (req, close_asked) = loop {
            if !rbuf.is_empty() {
                match parse(&mut rbuf, limits, &mut scratch) {
                    Parsed::Request(r, close) => break (r, close),
                    Parsed::Partial => {}
                    Parsed::Hyper => return Outcome::HandOver(Rewind::new(rbuf.freeze(), io)),
                }
            }
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(READ_SIZE);
            }
            let between = rbuf.is_empty();
            let due = if between {
                // Between requests: the keep-alive timeout, and shutdown.
                let due = idle_since + idle.max(Duration::from_millis(1));
                head_deadline.map_or(due, |h| due.min(h))
            } else {
                // Inside a head: `client_header_timeout`.
                *head_deadline.get_or_insert_with(|| tokio::time::Instant::now() + header)
            };
            if timer.deadline() > due {
                timer.as_mut().reset(due);
            }
            let n = tokio::select! {
                biased;
                r = io.read_buf(&mut rbuf) => r,
                _ = &mut stopped, if between => return Outcome::Done,
                _ = timer.as_mut() => {
                    if tokio::time::Instant::now() >= due {
                        return Outcome::Done;
                    }
                    timer.as_mut().reset(due);
                    continue;
                }
            };
            match n {
                Ok(0) | Err(_) => return Outcome::Done,
                Ok(_) => {}
            }
        };
        head_deadline = None;
        let is_head = req.method() == Method::HEAD;
        let mut resp = service(req).await;
        // (not one that grew for an unusually long head: kept per connection)
        scratch.map = resp.spare.take().filter(|m| m.capacity() <= SPARE_CAPACITY);
        let close = close_asked || !keep_alive || *stop.borrow();
        match write_response(&mut io, &mut wbuf, resp, is_head, close).await {
            Ok(true) => return Outcome::Done,
            Ok(false) => idle_since = tokio::time::Instant::now(),
            Err(e) => {
                tracing::debug!("writing a response failed: {e}");
                return Outcome::Done;
            }
        }
    }
}

/// A future polled only at first and then when its own waker fired. The
/// shutdown waiter sits in every between-requests `select!`, which polls each
/// branch whenever the connection's task wakes; polling tokio's
/// `watch::changed` there each time takes its waiters' lock (≈ 185
/// instructions a request, bench/RESULTS.md).
struct Gated<F> {
    fut: std::pin::Pin<Box<F>>,
    wake: std::sync::Arc<GateWake>,
    waker: std::task::Waker,
    polled: bool,
}

/// The gate's own waker: notes that the inner future wants a poll, then wakes
/// the task.
#[derive(Default)]
struct GateWake {
    fired: std::sync::atomic::AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for GateWake {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.fired.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future<Output = ()>> Gated<F> {
    fn new(fut: F) -> Gated<F> {
        let wake = std::sync::Arc::new(GateWake::default());
        Gated {
            fut: Box::pin(fut),
            waker: std::task::Waker::from(wake.clone()),
            wake,
            polled: false,
        }
    }
}

impl<F: Future<Output = ()>> Future for Gated<F> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        // (registered first: a wake-up from here on reaches this task)
        this.wake.task.register(cx.waker());
        let fired = this
            .wake
            .fired
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if this.polled && !fired {
            return std::task::Poll::Pending;
        }
        this.polled = true;
        this.fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&this.waker))
    }
}

/// What a connection's heads are parsed with, kept from one request to the next.
#[derive(Default)]
struct Scratch {
    /// The last request's header map, to fill again (emptied first).
    map: Option<HeaderMap>,
    /// Where each header's name and value sit in the head (not an array on the
    /// stack, which would be zeroed for every head).
    at: Vec<(u32, u32, u32, u32)>,
}

// (made and taken apart at once, on the stack: boxing would cost an allocation)
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// The request, and whether it asked to close the connection after it.
    Request(Request<ClientBody>, bool),
    Partial,
    /// Not for this loop: hyper serves it (and the rest of the connection).
    Hyper,
}

/// Parses the head at the start of `rbuf`; takes it out only when this loop
/// serves it, which is when the framer would release it as a bodiless request.
fn parse(rbuf: &mut BytesMut, limits: &Limits, scratch: &mut Scratch) -> Parsed {
    // A head within the smallest limit has each of its lines within theirs (the
    // framer's quick case, `HeadScanner::check`); a longer one is the framer's.
    let limit = limits
        .max_request_line
        .min(limits.max_header_line)
        .min(limits.max_head);
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let at = &mut scratch.at;
    at.clear();
    let mut req = httparse::Request::new(&mut []);
    let mut close = false;
    let (len, count, method, path) = {
        let buf = &rbuf[..rbuf.len().min(limit)];
        let status = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut slots[..max_headers],
        ) {
            Ok(s) => s,
            // (the framer refuses it, or hyper answers it, with its own limits)
            Err(_) => return Parsed::Hyper,
        };
        let httparse::Status::Complete(len) = status else {
            if rbuf.len() >= limit {
                return Parsed::Hyper;
            }
            return Parsed::Partial;
        };
        if req.version != Some(1) {
            return Parsed::Hyper;
        }
        let base = rbuf.as_ptr() as usize;
        let (mut hosts, mut lengths) = (0u32, 0u32);
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            // A body, an upgrade, `Expect: 100-continue` or trailers: hyper's; so is
            // what the framer refuses (`Host` missing or twice, `Content-Length`
            // twice), and the framer's verdict header (`guard.rs`), which the
            // handler looks for in hyper's requests only. (By length first: most
            // names are none of these.)
            let ours = match name.len() {
                4 => {
                    hosts += u32::from(token_is(name, b"host"));
                    false
                }
                2 => token_is(name, b"te"),
                6 => token_is(name, b"expect"),
                7 => token_is(name, b"upgrade"),
                10 => {
                    if token_is(name, b"connection") {
                        close |= h
                            .value
                            .split(|b| *b == b',')
                            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                    }
                    false
                }
                14 if token_is(name, b"content-length") => {
                    lengths += 1;
                    h.value.trim_ascii() != b"0"
                }
                17 => {
                    token_is(name, b"transfer-encoding")
                        || token_is(name, crate::guard::REJECT_HEADER.as_bytes())
                }
                _ => false,
            };
            if ours {
                return Parsed::Hyper;
            }
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            at.push((n as u32, name.len() as u32, v as u32, h.value.len() as u32));
        }
        if hosts != 1 || lengths > 1 {
            return Parsed::Hyper;
        }
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Parsed::Hyper;
        };
        let m = method.as_ptr() as usize - base;
        let p = path.as_ptr() as usize - base;
        (len, req.headers.len(), (m, method.len()), (p, path.len()))
    };
    let Ok(method) = Method::from_bytes(&rbuf[method.0..method.0 + method.1]) else {
        return Parsed::Hyper;
    };
    if method == Method::CONNECT {
        return Parsed::Hyper;
    }
    let head = rbuf.split_to(len).freeze();
    let Ok(uri) = http::Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)) else {
        // (the framer let it through; hyper answers it as before)
        return put_back(&head, rbuf);
    };
    // (room for what plugins and the proxy add)
    let mut headers = match scratch.map.take() {
        Some(mut m) => {
            m.clear();
            m.reserve(count + 4);
            m
        }
        None => HeaderMap::with_capacity(count + 4),
    };
    for &(n, nl, v, vl) in &scratch.at[..count] {
        let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
        let name = &head[n..n + nl];
        let (Ok(name), Ok(value)) = (
            crate::headers::common_request_name(name)
                .map_or_else(|| HeaderName::from_bytes(name), Ok),
            HeaderValue::from_maybe_shared(head.slice(v..v + vl)),
        ) else {
            return put_back(&head, rbuf);
        };
        headers.append(name, value);
    }
    let mut r = Request::new(ClientBody::Empty);
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.version_mut() = Version::HTTP_11;
    *r.headers_mut() = headers;
    Parsed::Request(r, close)
}

/// How many bytes of `data` the loop would serve as one bodiless request, if
/// any (for the fuzz target `request_head`, which checks that the framer
/// releases the same head).
pub(crate) fn served_len(data: &[u8], limits: &Limits) -> Option<usize> {
    let mut rbuf = BytesMut::from(data);
    match parse(&mut rbuf, limits, &mut Scratch::default()) {
        Parsed::Request(..) => Some(data.len() - rbuf.len()),
        Parsed::Partial => None,
        Parsed::Hyper => {
            assert_eq!(
                &rbuf[..],
                data,
                "a head handed to hyper must be put back whole"
            );
            None
        }
    }
}

/// Puts a head taken out of `rbuf` back in front, for hyper to read.
fn put_back(head: &[u8], rbuf: &mut BytesMut) -> Parsed {
    let mut back = BytesMut::with_capacity(head.len() + rbuf.len());
    back.extend_from_slice(head);
    back.extend_from_slice(rbuf);
    *rbuf = back;
    Parsed::Hyper
}

/// Writes `resp`; `Ok(true)` when the connection must close after it.
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    w: &mut Vec<u8>,
    reply: Reply,
    is_head: bool,
    close: bool,
) -> io::Result<bool> {
    let Reply { resp, raw, .. } = reply;
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let h = &parts.headers;
    // What framing needs, noted as the headers are read (no hashed look-ups).
    // The map's first: the upstream's lines kept as bytes carry neither
    // `Transfer-Encoding` nor `Connection` (hop-by-hop, see `upstream/raw.rs`).
    let (mut length_value, mut te, mut date, mut connection, mut close) =
        (None, false, false, false, close);
    // (the proxy's own headers that go with the lines: its map in all but name)
    let own = || raw.iter().flat_map(|r| r.own());
    for (name, value) in h.iter().chain(own()) {
        if *name == CONTENT_LENGTH {
            length_value = Some(value.as_bytes());
        } else if *name == TRANSFER_ENCODING {
            te = true;
        } else if *name == DATE {
            date = true;
        } else if *name == CONNECTION {
            connection = true;
            close |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let bodiless = is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    w.clear();
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    // (hyper's wording for a status without a reason)
    w.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    w.extend_from_slice(b"\r\n");
    // What the headers say is written as it is, except the framing headers
    // decided below.
    let skip_framing = status == StatusCode::NO_CONTENT || te;
    if let Some(r) = &raw {
        let (length, has_date) = r.write_end_to_end(h, !skip_framing, w);
        // (the map's, when it has one, is the one that counts)
        length_value = length_value.or(length);
        date |= has_date;
    }
    for (name, value) in h.iter().chain(own()) {
        if skip_framing && (*name == CONTENT_LENGTH || *name == TRANSFER_ENCODING) {
            continue;
        }
        crate::headers::put_line(w, name.as_str().as_bytes(), value.as_bytes());
    }
    // How the body goes out: its length, or chunks.
    let mut length: Option<u64> = None;
    let mut add_length: Option<u64> = None;
    let mut chunked = false;
    if status == StatusCode::NO_CONTENT {
        // (neither header belongs on a 204)
    } else if te {
        chunked = !bodiless;
    } else if let Some(v) = length_value {
        length = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if length.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response with an invalid content-length",
            ));
        }
    } else if bodiless {
        // (a HEAD, 1xx or 304 answer says only what the upstream said)
    } else if let Some(n) = hyper::body::Body::size_hint(&body).exact() {
        length = Some(n);
        add_length = Some(n);
    } else {
        chunked = true;
    }
    if chunked || (te && bodiless && status != StatusCode::NO_CONTENT) {
        w.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(n) = add_length {
        w.extend_from_slice(b"content-length: ");
        w.extend_from_slice(crate::headers::decimal(n, &mut [0u8; 20]));
        w.extend_from_slice(b"\r\n");
    }
    if close && !connection {
        w.extend_from_slice(b"connection: close\r\n");
    }
    if !date {
        w.extend_from_slice(b"date: ");
        crate::headers::http_date(w);
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"\r\n");
    drop(parts);
    drop(raw);
    if bodiless {
        io.write_all(w).await?;
        io.flush().await?;
        return Ok(close);
    }
    let chunked = length.is_none();
    let mut sent: u64 = 0;
    // The head goes out with the first piece of the body when that is ready:
    // one write for a small response.
    let mut first = body.frame().now_or_never();
    loop {
        let frame = match first.take() {
            Some(f) => f,
            None => {
                if !w.is_empty() {
                    io.write_all(w).await?;
                    io.flush().await?;
                    w.clear();
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                // (trailers: only for clients that ask, and those go to hyper)
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if length.is_some_and(|n| sent > n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response body longer than its content-length",
            ));
        }
        if chunked {
            crate::headers::push_hex(w, data.len());
            w.extend_from_slice(b"\r\n");
        }
        if data.len() <= 16 * 1024 {
            w.extend_from_slice(&data);
        } else {
            io.write_all(w).await?;
            w.clear();
            io.write_all(&data).await?;
        }
        if chunked {
            w.extend_from_slice(b"\r\n");
        }
        if hyper::body::Body::is_end_stream(&body) {
            break;
        }
        // More of the body may be ready at once: gather it before writing.
        first = body.frame().now_or_never();
    }
    if let Some(n) = length {
        if sent != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response body shorter than its content-length",
            ));
        }
    }
    if chunked {
        w.extend_from_slice(b"0\r\n\r\n");
    }
    if !w.is_empty() {
        io.write_all(w).await?;
    }
    io.flush().await?;
    Ok(close)
}

#[cfg(test)]
mod tests {
    use super::Gated;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Waker};

    #[tokio::test]
    async fn a_gated_future_is_polled_at_first_and_when_it_was_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let counted = polls.clone();
        // (the shape `serve` gives it: one `changed` future kept across polls)
        let mut changed = Box::pin(async move {
            let _ = rx.changed().await;
        });
        let mut g = Gated::new(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            changed.as_mut().poll(cx)
        }));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(std::pin::Pin::new(&mut g).poll(&mut cx).is_pending());
        assert!(std::pin::Pin::new(&mut g).poll(&mut cx).is_pending());
        assert!(std::pin::Pin::new(&mut g).poll(&mut cx).is_pending());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "polled again without a wake-up"
        );
        tx.send(true).unwrap();
        assert!(std::pin::Pin::new(&mut g).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
