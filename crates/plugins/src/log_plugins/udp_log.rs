//! udp-log (`kong/plugins/udp-log/{schema,handler}.lua`, 3.9): the JSON record as one
//! datagram per request (no newline) to `host:port`. As in Kong, a failed send is
//! logged and the entry is lost.

use super::queue::{self, QueueConf, QueueHandle, Sender};
use super::{custom_fields_by_lua, num, refuse_lua, str_of};
use crate::api::{InstanceScope, LogCx, Phases, Plugin, PluginSpec};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_model::schema::{typedefs, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "udp-log";
pub const PRIORITY: i32 = 8;

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
            typedefs::host("host").required(),
            typedefs::port("port").required(),
            Field::new("timeout", Type::Number)
                .default(json!(10000))
                .describe(
                    "An optional timeout in milliseconds when sending data to the upstream server.",
                ),
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

#[derive(Debug)]
pub struct UdpLogConf {
    host: String,
    port: u16,
    timeout: Duration,
}

/// udp-log compiled.
pub struct UdpLog {
    queue: QueueHandle<UdpSender>,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let conf = UdpLogConf {
        host: str_of(config, "host").ok_or("host is required")?.to_owned(),
        port: config
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("port is required")?,
        timeout: super::millis(num(config, "timeout", 10000.0)),
    };
    let name = format!("udp-log:{}:{}", conf.host, conf.port);
    let queue = queue::queue(&name, super::tag(NAME, "?"), QueueConf::unqueued(), conf);
    Ok(Box::new(UdpLog { queue }))
}

impl Plugin for UdpLog {
    fn log(&self, cx: &LogCx<'_>) {
        let _ = self.queue.enqueue(super::record(cx));
    }
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.queue.set_tag(super::tag(NAME, scope.id));
    }
}

#[derive(Default)]
pub struct UdpSender;

impl Sender for UdpSender {
    type Conf = UdpLogConf;

    async fn send(&mut self, c: &UdpLogConf, batch: &[Bytes]) -> Result<(), String> {
        let host = c.host.trim_matches(['[', ']']);
        let work = async {
            let peer = tokio::net::lookup_host((host, c.port))
                .await
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("no address")?;
            let local = if peer.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = tokio::net::UdpSocket::bind(local)
                .await
                .map_err(|e| e.to_string())?;
            sock.connect(peer).await.map_err(|e| e.to_string())?;
            for d in batch {
                sock.send(d)
                    .await
                    .map_err(|e| format!("could not send data: {e}"))?;
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout(c.timeout, work).await {
            Ok(r) => r.map_err(|e| format!("could not send to {}:{}: {e}", c.host, c.port)),
            Err(_) => Err(format!("could not send to {}:{}: timeout", c.host, c.port)),
        }
    }
}
