//! Output forms of a [`Config`]: Kong's `GET /` configuration object, the
//! effective kong.conf (like Kong's `.kong_env`) and the documented defaults.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::kong_keys::{is_sensitive, kong_kind, KeyKind, BUNDLED_VAULTS, SENSITIVE_PLACEHOLDER};
use crate::listen::{parse_listen, Listen, Subsystem};
use crate::parse::escape_value;
use crate::values::{parse_bool, parse_list, parse_number};
use crate::{builtin_default, Config};

fn number_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A raw value typed the way Kong prints it.
fn typed_json(key: &str, value: &str) -> Value {
    match kong_kind(key) {
        KeyKind::Array => Value::Array(parse_list(value).into_iter().map(Value::String).collect()),
        KeyKind::Number => parse_number(value)
            .map(number_json)
            .unwrap_or_else(|_| Value::String(value.to_string())),
        KeyKind::Boolean => parse_bool(value)
            .map(Value::Bool)
            .unwrap_or_else(|_| Value::String(value.to_string())),
        KeyKind::NgxBoolean => Value::String(
            if parse_bool(value).unwrap_or(false) {
                "on"
            } else {
                "off"
            }
            .to_string(),
        ),
        KeyKind::String | KeyKind::Enum(_) => Value::String(value.to_string()),
    }
}

fn listeners_json(listeners: &[Listen]) -> Value {
    Value::Array(listeners.iter().map(Listen::to_kong_json).collect())
}

fn bool_map<'a>(names: impl IntoIterator<Item = (&'a str, bool)>) -> Value {
    Value::Object(
        names
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::Bool(v)))
            .collect::<Map<_, _>>(),
    )
}

impl Config {
    /// The `configuration` object of the Admin API's `GET /`, as Kong builds
    /// it: every key with a value, typed like Kong (lists as arrays, numbers,
    /// booleans; `on`/`off` strings for nginx booleans), sensitive values
    /// replaced by `"******"`, plus Kong's derived entries (`proxy_listeners`,
    /// `admin_listeners`, `status_listeners`, `admin_gui_listeners`,
    /// `stream_listeners`, `cluster_listeners`, `*_ssl_enabled`,
    /// `loaded_plugins`, `loaded_vaults`, `enabled_headers`,
    /// `enabled_headers_upstream`) and the Enterprise flags tools expect
    /// (`portal: false`, `rbac: "off"`). Keys are sorted.
    pub fn to_kong_json(&self) -> Value {
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in &self.raw {
            let value = if is_sensitive(k) {
                Value::String(SENSITIVE_PLACEHOLDER.to_string())
            } else {
                typed_json(k, v)
            };
            m.insert(k.clone(), value);
        }
        m.insert("anonymous_reports".into(), Value::Bool(false));
        m.insert(
            "log_level".into(),
            Value::String(self.log_level.as_str().into()),
        );
        m.insert(
            "database".into(),
            Value::String(self.database.as_str().into()),
        );
        m.insert("role".into(), Value::String(self.role.as_str().into()));
        m.insert(
            "router_flavor".into(),
            Value::String(self.router_flavor.as_str().into()),
        );

        m.insert("proxy_listeners".into(), listeners_json(&self.proxy_listen));
        m.insert("admin_listeners".into(), listeners_json(&self.admin_listen));
        m.insert(
            "status_listeners".into(),
            listeners_json(&self.status_listen),
        );
        m.insert(
            "admin_gui_listeners".into(),
            listeners_json(&self.admin_gui_listen),
        );
        m.insert(
            "stream_listeners".into(),
            listeners_json(&self.stream_listen),
        );
        let cluster = self
            .raw
            .get("cluster_listen")
            .and_then(|v| parse_listen(v, Subsystem::Http).ok())
            .unwrap_or_default();
        m.insert("cluster_listeners".into(), listeners_json(&cluster));

        let any_ssl = |l: &[Listen]| l.iter().any(|l| l.ssl);
        let proxy_ssl = any_ssl(&self.proxy_listen);
        let stream_ssl = any_ssl(&self.stream_listen);
        let admin_ssl = any_ssl(&self.admin_listen);
        let gui_ssl = any_ssl(&self.admin_gui_listen);
        let status_ssl = any_ssl(&self.status_listen);
        m.insert("proxy_ssl_enabled".into(), Value::Bool(proxy_ssl));
        m.insert("stream_proxy_ssl_enabled".into(), Value::Bool(stream_ssl));
        m.insert("admin_ssl_enabled".into(), Value::Bool(admin_ssl));
        m.insert("admin_gui_ssl_enabled".into(), Value::Bool(gui_ssl));
        m.insert("status_ssl_enabled".into(), Value::Bool(status_ssl));
        m.insert(
            "ssl_enabled".into(),
            Value::Bool(proxy_ssl || stream_ssl || admin_ssl || gui_ssl || status_ssl),
        );

        let plugins = self.loaded_plugins();
        m.insert(
            "loaded_plugins".into(),
            bool_map(plugins.iter().map(|p| (p.as_str(), true))),
        );
        let vaults = self
            .raw
            .get("vaults")
            .map(|v| parse_list(v))
            .unwrap_or_default();
        let mut loaded_vaults: Vec<String> = Vec::new();
        if vaults.first().map(String::as_str) != Some("off") {
            for v in vaults {
                match v.as_str() {
                    "off" => {}
                    "bundled" => loaded_vaults.extend(BUNDLED_VAULTS.iter().map(|s| s.to_string())),
                    _ => loaded_vaults.push(v),
                }
            }
        }
        m.insert(
            "loaded_vaults".into(),
            bool_map(loaded_vaults.iter().map(|v| (v.as_str(), true))),
        );
        m.insert("enabled_headers".into(), bool_map(self.enabled_headers()));
        m.insert(
            "enabled_headers_upstream".into(),
            bool_map(self.enabled_headers_upstream()),
        );
        m.insert("portal".into(), Value::Bool(false));
        m.insert("rbac".into(), Value::String("off".into()));
        Value::Object(m.into_iter().collect())
    }

    /// The effective configuration in kong.conf format (like Kong's
    /// `<prefix>/.kong_env`): one `key = value` line per key with a value,
    /// sorted, `#` escaped as `\#`, sensitive values masked as `******`
    /// (so the file must not be used to restart with the same secrets).
    pub fn render_conf(&self) -> String {
        let mut out = String::from(
            "# *************************\n\
             # * DO NOT EDIT THIS FILE *\n\
             # *************************\n\
             # This file is generated by Tollgate from the effective configuration\n\
             # (defaults, configuration file, environment, command line).\n\
             # Sensitive values are masked.\n\n",
        );
        for (k, v) in &self.raw {
            let v = if is_sensitive(k) {
                SENSITIVE_PLACEHOLDER.to_string()
            } else {
                escape_value(v)
            };
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(&v);
            out.push('\n');
        }
        out
    }
}

/// Keys typed by [`Config`], with a one-line description, in documentation order.
pub(crate) const TYPED_KEYS: &[(&str, &str)] = &[
    ("prefix", "Working directory (logs, pids, database). Default: $HOME/.tollgate (./.tollgate without HOME)."),
    ("log_level", "debug, info, notice, warn, error, crit, alert or emerg."),
    ("proxy_access_log", "Proxy access log, relative to the prefix, or off."),
    ("proxy_error_log", "Proxy error log."),
    ("admin_access_log", "Admin API access log."),
    ("admin_error_log", "Admin API error log."),
    ("status_access_log", "Status API access log."),
    ("status_error_log", "Status API error log."),
    ("plugins", "Comma-separated plugins to load; 'bundled' means all bundled plugins, 'off' none."),
    ("anonymous_reports", "Accepted for compatibility; Tollgate never sends reports."),
    ("role", "Only 'traditional' is supported."),
    ("proxy_listen", "Proxy listeners: off, or comma-separated <ip>:<port> [ssl] [http2] [proxy_protocol] [reuseport] [backlog=N] ..."),
    ("admin_listen", "Admin API listeners."),
    ("status_listen", "Status API listeners."),
    ("admin_gui_listen", "Kong Manager listeners."),
    ("stream_listen", "TCP/UDP stream listeners."),
    ("admin_gui_url", "Public URL(s) of Kong Manager."),
    ("admin_gui_path", "Path Kong Manager is served under."),
    ("admin_gui_dir", "Directory of the Kong Manager build served on admin_gui_listen, relative to the prefix. Default: <prefix>/gui; nothing listens without a build (Tollgate)."),
    ("admin_gui_api_url", "Admin API URL Kong Manager calls (default: the page's host with the first admin_listen port)."),
    ("admin_auth", "Admin API authentication: off, token or mtls (Tollgate)."),
    ("admin_audit_log", "Admin API audit log path, relative to the prefix, or off (Tollgate)."),
    ("admin_ssl_client_ca", "CA (path or PEM) verifying Admin API client certificates for admin_auth = mtls (Tollgate)."),
    ("database", "sqlite, postgres, cassandra or off (DB-less). Tollgate's default is sqlite."),
    ("sqlite_path", "SQLite database file, relative to the prefix. Default: <prefix>/tollgate.db (Tollgate)."),
    ("db_snapshot", "on: keep the last configuration read from a shared database in <prefix>/db_snapshot.json and start from it when the database is unreachable (Tollgate). Default: off."),
    ("declarative_config", "Declarative configuration file for database = off."),
    ("declarative_config_string", "Declarative configuration as a string for database = off."),
    ("pg_host", "PostgreSQL host."),
    ("pg_port", "PostgreSQL port."),
    ("pg_timeout", "PostgreSQL timeout in milliseconds."),
    ("pg_user", "PostgreSQL user."),
    ("pg_password", "PostgreSQL password."),
    ("pg_database", "PostgreSQL database."),
    ("pg_schema", "PostgreSQL schema (default: the user's search_path)."),
    ("pg_ssl", "Use TLS to PostgreSQL."),
    ("pg_ssl_verify", "Verify the PostgreSQL server certificate."),
    ("pg_max_concurrent_queries", "Maximum concurrent PostgreSQL queries (0 = unlimited)."),
    ("pg_pool_size", "PostgreSQL connection pool size (Tollgate's default: 10)."),
    ("pg_ro_host", "Read-only replica host (optional)."),
    ("pg_ro_port", "Read-only replica port."),
    ("pg_ro_user", "Read-only replica user."),
    ("pg_ro_password", "Read-only replica password."),
    ("pg_ro_database", "Read-only replica database."),
    ("cassandra_contact_points", "Cassandra contact points (Kong 2.8)."),
    ("cassandra_port", "Cassandra port."),
    ("cassandra_keyspace", "Cassandra keyspace."),
    ("cassandra_username", "Cassandra user."),
    ("cassandra_password", "Cassandra password."),
    ("cassandra_consistency", "Deprecated: sets both write and read consistency."),
    ("cassandra_write_consistency", "Cassandra write consistency."),
    ("cassandra_read_consistency", "Cassandra read consistency."),
    ("cassandra_repl_strategy", "SimpleStrategy or NetworkTopologyStrategy."),
    ("cassandra_repl_factor", "Replication factor for SimpleStrategy."),
    ("cassandra_timeout", "Cassandra timeout in milliseconds."),
    ("db_update_frequency", "Seconds between polls for entity changes."),
    ("db_update_propagation", "Extra delay in seconds for eventually consistent databases."),
    ("db_cache_ttl", "Seconds entities stay cached (0 = until invalidated)."),
    ("mem_cache_size", "In-memory cache size (k, m, g suffixes)."),
    ("router_flavor", "traditional, traditional_compatible or expressions."),
    ("headers", "Headers injected in responses: off, server_tokens, latency_tokens, X-Kong-* names."),
    ("headers_upstream", "Headers injected in upstream requests: off or X-Kong-Request-Id."),
    ("trusted_ips", "Trusted proxies: IPs, CIDR blocks (0.0.0.0/0, ::/0) or unix:."),
    ("real_ip_header", "Header carrying the client address."),
    ("real_ip_recursive", "Use the last untrusted address of real_ip_header."),
    ("client_max_body_size", "Maximum request body size, 0 = unlimited (alias nginx_http_client_max_body_size)."),
    ("client_body_buffer_size", "Request body buffer size (alias nginx_http_client_body_buffer_size)."),
    ("error_default_type", "application/json, application/xml, text/html or text/plain."),
    ("upstream_keepalive_pool_size", "Idle upstream connections kept per pool, in each worker (0 disables keepalive)."),
    ("upstream_keepalive_max_requests", "Requests per upstream keepalive connection."),
    ("upstream_keepalive_idle_timeout", "Seconds an idle upstream connection is kept."),
    ("nginx_worker_processes", "Proxy worker threads: auto (one per CPU) or a number."),
    ("lua_max_req_headers", "Maximum request headers read by plugins (1-1000)."),
    ("lua_max_resp_headers", "Maximum response headers read by plugins (1-1000)."),
    ("lua_max_uri_args", "Maximum query arguments read by plugins (1-1000)."),
    ("lua_max_post_args", "Maximum form arguments read by plugins (1-1000)."),
    ("ssl_cert", "Proxy certificate(s), paths or PEM."),
    ("ssl_cert_key", "Proxy certificate key(s)."),
    ("admin_ssl_cert", "Admin API certificate(s)."),
    ("admin_ssl_cert_key", "Admin API certificate key(s)."),
    ("client_ssl", "Present a client certificate to upstreams."),
    ("client_ssl_cert", "Client certificate for upstream TLS."),
    ("client_ssl_cert_key", "Client certificate key for upstream TLS."),
    ("lua_ssl_trusted_certificate", "CA certificates for upstream TLS verification ('system' = system store)."),
    ("lua_ssl_verify_depth", "Upstream certificate chain verification depth."),
    ("proxy_server", "Forward proxy URL for outgoing connections."),
    ("proxy_server_ssl_verify", "Verify the forward proxy's certificate."),
    ("dns_resolver", "DNS servers (ip[:port], comma-separated; default: /etc/resolv.conf)."),
    ("dns_hostsfile", "Hosts file."),
    ("dns_order", "Record types tried, in order (LAST, SRV, A, AAAA, CNAME)."),
    ("dns_valid_ttl", "Overrides the TTL of DNS records (seconds)."),
    ("dns_stale_ttl", "Seconds a stale DNS record may be served."),
    ("dns_cache_size", "DNS cache entries."),
    ("dns_not_found_ttl", "TTL of empty/not-found DNS answers."),
    ("dns_error_ttl", "TTL of DNS errors."),
    ("dns_no_sync", "Disable synchronising concurrent DNS queries."),
];

/// Documentation of every typed key with its built-in default, as a
/// commented kong.conf (for a `tollgate config init`-style command).
pub fn default_conf_text() -> String {
    let mut out = String::from(
        "# Tollgate configuration (kong.conf format).\n\
         #\n\
         # Lines are `key = value`; `#` starts a comment (write `\\#` for a literal #).\n\
         # The values shown are the built-in defaults: uncomment a line to change it.\n\
         # Every key of Kong's kong.conf is accepted; environment variables\n\
         # KONG_<KEY> and TOLLGATE_<KEY> override this file.\n",
    );
    for (key, doc) in TYPED_KEYS {
        let default = match *key {
            "prefix" | "sqlite_path" => "",
            k => builtin_default(k).unwrap_or(""),
        };
        out.push_str("\n# ");
        out.push_str(doc);
        out.push_str("\n#");
        out.push_str(key);
        out.push_str(" =");
        if !default.is_empty() {
            out.push(' ');
            out.push_str(&escape_value(default));
        }
        out.push('\n');
    }
    out
}
