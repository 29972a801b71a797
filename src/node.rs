//! Wiring shared by the commands: configuration, store and plugin catalog.

use crate::cli::Common;
use std::sync::Arc;
use tollgate_config::{Config, Database};
use tollgate_model::PluginCatalog;
use tollgate_store::cassandra::CassandraStore;
use tollgate_store::postgres::{PgOptions, PgSettings, PostgresStore};
use tollgate_store::{SqliteStore, Store};

/// The Kong version the Admin API reports; tools (decK, Kong Manager) gate features on it.
pub const KONG_COMPAT_VERSION: &str = "3.9.1";

/// Loads the configuration, applying `-p` as an override, and prints warnings.
pub fn load_config(common: &Common, file: Option<std::path::PathBuf>) -> anyhow::Result<Config> {
    let mut overrides = Vec::new();
    if let Some(p) = &common.prefix {
        overrides.push(("prefix".to_string(), p.display().to_string()));
    }
    let file = file.or_else(|| common.conf.clone());
    match Config::load_from_process(file, overrides) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("Warning: {w}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            let problems: Vec<String> = e
                .problems()
                .iter()
                .map(|p| format!("  - {}", p.message))
                .collect();
            if problems.is_empty() {
                anyhow::bail!("{e}");
            }
            anyhow::bail!("invalid configuration:\n{}", problems.join("\n"))
        }
    }
}

/// The plugin catalog: every bundled plugin, filtered by the `plugins` key. Sets up
/// proxy-cache's dictionaries first: its schema checks that they exist.
pub fn catalog(config: &Config) -> anyhow::Result<PluginCatalog> {
    install_proxy_caches(config);
    // Kong leaves `cluster` out of the rate-limiting policies without a database.
    tollgate_plugins::set_dbless(config.database == Database::Off);
    tollgate_plugins::catalog(&config.plugins)
        .map_err(|e| anyhow::anyhow!("invalid value for 'plugins': {e}"))
}

/// Opens the configured database (not for DB-less mode). PostgreSQL connects lazily: a
/// database that is down fails the first query, not this call.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.database {
        Database::Sqlite => {
            let s = SqliteStore::open(&config.sqlite_path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the SQLite database at {}: {e} (check 'prefix' / 'sqlite_path' and that the directory is writable)",
                    config.sqlite_path.display()
                )
            })?;
            Ok(Arc::new(s))
        }
        Database::Postgres => {
            let settings = pg_settings(config)?;
            let s = PostgresStore::connect(settings)
                .await
                .map_err(|e| anyhow::anyhow!("cannot use PostgreSQL: {e}"))?;
            Ok(Arc::new(s))
        }
        Database::Cassandra => {
            let settings = crate::cassandra_conf::cassandra_settings(config)?;
            let s = CassandraStore::connect(settings)
                .await
                .map_err(|e| anyhow::anyhow!("cannot use Cassandra: {e}"))?;
            Ok(Arc::new(s))
        }
        Database::Off => anyhow::bail!("this command needs a database, but database = off"),
    }
}

/// The CA files of `lua_ssl_trusted_certificate` that verify the database's certificate
/// (`system` adds none: the bundled web roots are used when no file is named).
pub fn trusted_cas(config: &Config) -> Vec<std::path::PathBuf> {
    config
        .lua_ssl_trusted_certificate
        .iter()
        .filter(|c| c.as_str() != "system")
        .map(std::path::PathBuf::from)
        .collect()
}

/// Kong's `pg_*` keys; `pg_ro_*` (a read replica, used when `pg_ro_host` is set) default
/// to the `pg_*` values.
pub fn pg_settings(config: &Config) -> anyhow::Result<PgSettings> {
    let trusted_cas = trusted_cas(config);
    let primary = PgOptions {
        host: config.pg_host.clone(),
        port: config.pg_port,
        user: config.pg_user.clone(),
        password: config.pg_password.clone(),
        database: config.pg_database.clone(),
        schema: config.pg_schema.clone(),
        timeout: config.pg_timeout,
        ssl: config.pg_ssl,
        ssl_verify: config.pg_ssl_verify,
        trusted_cas,
        pool_size: config.pg_pool_size as usize,
        max_concurrent_queries: config.pg_max_concurrent_queries as usize,
        semaphore_timeout: millis_key(config, "pg_semaphore_timeout")?
            .unwrap_or(std::time::Duration::from_secs(60)),
    };
    let raw = |k: &str| config.raw.get(k).map(String::as_str);
    // nginx cosocket pool knobs with no equivalent here: refused rather than ignored.
    for key in [
        "pg_keepalive_timeout",
        "pg_backlog",
        "pg_ro_keepalive_timeout",
        "pg_ro_backlog",
    ] {
        if raw(key).is_some_and(|v| !v.trim().is_empty()) {
            anyhow::bail!(
                "'{key}' is not supported by Tollgate's PostgreSQL pool (idle connections are \
                 kept until pg_timeout fails them, and waiting queries are bounded by \
                 pg_semaphore_timeout): remove it from the configuration"
            );
        }
    }
    let read_only = match &config.pg_ro_host {
        None => None,
        Some(host) => {
            let mut ro = primary.clone();
            ro.host = host.clone();
            ro.port = config.pg_ro_port.unwrap_or(primary.port);
            if let Some(u) = &config.pg_ro_user {
                ro.user = u.clone();
            }
            if let Some(p) = &config.pg_ro_password {
                ro.password = Some(p.clone());
            }
            if let Some(d) = &config.pg_ro_database {
                ro.database = d.clone();
            }
            if let Some(s) = raw("pg_ro_schema") {
                ro.schema = Some(s.to_string());
            }
            if let Some(t) = raw("pg_ro_timeout") {
                let ms: u64 = t.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid value for 'pg_ro_timeout': {t:?} (expected milliseconds)"
                    )
                })?;
                ro.timeout = std::time::Duration::from_millis(ms);
            }
            if let Some(n) = raw("pg_ro_max_concurrent_queries").filter(|v| !v.is_empty()) {
                ro.max_concurrent_queries = n.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid value for 'pg_ro_max_concurrent_queries': {n:?} (expected a number)"
                    )
                })?;
            }
            if let Some(t) = millis_key(config, "pg_ro_semaphore_timeout")? {
                ro.semaphore_timeout = t;
            }
            if let Some(n) = raw("pg_ro_pool_size") {
                ro.pool_size = n.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid value for 'pg_ro_pool_size': {n:?} (expected a number)"
                    )
                })?;
            }
            for (key, slot) in [
                ("pg_ro_ssl", &mut ro.ssl),
                ("pg_ro_ssl_verify", &mut ro.ssl_verify),
            ] {
                if let Some(v) = raw(key) {
                    *slot = match v {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        other => anyhow::bail!(
                            "invalid value for '{key}': {other:?} (expected on or off)"
                        ),
                    };
                }
            }
            Some(ro)
        }
    };
    Ok(PgSettings {
        primary,
        read_only,
        update_frequency: config.db_update_frequency,
        node_id: format!("{}:{}", hostname(), std::process::id()),
    })
}

/// A millisecond setting, `None` when unset or empty.
pub(crate) fn millis_key(
    config: &tollgate_config::Config,
    key: &str,
) -> anyhow::Result<Option<std::time::Duration>> {
    match config.raw.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(|ms| Some(std::time::Duration::from_millis(ms)))
            .map_err(|_| {
                anyhow::anyhow!("invalid value for '{key}': {v:?} (expected milliseconds)")
            }),
    }
}

/// The node's database as the rate-limiting plugins' `cluster` counters see it.
struct StoreCounters(Arc<dyn Store>);

impl tollgate_plugins::rate_limiting_cluster::CounterBackend for StoreCounters {
    fn increment(
        &self,
        table: tollgate_store::CounterTable,
        rows: Vec<tollgate_store::CounterIncrement>,
    ) -> tollgate_plugins::rate_limiting_cluster::BoxFuture<Vec<i64>> {
        let s = self.0.clone();
        Box::pin(async move {
            s.increment_counters(table, rows)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn purge(&self, now: i64) -> tollgate_plugins::rate_limiting_cluster::BoxFuture<()> {
        let s = self.0.clone();
        Box::pin(async move { s.purge_counters(now).await.map_err(|e| e.to_string()) })
    }
}

/// Gives the `cluster` rate-limiting policy the node's database (before the first
/// snapshot compiles a plugin that uses it). DB-less nodes have none.
pub fn install_counters(config: &Config, store: &Arc<dyn Store>) {
    if config.database != Database::Off {
        tollgate_plugins::rate_limiting_cluster::install(Arc::new(StoreCounters(store.clone())));
    }
}

/// Runs pending migrations on the embedded store (a single node owns its file, so there is
/// nobody to coordinate with).
pub async fn ensure_migrated(store: &dyn Store) -> anyhow::Result<()> {
    let status = store.migrations_status().await?;
    if !status.pending.is_empty() {
        let ran = store.migrations_up().await?;
        tracing::info!(migrations = ?ran, "database schema migrated");
    }
    Ok(())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// proxy-cache's shared dictionaries: Kong's, sized by `mem_cache_size`, and those
/// `nginx_http_lua_shared_dict` declares.
fn install_proxy_caches(config: &tollgate_config::Config) {
    use tollgate_plugins::proxy_cache;
    let declared = config
        .raw
        .get("nginx_http_lua_shared_dict")
        .map(|v| proxy_cache::parse_shared_dicts(v))
        .unwrap_or_default();
    proxy_cache::install(proxy_cache::Caches::new(config.mem_cache_size, &declared));
}

/// The Admin API's view of the proxy-cache dictionaries (`/proxy-cache`).
pub struct ProxyCaches;

impl tollgate_admin::proxy_cache::ProxyCacheStore for ProxyCaches {
    fn fetch(&self, dictionary: &str, key: &str) -> Option<serde_json::Value> {
        let dict = tollgate_plugins::proxy_cache::caches().dict(dictionary)?;
        dict.fetch(key).map(|e| e.to_json())
    }
    fn purge(&self, dictionary: &str, key: &str) -> bool {
        tollgate_plugins::proxy_cache::caches()
            .dict(dictionary)
            .is_some_and(|d| d.purge(key))
    }
    fn flush(&self, dictionary: &str) {
        if let Some(d) = tollgate_plugins::proxy_cache::caches().dict(dictionary) {
            d.flush();
        }
    }
    fn flush_all(&self) {
        tollgate_plugins::proxy_cache::caches().flush_all();
    }
}

/// The Admin API's view of the proxy's balancers (`/upstreams/{u}/health`).
pub struct BalancerHealth(pub tollgate_proxy::SharedSnapshot);

impl tollgate_admin::upstream_health::UpstreamHealth for BalancerHealth {
    fn addresses(
        &self,
        upstream_id: &str,
    ) -> Option<Vec<tollgate_admin::upstream_health::AddressHealth>> {
        let snap = self.0.load();
        let states = snap.health_states(upstream_id)?;
        Some(
            states
                .into_iter()
                .map(|a| tollgate_admin::upstream_health::AddressHealth {
                    target: a.target,
                    ip: a.ip,
                    port: a.port,
                    weight: a.weight,
                    node_weight: a.node_weight,
                    health: a.health.as_str(),
                })
                .collect(),
        )
    }

    fn checks_enabled(&self, upstream_id: &str) -> bool {
        self.0
            .load()
            .upstream(upstream_id)
            .is_some_and(|b| b.checks_enabled)
    }

    fn balancer_healthy(&self, upstream_id: &str) -> Option<bool> {
        self.0.load().upstream(upstream_id).map(|b| b.is_healthy())
    }

    fn set(
        &self,
        upstream_id: &str,
        target: &str,
        address: Option<&str>,
        healthy: bool,
    ) -> Result<(), String> {
        let snap = self.0.load();
        let b = snap
            .upstream(upstream_id)
            .ok_or_else(|| format!("Upstream {upstream_id} has no balancer"))?;
        b.set_health(target, address, healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::LoadOptions;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<PgSettings> {
        let mut opts = LoadOptions::isolated().set("database", "postgres");
        for (k, v) in pairs {
            opts = opts.set(*k, *v);
        }
        let loaded = Config::load(opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        pg_settings(&loaded.config)
    }

    #[test]
    fn concurrency_cap_and_semaphore_timeout_reach_the_pool() {
        let s = settings(&[
            ("pg_max_concurrent_queries", "3"),
            ("pg_semaphore_timeout", "250"),
        ])
        .unwrap();
        assert_eq!(s.primary.max_concurrent_queries, 3);
        assert_eq!(
            s.primary.semaphore_timeout,
            std::time::Duration::from_millis(250)
        );
        let s = settings(&[]).unwrap();
        assert_eq!(s.primary.max_concurrent_queries, 0);
        assert_eq!(
            s.primary.semaphore_timeout,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn pool_knobs_without_an_equivalent_are_refused() {
        let e = settings(&[("pg_backlog", "10")]).unwrap_err().to_string();
        assert!(e.contains("'pg_backlog' is not supported"), "{e}");
        let e = settings(&[("pg_keepalive_timeout", "60000")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'pg_keepalive_timeout' is not supported"), "{e}");
    }
}
