//! Wiring of `admin_auth`: the start-up checks, the token set kept current from the
//! store, the audit log, and the Admin API's TLS settings.

use std::sync::Arc;
use std::time::Duration;
use tollgate_admin::auth::{self, Guard, Mode, SharedTokens};
use tollgate_config::{AdminAuth, Config, Database};
use tollgate_store::Store;

/// How often a node rereads the token table when nothing told it to. SQLite has no
/// cross-process notification (the CLI writes from another process), so this is its
/// propagation time; on PostgreSQL a token change arrives as a cluster event at once and
/// this is only the safety net.
const SQLITE_TOKEN_POLL: Duration = Duration::from_secs(1);

fn mode(config: &Config) -> Mode {
    match config.admin_auth {
        None => Mode::Off,
        Some(AdminAuth::Token) => Mode::Token,
        Some(AdminAuth::Mtls) => Mode::Mtls,
    }
}

/// The Admin API is the keys to the house: refuse to expose it beyond loopback unless the
/// operator said how it is protected, and refuse an `admin_auth` this node cannot enforce.
pub fn check(config: &Config) -> anyhow::Result<()> {
    match mode(config) {
        Mode::Token if config.database == Database::Off => anyhow::bail!(
            "admin_auth = token keeps its tokens in the database, and database = off has none: use admin_auth = mtls (admin_listen … ssl with admin_ssl_client_ca) on a DB-less node"
        ),
        Mode::Mtls => {
            if config.admin_ssl_client_ca.is_none() {
                anyhow::bail!("admin_auth = mtls needs admin_ssl_client_ca: the CA bundle (path or PEM) that signs the Admin API's client certificates");
            }
            let plain: Vec<&str> = config
                .admin_listen
                .iter()
                .filter(|l| !l.ssl)
                .map(|l| l.listener.as_str())
                .collect();
            if !plain.is_empty() {
                anyhow::bail!(
                    "admin_auth = mtls needs every admin_listen entry to have the ssl flag (e.g. admin_listen = 0.0.0.0:8444 ssl), but {} is plain: it would take requests without a client certificate",
                    plain.join(", ")
                );
            }
        }
        _ => {}
    }
    if Config::is_loopback_only(&config.admin_listen) {
        return Ok(());
    }
    let exposed: Vec<String> = config
        .admin_listen
        .iter()
        .filter(|l| !l.is_loopback())
        .map(|l| l.listener.clone())
        .collect();
    match config.raw.get("admin_auth").map(String::as_str) {
        Some("off") => {
            tracing::warn!(listeners = ?exposed, "the Admin API listens beyond loopback with admin_auth = off: anyone who can reach it can change this gateway");
            Ok(())
        }
        Some(_) => Ok(()),
        None => anyhow::bail!(
            "admin_listen binds {} beyond loopback but admin_auth is not set: set admin_auth = token (then 'tollgate admin-tokens create NAME') or admin_auth = mtls (admin_listen … ssl with admin_ssl_client_ca), bind admin_listen to 127.0.0.1, or set admin_auth = off to accept an unauthenticated Admin API",
            exposed.join(", ")
        ),
    }
}

/// The Admin API's guard: the mode, the tokens (loaded now and kept current), the audit
/// log.
pub async fn guard(config: &Config, store: &Arc<dyn Store>) -> anyhow::Result<Guard> {
    let mut guard = Guard {
        mode: mode(config),
        ..Guard::default()
    };
    if let Some(path) = &config.admin_audit_log {
        let path = config.prefix.join(path);
        let log = tollgate_admin::audit::AuditLog::open(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot open admin_audit_log {}: {e} (name a writable file, or set admin_audit_log = off)",
                path.display()
            )
        })?;
        // SIGUSR1 (logrotate's signal, as for file-log): reopen by name.
        if let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            let log = log.clone();
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    log.reopen().await;
                }
            });
        }
        guard.audit = Some(log);
    }
    if guard.mode == Mode::Token {
        let rows = store.admin_tokens().await.map_err(|e| {
            anyhow::anyhow!("admin_auth = token: cannot read the Admin API tokens: {e}")
        })?;
        if rows.is_empty() {
            tracing::warn!("admin_auth = token and no token exists yet: every Admin API request gets 401 until one is created with 'tollgate admin-tokens create NAME'");
        }
        guard.tokens.store(Arc::new(auth::token_set(&rows)));
        let poll = if store.kind() == "sqlite" {
            SQLITE_TOKEN_POLL
        } else {
            config.db_update_frequency.max(SQLITE_TOKEN_POLL)
        };
        spawn_refresher(store.clone(), guard.tokens.clone(), poll);
    }
    Ok(guard)
}

/// Rereads the token table when the store says it changed (a cluster event) and every
/// `poll`; a failed read keeps the tokens in force.
fn spawn_refresher(store: Arc<dyn Store>, tokens: SharedTokens, poll: Duration) {
    tokio::spawn(async move {
        let mut changes = store.changes();
        let mut seen = changes
            .borrow_and_update()
            .get(tollgate_store::ADMIN_TOKENS);
        loop {
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let now = changes.borrow_and_update().get(tollgate_store::ADMIN_TOKENS);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                }
                _ = tokio::time::sleep(poll) => {}
            }
            match store.admin_tokens().await {
                Ok(rows) => {
                    let next = auth::token_set(&rows);
                    let cur = tokens.load();
                    let same = cur.len() == next.len()
                        && cur.iter().zip(&next).all(|(a, b)| {
                            a.name == b.name && a.digest == b.digest && a.read_only == b.read_only
                        });
                    if !same {
                        tracing::info!(tokens = next.len(), "Admin API tokens reloaded");
                        tokens.store(Arc::new(next));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reread the Admin API tokens; keeping the ones in force")
                }
            }
        }
    });
}

/// TLS for `admin_listen … ssl`: `admin_ssl_cert`/`admin_ssl_cert_key` (else a
/// self-signed certificate, as Kong generates), and with `mtls` the client CA.
pub fn tls_config(config: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use tollgate_proxy::tls::{certified_key, read_pem, self_signed_default};
    let err = |e: String| anyhow::anyhow!("admin_listen ssl: {e}");
    let cert = match (
        config.admin_ssl_cert.first(),
        config.admin_ssl_cert_key.first(),
    ) {
        (Some(c), Some(k)) => certified_key(&read_pem(c).map_err(err)?, &read_pem(k).map_err(err)?)
            .map_err(|e| anyhow::anyhow!("admin_ssl_cert: {e}"))?,
        _ => self_signed_default().map_err(err)?.primary.clone(),
    };
    let ca = match (mode(config), &config.admin_ssl_client_ca) {
        (Mode::Mtls, Some(ca)) => {
            Some(read_pem(ca).map_err(|e| anyhow::anyhow!("admin_ssl_client_ca: {e}"))?)
        }
        _ => None,
    };
    tollgate_admin::tls::server_config(cert, ca.as_deref()).map_err(|e| anyhow::anyhow!(e))
}
