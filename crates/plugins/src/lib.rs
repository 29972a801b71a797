//! tollgate-plugins: the plugin framework and the bundled plugins.
//!
//! * [`Plugin`]: the phases a plugin implements (certificate, rewrite, access,
//!   header_filter, body_filter, log), synchronous because every lookup is in the
//!   snapshot.
//! * [`PluginSpec`]: one registration per plugin (name, Kong's PRIORITY, schema, compile),
//!   listed once in [`BUNDLED`]. The schema drives Admin API validation and
//!   `/schemas/plugins/{name}` through the model's [`PluginCatalog`].
//! * [`Plugins`] / [`Chain`]: the enabled configurations of a snapshot compiled once,
//!   with Kong's scoping precedence resolved per route ahead of time (see [`chain`]).
//! * [`ConsumerIndex`]: consumers and credentials by key, username and id.
//!
//! It does no I/O: the proxy reads the body when a chain asks for it and turns an
//! [`Exit`] into Kong's response.

mod api;
mod auth;
mod body;
mod body_filter;
pub mod chain;
pub mod consumers;
pub mod fuzzing;
pub mod log;
pub mod log_plugins;
mod lua;
mod mime;
mod template;
mod transformer;

pub mod acl;
pub mod basic_auth;
pub mod bot_detection;
pub mod correlation_id;
pub mod cors;
pub mod hmac_auth;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod prometheus;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod rate_limiting_cluster;
pub mod rate_limiting_redis;
pub mod rate_limiting_store;
pub mod request_size_limiting;
pub mod request_termination;
pub mod request_transformer;
pub mod response_ratelimiting;
pub mod response_transformer;

pub use api::{
    BodyCx, BodyMode, Captures, CertificateChoice, CertificateCx, Connection, Credential, Deferred,
    Exit, ExitBody, Flow, InstanceScope, LogCx, Phases, Plugin, PluginError, PluginSpec,
    PluginState, RequestCx, ResponseCx, Resume, Row as EntityRow,
};
pub use chain::{Chain, Collected, Instance, Plugins};
pub use consumers::{Consumer, ConsumerIndex};

use tollgate_model::{PluginCatalog, PluginDef};

/// The version bundled plugins report (Kong's `kong_meta.version`).
pub const VERSION: &str = "3.9.1";

/// This node as plugins see it (`kong.node.get_id()`, `kong.node.get_hostname()`).
static NODE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Records the node's id and hostname once, at start (later calls are ignored).
pub fn set_node(node_id: &str, hostname: &str) {
    let _ = NODE.set((node_id.to_owned(), hostname.to_owned()));
}

/// Whether this node has no database of its own (`database = off`, or a control plane):
/// Kong's rate-limiting schemas then leave `cluster` out of `policy`.
static DBLESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records the node's mode before the plugin catalog is built.
pub fn set_dbless(dbless: bool) {
    DBLESS.store(dbless, std::sync::atomic::Ordering::Relaxed);
}

/// The rate-limiting plugins' `policy` values on this node (Kong's `is_dbless()` choice).
pub(crate) fn policies() -> &'static [&'static str] {
    if DBLESS.load(std::sync::atomic::Ordering::Relaxed) {
        &["local", "redis"]
    } else {
        &["local", "cluster", "redis"]
    }
}

/// `(node_id, hostname)`; empty before [`set_node`] (unit tests).
pub(crate) fn node() -> (&'static str, &'static str) {
    NODE.get()
        .map_or(("", ""), |(id, host)| (id.as_str(), host.as_str()))
}

/// Every plugin compiled into this build.
pub static BUNDLED: &[&PluginSpec] = &[
    &key_auth::SPEC,
    &basic_auth::SPEC,
    &acl::SPEC,
    &request_termination::SPEC,
    &ip_restriction::SPEC,
    &request_size_limiting::SPEC,
    &bot_detection::SPEC,
    &cors::SPEC,
    &jwt::SPEC,
    &hmac_auth::SPEC,
    &rate_limiting::SPEC,
    &response_ratelimiting::SPEC,
    &correlation_id::SPEC,
    &request_transformer::SPEC,
    &response_transformer::SPEC,
    &proxy_cache::SPEC,
    &prometheus::SPEC,
    &log_plugins::http_log::SPEC,
    &log_plugins::file_log::SPEC,
    &log_plugins::tcp_log::SPEC,
    &log_plugins::udp_log::SPEC,
    &log_plugins::syslog::SPEC,
];

/// The registration of a bundled plugin.
pub fn spec(name: &str) -> Option<&'static PluginSpec> {
    BUNDLED.iter().copied().find(|s| s.name == name)
}

/// The schemas of every bundled plugin.
pub fn all() -> Vec<PluginDef> {
    BUNDLED.iter().map(|s| (s.schema)()).collect()
}

/// The catalog for the `plugins` configuration key (`bundled`, `off`, names).
pub fn catalog(enabled: &[String]) -> Result<PluginCatalog, String> {
    PluginCatalog::new(all(), enabled)
}

impl Flow {
    pub fn is_continue(&self) -> bool {
        matches!(self, Flow::Continue)
    }
    /// The exit; panics on `Continue` (tests).
    pub fn unwrap_exit(self) -> Exit {
        match self {
            Flow::Exit(e) => e,
            other => panic!("expected an exit, got {other:?}"),
        }
    }
}

impl Exit {
    /// The message of an error exit (empty for other bodies).
    pub fn message(&self) -> &str {
        match &self.body {
            ExitBody::Error(m) => m,
            ExitBody::Json(v) => v.get("message").and_then(|m| m.as_str()).unwrap_or(""),
            _ => "",
        }
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_registrations_match_kong() {
        let mut names: Vec<_> = BUNDLED.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUNDLED.len(), "unique names");
        for (name, prio) in [
            ("key-auth", 1250),
            ("basic-auth", 1100),
            ("acl", 950),
            ("request-termination", 2),
            ("ip-restriction", 990),
            ("request-size-limiting", 951),
            ("bot-detection", 2500),
            ("cors", 2000),
            ("jwt", 1450),
            ("hmac-auth", 1030),
            ("rate-limiting", 910),
            ("response-ratelimiting", 900),
            ("correlation-id", 100001),
            ("request-transformer", 801),
            ("response-transformer", 800),
            ("proxy-cache", 100),
            ("prometheus", 13),
            ("http-log", 12),
            ("file-log", 9),
            ("udp-log", 8),
            ("tcp-log", 7),
            ("syslog", 4),
        ] {
            assert_eq!(spec(name).unwrap().priority, prio);
        }
        for s in BUNDLED {
            let def = (s.schema)();
            assert_eq!((def.name, def.priority), (s.name, s.priority));
            assert_eq!(def.no_consumer, s.no_consumer);
            // Every default config compiles (acl needs one of its lists).
            let cfg = match s.name {
                "acl" | "ip-restriction" => serde_json::json!({"allow": ["127.0.0.1"]}),
                "rate-limiting" => serde_json::json!({"minute": 5}),
                "proxy-cache" => serde_json::json!({"strategy": "memory"}),
                "response-ratelimiting" => serde_json::json!({"limits": {"v": {"minute": 5}}}),
                "http-log" => serde_json::json!({"http_endpoint": "http://127.0.0.1:9/"}),
                "file-log" => serde_json::json!({"path": "/dev/null"}),
                "tcp-log" | "udp-log" => serde_json::json!({"host": "127.0.0.1", "port": 9}),
                _ => serde_json::json!({}),
            };
            let c = testing::defaults(s, cfg);
            (s.compile)(&serde_json::Value::Object(c)).unwrap();
        }
    }

    #[test]
    fn catalog_honours_the_plugins_key() {
        let c = catalog(&["bundled".into()]).unwrap();
        assert!(c.is_enabled("key-auth") && c.is_enabled("acl"));
        let c = catalog(&["off".into()]).unwrap();
        assert!(c.enabled().is_empty());
        let c = catalog(&["key-auth".into()]).unwrap();
        assert!(c.is_enabled("key-auth") && !c.is_enabled("acl"));
        assert!(catalog(&["nope".into()]).is_err());
    }
}
