//! tcp-log (`kong/plugins/tcp-log/{schema,handler}.lua`, 3.9): one JSON line per
//! request (`\n`-terminated) written to `host:port`, over TLS when `tls` is set (SNI
//! `tls_sni` when given; the certificate is not verified, as Kong's `sslhandshake(false,
//! sni, false)`). The connection is kept open for `keepalive` ms between writes. As in
//! Kong, a failed write is logged and the entry is lost (no retries).

use super::queue::{self, QueueConf, QueueHandle, Sender};
use super::{custom_fields_by_lua, num, refuse_lua, str_of};
use crate::api::{InstanceScope, LogCx, Phases, Plugin, PluginSpec};
use bytes::Bytes;
use serde_json::{json, Value};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tollgate_model::schema::{typedefs, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "tcp-log";
pub const PRIORITY: i32 = 7;

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

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            typedefs::host("host").required().describe("The IP address or host name to send data to."),
            typedefs::port("port").required().describe("The port to send data to on the upstream server."),
            Field::new("timeout", Type::Number).default(json!(10000)).describe("An optional timeout in milliseconds when sending data to the upstream server."),
            Field::new("keepalive", Type::Number).default(json!(60000)).describe("An optional value in milliseconds that defines how long an idle connection lives before being closed."),
            Field::new("tls", Type::Boolean).required().default(json!(false)).describe("Indicates whether to perform a TLS handshake against the remote server."),
            Field::new("tls_sni", Type::String).describe("An optional string that defines the SNI (Server Name Indication) hostname to send in the TLS handshake."),
            custom_fields_by_lua(),
        ],
        config_checks: vec![EntityCheck::Custom(refuse_lua)],
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpLogConf {
    host: String,
    port: u16,
    timeout: Duration,
    keepalive: Duration,
    tls: bool,
    tls_sni: Option<String>,
}

/// tcp-log compiled.
pub struct TcpLog {
    queue: QueueHandle<TcpSender>,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let conf = TcpLogConf {
        host: str_of(config, "host").ok_or("host is required")?.to_owned(),
        port: config
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("port is required")?,
        timeout: super::millis(num(config, "timeout", 10000.0)),
        keepalive: super::millis(num(config, "keepalive", 60000.0)),
        tls: config.get("tls").and_then(Value::as_bool).unwrap_or(false),
        tls_sni: str_of(config, "tls_sni").map(str::to_owned),
    };
    let name = format!("tcp-log:{}:{}:{}", conf.host, conf.port, conf.tls);
    let queue = queue::queue(&name, super::tag(NAME, "?"), QueueConf::unqueued(), conf);
    Ok(Box::new(TcpLog { queue }))
}

impl Plugin for TcpLog {
    fn log(&self, cx: &LogCx<'_>) {
        let _ = self.queue.enqueue(super::record_with(cx, b"", true));
    }
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.queue.set_tag(super::tag(NAME, scope.id));
    }
}

type Stream = Pin<Box<dyn AsyncWrite + Send>>;

/// One kept-alive connection.
#[derive(Default)]
pub struct TcpSender {
    conn: Option<(Stream, TcpLogConf, Instant)>,
}

impl TcpSender {
    async fn connect(c: &TcpLogConf) -> Result<Stream, String> {
        let host = c.host.trim_matches(['[', ']']);
        let tcp = tokio::net::TcpStream::connect((host, c.port))
            .await
            .map_err(|e| format!("failed to connect to {}:{}: {e}", c.host, c.port))?;
        let _ = tcp.set_nodelay(true);
        if !c.tls {
            return Ok(Box::pin(tcp));
        }
        let s = super::tls::connect(tcp, host, c.tls_sni.as_deref())
            .await
            .map_err(|e| {
                format!(
                    "failed to perform TLS handshake to {}:{}: {e}",
                    c.host, c.port
                )
            })?;
        Ok(Box::pin(s))
    }

    async fn write(&mut self, c: &TcpLogConf, data: &[u8]) -> Result<(), String> {
        let reuse = matches!(&self.conn, Some((_, k, at)) if k == c && at.elapsed() < c.keepalive);
        // A kept-alive connection may have been closed by the peer meanwhile: one more
        // try on a new one.
        let tries = if reuse { 2 } else { 1 };
        if !reuse {
            self.conn = None;
        }
        let mut last = String::new();
        for _ in 0..tries {
            let mut s = match self.conn.take() {
                Some((s, _, _)) => s,
                None => Self::connect(c).await?,
            };
            match async {
                s.write_all(data).await?;
                s.flush().await
            }
            .await
            {
                Ok(()) => {
                    self.conn = Some((s, c.clone(), Instant::now()));
                    return Ok(());
                }
                Err(e) => last = format!("failed to send data to {}:{}: {e}", c.host, c.port),
            }
        }
        Err(last)
    }
}

impl Sender for TcpSender {
    type Conf = TcpLogConf;

    async fn send(&mut self, c: &TcpLogConf, batch: &[Bytes]) -> Result<(), String> {
        let data = batch.concat();
        match tokio::time::timeout(c.timeout, self.write(c, &data)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(format!(
                    "failed to send data to {}:{}: timeout",
                    c.host, c.port
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A TLS line receiver with a self-signed certificate: the SNI it saw and the lines.
    async fn tls_receiver() -> (
        u16,
        tokio::sync::mpsc::UnboundedReceiver<(Option<String>, String)>,
    ) {
        let acceptor = super::super::tls::test_acceptor();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let mut lines = tokio::io::BufReader::new(tls).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let _ = tx.send((sni.clone(), line));
                    }
                });
            }
        });
        (port, rx)
    }

    #[test]
    fn tls_lines_with_and_without_sni() {
        queue::RUNTIME.block_on(async {
            let (port, mut rx) = tls_receiver().await;
            let mut conf = TcpLogConf {
                host: "127.0.0.1".into(),
                port,
                timeout: Duration::from_secs(5),
                keepalive: Duration::from_secs(60),
                tls: true,
                tls_sni: Some("logs.example".into()),
            };
            let mut s = TcpSender::default();
            let batch = [
                Bytes::from_static(b"{\"a\":1}\n"),
                Bytes::from_static(b"{\"b\":2}\n"),
            ];
            s.send(&conf, &batch).await.unwrap();
            assert_eq!(
                rx.recv().await.unwrap(),
                (Some("logs.example".into()), "{\"a\":1}".into())
            );
            assert_eq!(rx.recv().await.unwrap().1, "{\"b\":2}");
            // The kept-alive connection is used again.
            s.send(&conf, &batch[..1]).await.unwrap();
            assert_eq!(rx.recv().await.unwrap().1, "{\"a\":1}");
            // Without tls_sni no SNI is sent (Kong's sslhandshake(false, nil, false)).
            conf.tls_sni = None;
            let mut s = TcpSender::default();
            s.send(&conf, &batch[..1]).await.unwrap();
            assert_eq!(rx.recv().await.unwrap(), (None, "{\"a\":1}".into()));
        });
    }
}
