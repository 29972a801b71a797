//! Wiring shared by the commands: configuration, store and plugin catalog.

use crate::cli::Common;
use std::sync::Arc;
use tollgate_config::{Config, Database};
use tollgate_model::PluginCatalog;
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

/// The plugin catalog: every bundled plugin, filtered by the `plugins` key.
pub fn catalog(config: &Config) -> anyhow::Result<PluginCatalog> {
    tollgate_plugins::catalog(&config.plugins)
        .map_err(|e| anyhow::anyhow!("invalid value for 'plugins': {e}"))
}

/// Opens the configured database (not for DB-less mode).
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
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
        Database::Postgres => anyhow::bail!(
            "database = postgres is not available in this build yet; use database = sqlite (the default) or database = off"
        ),
        Database::Cassandra => anyhow::bail!(
            "database = cassandra is not available in this build yet; use database = sqlite (the default) or database = off"
        ),
        Database::Off => anyhow::bail!("this command needs a database, but database = off"),
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
