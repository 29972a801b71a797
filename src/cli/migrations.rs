//! `tollgate migrations bootstrap|up|finish|list|status|reset`.

use super::Common;
use crate::node;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Create the schema on an empty database.
    Bootstrap,
    /// Run pending migrations.
    Up,
    /// Finish pending migrations (nothing is deferred on this store; kept for scripts).
    Finish,
    /// List executed and pending migrations.
    List,
    /// Print the migration state as JSON.
    Status,
    /// Drop everything Tollgate created. Needs --yes.
    Reset {
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub fn run(common: &Common, action: Action) -> anyhow::Result<()> {
    let config = node::load_config(common, None)?;
    node::runtime()?.block_on(async move {
        let store = node::open_store(&config).await?;
        match action {
            Action::Bootstrap => {
                let status = store.migrations_status().await?;
                if status.bootstrapped() {
                    println!("Database already bootstrapped");
                    return Ok(());
                }
                println!("Bootstrapping database...");
                for m in store.migrations_bootstrap().await? {
                    println!("migrating {m} done");
                }
                println!("Database is up-to-date");
            }
            Action::Up | Action::Finish => {
                let status = store.migrations_status().await?;
                if !status.bootstrapped() {
                    anyhow::bail!("Database needs bootstrapping or is older than Tollgate 0.1; run 'tollgate migrations bootstrap'");
                }
                let ran = store.migrations_up().await?;
                if ran.is_empty() {
                    println!("Database is already up-to-date");
                }
                for m in ran {
                    println!("migrating {m} done");
                }
            }
            Action::List => {
                let s = store.migrations_status().await?;
                println!("Executed migrations:");
                for m in &s.executed {
                    println!("  core: {m}");
                }
                if s.pending.is_empty() {
                    println!("Database is up-to-date");
                } else {
                    println!("Pending migrations:");
                    for m in &s.pending {
                        println!("  core: {m}");
                    }
                }
            }
            Action::Status => {
                let s = store.migrations_status().await?;
                let v = serde_json::json!({
                    "database": store.kind(),
                    "bootstrapped": s.bootstrapped(),
                    "executed": s.executed,
                    "pending": s.pending,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Action::Reset { yes } => {
                if !yes {
                    anyhow::bail!("this drops every entity in the database; run again with --yes to confirm");
                }
                store.migrations_reset().await?;
                println!("Database reset");
            }
        }
        Ok(())
    })
}
