//! tollgate-config: Tollgate's configuration, read with Kong's `kong.conf`
//! key names and file format.
//!
//! Sources, lowest to highest precedence:
//!
//! 1. built-in defaults (Kong's `kong_defaults.lua`, except where Tollgate
//!    differs, see [`TOLLGATE_DEFAULTS`]);
//! 2. the configuration file: the one given (`-c FILE`), otherwise the first
//!    existing one of [`DEFAULT_PATHS`];
//! 3. environment variables `KONG_<KEY>`;
//! 4. environment variables `TOLLGATE_<KEY>`;
//! 5. explicit overrides from the command line (e.g. `--prefix`).
//!
//! The environment is passed in ([`LoadOptions::env`]); only
//! [`Config::load_from_process`] reads the process environment.
//!
//! Every key Kong knows is accepted (and kept in [`Config::raw`]) even if
//! Tollgate does not use it; keys nobody knows produce a warning and are
//! ignored. Invalid values are all collected into one [`ConfigError`].
//!
//! ```
//! use tollgate_config::{Config, Database, LoadOptions};
//!
//! let loaded = Config::load(
//!     LoadOptions::isolated() // no file, empty environment
//!         .env([("HOME", "/home/me"), ("KONG_LOG_LEVEL", "debug")])
//!         .set("database", "off"),
//! )
//! .unwrap();
//! let config = loaded.config;
//! assert_eq!(config.database, Database::Off);
//! assert_eq!(config.log_level.as_str(), "debug");
//! assert_eq!(config.prefix, std::path::PathBuf::from("/home/me/.tollgate"));
//! assert_eq!(config.proxy_listen[0].port, 8000);
//! assert_eq!(config.to_kong_json()["admin_listeners"][0]["port"], 8001);
//!
//! let err = Config::load(LoadOptions::isolated().set("database", "mysql")).unwrap_err();
//! assert!(err.to_string().starts_with(
//!     "invalid value for 'database': 'mysql' (expected one of: sqlite, postgres, cassandra, off)"
//! ));
//! ```

#![deny(missing_docs)]

mod error;
pub mod fuzzing;
mod kong_keys;
mod listen;
mod parse;
mod render;
mod values;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, Problem, Source};
pub use kong_keys::{
    is_sensitive, kong_default, kong_kind, KeyKind, BUNDLED_PLUGINS, BUNDLED_VAULTS,
    DYNAMIC_KEY_PREFIXES, HEADER_KEY_TO_NAME, KONG_DEFAULTS, KONG_KEY_KINDS, KONG_LEGACY_KEYS,
    SENSITIVE_KEYS, SENSITIVE_PLACEHOLDER, UPSTREAM_HEADER_KEY_TO_NAME,
};
pub use listen::{parse_listen, Listen, Subsystem};
pub use parse::{parse_conf, Entry, SyntaxError};
pub use render::default_conf_text;
pub use values::{parse_bool, parse_list, parse_size, TrustedIp};

/// Configuration files tried, in order, when no file is given.
pub const DEFAULT_PATHS: &[&str] = &[
    "/etc/tollgate/tollgate.conf",
    "/etc/kong/kong.conf",
    "/etc/kong.conf",
];

/// Keys Tollgate adds to Kong's set.
pub const TOLLGATE_KEYS: &[&str] = &[
    "sqlite_path",
    "admin_auth",
    "admin_audit_log",
    "admin_ssl_client_ca",
    "admin_gui_dir",
    "db_snapshot",
];

/// Built-in defaults where Tollgate differs from Kong (`prefix` and
/// `sqlite_path` are computed at load time, see [`Config::prefix`] and
/// [`Config::sqlite_path`]).
///
/// * `database = sqlite`: Kong defaults to `postgres`; Tollgate runs with an
///   embedded SQLite database out of the box.
/// * `pg_pool_size = 10`: Kong leaves it unset (OpenResty's pool default).
pub const TOLLGATE_DEFAULTS: &[(&str, &str)] = &[("database", "sqlite"), ("pg_pool_size", "10")];

/// Where the Admin API audit log goes unless `admin_audit_log` says otherwise (relative to
/// the prefix).
pub const DEFAULT_ADMIN_AUDIT_LOG: &str = "logs/admin_audit.log";

/// Environment variables with a `KONG_`/`TOLLGATE_` prefix that are not
/// configuration keys (no unknown-key warning). Entries ending in `_` are prefixes.
pub const ENV_NOT_CONFIG: &[&str] = &[
    "KONG_VERSION",
    "KONG_PROCESS_SECRETS",
    "KONG_TEST_",
    "KONG_SPEC_",
    "TOLLGATE_LOG",
    "TOLLGATE_TEST_",
    "TOLLGATE_E2E_",
];

/// Pairs of keys naming the same setting: (canonical, alias, alias is deprecated).
/// The value from the higher-precedence source wins (the canonical key on a
/// tie) and both keys end up with it.
const ALIASES: &[(&str, &str, bool)] = &[
    (
        "client_max_body_size",
        "nginx_http_client_max_body_size",
        false,
    ),
    (
        "client_body_buffer_size",
        "nginx_http_client_body_buffer_size",
        false,
    ),
    ("nginx_proxy_real_ip_header", "real_ip_header", false),
    ("nginx_proxy_real_ip_recursive", "real_ip_recursive", false),
    (
        "nginx_main_worker_processes",
        "nginx_worker_processes",
        false,
    ),
    ("nginx_main_user", "nginx_user", false),
    ("nginx_main_daemon", "nginx_daemon", false),
    ("tracing_instrumentations", "opentelemetry_tracing", true),
    (
        "tracing_sampling_rate",
        "opentelemetry_tracing_sampling_rate",
        true,
    ),
    ("dedicated_config_processing", "privileged_worker", true),
    ("worker_consistency", "router_consistency", true),
];

/// `log_level` values (nginx's severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `notice` (Kong's default)
    #[default]
    Notice,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `crit`
    Crit,
    /// `alert`
    Alert,
    /// `emerg`
    Emerg,
}

impl LogLevel {
    const ALL: [LogLevel; 8] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Notice,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Crit,
        LogLevel::Alert,
        LogLevel::Emerg,
    ];

    /// The kong.conf spelling.
    pub fn as_str(self) -> &'static str {
        kong_keys::LOG_LEVELS[self as usize]
    }

    /// The closest `tracing` level name (`notice` → `info`, `crit` and above → `error`).
    pub fn tracing_level(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info | LogLevel::Notice => "info",
            LogLevel::Warn => "warn",
            _ => "error",
        }
    }

    fn parse(v: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == v)
            .ok_or_else(|| one_of(kong_keys::LOG_LEVELS))
    }
}

/// `database` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Database {
    /// `sqlite`: Tollgate's embedded store (Tollgate's default).
    #[default]
    Sqlite,
    /// `postgres` (Kong's default).
    Postgres,
    /// `cassandra` (Kong 2.8 names and defaults).
    Cassandra,
    /// `off`: DB-less, entities from `declarative_config`.
    Off,
}

impl Database {
    /// The kong.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres => "postgres",
            Database::Cassandra => "cassandra",
            Database::Off => "off",
        }
    }

    fn parse(v: &str) -> Result<Self, String> {
        [
            Database::Sqlite,
            Database::Postgres,
            Database::Cassandra,
            Database::Off,
        ]
        .into_iter()
        .find(|d| d.as_str() == v)
        .ok_or_else(|| one_of(&["sqlite", "postgres", "cassandra", "off"]))
    }
}

/// `router_flavor` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterFlavor {
    /// `traditional`
    Traditional,
    /// `traditional_compatible` (Kong's default)
    #[default]
    TraditionalCompatible,
    /// `expressions`
    Expressions,
}

impl RouterFlavor {
    /// The kong.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterFlavor::Traditional => "traditional",
            RouterFlavor::TraditionalCompatible => "traditional_compatible",
            RouterFlavor::Expressions => "expressions",
        }
    }

    fn parse(v: &str) -> Result<Self, String> {
        [
            RouterFlavor::Traditional,
            RouterFlavor::TraditionalCompatible,
            RouterFlavor::Expressions,
        ]
        .into_iter()
        .find(|d| d.as_str() == v)
        .ok_or_else(|| one_of(&["traditional", "traditional_compatible", "expressions"]))
    }
}

/// `role` values. Only `traditional` is supported for now (Kong also has
/// `control_plane` and `data_plane`; they are rejected with an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Role {
    /// `traditional`
    #[default]
    Traditional,
}

impl Role {
    /// The kong.conf spelling.
    pub fn as_str(self) -> &'static str {
        "traditional"
    }
}

/// `admin_auth` (Tollgate's own key): how the Admin API authenticates
/// callers. `off` or unset means no authentication (`None`), like Kong OSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    /// `token`: a bearer token is required.
    Token,
    /// `mtls`: a client certificate signed by `admin_ssl_client_ca` is required.
    Mtls,
}

impl AdminAuth {
    /// The kong.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAuth::Token => "token",
            AdminAuth::Mtls => "mtls",
        }
    }
}

/// `nginx_worker_processes` (`nginx_main_worker_processes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerProcesses {
    /// `auto`: one per CPU.
    #[default]
    Auto,
    /// A fixed number (at least 1).
    Count(u32),
}

impl WorkerProcesses {
    /// The number of workers, with `auto` resolved to `cpus`.
    pub fn resolve(self, cpus: usize) -> usize {
        match self {
            WorkerProcesses::Auto => cpus.max(1),
            WorkerProcesses::Count(n) => n as usize,
        }
    }
}

/// What [`Config::load`] reads.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The configuration file (`-c FILE`); it must exist. When `None`, the
    /// first existing file of [`LoadOptions::default_paths`] is used, if any.
    pub file: Option<PathBuf>,
    /// Snapshot of the environment (only `KONG_*`, `TOLLGATE_*` and `HOME`
    /// are looked at).
    pub env: HashMap<String, String>,
    /// Explicit overrides (`(key, value)`), highest precedence.
    pub overrides: Vec<(String, String)>,
    /// Files tried when `file` is `None` ([`DEFAULT_PATHS`] by default).
    pub default_paths: Vec<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            file: None,
            env: HashMap::new(),
            overrides: Vec::new(),
            default_paths: DEFAULT_PATHS.iter().map(PathBuf::from).collect(),
        }
    }
}

impl LoadOptions {
    /// Options reading no file at all (no `-c`, no default paths) and an
    /// empty environment: built-in defaults only.
    pub fn isolated() -> Self {
        LoadOptions {
            default_paths: Vec::new(),
            ..LoadOptions::default()
        }
    }

    /// Sets the configuration file.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Sets the environment snapshot.
    pub fn env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// Adds an explicit override.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.push((key.into(), value.into()));
        self
    }
}

/// A loaded configuration and the warnings produced while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Non-fatal problems: unknown keys (naming where they came from),
    /// duplicate keys in the file, deprecated keys.
    pub warnings: Vec<String>,
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Tollgate's configuration. Field names are kong.conf keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `prefix`, absolute. Tollgate's default is `$HOME/.tollgate` (or
    /// `./.tollgate` when `HOME` is unset) so that a fresh checkout runs
    /// without root; Kong's is `/usr/local/kong/`.
    pub prefix: PathBuf,
    /// `log_level`.
    pub log_level: LogLevel,
    /// `proxy_access_log` (relative paths are relative to the prefix; `off` disables).
    pub proxy_access_log: String,
    /// `proxy_error_log`.
    pub proxy_error_log: String,
    /// `admin_access_log`.
    pub admin_access_log: String,
    /// `admin_error_log`.
    pub admin_error_log: String,
    /// `status_access_log`.
    pub status_access_log: String,
    /// `status_error_log`.
    pub status_error_log: String,
    /// `plugins`, as written (`bundled` not expanded, see [`Config::loaded_plugins`]).
    pub plugins: Vec<String>,
    /// `anonymous_reports`: accepted for compatibility but always `false`:
    /// Tollgate never phones home, whatever the configured value.
    pub anonymous_reports: bool,
    /// `role`.
    pub role: Role,

    /// `proxy_listen` (empty when `off`).
    pub proxy_listen: Vec<Listen>,
    /// `admin_listen`.
    pub admin_listen: Vec<Listen>,
    /// `status_listen`.
    pub status_listen: Vec<Listen>,
    /// `admin_gui_listen`.
    pub admin_gui_listen: Vec<Listen>,
    /// `stream_listen`.
    pub stream_listen: Vec<Listen>,
    /// `admin_gui_url` (list; empty when unset).
    pub admin_gui_url: Vec<String>,
    /// `admin_gui_path`.
    pub admin_gui_path: String,
    /// `admin_gui_dir` (Tollgate): the Kong Manager build served on `admin_gui_listen`,
    /// relative to the prefix; `None` when unset (then `<prefix>/gui`, Kong's place for it,
    /// is served when it holds a build).
    pub admin_gui_dir: Option<PathBuf>,
    /// `admin_gui_api_url`: the Admin API URL Kong Manager calls (`None`: the page's host
    /// with the first `admin_listen` port).
    pub admin_gui_api_url: Option<String>,
    /// `admin_auth` (Tollgate): `None` when unset or `off`.
    pub admin_auth: Option<AdminAuth>,
    /// `admin_audit_log` (Tollgate): path of the Admin API audit log
    /// (relative to the prefix; [`DEFAULT_ADMIN_AUDIT_LOG`] when unset); `None` when `off`.
    pub admin_audit_log: Option<String>,
    /// `admin_ssl_client_ca` (Tollgate): CA bundle (path or PEM) used to verify
    /// Admin API client certificates when `admin_auth = mtls`.
    pub admin_ssl_client_ca: Option<String>,

    /// `database`: Tollgate defaults to `sqlite` (Kong: `postgres`).
    pub database: Database,
    /// `sqlite_path` (Tollgate): defaults to `<prefix>/tollgate.db`; relative
    /// paths are relative to the prefix.
    pub sqlite_path: PathBuf,
    /// `declarative_config`.
    pub declarative_config: Option<PathBuf>,
    /// `declarative_config_string`.
    pub declarative_config_string: Option<String>,
    /// `pg_host`.
    pub pg_host: String,
    /// `pg_port`.
    pub pg_port: u16,
    /// `pg_timeout` (milliseconds in kong.conf).
    pub pg_timeout: Duration,
    /// `pg_user`.
    pub pg_user: String,
    /// `pg_password`.
    pub pg_password: Option<String>,
    /// `pg_database`.
    pub pg_database: String,
    /// `pg_schema`.
    pub pg_schema: Option<String>,
    /// `pg_ssl`.
    pub pg_ssl: bool,
    /// `pg_ssl_verify`.
    pub pg_ssl_verify: bool,
    /// `pg_max_concurrent_queries` (0 = unlimited).
    pub pg_max_concurrent_queries: u64,
    /// `pg_pool_size`: Tollgate's default is 10 (Kong leaves it unset).
    pub pg_pool_size: u32,
    /// `pg_ro_host` (read-only replica).
    pub pg_ro_host: Option<String>,
    /// `pg_ro_port`.
    pub pg_ro_port: Option<u16>,
    /// `pg_ro_user`.
    pub pg_ro_user: Option<String>,
    /// `pg_ro_password`.
    pub pg_ro_password: Option<String>,
    /// `pg_ro_database`.
    pub pg_ro_database: Option<String>,
    /// `cassandra_contact_points` (Kong 2.8).
    pub cassandra_contact_points: Vec<String>,
    /// `cassandra_port`.
    pub cassandra_port: u16,
    /// `cassandra_keyspace`.
    pub cassandra_keyspace: String,
    /// `cassandra_username`.
    pub cassandra_username: String,
    /// `cassandra_password`.
    pub cassandra_password: Option<String>,
    /// `cassandra_consistency` (deprecated in Kong 2.8; sets the two below when they are not set).
    pub cassandra_consistency: Option<String>,
    /// `cassandra_write_consistency`.
    pub cassandra_write_consistency: String,
    /// `cassandra_read_consistency`.
    pub cassandra_read_consistency: String,
    /// `cassandra_repl_strategy`.
    pub cassandra_repl_strategy: String,
    /// `cassandra_repl_factor`.
    pub cassandra_repl_factor: u32,
    /// `cassandra_timeout` (milliseconds in kong.conf).
    pub cassandra_timeout: Duration,
    /// `db_snapshot` (Tollgate): with a shared database, keep the last configuration read
    /// from it in `<prefix>/db_snapshot.json` and start from that file when the database
    /// is unreachable at start.
    pub db_snapshot: bool,
    /// `db_update_frequency` (seconds in kong.conf).
    pub db_update_frequency: Duration,
    /// `db_update_propagation` (seconds).
    pub db_update_propagation: Duration,
    /// `db_cache_ttl` (seconds; 0 = no expiry).
    pub db_cache_ttl: Duration,
    /// `mem_cache_size` in bytes.
    pub mem_cache_size: u64,

    /// `router_flavor`.
    pub router_flavor: RouterFlavor,
    /// `headers` (as written; see [`Config::enabled_headers`]).
    pub headers: Vec<String>,
    /// `headers_upstream`.
    pub headers_upstream: Vec<String>,
    /// `trusted_ips`.
    pub trusted_ips: Vec<TrustedIp>,
    /// `real_ip_header` (alias of `nginx_proxy_real_ip_header`).
    pub real_ip_header: String,
    /// `real_ip_recursive` (alias of `nginx_proxy_real_ip_recursive`).
    pub real_ip_recursive: bool,
    /// `client_max_body_size` in bytes, 0 = unlimited. Kong's
    /// `nginx_http_client_max_body_size` is accepted as an alias.
    pub client_max_body_size: u64,
    /// `client_body_buffer_size` in bytes (alias `nginx_http_client_body_buffer_size`).
    pub client_body_buffer_size: u64,
    /// `error_default_type`.
    pub error_default_type: String,
    /// `upstream_keepalive_pool_size` (0 disables keepalive).
    pub upstream_keepalive_pool_size: u32,
    /// `upstream_keepalive_max_requests`.
    pub upstream_keepalive_max_requests: u32,
    /// `upstream_keepalive_idle_timeout` (seconds).
    pub upstream_keepalive_idle_timeout: Duration,
    /// `nginx_worker_processes` (alias of `nginx_main_worker_processes`).
    pub nginx_worker_processes: WorkerProcesses,
    /// `lua_max_req_headers` (1–1000).
    pub lua_max_req_headers: u32,
    /// `lua_max_resp_headers` (1–1000).
    pub lua_max_resp_headers: u32,
    /// `lua_max_uri_args` (1–1000).
    pub lua_max_uri_args: u32,
    /// `lua_max_post_args` (1–1000).
    pub lua_max_post_args: u32,

    /// `ssl_cert` (paths or PEM).
    pub ssl_cert: Vec<String>,
    /// `ssl_cert_key`.
    pub ssl_cert_key: Vec<String>,
    /// `admin_ssl_cert`.
    pub admin_ssl_cert: Vec<String>,
    /// `admin_ssl_cert_key`.
    pub admin_ssl_cert_key: Vec<String>,
    /// `client_ssl`: present a client certificate to upstreams.
    pub client_ssl: bool,
    /// `client_ssl_cert`.
    pub client_ssl_cert: Option<String>,
    /// `client_ssl_cert_key`.
    pub client_ssl_cert_key: Option<String>,
    /// `lua_ssl_trusted_certificate` (`system` = the system CA store).
    pub lua_ssl_trusted_certificate: Vec<String>,
    /// `lua_ssl_verify_depth`.
    pub lua_ssl_verify_depth: u32,
    /// `proxy_server` (forward proxy URL).
    pub proxy_server: Option<String>,
    /// `proxy_server_ssl_verify`.
    pub proxy_server_ssl_verify: bool,

    /// All `dns_*` keys that have a value, as strings.
    pub dns: BTreeMap<String, String>,
    /// `dns_valid_ttl`: overrides every DNS record's TTL.
    pub dns_valid_ttl: Option<Duration>,
    /// `dns_stale_ttl`: how long an expired DNS answer is still served while
    /// it is refreshed.
    pub dns_stale_ttl: Duration,
    /// `dns_not_found_ttl`: how long a name error or empty answer is cached.
    pub dns_not_found_ttl: Duration,
    /// `dns_error_ttl`: how long another DNS server error is cached.
    pub dns_error_ttl: Duration,
    /// `dns_cache_size`: names kept in the DNS cache.
    pub dns_cache_size: u64,
    /// `dns_no_sync`: concurrent lookups of a name do not share one query.
    pub dns_no_sync: bool,

    /// Every key with a value, in effective (post-precedence) form: Kong's
    /// keys, Tollgate's keys and injected `nginx_*` directives. Unset keys
    /// (empty value / Kong's `NONE`) are absent.
    pub raw: BTreeMap<String, String>,
    /// Where each value of [`Config::raw`] came from.
    pub sources: BTreeMap<String, Source>,
}

impl Default for Config {
    /// Built-in defaults only (no file, empty environment).
    fn default() -> Self {
        Config::defaults()
    }
}

fn one_of(items: &[&str]) -> String {
    format!("one of: {}", items.join(", "))
}

/// Is `key` a key Kong or Tollgate knows?
pub fn is_known_key(key: &str) -> bool {
    kong_default(key).is_some()
        || KONG_LEGACY_KEYS.contains(&key)
        || TOLLGATE_KEYS.contains(&key)
        || DYNAMIC_KEY_PREFIXES
            .iter()
            .any(|p| key.len() > p.len() && key.starts_with(p))
}

fn env_ignored(var: &str) -> bool {
    ENV_NOT_CONFIG.iter().any(|e| {
        if e.ends_with('_') {
            var.starts_with(e)
        } else {
            var == *e || var.starts_with(&format!("{e}_"))
        }
    })
}

/// The built-in default of `key` as Tollgate uses it (`None` when unset).
fn builtin_default(key: &str) -> Option<&'static str> {
    TOLLGATE_DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .or_else(|| kong_default(key))
        .filter(|v| !v.is_empty())
}

#[derive(Debug, Clone)]
struct Setting {
    value: String,
    source: Source,
}

fn normalize_path(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Config {
    /// Loads the configuration from defaults, file, environment and overrides.
    pub fn load(opts: LoadOptions) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let mut problems = Vec::new();

        // 1. defaults
        let mut eff: BTreeMap<String, Setting> = BTreeMap::new();
        for (k, v) in KONG_DEFAULTS {
            let value = TOLLGATE_DEFAULTS
                .iter()
                .find(|(tk, _)| tk == k)
                .map(|(_, tv)| *tv)
                .unwrap_or(v);
            eff.insert(
                (*k).to_string(),
                Setting {
                    value: value.to_string(),
                    source: Source::Default,
                },
            );
        }
        let home = opts.env.get("HOME").filter(|h| !h.is_empty());
        let default_prefix = match home {
            Some(h) => Path::new(h).join(".tollgate"),
            None => PathBuf::from("./.tollgate"),
        };
        eff.insert(
            "prefix".into(),
            Setting {
                value: default_prefix.to_string_lossy().into_owned(),
                source: Source::Default,
            },
        );

        // 2. file
        let file = match &opts.file {
            Some(p) if !p.exists() => return Err(ConfigError::FileNotFound(p.clone())),
            Some(p) => Some(p.clone()),
            None => opts.default_paths.iter().find(|p| p.is_file()).cloned(),
        };
        if let Some(path) = &file {
            let text = std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let text = String::from_utf8_lossy(&text);
            let (entries, syntax) = parse_conf(&text);
            for e in syntax {
                problems.push(Problem {
                    key: None,
                    message: e.message,
                    source: Some(Source::File {
                        path: path.clone(),
                        line: e.line,
                    }),
                });
            }
            let mut seen: HashMap<String, usize> = HashMap::new();
            for e in entries {
                let source = Source::File {
                    path: path.clone(),
                    line: e.line,
                };
                if !is_known_key(&e.key) {
                    warnings.push(format!(
                        "unknown configuration key '{}' in {source} (ignored)",
                        e.key
                    ));
                    continue;
                }
                if let Some(prev) = seen.insert(e.key.clone(), e.line) {
                    warnings.push(format!(
                        "configuration key '{}' is set more than once in {}: line {} overrides line {prev}",
                        e.key,
                        path.display(),
                        e.line
                    ));
                }
                eff.insert(
                    e.key,
                    Setting {
                        value: e.value,
                        source,
                    },
                );
            }
        }

        // 3./4. environment: KONG_ first, then TOLLGATE_ (which wins)
        let mut env: Vec<(&String, &String)> = opts.env.iter().collect();
        env.sort();
        for prefix in ["KONG_", "TOLLGATE_"] {
            for (var, value) in &env {
                let Some(rest) = var.strip_prefix(prefix) else {
                    continue;
                };
                if rest.is_empty() || env_ignored(var) {
                    continue;
                }
                let key = rest.to_ascii_lowercase();
                let source = Source::Env {
                    var: (*var).clone(),
                };
                if !is_known_key(&key) {
                    warnings.push(format!(
                        "unknown configuration key '{key}' in {source} (ignored)"
                    ));
                    continue;
                }
                eff.insert(
                    key,
                    Setting {
                        value: value.trim().to_string(),
                        source,
                    },
                );
            }
        }

        // 5. overrides
        for (key, value) in &opts.overrides {
            if !is_known_key(key) {
                warnings.push(format!(
                    "unknown configuration key '{key}' in {} (ignored)",
                    Source::Override
                ));
                continue;
            }
            eff.insert(
                key.clone(),
                Setting {
                    value: value.trim().to_string(),
                    source: Source::Override,
                },
            );
        }

        // aliases
        for (canonical, alias, deprecated) in ALIASES {
            let a = eff.get(*canonical).cloned();
            let Some(b) = eff.get(*alias).cloned() else {
                continue;
            };
            if *deprecated && b.source != Source::Default {
                warnings.push(format!(
                    "the '{alias}' configuration property is deprecated, use '{canonical}' instead"
                ));
            }
            let winner = match a {
                Some(a) if a.source.rank() >= b.source.rank() => a,
                _ => b,
            };
            eff.insert((*canonical).to_string(), winner.clone());
            eff.insert((*alias).to_string(), winner);
        }

        // Kong 2.8: the deprecated cassandra_consistency fills in the write and
        // read consistencies unless those are set by a source at least as strong.
        if let Some(cc) = eff
            .get("cassandra_consistency")
            .filter(|s| !s.value.is_empty() && s.source != Source::Default)
            .cloned()
        {
            warnings.push(
                "the 'cassandra_consistency' configuration property is deprecated, use \
                 'cassandra_write_consistency' / 'cassandra_read_consistency' instead"
                    .to_string(),
            );
            for key in ["cassandra_write_consistency", "cassandra_read_consistency"] {
                if eff
                    .get(key)
                    .is_none_or(|s| s.source.rank() < cc.source.rank())
                {
                    eff.insert(key.to_string(), cc.clone());
                }
            }
        }

        // prefix → absolute; sqlite_path relative to it
        let prefix_value = eff
            .get("prefix")
            .map(|s| s.value.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default_prefix.to_string_lossy().into_owned());
        let prefix = normalize_path(Path::new(&prefix_value));
        if let Some(s) = eff.get_mut("prefix") {
            s.value = prefix.to_string_lossy().into_owned();
        }
        let sqlite_path = match eff.get("sqlite_path").filter(|s| !s.value.is_empty()) {
            Some(s) => prefix.join(&s.value),
            None => prefix.join("tollgate.db"),
        };
        let sqlite_source = eff
            .get("sqlite_path")
            .filter(|s| !s.value.is_empty())
            .map(|s| s.source.clone())
            .unwrap_or(Source::Default);
        eff.insert(
            "sqlite_path".into(),
            Setting {
                value: sqlite_path.to_string_lossy().into_owned(),
                source: sqlite_source,
            },
        );

        let all_sources: BTreeMap<String, Source> = eff
            .iter()
            .map(|(k, s)| (k.clone(), s.source.clone()))
            .collect();
        let mut raw = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for (k, s) in eff {
            if !s.value.is_empty() {
                raw.insert(k.clone(), s.value);
                sources.insert(k, s.source);
            }
        }

        let mut cx = Ctx {
            raw: &raw,
            sources: &all_sources,
            problems,
            checked: BTreeSet::new(),
        };
        let config = build(&mut cx, prefix, sqlite_path);
        generic_checks(&mut cx);
        if !cx.problems.is_empty() {
            return Err(ConfigError::Invalid(cx.problems));
        }
        let mut config = config;
        config.raw = raw;
        config.sources = sources;
        Ok(Loaded {
            config,
            warnings,
            file,
        })
    }

    /// [`Config::load`] with the process environment and the default file
    /// locations.
    pub fn load_from_process(
        file: Option<PathBuf>,
        overrides: Vec<(String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Config::load(LoadOptions {
            file,
            env,
            overrides,
            ..LoadOptions::default()
        })
    }

    /// Built-in defaults only (no file, empty environment, so the prefix is
    /// `./.tollgate` made absolute).
    pub fn defaults() -> Config {
        Config::load(LoadOptions::isolated())
            .expect("built-in defaults are valid")
            .config
    }

    /// `path` resolved against the prefix when relative (log files, …).
    pub fn prefix_path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.prefix.join(path)
    }

    /// Whether every listener only accepts local connections (true for an
    /// empty list: nothing is exposed).
    pub fn is_loopback_only(listeners: &[Listen]) -> bool {
        listeners.iter().all(Listen::is_loopback)
    }

    /// Plugin names enabled by `plugins`, with `bundled` expanded to
    /// [`BUNDLED_PLUGINS`] and `off` meaning none.
    pub fn loaded_plugins(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if self.plugins.first().map(String::as_str) == Some("off") {
            return out;
        }
        for p in &self.plugins {
            match p.as_str() {
                "off" => {}
                "bundled" => out.extend(BUNDLED_PLUGINS.iter().map(|s| s.to_string())),
                other => {
                    out.insert(other.to_string());
                }
            }
        }
        out
    }

    /// Kong's `enabled_headers`: every downstream header name (and the
    /// `server_tokens`/`latency_tokens` groups) → whether `headers` enables it.
    pub fn enabled_headers(&self) -> BTreeMap<&'static str, bool> {
        let mut m: BTreeMap<&'static str, bool> = HEADER_KEY_TO_NAME
            .iter()
            .map(|(_, name)| (*name, false))
            .collect();
        if self.headers.first().map(String::as_str) != Some("off") {
            for h in &self.headers {
                let lower = h.to_ascii_lowercase();
                if let Some((_, name)) = HEADER_KEY_TO_NAME.iter().find(|(k, _)| *k == lower) {
                    m.insert(name, true);
                }
            }
        }
        if m["server_tokens"] {
            m.insert("Via", true);
            m.insert("Server", true);
        }
        if m["latency_tokens"] {
            for n in [
                "X-Kong-Proxy-Latency",
                "X-Kong-Response-Latency",
                "X-Kong-Admin-Latency",
                "X-Kong-Upstream-Latency",
            ] {
                m.insert(n, true);
            }
        }
        m
    }

    /// Kong's `enabled_headers_upstream`.
    pub fn enabled_headers_upstream(&self) -> BTreeMap<&'static str, bool> {
        let mut m: BTreeMap<&'static str, bool> = UPSTREAM_HEADER_KEY_TO_NAME
            .iter()
            .map(|(_, name)| (*name, false))
            .collect();
        if self.headers_upstream.first().map(String::as_str) != Some("off") {
            for h in &self.headers_upstream {
                let lower = h.to_ascii_lowercase();
                if let Some((_, name)) = UPSTREAM_HEADER_KEY_TO_NAME
                    .iter()
                    .find(|(k, _)| *k == lower)
                {
                    m.insert(name, true);
                }
            }
        }
        m
    }

    /// Whether response header `name` (case-insensitive, e.g. `Via`,
    /// `X-Kong-Proxy-Latency`) is enabled by `headers`.
    pub fn header_enabled(&self, name: &str) -> bool {
        self.enabled_headers()
            .iter()
            .any(|(n, on)| *on && n.eq_ignore_ascii_case(name))
    }

    /// Whether `ip` is in `trusted_ips`.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_ips.iter().any(|t| t.contains(ip))
    }
}

struct Ctx<'a> {
    raw: &'a BTreeMap<String, String>,
    sources: &'a BTreeMap<String, Source>,
    problems: Vec<Problem>,
    checked: BTreeSet<String>,
}

impl Ctx<'_> {
    fn source(&self, key: &str) -> Option<Source> {
        self.sources.get(key).cloned()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }

    fn fail(&mut self, key: &str, value: &str, expected: &str) {
        let shown = if is_sensitive(key) {
            SENSITIVE_PLACEHOLDER
        } else {
            value
        };
        self.problems.push(Problem {
            key: Some(key.to_string()),
            message: format!("invalid value for '{key}': '{shown}' (expected {expected})"),
            source: self.source(key),
        });
    }

    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: Some(key.to_string()),
            message,
            source: self.source(key),
        });
    }

    /// Typed value; when unset, the built-in default.
    fn val<T: Default>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> T {
        self.checked.insert(key.to_string());
        match self.get(key).map(str::to_string) {
            Some(v) => match f(&v) {
                Ok(t) => t,
                Err(expected) => {
                    self.fail(key, &v, &expected);
                    T::default()
                }
            },
            None => builtin_default(key)
                .and_then(|d| f(d).ok())
                .unwrap_or_default(),
        }
    }

    /// Typed optional value (`None` when unset).
    fn opt<T>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        self.checked.insert(key.to_string());
        let v = self.get(key)?.to_string();
        match f(&v) {
            Ok(t) => Some(t),
            Err(expected) => {
                self.fail(key, &v, &expected);
                None
            }
        }
    }

    fn string(&mut self, key: &str) -> String {
        self.val(key, |v| Ok(v.to_string()))
    }

    fn opt_string(&mut self, key: &str) -> Option<String> {
        self.opt(key, |v| Ok(v.to_string()))
    }

    fn list(&mut self, key: &str) -> Vec<String> {
        self.checked.insert(key.to_string());
        self.get(key).map(parse_list).unwrap_or_default()
    }

    fn boolean(&mut self, key: &str) -> bool {
        self.val(key, parse_bool)
    }

    fn int(&mut self, key: &str, min: u64, max: u64) -> u64 {
        self.val(key, |v| values::parse_int(v, min, max))
    }

    fn enumerated(&mut self, key: &str, allowed: &[&str]) -> String {
        self.val(key, |v| {
            if allowed.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(one_of(allowed))
            }
        })
    }

    fn listen(&mut self, key: &str, subsystem: Subsystem) -> Vec<Listen> {
        self.checked.insert(key.to_string());
        let v = self.get(key).unwrap_or("").to_string();
        match parse_listen(&v, subsystem) {
            Ok(l) => l,
            Err(why) => {
                self.fail(key, &v, &format!("{}; {why}", subsystem.usage()));
                Vec::new()
            }
        }
    }

    /// Validates each entry of a list with `check`.
    fn list_entries(
        &mut self,
        key: &str,
        items: &[String],
        check: impl Fn(&str) -> Result<(), String>,
    ) {
        for item in items {
            if let Err(expected) = check(item) {
                self.fail(key, item, &expected);
            }
        }
    }
}

fn build(cx: &mut Ctx<'_>, prefix: PathBuf, sqlite_path: PathBuf) -> Config {
    cx.checked.insert("prefix".into());
    cx.checked.insert("sqlite_path".into());
    let admin_gui_dir = cx.opt_string("admin_gui_dir").map(|d| prefix.join(d));

    let role = cx.val("role", |v| match v {
        "traditional" => Ok(Role::Traditional),
        _ => Err("one of: traditional (control_plane and data_plane are not supported yet)".into()),
    });

    let headers = cx.list("headers");
    cx.list_entries("headers", &headers, |h| {
        let l = h.to_ascii_lowercase();
        if l == "off" || HEADER_KEY_TO_NAME.iter().any(|(k, _)| *k == l) {
            Ok(())
        } else {
            let mut allowed = vec!["off"];
            allowed.extend(HEADER_KEY_TO_NAME.iter().map(|(k, _)| *k));
            Err(format!("a comma-separated list of: {}", allowed.join(", ")))
        }
    });
    let headers_upstream = cx.list("headers_upstream");
    cx.list_entries("headers_upstream", &headers_upstream, |h| {
        let l = h.to_ascii_lowercase();
        if l == "off" || UPSTREAM_HEADER_KEY_TO_NAME.iter().any(|(k, _)| *k == l) {
            Ok(())
        } else {
            Err("a comma-separated list of: off, x-kong-request-id".into())
        }
    });

    let trusted_raw = cx.list("trusted_ips");
    let mut trusted_ips = Vec::new();
    for t in &trusted_raw {
        match TrustedIp::parse(t) {
            Ok(ip) => trusted_ips.push(ip),
            Err(expected) => cx.fail("trusted_ips", t, &expected),
        }
    }

    let dns: BTreeMap<String, String> = cx
        .raw
        .iter()
        .filter(|(k, _)| k.starts_with("dns_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Kong 3.9's new resolver (`resolver_*` keys) is not built: refused,
    // rather than silently resolving with the `dns_*` settings.
    if cx.boolean("new_dns_client") {
        cx.fail(
            "new_dns_client",
            "on",
            "off (the new DNS client is not supported; the dns_* keys configure the resolver)",
        );
    }
    let dns_order = cx.list("dns_order");
    cx.list_entries("dns_order", &dns_order, |e| {
        if ["LAST", "A", "AAAA", "CNAME", "SRV"].contains(&e.to_ascii_uppercase().as_str()) {
            Ok(())
        } else {
            Err("a comma-separated list of: LAST, A, AAAA, CNAME, SRV".into())
        }
    });

    let u32max = u64::from(u32::MAX);
    let config = Config {
        prefix,
        log_level: cx.val("log_level", LogLevel::parse),
        proxy_access_log: cx.string("proxy_access_log"),
        proxy_error_log: cx.string("proxy_error_log"),
        admin_access_log: cx.string("admin_access_log"),
        admin_error_log: cx.string("admin_error_log"),
        status_access_log: cx.string("status_access_log"),
        status_error_log: cx.string("status_error_log"),
        plugins: cx.list("plugins"),
        anonymous_reports: {
            // validated, but never honoured: Tollgate does not phone home
            let _ = cx.boolean("anonymous_reports");
            false
        },
        role,
        proxy_listen: cx.listen("proxy_listen", Subsystem::Http),
        admin_listen: cx.listen("admin_listen", Subsystem::Http),
        status_listen: cx.listen("status_listen", Subsystem::Http),
        admin_gui_listen: cx.listen("admin_gui_listen", Subsystem::Http),
        stream_listen: cx.listen("stream_listen", Subsystem::Stream),
        admin_gui_url: cx.list("admin_gui_url"),
        admin_gui_path: cx.string("admin_gui_path"),
        admin_gui_dir,
        admin_gui_api_url: cx.opt_string("admin_gui_api_url"),
        admin_auth: cx
            .opt("admin_auth", |v| match v {
                "off" => Ok(None),
                "token" => Ok(Some(AdminAuth::Token)),
                "mtls" => Ok(Some(AdminAuth::Mtls)),
                _ => Err(one_of(&["off", "token", "mtls"])),
            })
            .flatten(),
        admin_audit_log: match cx.opt_string("admin_audit_log") {
            Some(v) if v == "off" => None,
            Some(v) => Some(v),
            None => Some(DEFAULT_ADMIN_AUDIT_LOG.into()),
        },
        admin_ssl_client_ca: cx.opt_string("admin_ssl_client_ca"),

        database: cx.val("database", Database::parse),
        sqlite_path,
        declarative_config: cx.opt_string("declarative_config").map(PathBuf::from),
        declarative_config_string: cx.opt_string("declarative_config_string"),
        pg_host: cx.string("pg_host"),
        pg_port: cx.int("pg_port", 1, 65535) as u16,
        pg_timeout: cx.val("pg_timeout", values::parse_millis),
        pg_user: cx.string("pg_user"),
        pg_password: cx.opt_string("pg_password"),
        pg_database: cx.string("pg_database"),
        pg_schema: cx.opt_string("pg_schema"),
        pg_ssl: cx.boolean("pg_ssl"),
        pg_ssl_verify: cx.boolean("pg_ssl_verify"),
        pg_max_concurrent_queries: cx.int("pg_max_concurrent_queries", 0, u64::MAX / 2),
        pg_pool_size: cx.int("pg_pool_size", 1, u32max) as u32,
        pg_ro_host: cx.opt_string("pg_ro_host"),
        pg_ro_port: cx.opt("pg_ro_port", |v| {
            values::parse_int(v, 1, 65535).map(|n| n as u16)
        }),
        pg_ro_user: cx.opt_string("pg_ro_user"),
        pg_ro_password: cx.opt_string("pg_ro_password"),
        pg_ro_database: cx.opt_string("pg_ro_database"),
        cassandra_contact_points: cx.list("cassandra_contact_points"),
        cassandra_port: cx.int("cassandra_port", 1, 65535) as u16,
        cassandra_keyspace: cx.string("cassandra_keyspace"),
        cassandra_username: cx.string("cassandra_username"),
        cassandra_password: cx.opt_string("cassandra_password"),
        cassandra_consistency: cx.opt("cassandra_consistency", |v| {
            let allowed = cassandra_consistencies();
            if allowed.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(one_of(allowed))
            }
        }),
        cassandra_write_consistency: cx
            .enumerated("cassandra_write_consistency", cassandra_consistencies()),
        cassandra_read_consistency: cx
            .enumerated("cassandra_read_consistency", cassandra_consistencies()),
        cassandra_repl_strategy: cx.enumerated(
            "cassandra_repl_strategy",
            &["SimpleStrategy", "NetworkTopologyStrategy"],
        ),
        cassandra_repl_factor: cx.int("cassandra_repl_factor", 1, u32max) as u32,
        cassandra_timeout: cx.val("cassandra_timeout", values::parse_millis),
        db_snapshot: cx.boolean("db_snapshot"),
        db_update_frequency: cx.val("db_update_frequency", values::parse_seconds),
        db_update_propagation: cx.val("db_update_propagation", values::parse_seconds),
        db_cache_ttl: cx.val("db_cache_ttl", values::parse_seconds),
        mem_cache_size: cx.val("mem_cache_size", parse_size),

        router_flavor: cx.val("router_flavor", RouterFlavor::parse),
        headers,
        headers_upstream,
        trusted_ips,
        real_ip_header: cx.string("real_ip_header"),
        real_ip_recursive: cx.boolean("real_ip_recursive"),
        client_max_body_size: cx.val("client_max_body_size", parse_size),
        client_body_buffer_size: cx.val("client_body_buffer_size", parse_size),
        error_default_type: cx.enumerated("error_default_type", kong_keys::ERROR_DEFAULT_TYPES),
        upstream_keepalive_pool_size: cx.int("upstream_keepalive_pool_size", 0, u32max) as u32,
        upstream_keepalive_max_requests: cx.int("upstream_keepalive_max_requests", 0, u32max)
            as u32,
        upstream_keepalive_idle_timeout: cx
            .val("upstream_keepalive_idle_timeout", values::parse_seconds),
        nginx_worker_processes: cx.val("nginx_worker_processes", |v| {
            if v == "auto" {
                return Ok(WorkerProcesses::Auto);
            }
            values::parse_int(v, 1, 4096)
                .map(|n| WorkerProcesses::Count(n as u32))
                .map_err(|_| "'auto' or an integer between 1 and 4096".to_string())
        }),
        lua_max_req_headers: cx.int("lua_max_req_headers", 1, 1000) as u32,
        lua_max_resp_headers: cx.int("lua_max_resp_headers", 1, 1000) as u32,
        lua_max_uri_args: cx.int("lua_max_uri_args", 1, 1000) as u32,
        lua_max_post_args: cx.int("lua_max_post_args", 1, 1000) as u32,

        ssl_cert: cx.list("ssl_cert"),
        ssl_cert_key: cx.list("ssl_cert_key"),
        admin_ssl_cert: cx.list("admin_ssl_cert"),
        admin_ssl_cert_key: cx.list("admin_ssl_cert_key"),
        client_ssl: cx.boolean("client_ssl"),
        client_ssl_cert: cx.opt_string("client_ssl_cert"),
        client_ssl_cert_key: cx.opt_string("client_ssl_cert_key"),
        lua_ssl_trusted_certificate: cx.list("lua_ssl_trusted_certificate"),
        lua_ssl_verify_depth: cx.int("lua_ssl_verify_depth", 0, 100) as u32,
        proxy_server: cx.opt_string("proxy_server"),
        proxy_server_ssl_verify: cx.boolean("proxy_server_ssl_verify"),
        dns,
        dns_valid_ttl: cx.opt("dns_valid_ttl", values::parse_seconds),
        dns_stale_ttl: cx.val("dns_stale_ttl", values::parse_seconds),
        dns_not_found_ttl: cx.val("dns_not_found_ttl", values::parse_seconds),
        dns_error_ttl: cx.val("dns_error_ttl", values::parse_seconds),
        dns_cache_size: cx.int("dns_cache_size", 1, u64::from(u32::MAX)),
        dns_no_sync: cx.boolean("dns_no_sync"),
        raw: BTreeMap::new(),
        sources: BTreeMap::new(),
    };
    // keep the alias twins out of the generic checks (already validated)
    for (canonical, alias, _) in ALIASES {
        if cx.checked.contains(*canonical) {
            cx.checked.insert((*alias).to_string());
        }
        if cx.checked.contains(*alias) {
            cx.checked.insert((*canonical).to_string());
        }
    }
    cross_checks(cx, &config);
    config
}

fn cassandra_consistencies() -> &'static [&'static str] {
    match kong_kind("cassandra_write_consistency") {
        KeyKind::Enum(e) => e,
        _ => &[],
    }
}

/// Checks involving several keys (Kong's `check_and_parse` custom validations).
fn cross_checks(cx: &mut Ctx<'_>, c: &Config) {
    let pairs: [(&str, &[Listen], &str, &str); 4] = [
        ("proxy_listen", &c.proxy_listen, "ssl_cert", "ssl_cert_key"),
        (
            "admin_listen",
            &c.admin_listen,
            "admin_ssl_cert",
            "admin_ssl_cert_key",
        ),
        (
            "admin_gui_listen",
            &c.admin_gui_listen,
            "admin_gui_ssl_cert",
            "admin_gui_ssl_cert_key",
        ),
        (
            "status_listen",
            &c.status_listen,
            "status_ssl_cert",
            "status_ssl_cert_key",
        ),
    ];
    for (listen_key, listeners, cert_key, key_key) in pairs {
        if !listeners.iter().any(|l| l.ssl) {
            continue;
        }
        let certs = cx.get(cert_key).map(parse_list).unwrap_or_default().len();
        let keys = cx.get(key_key).map(parse_list).unwrap_or_default().len();
        if certs > 0 && keys == 0 {
            cx.problem(
                key_key,
                format!(
                    "{key_key} must be specified ({cert_key} is set and {listen_key} uses ssl)"
                ),
            );
        } else if keys > 0 && certs == 0 {
            cx.problem(
                cert_key,
                format!(
                    "{cert_key} must be specified ({key_key} is set and {listen_key} uses ssl)"
                ),
            );
        } else if certs != keys {
            cx.problem(
                cert_key,
                format!("{cert_key} was specified {certs} times while {key_key} was specified {keys} times"),
            );
        }
    }
    if c.client_ssl {
        match (&c.client_ssl_cert, &c.client_ssl_cert_key) {
            (Some(_), None) => cx.problem(
                "client_ssl_cert_key",
                "client_ssl_cert_key must be specified when client_ssl is on".into(),
            ),
            (None, Some(_)) => cx.problem(
                "client_ssl_cert",
                "client_ssl_cert must be specified when client_ssl is on".into(),
            ),
            _ => {}
        }
    }
    if let Some(url) = &c.proxy_server {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let host_ok = rest.is_some_and(|r| {
            let authority = r.split('/').next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            !host.is_empty() && !r.contains(['?', '#'])
        });
        if !host_ok {
            let v = url.clone();
            cx.fail(
                "proxy_server",
                &v,
                "an http:// or https:// URL with a host and no query or fragment",
            );
        }
    }
    if c.admin_auth == Some(AdminAuth::Mtls) && c.admin_ssl_client_ca.is_none() {
        cx.problem(
            "admin_auth",
            "admin_ssl_client_ca must be specified when admin_auth = mtls".into(),
        );
    }
    if !c.admin_gui_path.starts_with('/')
        || (c.admin_gui_path.len() > 1 && c.admin_gui_path.ends_with('/'))
        || c.admin_gui_path.contains("//")
        || !c
            .admin_gui_path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'))
    {
        let v = c.admin_gui_path.clone();
        cx.fail(
            "admin_gui_path",
            &v,
            "a path starting with '/', not ending with '/', made of letters, digits, '-', '_' and single '/'",
        );
    }
}

/// Kong's type checks for keys Tollgate does not type itself.
fn generic_checks(cx: &mut Ctx<'_>) {
    for (key, kind) in KONG_KEY_KINDS {
        if cx.checked.contains(*key) {
            continue;
        }
        let Some(v) = cx.get(key).map(str::to_string) else {
            continue;
        };
        let res = match kind {
            KeyKind::Number => values::parse_number(&v).map(|_| ()),
            KeyKind::Boolean => parse_bool(&v).map(|_| ()),
            KeyKind::NgxBoolean => match v.as_str() {
                "on" | "off" => Ok(()),
                _ => Err("on or off".to_string()),
            },
            KeyKind::Enum(allowed) => {
                if allowed.contains(&v.as_str()) {
                    Ok(())
                } else {
                    Err(one_of(allowed))
                }
            }
            KeyKind::String | KeyKind::Array => Ok(()),
        };
        if let Err(expected) = res {
            cx.fail(key, &v, &expected);
        }
    }
}

#[cfg(test)]
mod tests;
