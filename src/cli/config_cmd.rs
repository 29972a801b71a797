//! `tollgate config init|parse|db_import|db_export`.

use super::Common;
use crate::node;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Instant;
use tollgate_model::declarative;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Write a starter declarative configuration (default ./kong.yml).
    Init { file: Option<PathBuf> },
    /// Validate a declarative configuration file.
    Parse { file: PathBuf },
    /// Load a declarative configuration into the database (entities are upserted by id,
    /// all in one transaction).
    #[command(name = "db_import")]
    DbImport { file: PathBuf },
    /// Write the database's configuration as a declarative file ("-" for stdout).
    #[command(name = "db_export")]
    DbExport { file: Option<PathBuf> },
}

const STARTER: &str = r#"# Tollgate declarative configuration (Kong format 3.0).
# Load it with `tollgate config db_import kong.yml`, or run DB-less with
# `database = off` and `declarative_config = kong.yml`.
_format_version: "3.0"
_transform: true

services:
- name: example-service
  url: http://127.0.0.1:8080
  routes:
  - name: example-route
    paths:
    - /example

consumers:
- username: example-user
"#;

fn read(file: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))
}

fn describe(e: &tollgate_model::Error) -> String {
    let mut s = e.message().to_string();
    if let Some(f) = declarative::flattened_errors(e) {
        if let Some(items) = f.as_array() {
            for it in items {
                s.push_str(&format!("\n  - {it}"));
            }
        }
    }
    s
}

pub fn run(common: &Common, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Init { file } => {
            let file = file.unwrap_or_else(|| PathBuf::from("kong.yml"));
            if file.exists() {
                anyhow::bail!(
                    "{} already exists; remove it or name another file",
                    file.display()
                );
            }
            std::fs::write(&file, STARTER)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            println!("Created declarative config file at {}", file.display());
            Ok(())
        }
        Action::Parse { file } => {
            let config = node::load_config(common, None)?;
            let catalog = node::catalog(&config)?;
            let text = read(&file)?;
            match declarative::parse(&text, &catalog) {
                Ok(p) => {
                    println!("parse successful: {} entities", p.set.len());
                    Ok(())
                }
                Err(e) => anyhow::bail!("failed parsing {}:\n{}", file.display(), describe(&e)),
            }
        }
        Action::DbImport { file } => {
            let config = node::load_config(common, None)?;
            let catalog = node::catalog(&config)?;
            let rt = node::runtime()?;
            let store = rt.block_on(node::open_store(&config))?;
            let t0 = Instant::now();
            let text = read(&file)?;
            eprintln!("parsing {} ({} bytes)...", file.display(), text.len());
            let parsed = declarative::parse(&text, &catalog).map_err(|e| {
                anyhow::anyhow!("failed parsing {}:\n{}", file.display(), describe(&e))
            })?;
            let counts: Vec<String> = parsed
                .set
                .entities
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{} {k}", v.len()))
                .collect();
            eprintln!(
                "parsed in {:.2}s; importing {}...",
                t0.elapsed().as_secs_f64(),
                counts.join(", ")
            );
            rt.block_on(async {
                node::ensure_migrated(store.as_ref()).await?;
                store
                    .import(parsed.set)
                    .await
                    .map_err(|e| anyhow::anyhow!("import failed, nothing was written: {e}"))
            })?;
            println!(
                "{} imported into {} in {:.2}s",
                file.display(),
                store.kind(),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Action::DbExport { file } => {
            let config = node::load_config(common, None)?;
            let data = node::runtime()?.block_on(async {
                let store = node::open_store(&config).await?;
                node::ensure_migrated(store.as_ref()).await?;
                store.load_all().await.map_err(anyhow::Error::from)
            })?;
            let yaml = declarative::to_yaml(&declarative::export_dataset(&data));
            match file {
                Some(f) if f.as_os_str() != "-" => {
                    std::fs::write(&f, yaml)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", f.display()))?;
                    eprintln!(
                        "exported {} entities to {}",
                        data.values().map(Vec::len).sum::<usize>(),
                        f.display()
                    );
                }
                _ => print!("{yaml}"),
            }
            Ok(())
        }
    }
}
