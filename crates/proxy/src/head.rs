//! HTTP/1.x request-head hygiene on the raw bytes, before hyper parses them.
//!
//! hyper follows RFC 9112 and quietly repairs some ambiguous messages (it
//! drops `Content-Length` when `Transfer-Encoding` is present); nginx, and so
//! Kong, refuses them with 400. It also has no notion of nginx's
//! `large_client_header_buffers`. The [`Framer`] here walks the byte stream of
//! one client connection message by message (head, then the body framed by
//! `Content-Length` or chunked encoding, then the next head) and decides, for
//! every head, whether hyper may see it:
//!
//! | shape | answer (nginx/Kong) |
//! |---|---|
//! | request line longer than `max_request_line` (8 KiB) | 414 `URI too long` |
//! | a header line longer than `max_header_line` (8 KiB), or the head longer than `max_head` (32 KiB) | nginx 494, which Kong answers as 400 `Request header or cookie too large` |
//! | more than `max_headers` header lines | as above (400) |
//! | `Content-Length` and `Transfer-Encoding` together | 400 |
//! | `Content-Length` twice (even equal), signed, empty or not a number | 400 |
//! | `Transfer-Encoding` twice, or in HTTP/1.0 | 400 |
//! | `Transfer-Encoding` other than `chunked` | 501 (nginx: "unknown Transfer-Encoding") |
//! | `Host` twice, or HTTP/1.1 without `Host` | 400 |
//! | obs-fold (a header line starting with a space or tab), bad bytes | 400 |
//!
//! Chunked bodies are followed with hyper's own grammar; a malformed chunk
//! (bad size, missing CRLF, overflow) ends the connection with a read error,
//! which the request handler reports as 400.
//!
//! Everything here is pure (no I/O), so the fuzz target `request_head` drives
//! it directly.

use std::mem::MaybeUninit;
use std::ops::Range;

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// nginx's `large_client_header_buffers 4 8k` and friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, with its line end (nginx: one large buffer).
    pub max_request_line: usize,
    /// Longest header line, with its line end (nginx: one large buffer).
    pub max_header_line: usize,
    /// Longest request head, request line to the empty line included
    /// (nginx: number × size of the large buffers).
    pub max_head: usize,
    /// Most header lines.
    pub max_headers: usize,
}

/// Default for [`Limits::max_headers`]: 100, as Kong's `lua_max_req_headers`
/// default. nginx itself has no count limit (freenginx's `max_headers`, which the
/// `nginx_http_max_headers` / `nginx_proxy_max_headers` keys set here, defaults to
/// 1000); a hard cap keeps the per-request work bounded (every header is parsed,
/// indexed and forwarded), and 100 is far above what clients send.
pub const DEFAULT_MAX_HEADERS: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8192,
            max_header_line: 8192,
            max_head: 4 * 8192,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

impl Limits {
    /// Limits from nginx's `large_client_header_buffers` value (`"4 8k"`),
    /// as Kong's injected `nginx_http_large_client_header_buffers` /
    /// `nginx_proxy_large_client_header_buffers` keys carry it.
    pub fn from_large_client_header_buffers(v: &str) -> Option<Limits> {
        let mut it = v.split_whitespace();
        let n: usize = it.next()?.parse().ok()?;
        let size = parse_size(it.next()?)?;
        if it.next().is_some() || n == 0 || size == 0 {
            return None;
        }
        Some(Limits {
            max_request_line: size,
            max_header_line: size,
            max_head: n.saturating_mul(size),
            ..Limits::default()
        })
    }
}

/// nginx size syntax: `8192`, `8k`, `1m`, `1g`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<usize>().ok()?.checked_mul(mul)
}

/// Why a head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// 414.
    UriTooLong,
    /// nginx 494, answered as 400 `Request header or cookie too large`.
    HeaderTooLarge,
    /// 400.
    BadRequest,
    /// 501 (unknown `Transfer-Encoding`).
    NotImplemented,
}

impl Reject {
    /// The status nginx decides on (494 for header size).
    pub fn nginx_status(self) -> u16 {
        match self {
            Reject::UriTooLong => 414,
            Reject::HeaderTooLarge => 494,
            Reject::BadRequest => 400,
            Reject::NotImplemented => 501,
        }
    }

    /// From [`Reject::nginx_status`].
    pub fn from_status(s: u16) -> Option<Reject> {
        Some(match s {
            414 => Reject::UriTooLong,
            494 => Reject::HeaderTooLarge,
            400 => Reject::BadRequest,
            501 => Reject::NotImplemented,
            _ => return None,
        })
    }

    /// The status the client sees (`kong/error_handlers.lua` maps 494 to 400).
    pub fn status(self) -> u16 {
        match self.nginx_status() {
            494 => 400,
            s => s,
        }
    }
}

/// How the body after a head is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A head that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, leading empty lines and the final empty line included.
    pub len: usize,
    pub framing: Framing,
    /// hyper will treat the request as an upgrade (an `Upgrade` header in
    /// HTTP/1.1, or `CONNECT`): what follows may be a tunnel.
    pub upgrade: bool,
}

/// Result of [`HeadScanner::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadCheck {
    /// Not the whole head yet (and no limit exceeded so far).
    Partial,
    Complete(Head),
    /// Refused; `accept` is the range of the `Accept` header's value in the
    /// input when the head could be parsed (for the error body's format).
    Reject(Reject, Option<Range<usize>>),
}

/// Scans a request head incrementally: the line limits are checked as bytes
/// arrive (so a slow client cannot make us rescan), the whole head is parsed
/// with `httparse` (hyper's parser, same settings) once complete.
#[derive(Clone, Debug, Default)]
pub struct HeadScanner {
    /// Bytes already scanned.
    pos: usize,
    /// Start of the current line.
    line_start: usize,
    /// Whether the request line has been seen (leading empty lines are skipped).
    seen_request_line: bool,
    /// Header lines seen.
    lines: usize,
}

fn header_is(name: &str, want: &str) -> bool {
    name.eq_ignore_ascii_case(want)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

fn range_in(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

/// Parses a `Content-Length` value like nginx: digits only, no sign, no
/// list, no overflow.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// RFC 9110 `tchar`, what a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `partial`, the start of a request line (no line end yet), may still become
/// one: its method so far is a token (a lone CR may begin an empty line).
fn could_start_request_line(partial: &[u8]) -> bool {
    let method = partial.split(|b| *b == b' ').next().unwrap_or_default();
    method == b"\r" || method.iter().all(|b| is_tchar(*b))
}

impl HeadScanner {
    /// Forget any progress (the next call starts a new head).
    pub fn reset(&mut self) {
        *self = HeadScanner::default();
    }

    /// Checks `buf`, which holds the head from its first byte (and maybe
    /// more). Must be called with the same (growing) buffer until it returns
    /// something other than [`HeadCheck::Partial`].
    pub fn check(&mut self, buf: &[u8], limits: &Limits) -> HeadCheck {
        if buf.len() < self.pos {
            self.reset();
        }
        if self.pos == 0 {
            // The usual case, a whole head shorter than any limit, is decided by one
            // parse, without the line scan: each of its lines is within its limit.
            // Anything else (a partial head, an error, a long head) goes through the
            // scan below, which decides as before, with the same precedence of verdicts.
            let limit = limits
                .max_request_line
                .min(limits.max_header_line)
                .min(limits.max_head);
            if let Judged::Done(_, check) = judge(&buf[..buf.len().min(limit)], limits, false) {
                return check;
            }
        }
        while self.pos < buf.len() {
            let rest = &buf[self.pos..];
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                self.pos = buf.len();
                break;
            };
            let end = self.pos + nl + 1;
            let line = &buf[self.line_start..end];
            let content = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            self.pos = end;
            self.line_start = end;
            if !self.seen_request_line {
                if content.is_empty() {
                    // httparse skips empty lines before the request line
                    if end > limits.max_request_line {
                        return HeadCheck::Reject(Reject::BadRequest, None);
                    }
                    continue;
                }
                if line.len() > limits.max_request_line {
                    return HeadCheck::Reject(Reject::UriTooLong, None);
                }
                self.seen_request_line = true;
                continue;
            }
            if content.is_empty() {
                if end > limits.max_head {
                    return HeadCheck::Reject(Reject::HeaderTooLarge, None);
                }
                return self.finish(&buf[..end], limits);
            }
            if line.len() > limits.max_header_line {
                return HeadCheck::Reject(Reject::HeaderTooLarge, None);
            }
            if matches!(content[0], b' ' | b'\t') {
                // obs-fold (RFC 9112 §5.2): nginx refuses it
                return HeadCheck::Reject(Reject::BadRequest, None);
            }
            self.lines += 1;
            if self.lines > limits.max_headers {
                return HeadCheck::Reject(Reject::HeaderTooLarge, None);
            }
            if end > limits.max_head {
                return HeadCheck::Reject(Reject::HeaderTooLarge, None);
            }
        }
        // an incomplete line that is already too long
        let partial = buf.len() - self.line_start;
        if !self.seen_request_line {
            if partial > limits.max_request_line {
                return HeadCheck::Reject(Reject::UriTooLong, None);
            }
            // Like nginx, refuse a method that cannot be one at its first bad byte rather
            // than wait for a line end that binary data (a WebSocket frame after a refused
            // upgrade, TLS on a plain port) may never bring.
            if !could_start_request_line(&buf[self.line_start..]) {
                return HeadCheck::Reject(Reject::BadRequest, None);
            }
        } else if partial > limits.max_header_line {
            return HeadCheck::Reject(Reject::HeaderTooLarge, None);
        }
        if buf.len() > limits.max_head {
            return HeadCheck::Reject(Reject::HeaderTooLarge, None);
        }
        HeadCheck::Partial
    }

    fn finish(&mut self, head: &[u8], limits: &Limits) -> HeadCheck {
        self.reset();
        match judge(head, limits, true) {
            Judged::Done(n, check) if n == head.len() => check,
            Judged::Done(..) | Judged::Undecided => HeadCheck::Reject(Reject::BadRequest, None),
            Judged::Refused(r) => HeadCheck::Reject(r, None),
        }
    }
}

/// What one parse of the front of a buffer says.
enum Judged {
    /// A head of this many bytes, and the verdict on it.
    Done(usize, HeadCheck),
    /// Not a whole head (or, without `heap`, too many possible headers to parse on
    /// the stack).
    Undecided,
    /// Refused before its end.
    Refused(Reject),
}

/// Parses the head at the front of `buf` with `httparse` (hyper's parser, same
/// settings) and judges its framing headers.
fn judge(buf: &[u8], limits: &Limits, heap: bool) -> Judged {
    // Uninitialised slots on the stack for a head of ordinary size: no
    // allocation and no zeroing per request. A header line takes at least
    // 3 bytes, so `len / 2 + 1` slots never cut a head short.
    const STACK: usize = 128;
    let mut small = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK];
    let mut big;
    let want = limits.max_headers.saturating_add(1).max(1);
    let need = want.min(buf.len() / 2 + 1);
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if need <= STACK {
        &mut small[..need]
    } else if heap {
        big = vec![MaybeUninit::uninit(); need];
        &mut big[..]
    } else {
        return Judged::Undecided;
    };
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Judged::Undecided,
        Err(httparse::Error::TooManyHeaders) => return Judged::Refused(Reject::HeaderTooLarge),
        Err(_) => return Judged::Refused(Reject::BadRequest),
    };
    let head = &buf[..n];
    Judged::Done(n, framing_of(&req, head, limits))
}

/// The verdict on a parsed head (`head`: its bytes).
fn framing_of(req: &httparse::Request<'_, '_>, head: &[u8], limits: &Limits) -> HeadCheck {
    if req.headers.len() > limits.max_headers {
        return HeadCheck::Reject(Reject::HeaderTooLarge, None);
    }
    let http11 = req.version == Some(1);
    let connect = req.method == Some("CONNECT");
    let mut cl: Option<Option<u64>> = None;
    let mut cl_count = 0usize;
    let mut te: Option<bool> = None;
    let mut te_count = 0usize;
    let mut hosts = 0usize;
    let mut upgrade = false;
    let mut accept = None;
    for h in req.headers.iter() {
        if header_is(h.name, "content-length") {
            cl_count += 1;
            cl = Some(parse_content_length(h.value));
        } else if header_is(h.name, "transfer-encoding") {
            te_count += 1;
            te = Some(trim_ows(h.value).eq_ignore_ascii_case(b"chunked"));
        } else if header_is(h.name, "host") {
            hosts += 1;
        } else if header_is(h.name, "upgrade") {
            upgrade = true;
        } else if header_is(h.name, "accept") && accept.is_none() {
            accept = Some(range_in(head, h.value));
        }
    }
    let bad = |a: &Option<Range<usize>>| HeadCheck::Reject(Reject::BadRequest, a.clone());
    if cl_count > 1 || te_count > 1 || hosts > 1 || (http11 && hosts == 0) {
        return bad(&accept);
    }
    let framing = match (cl, te) {
        (Some(_), Some(_)) => return bad(&accept),
        (Some(None), None) => return bad(&accept),
        (Some(Some(0)), None) | (None, None) => Framing::None,
        (Some(Some(n)), None) => Framing::Length(n),
        (None, Some(chunked)) => {
            if !http11 {
                return bad(&accept);
            }
            if !chunked {
                return HeadCheck::Reject(Reject::NotImplemented, accept);
            }
            Framing::Chunked
        }
    };
    HeadCheck::Complete(Head {
        len: head.len(),
        framing,
        upgrade: connect || (upgrade && http11),
    })
}

/// Follows a chunked body with hyper's grammar (`proto/h1/decode.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkFollower {
    state: ChunkState,
    size: u64,
    digits: u8,
    ext: u32,
    trailer_bytes: usize,
    trailers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Start,
    Size,
    SizeLws,
    Ext,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body hyper would refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadChunk;

/// Chunk extension bytes allowed per body (hyper's `CHUNKED_EXTENSIONS_LIMIT`).
const MAX_CHUNK_EXT: u32 = 16 * 1024;
/// Trailer bytes allowed (hyper's `TRAILER_LIMIT`).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl Default for ChunkFollower {
    fn default() -> Self {
        ChunkFollower {
            state: ChunkState::Start,
            size: 0,
            digits: 0,
            ext: 0,
            trailer_bytes: 0,
            trailers: 0,
        }
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl ChunkFollower {
    /// Whether the final chunk and trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes of `data` that belong to the body; returns how many
    /// (fewer than `data.len()` only once the body is complete).
    pub fn advance(&mut self, data: &[u8], max_trailers: usize) -> Result<usize, BadChunk> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() && self.state != Done {
            if self.state == Body {
                let n = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = BodyCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Start, _) => {
                    let d = hex(b).ok_or(BadChunk)?;
                    self.size = d;
                    self.digits = 1;
                    Size
                }
                (Size, b' ' | b'\t') => SizeLws,
                (Size | SizeLws, b';') => Ext,
                (Size | SizeLws, b'\r') => SizeLf,
                (Size, _) => {
                    let d = hex(b).ok_or(BadChunk)?;
                    self.digits += 1;
                    if self.digits > 16 {
                        return Err(BadChunk);
                    }
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d))
                        .ok_or(BadChunk)?;
                    Size
                }
                (SizeLws, b' ' | b'\t') => SizeLws,
                (SizeLws, _) => return Err(BadChunk),
                (Ext, b'\r') => SizeLf,
                (Ext, b'\n') => return Err(BadChunk),
                (Ext, _) => {
                    self.ext += 1;
                    if self.ext >= MAX_CHUNK_EXT {
                        return Err(BadChunk);
                    }
                    Ext
                }
                (SizeLf, b'\n') => {
                    if self.size == 0 {
                        EndCr
                    } else {
                        Body
                    }
                }
                (SizeLf, _) => return Err(BadChunk),
                (BodyCr, b'\r') => BodyLf,
                (BodyLf, b'\n') => Start,
                (BodyCr | BodyLf, _) => return Err(BadChunk),
                (EndCr, b'\r') => EndLf,
                (EndCr | Trailer, _) => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(BadChunk);
                    }
                    if b == b'\r' {
                        TrailerLf
                    } else {
                        Trailer
                    }
                }
                (TrailerLf, b'\n') => {
                    if self.trailers >= max_trailers {
                        return Err(BadChunk);
                    }
                    self.trailers += 1;
                    EndCr
                }
                (TrailerLf, _) => return Err(BadChunk),
                (EndLf, b'\n') => Done,
                (EndLf, _) => return Err(BadChunk),
                (Body | Done, _) => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

/// What the framer decided about the front of the unchecked bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// This many bytes may go to hyper.
    Release(usize),
    /// Nothing can be decided without more bytes.
    NeedMore,
    /// The connection turned into HTTP/2 (preface seen): stop checking.
    Passthrough,
    /// The previous request asked for an upgrade; call
    /// [`Framer::upgrade_resolved`] once its response is known.
    UpgradeWait,
    /// Refuse this head; answer and close.
    Reject(Reject, Option<Range<usize>>),
    /// A malformed chunked body: fail the connection.
    BadChunk,
}

#[derive(Clone, Debug)]
enum FState {
    Head(HeadScanner),
    Length(u64, bool),
    Chunked(ChunkFollower, bool),
    UpgradeWait,
    Passthrough,
    Failed,
}

/// The per-connection state machine (see the module docs).
#[derive(Clone, Debug)]
pub struct Framer {
    limits: Limits,
    state: FState,
    /// Still at the first bytes of the connection (an h2 preface may come).
    first: bool,
    allow_h2: bool,
}

impl Framer {
    /// `allow_h2`: the listener also speaks h2c with prior knowledge.
    pub fn new(limits: Limits, allow_h2: bool) -> Framer {
        Framer {
            limits,
            state: FState::Head(HeadScanner::default()),
            first: true,
            allow_h2,
        }
    }

    /// Whether no request has come on the connection yet.
    pub fn at_start(&self) -> bool {
        self.first && self.in_head()
    }

    /// Whether a request head is being read (not a body, not a tunnel).
    pub fn in_head(&self) -> bool {
        matches!(self.state, FState::Head(_))
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tells the framer whether the upgrade the last request asked for
    /// happened (the response was 101, or 2xx to `CONNECT`).
    pub fn upgrade_resolved(&mut self, upgraded: bool) {
        if matches!(self.state, FState::UpgradeWait) {
            self.state = if upgraded {
                FState::Passthrough
            } else {
                FState::Head(HeadScanner::default())
            };
        }
    }

    fn after_body(upgrade: bool) -> FState {
        if upgrade {
            FState::UpgradeWait
        } else {
            FState::Head(HeadScanner::default())
        }
    }

    /// Looks at `data`, the bytes received and not yet released (in order,
    /// the same front bytes again after `NeedMore`), and decides about its
    /// front. `data` must not be empty.
    pub fn step(&mut self, data: &[u8]) -> Step {
        if data.is_empty() {
            return Step::NeedMore;
        }
        match &mut self.state {
            FState::Passthrough => Step::Passthrough,
            FState::Failed => Step::BadChunk,
            FState::UpgradeWait => Step::UpgradeWait,
            FState::Length(left, upgrade) => {
                let n = (data.len() as u64).min(*left);
                *left -= n;
                if *left == 0 {
                    self.state = Framer::after_body(*upgrade);
                }
                Step::Release(n as usize)
            }
            FState::Chunked(f, upgrade) => match f.advance(data, self.limits.max_headers) {
                Ok(n) => {
                    if f.is_done() {
                        self.state = Framer::after_body(*upgrade);
                    }
                    if n == 0 {
                        Step::NeedMore
                    } else {
                        Step::Release(n)
                    }
                }
                Err(BadChunk) => {
                    self.state = FState::Failed;
                    Step::BadChunk
                }
            },
            FState::Head(scanner) => {
                if self.first && self.allow_h2 {
                    let n = data.len().min(H2_PREFACE.len());
                    if data[..n] == H2_PREFACE[..n] {
                        if n == H2_PREFACE.len() {
                            self.state = FState::Passthrough;
                            return Step::Passthrough;
                        }
                        return Step::NeedMore;
                    }
                }
                match scanner.check(data, &self.limits) {
                    HeadCheck::Partial => Step::NeedMore,
                    HeadCheck::Reject(r, a) => {
                        self.state = FState::Failed;
                        Step::Reject(r, a)
                    }
                    HeadCheck::Complete(h) => {
                        self.first = false;
                        self.state = match h.framing {
                            Framing::None => Framer::after_body(h.upgrade),
                            Framing::Length(n) => FState::Length(n, h.upgrade),
                            Framing::Chunked => {
                                FState::Chunked(ChunkFollower::default(), h.upgrade)
                            }
                        };
                        Step::Release(h.len)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> HeadCheck {
        HeadScanner::default().check(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn shapes() {
        let ok = |s: &str| match check(s) {
            HeadCheck::Complete(h) => h,
            other => panic!("{s:?}: {other:?}"),
        };
        let rej = |s: &str| match check(s) {
            HeadCheck::Reject(r, _) => r,
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(
            ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n").framing,
            Framing::None
        );
        assert_eq!(
            ok("\r\nPOST / HTTP/1.1\nHost: a\nContent-Length: 5\n\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(!ok("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n").upgrade);
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
        ] {
            assert_eq!(rej(bad), Reject::BadRequest, "{bad:?}");
        }
        assert_eq!(
            rej("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Reject::NotImplemented
        );
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(8192));
        assert_eq!(rej(&long_line), Reject::UriTooLong);
        assert_eq!(rej(&long_line[..8200]), Reject::UriTooLong);
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(8192));
        assert_eq!(rej(&long_header), Reject::HeaderTooLarge);
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for _ in 0..5 {
            many.push_str(&format!("X: {}\r\n", "a".repeat(8000)));
        }
        assert_eq!(rej(&many), Reject::HeaderTooLarge);
        // exact edges: a request line of exactly 8192 bytes with its CRLF passes
        let edge = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8192 - 16));
        assert!(edge.find("\r\n") == Some(8190));
        ok(&edge);
    }

    /// The verdict of the incremental scan, fed one more byte at a time.
    fn byte_by_byte(data: &[u8], limits: &Limits) -> HeadCheck {
        let mut s = HeadScanner::default();
        for i in 1..=data.len() {
            match s.check(&data[..i], limits) {
                HeadCheck::Partial => {}
                other => return other,
            }
        }
        HeadCheck::Partial
    }

    #[test]
    fn one_parse_of_a_whole_head_agrees_with_the_scan() {
        let tight = Limits {
            max_request_line: 40,
            max_header_line: 30,
            max_head: 100,
            max_headers: 3,
        };
        for limits in [Limits::default(), tight] {
            for head in [
                "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\nGET",
                "\r\n\nPOST /x HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nAccept: x\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                "GET /a-rather-long-path-for-tight-limits HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
                "GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n",
                "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET / HTTP/1.1\r\n\r\n",
            ] {
                let whole = HeadScanner::default().check(head.as_bytes(), &limits);
                assert_eq!(whole, byte_by_byte(head.as_bytes(), &limits), "{head:?}");
            }
        }
    }

    #[test]
    fn binary_data_is_refused_without_a_line_end() {
        for bad in [
            &b"\x81\x88\0\0\0\0SMUGGLED"[..],
            b"\x16\x03\x01\x02",
            b"GE(T",
        ] {
            assert_eq!(
                HeadScanner::default().check(bad, &Limits::default()),
                HeadCheck::Reject(Reject::BadRequest, None),
                "{bad:?}"
            );
        }
        for partial in [&b"GE"[..], b"\r", b"\r\nGET /x", b"M-SEARCH * HT"] {
            assert_eq!(
                HeadScanner::default().check(partial, &Limits::default()),
                HeadCheck::Partial,
                "{partial:?}"
            );
        }
    }

    #[test]
    fn incremental_scan_matches_whole() {
        let req = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n";
        let mut s = HeadScanner::default();
        for i in 1..req.len() {
            assert_eq!(s.check(&req[..i], &Limits::default()), HeadCheck::Partial);
        }
        assert!(matches!(
            s.check(req, &Limits::default()),
            HeadCheck::Complete(_)
        ));
    }

    #[test]
    fn chunks() {
        let mut f = ChunkFollower::default();
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET";
        assert_eq!(f.advance(body, 100), Ok(body.len() - 3));
        assert!(f.is_done());
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloXX",
            b"-1\r\n",
            b"11111111111111111\r\n",
            b" 5\r\n",
            b"5 x\r\n",
        ] {
            assert_eq!(
                ChunkFollower::default().advance(bad, 100),
                Err(BadChunk),
                "{bad:?}"
            );
        }
        // byte by byte
        let mut f = ChunkFollower::default();
        for b in body[..body.len() - 3].iter() {
            assert_eq!(f.advance(&[*b], 100), Ok(1));
        }
        assert!(f.is_done());
    }

    #[test]
    fn framer_walks_pipelined_requests() {
        let mut fr = Framer::new(Limits::default(), false);
        let data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut off = 0;
        let mut steps = Vec::new();
        loop {
            let s = fr.step(&data[off..]);
            steps.push(s.clone());
            match s {
                Step::Release(n) => off += n,
                _ => break,
            }
        }
        assert_eq!(steps.len(), 3);
        assert!(matches!(steps[2], Step::Reject(Reject::BadRequest, _)));
    }

    #[test]
    fn large_client_header_buffers() {
        let l = Limits::from_large_client_header_buffers("2 1k").unwrap();
        assert_eq!(l.max_request_line, 1024);
        assert_eq!(l.max_head, 2048);
        assert!(Limits::from_large_client_header_buffers("x").is_none());
    }
}
