//! http-log (`kong/plugins/http-log/{schema,handler}.lua`, 3.9): the log record POSTed
//! (or PUT/PATCHed) as JSON to `http_endpoint` through Kong's queue: one object per
//! request when `queue.max_batch_size` is 1, else a JSON array of up to that many.
//! User info in the URL becomes basic auth; `headers` are added without overriding
//! Content-Type, Content-Length or Authorization. A status of 300 or more is a failure
//! and the batch is retried. Like Kong, the URL's query is not sent and an https
//! endpoint's certificate is not verified.

use super::queue::{self, QueueConf, QueueHandle, Sender};
use super::{custom_fields_by_lua, num, refuse_lua, str_of};
use crate::api::{InstanceScope, LogCx, Phases, Plugin, PluginSpec};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use regex::Regex;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};
use tollgate_model::schema::{typedefs, Check, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "http-log";
pub const PRIORITY: i32 = 12;

pub const ERR_AUTH_TWICE: &str =
    "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        log: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

/// Kong's `typedefs.queue` (`kong/tools/queue_schema.lua`).
pub(crate) fn queue_record() -> Field {
    Field::new(
        "queue",
        Type::Record(
            vec![
                Field::new("max_batch_size", Type::Integer).default(json!(1)).between(1, 1_000_000).describe("Maximum number of entries that can be processed at a time."),
                Field::new("max_coalescing_delay", Type::Number).default(json!(1)).between(0, 3600).describe("Maximum number of (fractional) seconds to elapse after the first entry was queued before the queue starts calling the handler."),
                Field::new("max_entries", Type::Integer).default(json!(10000)).between(1, 1_000_000).describe("Maximum number of entries that can be waiting on the queue."),
                Field::new("max_bytes", Type::Integer).default(Value::Null).describe("Maximum number of bytes that can be waiting on a queue, requires string content."),
                Field::new("max_retry_time", Type::Number).default(json!(60)).describe("Time in seconds before the queue gives up calling a failed handler for a batch."),
                Field::new("initial_retry_delay", Type::Number).default(json!(0.01)).describe("Time in seconds before the initial retry is made for a failing batch."),
                Field::new("max_retry_delay", Type::Number).default(json!(60)).describe("Maximum time in seconds between retries, caps exponential backoff."),
                Field::new("concurrency_limit", Type::Integer).default(json!(1)).one_of_int(&[-1, 1]).describe("The number of of queue delivery timers. -1 indicates unlimited."),
            ],
            vec![EntityCheck::Custom(retry_delays)],
        ),
    )
    .required()
}

/// `between = { 0.001, 1000000 }` of the two retry delays (fractional bounds).
fn retry_delays(q: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    for k in ["initial_retry_delay", "max_retry_delay"] {
        if let Some(n) = q.get(k).and_then(Value::as_f64) {
            if !(0.001..=1_000_000.0).contains(&n) {
                let f = if k == "initial_retry_delay" {
                    "initial_retry_delay"
                } else {
                    "max_retry_delay"
                };
                return Err((Some(f), "value should be between 0.001 and 1000000".into()));
            }
        }
    }
    Ok(())
}

fn header_key() -> Field {
    let no = |re: &str, msg: &'static str| Check::MatchNone(Regex::new(re).expect("regex"), msg);
    typedefs::header_name("key")
        .check(no("^[Hh][Oo][Ss][Tt]$", "cannot contain 'Host' header"))
        // Kong's pattern has `[nn]`: only a lower-case n is refused there.
        .check(no(
            "^[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee]n[Gg][Tt][Hh]$",
            "cannot contain 'Content-Length' header",
        ))
        .check(no(
            "^[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Tt][Yy][Pp][Ee]$",
            "cannot contain 'Content-Type' header",
        ))
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("http_endpoint", Type::String).required().custom(typedefs::validate_url).referenceable().sensitive().describe("A string representing a URL, such as https://example.com/path/to/resource?q=search."),
            Field::new("method", Type::String).default(json!("POST")).one_of(&["POST", "PUT", "PATCH"]).describe("An optional method used to send data to the HTTP server. Supported values are `POST` (default), `PUT`, and `PATCH`."),
            Field::new("content_type", Type::String).default(json!("application/json")).one_of(&["application/json", "application/json; charset=utf-8"]).describe("Indicates the type of data sent. The only available option is `application/json`."),
            Field::new("timeout", Type::Number).default(json!(10000)).describe("An optional timeout in milliseconds when sending data to the upstream server."),
            Field::new("keepalive", Type::Number).default(json!(60000)).describe("An optional value in milliseconds that defines how long an idle connection will live before being closed."),
            Field::new("retry_count", Type::Integer).describe("Number of times to retry when sending data to the upstream server."),
            Field::new("queue_size", Type::Integer).describe("Maximum number of log entries to be sent on each message to the upstream server."),
            Field::new("flush_timeout", Type::Number).describe("Optional time in seconds. If `queue_size` > 1, this is the max idle time before sending a log with less than `queue_size` records."),
            Field::new("headers", Type::Map { keys: Box::new(header_key()), values: Box::new(Field::new("value", Type::String).referenceable()) }).describe("An optional table of headers included in the HTTP message to the upstream server. Values are indexed by header name, and each header name accepts a single string."),
            queue_record(),
            custom_fields_by_lua(),
        ],
        config_checks: vec![EntityCheck::Custom(refuse_lua), EntityCheck::Custom(auth_once)],
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

/// Kong's custom_validator: user info and an Authorization header are exclusive.
fn auth_once(cfg: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    let Some(url) = cfg.get("http_endpoint").and_then(Value::as_str) else {
        return Ok(());
    };
    let has_auth_header = cfg
        .get("headers")
        .and_then(Value::as_object)
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("authorization")));
    if has_auth_header && userinfo(url).is_some() {
        return Err((None, ERR_AUTH_TWICE.into()));
    }
    Ok(())
}

/// The user info of a URL (`user:pass` in `http://user:pass@host/`).
fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rsplit_once('@').map(|(u, _)| u)
}

/// What a batch is sent with.
#[derive(Debug)]
pub struct HttpLogConf {
    tls: bool,
    host: String,
    port: u16,
    /// Path only: Kong builds the request URL from scheme, host, port and path.
    path: String,
    host_header: HeaderValue,
    method: Method,
    content_type: HeaderValue,
    timeout: Duration,
    keepalive: Duration,
    authorization: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `queue.max_batch_size > 1`: the body is a JSON array.
    array: bool,
}

/// http-log compiled.
pub struct HttpLog {
    queue: QueueHandle<HttpSender>,
}

/// Lua's `tostring` of a config value, for the queue name.
fn lua_str(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "nil".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Some(v) => v.to_string(),
    }
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let endpoint = str_of(config, "http_endpoint").ok_or("http_endpoint is required")?;
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("invalid http_endpoint: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => return Err(format!("unsupported http_endpoint scheme {other:?}")),
    };
    let host = uri.host().ok_or("http_endpoint has no host")?.to_owned();
    let default_port = if tls { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    let host_header = if port == default_port {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let authorization = userinfo(endpoint).map(|u| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(u);
        HeaderValue::from_str(&format!("Basic {b64}")).expect("base64 is a header value")
    });
    let mut headers = Vec::new();
    if let Some(h) = config.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let v = HeaderValue::from_str(v.as_str().unwrap_or_default())
                .map_err(|e| format!("headers.{k}: {e}"))?;
            // Kong: `headers[h] = headers[h] or v` never overrides its own.
            if name == CONTENT_TYPE || name == CONTENT_LENGTH || name == HOST {
                continue;
            }
            if name == AUTHORIZATION && authorization.is_some() {
                continue;
            }
            headers.push((name, v));
        }
    }
    let mut qconf = QueueConf::from_json(config.get("queue").unwrap_or(&Value::Null))?;
    // Kong's `get_plugin_params`: the deprecated fields win when set to non-defaults.
    if let Some(n) = config.get("queue_size").and_then(Value::as_f64) {
        if n != 1.0 {
            qconf.max_batch_size = n.max(1.0) as usize;
        }
    }
    if let Some(n) = config.get("flush_timeout").and_then(Value::as_f64) {
        if n != 2.0 {
            qconf.max_coalescing_delay = n;
        }
    }
    let method = str_of(config, "method").unwrap_or("POST");
    let conf = HttpLogConf {
        tls,
        host,
        port,
        path: uri.path().to_owned(),
        host_header: HeaderValue::from_str(&host_header).map_err(|e| e.to_string())?,
        method: Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?,
        content_type: HeaderValue::from_str(
            str_of(config, "content_type").unwrap_or("application/json"),
        )
        .map_err(|e| e.to_string())?,
        timeout: super::millis(num(config, "timeout", 10000.0)),
        keepalive: super::millis(num(config, "keepalive", 60000.0)),
        authorization,
        headers,
        array: qconf.max_batch_size > 1,
    };
    // Kong's `make_queue_name`: instances logging to the same server share a queue.
    let name = format!(
        "{}:{}:{}:{}:{}:{}",
        endpoint,
        method,
        lua_str(config.get("content_type")),
        lua_str(config.get("timeout")),
        lua_str(config.get("keepalive")),
        lua_str(config.get("retry_count")),
    );
    let queue = queue::queue(&name, super::tag(NAME, "?"), qconf, conf);
    Ok(Box::new(HttpLog { queue }))
}

impl Plugin for HttpLog {
    fn log(&self, cx: &LogCx<'_>) {
        if let Err(e) = self.queue.enqueue(super::record(cx)) {
            tracing::error!("Failed to enqueue log entry to log server: {e}");
        }
    }
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.queue.set_tag(super::tag(NAME, scope.id));
    }
}

impl HttpLog {
    pub fn queue(&self) -> &QueueHandle<HttpSender> {
        &self.queue
    }
}

/// The queue's sender: one kept-alive HTTP/1.1 connection.
#[derive(Default)]
pub struct HttpSender {
    conn: Option<Conn>,
}

struct Conn {
    send: SendRequest<Full<Bytes>>,
    /// Host, port, TLS: a configuration change to another server opens a new one.
    to: (String, u16, bool),
    idle_since: Instant,
}

impl Sender for HttpSender {
    type Conf = HttpLogConf;

    async fn send(&mut self, c: &HttpLogConf, batch: &[Bytes]) -> Result<(), String> {
        let body = payload(c.array, batch);
        let fail = |e: String| format!("failed request to {}:{}: {e}", c.host, c.port);
        match tokio::time::timeout(c.timeout, self.exchange(c, body)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(fail("timeout".into()))
            }
        }
    }
}

/// The body: the entry itself, or a JSON array of the batch.
fn payload(array: bool, batch: &[Bytes]) -> Bytes {
    if !array {
        return batch.first().cloned().unwrap_or_default();
    }
    let len = 2 + batch.iter().map(|b| b.len() + 1).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    out.extend_from_slice(b"[");
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]");
    out.freeze()
}

impl HttpSender {
    async fn connection(
        &mut self,
        c: &HttpLogConf,
    ) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let to = (c.host.clone(), c.port, c.tls);
        let reusable = self.conn.as_ref().is_some_and(|k| {
            k.to == to && !k.send.is_closed() && k.idle_since.elapsed() < c.keepalive
        });
        if !reusable {
            self.conn = None;
            let host = c.host.trim_matches(['[', ']']);
            let tcp = tokio::net::TcpStream::connect((host, c.port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let send = if c.tls {
                let s = super::tls::connect(tcp, host, Some(host)).await?;
                handshake(s).await?
            } else {
                handshake(tcp).await?
            };
            self.conn = Some(Conn {
                send,
                to,
                idle_since: Instant::now(),
            });
        }
        let k = self.conn.as_mut().expect("connected");
        k.send.ready().await.map_err(|e| e.to_string())?;
        Ok(&mut k.send)
    }

    async fn exchange(&mut self, c: &HttpLogConf, body: Bytes) -> Result<(), String> {
        let fail = |e: String| format!("failed request to {}:{}: {e}", c.host, c.port);
        let mut req = http::Request::builder()
            .method(c.method.clone())
            .uri(&c.path)
            .header(HOST, c.host_header.clone())
            .header(CONTENT_TYPE, c.content_type.clone())
            .header(CONTENT_LENGTH, body.len());
        if let Some(a) = &c.authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        for (k, v) in &c.headers {
            req = req.header(k, v.clone());
        }
        let req = req.body(Full::new(body)).map_err(|e| fail(e.to_string()))?;
        let send = match self.connection(c).await {
            Ok(s) => s,
            Err(e) => {
                self.conn = None;
                return Err(fail(e));
            }
        };
        let res = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(fail(e.to_string()));
            }
        };
        let status = res.status().as_u16();
        // Always read the body, so the connection can be used again.
        let body = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conn = None;
                return Err(fail(e.to_string()));
            }
        };
        if let Some(k) = self.conn.as_mut() {
            k.idle_since = Instant::now();
        }
        if status < 300 {
            Ok(())
        } else {
            Err(format!(
                "request to {}:{} returned status code {status} and body {}",
                c.host,
                c.port,
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An https log receiver answering `status` to each request; sends what it got.
    async fn https_receiver(status: u16) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let acceptor = super::super::tls::test_acceptor();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut tmp).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some((head, body)) = text.split_once("\r\n\r\n") else {
                            continue;
                        };
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() < len {
                            continue;
                        }
                        let _ = tx.send(text.clone());
                        buf.clear();
                        let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 4\r\n\r\nnope");
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, rx)
    }

    fn conf(port: u16) -> HttpLogConf {
        HttpLogConf {
            tls: true,
            host: "127.0.0.1".into(),
            port,
            path: "/in".into(),
            host_header: HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap(),
            method: Method::PATCH,
            content_type: HeaderValue::from_static("application/json"),
            timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(60),
            authorization: None,
            headers: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1"),
            )],
            array: true,
        }
    }

    #[test]
    fn https_endpoint_kept_alive_and_status_checked() {
        queue::RUNTIME.block_on(async {
            let (port, mut rx) = https_receiver(200).await;
            let c = conf(port);
            let mut s = HttpSender::default();
            let batch = [Bytes::from_static(b"{\"a\":1}")];
            s.send(&c, &batch).await.unwrap();
            let got = rx.recv().await.unwrap();
            assert!(got.starts_with("PATCH /in HTTP/1.1\r\n"), "{got}");
            assert!(got.contains("x-a: 1\r\n"), "{got}");
            assert!(got.ends_with("\r\n\r\n[{\"a\":1}]"), "{got}");
            s.send(&c, &batch).await.unwrap();
            rx.recv().await.unwrap();

            let (port, mut rx) = https_receiver(503).await;
            let e = HttpSender::default()
                .send(&conf(port), &batch)
                .await
                .unwrap_err();
            assert_eq!(
                e,
                format!("request to 127.0.0.1:{port} returned status code 503 and body nope")
            );
            rx.recv().await.unwrap();
        });
    }

    #[test]
    fn array_payload_and_userinfo() {
        let b = [
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b"{\"b\":2}"),
        ];
        assert_eq!(&payload(true, &b)[..], b"[{\"a\":1},{\"b\":2}]");
        assert_eq!(&payload(false, &b[..1])[..], b"{\"a\":1}");
        assert_eq!(userinfo("http://u:p@h:1/x"), Some("u:p"));
        assert_eq!(userinfo("http://h:1/x@y"), None);
        assert_eq!(lua_str(Some(&json!(10000))), "10000");
        assert_eq!(lua_str(Some(&json!(1.5))), "1.5");
        assert_eq!(lua_str(None), "nil");
    }
}
