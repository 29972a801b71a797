//! `tollgate admin-tokens create NAME [--read-only] | list | revoke NAME`: the tokens of
//! `admin_auth = token`, kept (hashed) in the configured database. Running nodes pick a
//! change up within their propagation time (see `start.rs`'s token refresher).

use super::Common;
use crate::node;
use clap::Subcommand;
use tollgate_config::{Config, Database};
use tollgate_store::{AdminToken, Store};

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Create a token and print it (the last line; it is shown only this once).
    Create {
        /// A name for the token: who or what uses it (letters, digits, `.`, `_`, `-`, `@`).
        name: String,
        /// The token may read but not write (GET only; writes get 403).
        #[arg(long)]
        read_only: bool,
    },
    /// List the tokens: name, read-only, creation time (never the token or its hash).
    List,
    /// Delete a token; requests carrying it are refused from then on.
    Revoke { name: String },
}

pub fn run(common: &Common, action: Action) -> anyhow::Result<()> {
    let config = node::load_config(common, None)?;
    node::runtime()?.block_on(async move {
        let store = open(&config).await?;
        match action {
            Action::Create { name, read_only } => {
                check_name(&name)?;
                let token = new_token()?;
                store
                    .admin_token_create(AdminToken {
                        name: name.clone(),
                        hash: tollgate_admin::auth::hash_token(&token),
                        read_only,
                        created_at: now_secs(),
                    })
                    .await
                    .map_err(|e| match e.code() {
                        tollgate_model::ErrorCode::UniqueViolation => anyhow::anyhow!(
                            "an Admin API token named '{name}' exists already (revoke it first, or pick another name)"
                        ),
                        _ => anyhow::anyhow!("cannot create the token: {e}"),
                    })?;
                let kind = if read_only { "read-only" } else { "read-write" };
                println!("Created the {kind} Admin API token '{name}'. Send it as the Kong-Admin-Token header; it is shown only this once:");
                println!("{token}");
            }
            Action::List => {
                let tokens = store.admin_tokens().await?;
                println!("{:<32} {:<9} CREATED_AT", "NAME", "READ_ONLY");
                for t in tokens {
                    println!(
                        "{:<32} {:<9} {}",
                        t.name,
                        t.read_only,
                        rfc3339(t.created_at)
                    );
                }
            }
            Action::Revoke { name } => {
                if !store.admin_token_revoke(&name).await? {
                    anyhow::bail!("there is no Admin API token named '{name}'");
                }
                println!("Revoked the Admin API token '{name}'");
            }
        }
        Ok(())
    })
}

/// The configured database, with the token table in place.
async fn open(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    if config.database == Database::Off {
        anyhow::bail!("admin tokens live in the database, and database = off has none: use admin_auth = mtls on a DB-less node");
    }
    let store = node::open_store(config).await?;
    if config.database == Database::Sqlite {
        node::ensure_migrated(store.as_ref()).await?;
        return Ok(store);
    }
    let status = store.migrations_status().await?;
    if !status.bootstrapped() {
        anyhow::bail!("the database is not bootstrapped; run 'tollgate migrations bootstrap' (or start a node) first");
    }
    if !status.pending.is_empty() {
        anyhow::bail!("the database needs migrations; run 'tollgate migrations up'");
    }
    Ok(store)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if !ok {
        anyhow::bail!(
            "invalid token name {name:?}: use 1 to 128 letters, digits, '.', '_', '-' or '@'"
        );
    }
    Ok(())
}

/// 256 random bits from the operating system, hex-encoded behind a recognisable prefix
/// (secret scanners and people can tell what leaked).
fn new_token() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let mut out = String::from("tgk_");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
