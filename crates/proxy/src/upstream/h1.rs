//! HTTP/1.1 to an upstream, on the request's own task.
//!
//! hyper's client runs each connection as a task of its own, reached through a
//! channel for the request and a oneshot for the response: two tasks and three
//! wake-ups per request, about a quarter of a plain proxied request's
//! instructions (bench/RESULTS.md, "Proxy optimisations"). Here the request
//! writes its head and body straight to the socket and its response body reads
//! from it; between requests the pool holds the connection. hyper still serves
//! the clients and speaks HTTP/2 to gRPC upstreams.

use super::outgoing::Outgoing;
use super::raw::{ConnectionTokens, Kind, Line, RawHeaders};
use crate::{Body, BoxError};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The most headers an upstream response may carry (hyper's default).
const MAX_HEADERS: usize = 100;
/// The first read of a response; reads grow to [`MAX_READ`] while they fill it.
const FIRST_READ: usize = 8 * 1024;
/// The largest read, so the largest body frame a response holds while its
/// client is slow, and the largest response head accepted (nginx's
/// `proxy_buffer_size` is one page).
pub const MAX_READ: usize = 64 * 1024;
/// The longest chunk-size line (hex digits and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// An upstream connection's transport.
pub enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Tcp(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One HTTP/1.1 connection to an upstream, idle between requests.
pub struct H1 {
    io: Io,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    read_size: usize,
}

/// Why a request failed on a connection.
pub enum Failure {
    /// Nothing of the request reached the upstream (a stale keep-alive
    /// connection): the request comes back, to be sent on another.
    NotSent(Box<Request<Body>>, BoxError),
    Failed(BoxError),
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Read to its end.
    Done,
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Eof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A response head read from the upstream.
pub struct Head {
    /// (its headers empty when they are kept in `raw`)
    pub parts: http::response::Parts,
    raw: Option<RawHeaders>,
    framing: Framing,
    keep_alive: bool,
}

fn err(msg: &'static str) -> BoxError {
    Box::new(io::Error::new(io::ErrorKind::InvalidData, msg))
}

fn closed() -> BoxError {
    Box::new(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream closed the connection before sending a response",
    ))
}

impl H1 {
    pub fn new(io: Io) -> H1 {
        H1 {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::with_capacity(1024),
            read_size: FIRST_READ,
        }
    }

    /// Whether the upstream closed (or broke) the connection while it was idle.
    /// Costs no system call unless the socket turned readable since its last
    /// read: tokio clears readiness on a short read, and only an event sets it.
    pub fn is_closed(&self) -> bool {
        let tcp = self.io.tcp();
        let mut b = [MaybeUninit::<u8>::uninit(); 1];
        match tcp.try_io(Interest::READABLE, || {
            socket2::SockRef::from(tcp).peek(&mut b)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Ok(0) | Err(_) => true,
            // Bytes nobody asked for on plain text: the connection is out of step.
            // Over TLS they may be a session ticket, read with the next response.
            Ok(_) => matches!(self.io, Io::Tcp(_)),
        }
    }

    /// Sends `req` and reads the response head. `reused`: the connection
    /// carried a request before (a failure before any byte of the response is
    /// then a stale connection, and the request is handed back if it is whole).
    /// `out`: the request's headers; `raw`: see [`parse_head`].
    pub async fn send(
        &mut self,
        mut req: Request<Body>,
        out: &Outgoing<'_>,
        reused: bool,
        raw: bool,
    ) -> Result<Head, Failure> {
        let method = req.method().clone();
        let framing = match self.encode_head(&req, out) {
            Ok(f) => f,
            Err(e) => return Err(Failure::Failed(e)),
        };
        if let Err(e) = self.io.write_all(&self.wbuf).await {
            return Err(Failure::NotSent(Box::new(req), Box::new(e)));
        }
        let whole = match framing {
            None => true,
            Some(f) => {
                let body = std::mem::replace(req.body_mut(), crate::empty_body());
                if let Err(e) = self.write_body(body, f).await {
                    // The upstream may have answered early and stopped reading.
                    return match e {
                        WriteError::Io(e) => match self.read_head(&method, raw).await {
                            Ok(mut h) => {
                                h.keep_alive = false;
                                Ok(h)
                            }
                            Err(_) => Err(Failure::Failed(Box::new(e))),
                        },
                        WriteError::Body(e) => Err(Failure::Failed(e)),
                    };
                }
                false
            }
        };
        if let Err(e) = self.io.flush().await {
            return Err(Failure::Failed(Box::new(e)));
        }
        match self.read_head(&method, raw).await {
            Ok(h) => Ok(h),
            Err(ReadError::Closed(e)) if reused && whole => Err(Failure::NotSent(Box::new(req), e)),
            Err(ReadError::Closed(e) | ReadError::Other(e)) => Err(Failure::Failed(e)),
        }
    }

    /// Writes the request head into `wbuf`, its headers `out`'s; returns how
    /// the body follows (`None`: no body).
    fn encode_head(
        &mut self,
        req: &Request<Body>,
        out: &Outgoing<'_>,
    ) -> Result<Option<BodyOut>, BoxError> {
        use hyper::body::Body as _;
        let w = &mut self.wbuf;
        w.clear();
        request_line(w, req, out.target);
        // (`Transfer-Encoding` is hop-by-hop: not among the client's headers
        // passed on, and the proxy sets none but the one below)
        let mut length = None;
        for (name, value) in out.iter() {
            if *name == CONTENT_LENGTH {
                length = Some(value);
            }
            crate::headers::put_line(w, name.as_str().as_bytes(), value);
        }
        let body = if req.body().is_end_stream() {
            None
        } else if let Some(v) = length {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| err("invalid content-length in the request to the upstream"))?;
            Some(BodyOut::Length(n))
        } else if let Some(n) = req.body().size_hint().exact() {
            w.extend_from_slice(b"content-length: ");
            w.extend_from_slice(crate::headers::decimal(n, &mut [0u8; 20]));
            w.extend_from_slice(b"\r\n");
            Some(BodyOut::Length(n))
        } else {
            w.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Some(BodyOut::Chunked)
        };
        w.extend_from_slice(b"\r\n");
        Ok(body)
    }

    async fn write_body(&mut self, mut body: Body, out: BodyOut) -> Result<(), WriteError> {
        let mut sent: u64 = 0;
        let mut trailers: Option<HeaderMap> = None;
        while let Some(f) = body.frame().await {
            let f = f.map_err(WriteError::Body)?;
            let data = match f.into_data() {
                Ok(d) => d,
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers = Some(t);
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            match out {
                BodyOut::Length(n) => {
                    if sent > n {
                        return Err(WriteError::Body(err(
                            "request body longer than its content-length",
                        )));
                    }
                    self.io.write_all(&data).await.map_err(WriteError::Io)?;
                }
                BodyOut::Chunked => {
                    let w = &mut self.wbuf;
                    w.clear();
                    crate::headers::push_hex(w, data.len());
                    w.extend_from_slice(b"\r\n");
                    // Small chunks go out in one write with their framing.
                    if data.len() <= 16 * 1024 {
                        w.extend_from_slice(&data);
                        w.extend_from_slice(b"\r\n");
                        self.io
                            .write_all(&self.wbuf)
                            .await
                            .map_err(WriteError::Io)?;
                    } else {
                        self.io
                            .write_all(&self.wbuf)
                            .await
                            .map_err(WriteError::Io)?;
                        self.io.write_all(&data).await.map_err(WriteError::Io)?;
                        self.io.write_all(b"\r\n").await.map_err(WriteError::Io)?;
                    }
                }
            }
        }
        match out {
            BodyOut::Length(n) if sent != n => Err(WriteError::Body(err(
                "request body shorter than its content-length",
            ))),
            BodyOut::Length(_) => Ok(()),
            BodyOut::Chunked => {
                let w = &mut self.wbuf;
                w.clear();
                w.extend_from_slice(b"0\r\n");
                for (name, value) in trailers.iter().flatten() {
                    w.extend_from_slice(name.as_str().as_bytes());
                    w.extend_from_slice(b": ");
                    w.extend_from_slice(value.as_bytes());
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"\r\n");
                self.io.write_all(&self.wbuf).await.map_err(WriteError::Io)
            }
        }
    }

    /// Reads more of the response into `rbuf`; `Ok(0)` at the upstream's close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if spare < 1024 {
            self.rbuf.reserve(self.read_size);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        // (hyper's adaptive reads: a read that filled its room asks for more)
        if n == room && self.read_size < MAX_READ {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(n))
    }

    async fn read_head(&mut self, method: &Method, raw: bool) -> Result<Head, ReadError> {
        let mut got_any = false;
        loop {
            if !self.rbuf.is_empty() {
                got_any = true;
                match parse_head(&mut self.rbuf, method, raw).map_err(ReadError::Other)? {
                    // Interim responses (100 Continue, 103 Early Hints) are not forwarded.
                    Some(h)
                        if h.parts.status.is_informational()
                            && h.parts.status != StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        continue
                    }
                    Some(h) => return Ok(h),
                    None if self.rbuf.len() >= MAX_READ => {
                        return Err(ReadError::Other(err("upstream response head too large")))
                    }
                    None => {}
                }
            }
            let n = std::future::poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(|e| {
                    if got_any {
                        ReadError::Other(Box::new(e))
                    } else {
                        ReadError::Closed(Box::new(e))
                    }
                })?;
            if n == 0 {
                return Err(if got_any {
                    ReadError::Other(err("upstream closed the connection in the response head"))
                } else {
                    ReadError::Closed(closed())
                });
            }
        }
    }
}

/// `METHOD target HTTP/1.1` and its line end; the target is `target`, or the
/// request's URI.
fn request_line(w: &mut Vec<u8>, req: &Request<Body>, target: Option<&str>) {
    w.extend_from_slice(req.method().as_str().as_bytes());
    w.push(b' ');
    let uri = req.uri();
    match (target, uri.scheme(), uri.path_and_query()) {
        (Some(t), ..) => w.extend_from_slice(t.as_bytes()),
        (None, None, Some(pq)) => w.extend_from_slice(pq.as_str().as_bytes()),
        (None, None, None) => w.push(b'/'),
        (None, Some(_), _) => w.extend_from_slice(uri.to_string().as_bytes()),
    }
    w.extend_from_slice(b" HTTP/1.1\r\n");
}

enum ReadError {
    /// Closed or broken before any byte of a response.
    Closed(BoxError),
    Other(BoxError),
}

enum WriteError {
    Io(io::Error),
    /// The request body itself failed (the client's side).
    Body(BoxError),
}

#[derive(Clone, Copy)]
enum BodyOut {
    Length(u64),
    Chunked,
}

/// Parses a response head at the start of `rbuf` and takes it out; `None`
/// while it is incomplete. `raw`: keep the header lines as bytes
/// ([`RawHeaders`]) instead of building the head's map, unless the head
/// switches protocols or its `Connection` names other headers.
fn parse_head(rbuf: &mut BytesMut, method: &Method, raw: bool) -> Result<Option<Head>, BoxError> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let mut lines: Vec<Line>;
    let (len, code, version) = {
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, rbuf, &mut slots)
            .map_err(|e| {
                Box::new(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid upstream response head: {e}"),
                )) as BoxError
            })?;
        let httparse::Status::Complete(len) = status else {
            return Ok(None);
        };
        let base = rbuf.as_ptr() as usize;
        lines = crate::upstream::raw::line_buffer(res.headers.len());
        for h in res.headers.iter() {
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            let kind = Kind::of(h.name.as_bytes());
            lines.push(Line::new((n, h.name.len()), (v, h.value.len()), kind));
        }
        (len, res.code.unwrap_or(0), res.version.unwrap_or(1))
    };
    let head = rbuf.split_to(len).freeze();
    // What framing needs, noted from the lines' kinds (no hashed look-ups).
    let mut lengths: Option<Result<u64, ()>> = None;
    let mut last_coding_chunked: Option<bool> = None;
    let mut connection = ConnectionTokens::default();
    for l in &lines {
        let bytes = &head[l.value_range()];
        match l.kind {
            Kind::ContentLength => {
                lengths = Some(match (lengths, content_length(bytes)) {
                    (None, Some(n)) => Ok(n),
                    (Some(Ok(a)), Some(b)) if a == b => Ok(a),
                    _ => Err(()),
                });
            }
            Kind::TransferEncoding => {
                if let Some(t) = bytes
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .rfind(|t| !t.is_empty())
                {
                    last_coding_chunked = Some(t.eq_ignore_ascii_case(b"chunked"));
                }
                last_coding_chunked.get_or_insert(false);
            }
            Kind::Connection => connection.add(bytes),
            _ => {}
        }
    }
    let status =
        StatusCode::from_u16(code).map_err(|_| err("invalid status in the upstream response"))?;
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut keep_alive = if version == Version::HTTP_11 {
        !connection.close
    } else {
        connection.keep_alive
    };
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which an
    // intermediary must then drop.
    let drop_length = last_coding_chunked.is_some() && lengths.is_some();
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Done
    } else if let Some(chunked) = last_coding_chunked {
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Framing::Eof
        }
    } else {
        match lengths {
            Some(Ok(0)) => Framing::Done,
            Some(Ok(n)) => Framing::Length(n),
            Some(Err(())) => return Err(err("invalid content-length in the upstream response")),
            None => {
                keep_alive = false;
                Framing::Eof
            }
        }
    };
    let lines = RawHeaders::new(head, lines, drop_length);
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    let raw = if raw && status != StatusCode::SWITCHING_PROTOCOLS && !connection.others {
        Some(lines)
    } else {
        // (room for the headers the proxy adds to a response: Via, latencies, ids)
        parts.headers = lines.to_map(6).map_err(err)?;
        None
    };
    Ok(Some(Head {
        parts,
        raw,
        framing,
        keep_alive,
    }))
}

/// The one value of a Content-Length header (a list must repeat one number).
fn content_length(v: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

impl Head {
    /// The header lines, when they were kept as bytes (`send`'s `raw`).
    pub fn take_raw(&mut self) -> Option<RawHeaders> {
        self.raw.take()
    }

    /// The response's head and its body read from `conn`, or for `101
    /// Switching Protocols`, the connection as a tunnel.
    pub fn finish(self, conn: H1) -> (http::response::Parts, Result<H1Body, Upgraded>) {
        let body = if self.parts.status == StatusCode::SWITCHING_PROTOCOLS {
            Err(Upgraded::new(conn.rbuf.freeze(), conn.io))
        } else {
            Ok(H1Body {
                conn,
                framing: self.framing,
                keep_alive: self.keep_alive,
            })
        };
        (self.parts, body)
    }
}

/// A response body read from its connection.
pub struct H1Body {
    conn: H1,
    framing: Framing,
    keep_alive: bool,
}

impl H1Body {
    /// The connection, if the response was read to its end and the connection
    /// can carry another request.
    pub fn reusable(self) -> Option<H1> {
        (self.framing == Framing::Done && self.keep_alive && self.conn.rbuf.is_empty())
            .then_some(self.conn)
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match step(&mut self.framing, &mut self.conn.rbuf)? {
                Step::Data(d) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Step::Trailers(t) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Step::End => return Poll::Ready(None),
                Step::More => {
                    if ready!(self.conn.poll_fill(cx))? == 0 {
                        if self.framing == Framing::Eof {
                            self.framing = Framing::Done;
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Err(err(
                            "upstream closed the connection before the body's end",
                        ))));
                    }
                }
            }
        }
    }
}

/// What the bytes read so far give.
pub enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// Read more first.
    More,
}

/// Decodes the next piece of a body framed by `framing` from `rbuf`: no I/O,
/// so the whole decoder is fuzzed (`fuzz_targets/upstream_response.rs`).
fn step(framing: &mut Framing, rbuf: &mut BytesMut) -> Result<Step, BoxError> {
    loop {
        match *framing {
            Framing::Done => return Ok(Step::End),
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                if rbuf.is_empty() {
                    return Ok(Step::More);
                }
                let take = (rbuf.len() as u64).min(left) as usize;
                let left = left - take as u64;
                *framing = match (*framing, left) {
                    (Framing::Length(_), 0) => Framing::Done,
                    (Framing::Length(_), n) => Framing::Length(n),
                    (_, 0) => Framing::Chunked(Chunk::DataEnd),
                    (_, n) => Framing::Chunked(Chunk::Data(n)),
                };
                return Ok(Step::Data(rbuf.split_to(take).freeze()));
            }
            Framing::Eof => {
                if rbuf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(rbuf.split().freeze()));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(line) = take_line(rbuf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::More);
                };
                let size = parse_chunk_size(&line)
                    .ok_or_else(|| err("upstream chunked body: invalid chunk size"))?;
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::DataEnd) => {
                let Some(line) = take_line(rbuf, 0)? else {
                    return Ok(Step::More);
                };
                if !line.is_empty() {
                    return Err(err("upstream chunked body: chunk longer than its size"));
                }
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                if rbuf.starts_with(b"\r\n") {
                    let _ = rbuf.split_to(2);
                    *framing = Framing::Done;
                    return Ok(Step::End);
                }
                let Some(i) = rbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if rbuf.len() > MAX_READ {
                        return Err(err("upstream chunked body: trailers too large"));
                    }
                    return Ok(Step::More);
                };
                let block = rbuf.split_to(i + 4);
                *framing = Framing::Done;
                return parse_trailers(&block).map(Step::Trailers);
            }
        }
    }
}

/// The first line in `rbuf` (without its CRLF), taken out; `None` while it
/// is incomplete; an error past `max` bytes.
fn take_line(rbuf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, BoxError> {
    match rbuf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= max => {
            let line = rbuf.split_to(i + 2).freeze();
            Ok(Some(line.slice(..i)))
        }
        Some(_) => Err(err("upstream chunked body: line too long")),
        None if rbuf.len() > max + 1 => Err(err("upstream chunked body: line too long")),
        None => Ok(None),
    }
}

fn parse_trailers(block: &[u8]) -> Result<HeaderMap, BoxError> {
    let bad = || err("upstream chunked body: invalid trailers");
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let httparse::Status::Complete((_, list)) =
        httparse::parse_headers(block, &mut slots).map_err(|_| bad())?
    else {
        return Err(bad());
    };
    let mut map = HeaderMap::with_capacity(list.len());
    for h in list {
        let n = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad())?;
        let v = HeaderValue::from_bytes(h.value).map_err(|_| bad())?;
        map.append(n, v);
    }
    Ok(map)
}

/// Decodes a response held in `raw`, fed to the decoder `piece` bytes at a
/// time (the fuzz target's entry): its body bytes as far as `raw` goes, or
/// `None` while the head is incomplete.
pub fn decode_all(raw: &[u8], method: &Method, piece: usize) -> Result<Option<Vec<u8>>, BoxError> {
    let mut pieces = raw.chunks(piece.max(1));
    let mut rbuf = BytesMut::new();
    let head = loop {
        match parse_head(&mut rbuf, method, false)? {
            Some(h)
                if h.parts.status.is_informational()
                    && h.parts.status != StatusCode::SWITCHING_PROTOCOLS => {}
            Some(h) => break h,
            None => match pieces.next() {
                Some(p) => rbuf.extend_from_slice(p),
                None => return Ok(None),
            },
        }
    };
    let mut framing = head.framing;
    let mut body = Vec::new();
    loop {
        match step(&mut framing, &mut rbuf)? {
            Step::Data(d) => body.extend_from_slice(&d),
            Step::Trailers(_) => {}
            Step::End => return Ok(Some(body)),
            Step::More => match pieces.next() {
                Some(p) => rbuf.extend_from_slice(p),
                None => return Ok(Some(body)),
            },
        }
    }
}

/// Parses the head at the start of `raw` both ways — into a map, and as lines
/// kept as bytes — and checks they agree: the same framing, the lines' map the
/// same as the map, and what the lines carry on to a client the same as the map
/// less its hop-by-hop headers (the fuzz target's check of `upstream/raw.rs`).
pub fn check_raw_head(raw: &[u8], method: &Method) {
    let mapped = parse_head(&mut BytesMut::from(raw), method, false);
    let kept = parse_head(&mut BytesMut::from(raw), method, true);
    let (m, k) = match (mapped, kept) {
        (Ok(Some(m)), Ok(Some(k))) => (m, k),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => return,
        (a, b) => panic!(
            "map: {:?}, lines: {:?}",
            a.map(|h| h.is_some()).map_err(|e| e.to_string()),
            b.map(|h| h.is_some()).map_err(|e| e.to_string())
        ),
    };
    assert_eq!((m.framing, m.keep_alive), (k.framing, k.keep_alive));
    assert_eq!(m.parts.status, k.parts.status);
    let Some(lines) = k.raw else {
        assert_eq!(m.parts.headers, k.parts.headers);
        return;
    };
    assert!(k.parts.headers.is_empty());
    assert_eq!(lines.to_map(0).ok().as_ref(), Some(&m.parts.headers));
    lines.check_written(&HeaderMap::new());
    let mut end_to_end = m.parts.headers;
    crate::headers::remove_hop_by_hop(&mut end_to_end);
    end_to_end.remove(&crate::headers::TRAILER);
    assert_eq!(lines.merge(HeaderMap::new()).ok(), Some(end_to_end));
}

impl hyper::body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().poll_next(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }
    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// A chunk-size line: hex digits, then optional `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = (b as char).to_digit(16)?;
        n = n * 16 + u64::from(d);
    }
    Some(n)
}

/// The upstream side of a tunnel after `101 Switching Protocols`: the bytes
/// the upstream sent after its head, then the connection.
pub type Upgraded = crate::rewind::Rewind<Io>;

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], method: Method) -> Result<Option<Head>, BoxError> {
        let mut b = BytesMut::from(raw);
        parse_head(&mut b, &method, false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.parts.headers.contains_key(CONTENT_LENGTH));
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Eof);
        assert!(!h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Done);
        let h = head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        assert!(head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            Method::GET
        )
        .is_err());
        assert!(head(
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            Method::GET
        )
        .is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
            .unwrap()
            .is_none());
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"0;ext=1"), Some(0));
        assert_eq!(parse_chunk_size(b"F "), Some(15));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"1234567890abcdef0"), None);
        let mut w = Vec::new();
        crate::headers::push_hex(&mut w, 0x1f40);
        assert_eq!(w, b"1f40");
    }
}
