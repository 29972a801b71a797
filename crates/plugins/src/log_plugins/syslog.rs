//! syslog (`kong/plugins/syslog/{schema,handler}.lua`, 3.9): the JSON record sent to
//! the local syslog socket with Kong's severity mapping: `server_errors_severity` for a
//! status of 500 or more, `client_errors_severity` for 400 or more, else
//! `successful_severity`; sent only when that severity is at least as urgent as
//! `log_level`. Messages are what glibc's `syslog(3)` writes for lsyslog's
//! `openlog("kong", LOG_PID, facility)`: `<PRI>Mmm dd hh:mm:ss kong[pid]: {json}`
//! (the time in UTC).
//!
//! The socket is `/dev/log`, or the path in `TOLLGATE_SYSLOG_SOCKET` (Tollgate's own
//! setting; tests point it at a datagram listener of their own).

use super::queue::{self, QueueConf, QueueHandle, Sender};
use super::{custom_fields_by_lua, refuse_lua, str_of};
use crate::api::{InstanceScope, LogCx, Phases, Plugin, PluginSpec};
use bytes::Bytes;
use serde_json::{json, Value};
use tollgate_model::schema::{EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "syslog";
pub const PRIORITY: i32 = 4;

/// Where messages go unless `TOLLGATE_SYSLOG_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// Severities by name, most urgent (0) last (Kong's `LOG_PRIORITIES`).
const SEVERITIES: &[(&str, u8)] = &[
    ("debug", 7),
    ("info", 6),
    ("notice", 5),
    ("warning", 4),
    ("err", 3),
    ("crit", 2),
    ("alert", 1),
    ("emerg", 0),
];

/// syslog(3) facility codes.
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

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

fn severity(name: &'static str) -> Field {
    Field::new(name, Type::String)
        .required()
        .default(json!("info"))
        .one_of(&[
            "debug", "info", "notice", "warning", "err", "crit", "alert", "emerg",
        ])
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            severity("log_level"),
            severity("successful_severity"),
            severity("client_errors_severity"),
            severity("server_errors_severity"),
            custom_fields_by_lua(),
            Field::new("facility", Type::String)
                .required()
                .default(json!("user"))
                .one_of(&[
                    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news",
                    "syslog", "user", "uucp", "local0", "local1", "local2", "local3", "local4",
                    "local5", "local6", "local7",
                ])
                .describe("The facility is used by the operating system to decide how to handle each log message."),
        ],
        config_checks: vec![EntityCheck::Custom(refuse_lua)],
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

fn code(table: &[(&str, u8)], cfg: &Value, k: &str, default: &str) -> Result<u8, String> {
    let name = str_of(cfg, k).unwrap_or(default);
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .ok_or_else(|| format!("{k}: unknown value '{name}'"))
}

#[derive(Debug)]
pub struct SyslogConf {
    socket: String,
}

/// syslog compiled.
pub struct Syslog {
    log_level: u8,
    successful: u8,
    client_errors: u8,
    server_errors: u8,
    facility: u8,
    queue: QueueHandle<SyslogSender>,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    Ok(Box::new(build(config)?))
}

fn build(config: &Value) -> Result<Syslog, String> {
    let socket = std::env::var("TOLLGATE_SYSLOG_SOCKET")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
    let name = format!("syslog:{socket}");
    Ok(Syslog {
        log_level: code(SEVERITIES, config, "log_level", "info")?,
        successful: code(SEVERITIES, config, "successful_severity", "info")?,
        client_errors: code(SEVERITIES, config, "client_errors_severity", "info")?,
        server_errors: code(SEVERITIES, config, "server_errors_severity", "info")?,
        facility: code(FACILITIES, config, "facility", "user")?,
        queue: queue::queue(
            &name,
            super::tag(NAME, "?"),
            QueueConf::unqueued(),
            SyslogConf { socket },
        ),
    })
}

impl Syslog {
    /// The severity of a response status, when it is to be sent.
    fn severity_for(&self, status: u16) -> Option<u8> {
        let sev = match status {
            500.. => self.server_errors,
            400.. => self.client_errors,
            _ => self.successful,
        };
        (sev <= self.log_level).then_some(sev)
    }
}

impl Plugin for Syslog {
    fn log(&self, cx: &LogCx<'_>) {
        let Some(sev) = self.severity_for(cx.response.status) else {
            return;
        };
        let pri = self.facility as u32 * 8 + sev as u32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let head = format!("<{pri}>{} kong[{}]: ", timestamp(now), std::process::id());
        let _ = self
            .queue
            .enqueue(super::record_with(cx, head.as_bytes(), false));
    }
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.queue.set_tag(super::tag(NAME, scope.id));
    }
}

/// syslog(3)'s `%h %e %T` (`Dec  5 02:49:24`) of epoch seconds, UTC.
fn timestamp(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Default)]
pub struct SyslogSender {
    sock: Option<tokio::net::UnixDatagram>,
}

impl Sender for SyslogSender {
    type Conf = SyslogConf;

    async fn send(&mut self, c: &SyslogConf, batch: &[Bytes]) -> Result<(), String> {
        if self.sock.is_none() {
            self.sock = Some(tokio::net::UnixDatagram::unbound().map_err(|e| e.to_string())?);
        }
        let sock = self.sock.as_ref().expect("a socket");
        for m in batch {
            sock.send_to(m, &c.socket)
                .await
                .map_err(|e| format!("could not send to {}: {e}", c.socket))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_timestamp_and_severity() {
        // 2026-12-05T02:49:24Z
        assert_eq!(timestamp(1_796_438_964), "Dec  5 02:49:24");
        assert_eq!(timestamp(0), "Jan  1 00:00:00");
        let cfg = json!({"log_level": "notice", "successful_severity": "info",
            "client_errors_severity": "warning", "server_errors_severity": "crit"});
        let s = build(&cfg).unwrap();
        assert_eq!(s.severity_for(200), None, "info is less urgent than notice");
        assert_eq!(s.severity_for(404), Some(4));
        assert_eq!(s.severity_for(503), Some(2));
    }
}
