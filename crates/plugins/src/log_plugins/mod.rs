//! The logging plugins: file-log, http-log, tcp-log, udp-log and syslog
//! (`kong/plugins/{file-log,http-log,tcp-log,udp-log,syslog}`, 3.9). Each sends Kong's
//! log serializer record ([`crate::LogCx::serialize`]) as JSON.
//!
//! The log phase never waits: it serializes the record and hands it to a bounded
//! [`queue`] whose task, on a runtime of its own, does the I/O. Kong's file, tcp, udp
//! and syslog loggers write from a timer per entry with no bound; here they get a queue
//! too (no retries, 10,000 entries), so a dead endpoint costs at most that.
//!
//! `custom_fields_by_lua` runs Lua, which Tollgate cannot: a non-empty value is refused
//! by the schema rather than accepted and ignored.

pub mod file_log;
pub mod http_log;
pub mod queue;
pub mod syslog;
pub mod tcp_log;
mod tls;
pub mod udp_log;

pub use file_log::reopen_files;

use crate::LogCx;
use bytes::Bytes;
use serde_json::{Map, Value};
use tollgate_model::schema::{Check, Field, Type};

/// The refusal of a non-empty `custom_fields_by_lua`.
pub const ERR_LUA: &str = "custom_fields_by_lua is not supported: Tollgate does not run Lua";

/// Kong's `typedefs.lua_code` (a map of field name to Lua code), refused when non-empty.
pub(crate) fn custom_fields_by_lua() -> Field {
    Field::new(
        "custom_fields_by_lua",
        Type::Map {
            keys: Box::new(Field::new("key", Type::String).check(Check::LenMin(1))),
            values: Box::new(Field::new("value", Type::String).check(Check::LenMin(1))),
        },
    )
    .describe("Lua code as a key-value map")
}

/// The config check refusing Lua code.
pub(crate) fn refuse_lua(cfg: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    match cfg.get("custom_fields_by_lua") {
        Some(Value::Object(m)) if !m.is_empty() => {
            Err((Some("custom_fields_by_lua"), ERR_LUA.to_owned()))
        }
        _ => Ok(()),
    }
}

/// The record as JSON (`cjson.encode(kong.log.serialize())`), after `prefix` and
/// followed by a newline when `newline`.
pub(crate) fn record_with(cx: &LogCx<'_>, prefix: &[u8], newline: bool) -> Bytes {
    // Most records are a little over 1 KiB: one allocation, usually no regrowth.
    let mut out = Vec::with_capacity(2048);
    out.extend_from_slice(prefix);
    if serde_json::to_writer(&mut out, cx).is_err() {
        return Bytes::new();
    }
    if newline {
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// The record as JSON.
pub(crate) fn record(cx: &LogCx<'_>) -> Bytes {
    record_with(cx, b"", false)
}

/// The `log_tag` Kong's queue writes in its messages.
pub(crate) fn tag(plugin: &str, id: &str) -> String {
    format!("{plugin} plugin {id}")
}

/// A number field of a config (defaulted by the schema).
pub(crate) fn num(cfg: &Value, k: &str, default: f64) -> f64 {
    cfg.get(k).and_then(Value::as_f64).unwrap_or(default)
}

pub(crate) fn str_of<'a>(cfg: &'a Value, k: &str) -> Option<&'a str> {
    cfg.get(k).and_then(Value::as_str)
}

/// A milliseconds setting as a duration (at least 1 ms: Kong's sockets treat 0 as none,
/// a stalled peer must still time out).
pub(crate) fn millis(ms: f64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.max(1.0) as u64)
}

#[cfg(test)]
mod tests;
