//! Connection settings (Kong's `pg_*` keys) and the pools built from them.

use std::path::PathBuf;
use std::time::Duration;
use tollgate_model::{Error, Result};

/// One server's settings: the primary (`pg_*`) or the read-only replica (`pg_ro_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// `pg_schema`: created by the migrations and put first on every connection's
    /// `search_path`; `None` uses the server's default (`public`).
    pub schema: Option<String>,
    /// `pg_timeout`: connecting, waiting for a pooled connection, and each statement.
    pub timeout: Duration,
    /// `pg_ssl`: require TLS.
    pub ssl: bool,
    /// `pg_ssl_verify`: verify the server certificate and name against `trusted_cas`
    /// (`lua_ssl_trusted_certificate`; the bundled web roots when it is empty).
    pub ssl_verify: bool,
    pub trusted_cas: Vec<PathBuf>,
    /// `pg_pool_size`: connections kept per node.
    pub pool_size: usize,
    /// `pg_max_concurrent_queries` (0 = unlimited): every query holds a pooled connection,
    /// so the pool is capped at this size, which bounds concurrent queries as Kong's
    /// semaphore does.
    pub max_concurrent_queries: usize,
    /// `pg_semaphore_timeout`: how long a query waits for its turn under that cap.
    pub semaphore_timeout: Duration,
}

impl Default for PgOptions {
    /// Kong's defaults.
    fn default() -> Self {
        PgOptions {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "kong".into(),
            password: None,
            database: "kong".into(),
            schema: None,
            timeout: Duration::from_secs(5),
            ssl: false,
            ssl_verify: false,
            trusted_cas: Vec::new(),
            pool_size: 10,
            max_concurrent_queries: 0,
            semaphore_timeout: Duration::from_secs(60),
        }
    }
}

/// Everything the PostgreSQL store needs.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub primary: PgOptions,
    /// `pg_ro_*`: the snapshot builder's bulk reads go here when set.
    pub read_only: Option<PgOptions>,
    /// `db_update_frequency`: how often `cluster_events` is polled when no notification
    /// arrived (the fallback for a lost LISTEN connection).
    pub update_frequency: Duration,
    /// This node's id, recorded on the events it writes (for diagnosis only).
    pub node_id: String,
}

impl PgOptions {
    pub fn describe(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    pub(crate) fn pg_config(&self, application: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name(application)
            .connect_timeout(self.timeout)
            // A database that vanishes without closing the socket is noticed by the
            // kernel instead of hanging a connection forever.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        if let Some(p) = &self.password {
            c.password(p);
        }
        if let Some(s) = &self.schema {
            // Startup options split on spaces; a backslash keeps one in the value.
            let path = format!("{},public", quote_ident(s))
                .replace('\\', "\\\\")
                .replace(' ', "\\ ");
            c.options(format!("-c search_path={path}"));
        }
        c.ssl_mode(if self.ssl {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        c
    }

    /// The TLS connector for `pg_ssl = on` (`None`: plain TCP).
    pub(crate) fn tls(&self) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>> {
        if !self.ssl {
            return Ok(None);
        }
        let config = crate::tls::client_config("postgres", self.ssl_verify, &self.trusted_cas)?;
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }

    /// A pool of `pool_size` connections.
    pub(crate) fn pool(&self, application: &str) -> Result<deadpool_postgres::Pool> {
        let cfg = self.pg_config(application);
        let mc = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match self.tls()? {
            Some(tls) => deadpool_postgres::Manager::from_config(cfg, tls, mc),
            None => deadpool_postgres::Manager::from_config(cfg, tokio_postgres::NoTls, mc),
        };
        let (size, wait) = match self.max_concurrent_queries {
            0 => (self.pool_size, self.timeout),
            n => (self.pool_size.min(n), self.semaphore_timeout),
        };
        deadpool_postgres::Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(self.timeout))
            .recycle_timeout(Some(self.timeout))
            .build()
            .map_err(|e| Error::database(format!("postgres pool: {e}")))
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
