//! HTTP/2 abuse on an `http2` listener (prior-knowledge h2c), with frames written by
//! hand: rapid reset, CONTINUATION floods, HPACK bombs, SETTINGS and window abuse,
//! PING floods.

use super::{addr, assert_bounded, gateway_on_recorder, rss_kib, Recorder};
use crate::plugin_support::{get, ok};
use crate::support::Gateway;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ACK: u8 = 1;

const PROTOCOL_ERROR: u32 = 1;
const FLOW_CONTROL_ERROR: u32 = 3;
const FRAME_SIZE_ERROR: u32 = 6;
const CANCEL: u32 = 8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// `GET path` on authority `h`, never indexed (the dynamic table stays empty).
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing
    hpack_str(path.as_bytes(), &mut b);
    b.push(0x01); // :authority
    hpack_str(b"h", &mut b);
    b
}

/// `block` with its `:method GET` replaced by `POST`.
fn post_block(path: &str) -> Vec<u8> {
    let mut b = get_block(path);
    b[0] = 0x83;
    b
}

/// The `:status` of a response header block as h2 encodes it: a static table entry, or
/// a literal with name index 8 and a plain or Huffman-coded value (digits only).
fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if (0x88..=0x8e).contains(&first) {
        return Some([200, 204, 206, 304, 400, 404, 500][usize::from(first - 0x88)]);
    }
    if !matches!(first, 0x48 | 0x08 | 0x18) {
        return None;
    }
    let len = usize::from(block.get(1)? & 0x7f);
    let value = block.get(2..2 + len)?;
    if block[1] & 0x80 == 0 {
        return std::str::from_utf8(value).ok()?.parse().ok();
    }
    // Huffman: '0'-'2' are 00000-00010, '3'-'9' are 011001-011111.
    let mut bits = value
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1));
    let mut take = |n: usize, mut code: u8| -> Option<u8> {
        for _ in 0..n {
            code = code << 1 | bits.next()?;
        }
        Some(code)
    };
    let mut status = 0u16;
    for _ in 0..3 {
        let code = take(2, 0)?;
        let digit = if code == 0 {
            take(3, code)?
        } else {
            take(4, code)? - 0b011001 + 3
        };
        status = status * 10 + u16::from(digit);
    }
    Some(status)
}

/// A raw HTTP/2 connection that acknowledges the server's SETTINGS as they come.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

/// How a connection ended, as far as the client saw.
#[derive(Debug, PartialEq, Eq)]
enum End {
    GoAway(u32),
    Closed,
    StillOpen,
}

impl Conn {
    async fn open(g: &Gateway, initial: &[(u16, u32)]) -> Conn {
        let mut s = TcpStream::connect(addr(g)).await.unwrap();
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(initial));
        s.write_all(&hello).await.unwrap();
        Conn { s, buf: Vec::new() }
    }

    /// Writes, ignoring a connection the server already closed (that is its answer).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
    }

    /// The next frame: `None` when the connection closed or `wait` passed.
    async fn next(&mut self, wait: Duration) -> Option<(u8, u8, u32, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let (ty, flags) = (self.buf[3], self.buf[4]);
                    let id = u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff;
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    if ty == SETTINGS && flags & ACK == 0 {
                        self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                    }
                    return Some((ty, flags, id, payload));
                }
            }
            let mut tmp = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.s.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                _ => return None,
            }
        }
    }

    /// Reads frames until a GOAWAY, the end of the connection, or `wait`; `rst` collects
    /// the RST_STREAM codes seen on the way.
    async fn until_end(&mut self, wait: Duration, rst: &mut Vec<(u32, u32)>) -> End {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some((GOAWAY, _, _, p)) => {
                    return End::GoAway(u32::from_be_bytes(p[4..8].try_into().unwrap()))
                }
                Some((RST_STREAM, _, id, p)) => {
                    rst.push((id, u32::from_be_bytes(p[..4].try_into().unwrap())))
                }
                Some(_) => {}
                None if tokio::time::Instant::now() >= deadline => return End::StillOpen,
                None => return End::Closed,
            }
        }
    }
}

async fn h2_gateway() -> (Gateway, Recorder) {
    gateway_on_recorder(&[("TOLLGATE_PROXY_LISTEN", "127.0.0.1:{proxy_port} http2")]).await
}

/// The listener still serves: an HTTP/2 request on a fresh connection, and HTTP/1.1.
async fn assert_alive(g: &Gateway, case: &str) {
    let mut c = Conn::open(g, &[]).await;
    c.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/alive"),
    ))
    .await;
    let mut answered = false;
    while let Some((ty, flags, id, _)) = c.next(Duration::from_secs(5)).await {
        if id == 1 && (ty == DATA || ty == HEADERS) && flags & END_STREAM != 0 {
            answered = true;
            break;
        }
    }
    assert!(answered, "{case}: no HTTP/2 answer afterwards");
    assert_eq!(get(g, "/alive", &[]).await.status.as_u16(), 200, "{case}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_is_bounded() {
    let (g, up) = h2_gateway().await;
    assert_alive(&g, "before").await;
    let before = rss_kib(&g);
    let mut c = Conn::open(&g, &[]).await;
    let mut id = 1u32;
    for _ in 0..10 {
        let mut batch = Vec::new();
        for _ in 0..200 {
            batch.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &get_block("/rr"),
            ));
            batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            id += 2;
        }
        c.send(&batch).await;
    }
    let end = c.until_end(Duration::from_secs(3), &mut Vec::new()).await;
    let grew = assert_bounded(&g, "rapid reset, 2000 streams", before);
    eprintln!(
        "rapid reset: {end:?}, {} of 2000 reset streams reached the upstream, +{grew} KiB",
        up.requests()
    );
    assert_eq!(
        end,
        End::GoAway(ENHANCE_YOUR_CALM),
        "a rapid-reset connection must be told to go away"
    );
    assert_alive(&g, "after rapid reset").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn continuation_flood_and_hpack_bomb_are_refused() {
    let (g, up) = h2_gateway().await;
    let before = rss_kib(&g);

    // CONTINUATION flood: a header block that never ends.
    let mut c = Conn::open(&g, &[]).await;
    c.send(&frame(HEADERS, END_STREAM, 1, &get_block("/cf")))
        .await;
    let mut cont = Vec::new();
    for _ in 0..10_000 {
        let mut p = vec![0x00];
        hpack_str(b"x-cont", &mut p);
        hpack_str(b"y", &mut p);
        cont.extend(frame(CONTINUATION, 0, 1, &p));
    }
    c.send(&cont).await;
    let end = c.until_end(Duration::from_secs(5), &mut Vec::new()).await;
    assert_eq!(end, End::GoAway(ENHANCE_YOUR_CALM), "CONTINUATION flood");
    assert_bounded(&g, "CONTINUATION flood", before);

    // A header list over max_header_list_size (32 KiB) but not absurdly so: the stream
    // is answered 431 (h2), the connection goes on.
    let bomb_block = |refs: usize| {
        let mut b = get_block("/bomb");
        b.push(0x40); // literal with incremental indexing, new name
        hpack_str(b"x-bomb", &mut b);
        hpack_str(&[b'b'; 4000], &mut b);
        b.extend(std::iter::repeat_n(0xbe, refs)); // dynamic index 62: that entry
        b
    };
    let mut c = Conn::open(&g, &[]).await;
    c.send(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &bomb_block(10),
    ))
    .await;
    let mut status = None;
    while let Some((ty, _, id, p)) = c.next(Duration::from_secs(2)).await {
        if id == 1 && ty == HEADERS {
            status = status_of(&p);
        }
    }
    assert_eq!(status, Some(431), "40 KB header list");

    // HPACK bomb: 2000 one-byte references to a 4000-byte entry (8 MB decoded) in each
    // of 100 header blocks: GOAWAY at the first, memory bounded.
    let before = rss_kib(&g);
    let mut c = Conn::open(&g, &[]).await;
    for i in 0..100u32 {
        c.send(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            2 * i + 1,
            &bomb_block(2000),
        ))
        .await;
    }
    let end = c.until_end(Duration::from_secs(3), &mut Vec::new()).await;
    assert_eq!(end, End::GoAway(ENHANCE_YOUR_CALM), "HPACK bomb");
    assert_bounded(&g, "HPACK bomb, 100 blocks of 8 MB decoded", before);
    assert!(!up.saw("x-bomb"), "a bomb reached the upstream");
    assert_alive(&g, "after the floods").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_ping_and_window_abuse() {
    let (g, _up) = h2_gateway().await;
    // Protocol violations, each answered with GOAWAY and its RFC 9113 code.
    let mut huge = frame(SETTINGS, 0, 0, &[]);
    huge[..3].copy_from_slice(&[0x10, 0, 0]); // claims 1 MiB
    huge.extend(vec![0u8; 64 * 1024]);
    let max_window = 0x7fff_ffffu32.to_be_bytes();
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("SETTINGS of 1 MiB", huge, FRAME_SIZE_ERROR),
        // RFC 9113 says FRAME_SIZE_ERROR; h2 answers PROTOCOL_ERROR (a GOAWAY either way).
        (
            "SETTINGS not a multiple of 6",
            frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0]),
            PROTOCOL_ERROR,
        ),
        // RFC 9113 says FLOW_CONTROL_ERROR; h2 answers PROTOCOL_ERROR.
        (
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
            settings(&[(4, 0x8000_0000)]),
            PROTOCOL_ERROR,
        ),
        (
            "SETTINGS_MAX_FRAME_SIZE over 2^24-1",
            settings(&[(5, 1 << 24)]),
            PROTOCOL_ERROR,
        ),
        (
            "connection window overflow",
            [
                frame(WINDOW_UPDATE, 0, 0, &max_window),
                frame(WINDOW_UPDATE, 0, 0, &max_window),
            ]
            .concat(),
            FLOW_CONTROL_ERROR,
        ),
        (
            "WINDOW_UPDATE of 0",
            frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()),
            PROTOCOL_ERROR,
        ),
    ];
    for (case, bytes, code) in cases {
        let mut c = Conn::open(&g, &[]).await;
        c.send(&bytes).await;
        let end = c.until_end(Duration::from_secs(5), &mut Vec::new()).await;
        assert_eq!(end, End::GoAway(code), "{case}");
    }

    // SETTINGS and PING floods from a client that never reads the acknowledgements.
    for (case, one) in [
        ("SETTINGS flood", settings(&[(1, 4096)])),
        ("PING flood", frame(PING, 0, 0, &[7; 8])),
    ] {
        let before = rss_kib(&g);
        let mut c = Conn::open(&g, &[]).await;
        let flood = one.repeat(50_000);
        let _ = tokio::time::timeout(Duration::from_secs(5), c.send(&flood)).await;
        assert_bounded(&g, case, before);
        drop(c);
    }

    // Window abuse: clients that open no window ask for 200 responses of 1 MiB.
    let before = rss_kib(&g);
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = Conn::open(&g, &[(4, 0)]).await;
        let mut all = Vec::new();
        for i in 0..50u32 {
            all.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                2 * i + 1,
                &get_block(&format!("/big{i}")),
            ));
        }
        c.send(&all).await;
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_bounded(&g, "zero window, 200 responses of 1 MiB", before);
    drop(conns);
    assert_alive(&g, "after the abuse").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_listener_offers_h2_by_alpn_and_keeps_http1() {
    let up = Recorder::start().await;
    let g =
        Gateway::start_with(&[("TOLLGATE_PROXY_LISTEN", "127.0.0.1:{proxy_port} http2 ssl")]).await;
    ok(&g, "/services", json!({"name": "rec", "url": up.url})).await;
    ok(&g, "/services/rec/routes", json!({"paths": ["/"]})).await;
    let url = format!("https://{}/alpn", addr(&g));
    for (http1_only, want) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut b = reqwest::Client::builder().danger_accept_invalid_certs(true);
        if http1_only {
            b = b.http1_only();
        }
        let client = b.build().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let r = loop {
            let r = client.get(&url).send().await.unwrap();
            if r.status() == 200 || std::time::Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!((r.status().as_u16(), r.version()), (200, want));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_http2_clients_are_timed_out() {
    let (g, _up) = gateway_on_recorder(&[
        ("TOLLGATE_PROXY_LISTEN", "127.0.0.1:{proxy_port} http2"),
        ("TOLLGATE_NGINX_HTTP_CLIENT_BODY_TIMEOUT", "1s"),
        ("TOLLGATE_NGINX_HTTP_KEEPALIVE_TIMEOUT", "1s"),
    ])
    .await;
    // Slow body: two bytes of a POST, then silence: 408 on the stream.
    let mut c = Conn::open(&g, &[]).await;
    c.send(&frame(HEADERS, END_HEADERS, 1, &post_block("/slow")))
        .await;
    c.send(&frame(DATA, 0, 1, b"ab")).await;
    let start = std::time::Instant::now();
    let mut status = None;
    while let Some((ty, _, id, p)) = c.next(Duration::from_secs(5)).await {
        if id == 1 && ty == HEADERS {
            status = status_of(&p);
            break;
        }
    }
    assert_eq!(status, Some(408), "slow HTTP/2 body");
    assert!(start.elapsed() >= Duration::from_millis(900));

    // A header block that never ends holds no stream: the idle connection is closed.
    let mut c = Conn::open(&g, &[]).await;
    c.send(&frame(HEADERS, END_STREAM, 1, &get_block("/never")))
        .await;
    let end = c.until_end(Duration::from_secs(6), &mut Vec::new()).await;
    assert_ne!(
        end,
        End::StillOpen,
        "a never-ending header block kept the connection"
    );
}
