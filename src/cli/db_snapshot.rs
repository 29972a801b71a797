//! `db_snapshot = on`: a node on a shared database keeps the last configuration it read in
//! its prefix, so it can start (and proxy) while the database is unreachable. The file is
//! rewritten after changes, at most once a second, atomically (write then rename); the
//! node replaces it with the database's content as soon as the database answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tollgate_config::Config;
use tollgate_store::{EntitySet, MemoryStore, Store};

pub fn path(config: &Config) -> PathBuf {
    config.prefix.join("db_snapshot.json")
}

/// The saved configuration as a read-only store.
pub fn read(path: &Path) -> anyhow::Result<MemoryStore> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let data: tollgate_store::Dataset = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a configuration snapshot: {e}", path.display()))?;
    Ok(MemoryStore::from_set(EntitySet::from_dataset(&data)))
}

async fn write(store: &dyn Store, path: &Path) -> anyhow::Result<()> {
    let data = store.load_all().await?;
    let text = serde_json::to_vec(&data)?;
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

/// Saves the configuration now and after every change.
pub fn spawn_writer(store: Arc<dyn Store>, path: PathBuf) {
    tokio::spawn(async move {
        let mut changes = store.changes();
        loop {
            match write(store.as_ref(), &path).await {
                Ok(()) => tracing::debug!(path = %path.display(), "configuration snapshot saved"),
                Err(e) => tracing::warn!(error = %e, "cannot save the configuration snapshot"),
            }
            if changes.changed().await.is_err() {
                return;
            }
            // Coalesce a burst of writes into one save.
            tokio::time::sleep(Duration::from_secs(1)).await;
            changes.borrow_and_update();
        }
    });
}
