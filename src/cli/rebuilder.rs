//! Keeps the proxy snapshot current from the store's row events. Each batch of events
//! patches the serving snapshot's rows and compiles only what they touch
//! ([`Snapshot::apply`]), so a write costs neither a read of the whole configuration nor a
//! full compile. A reset (an import, a database that came back), a lag (missed events), an
//! unreadable event or a patch that does not compile falls back to a full reload, as does
//! a periodic reload that heals anything the events could not say.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_proxy::snapshot::{Edit, SharedConsumers, Source, ENTITIES};
use tollgate_proxy::{SharedSnapshot, Snapshot};
use tollgate_store::{ChangeEvent, ChangeEvents, Store};

/// The least time between two swaps on PostgreSQL, where many nodes write: a burst of
/// writes folds into one swap. A lone write is not delayed (the previous swap is long
/// past); on one node (SQLite) a write's own swap is what its writer waits for.
const SWAP_SPACING: Duration = Duration::from_millis(25);

/// The safety net: a full reload this often even when the events said nothing (it swaps
/// only when the rows differ from what is serving).
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(60);

/// After a reload failed (the database is away), when to try again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub(super) fn spawn(
    store: Arc<dyn Store>,
    mut events: ChangeEvents,
    (snapshot, consumers): (SharedSnapshot, SharedConsumers),
    healthy_db: Arc<AtomicBool>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let spaced = store.kind() == "postgres";
    tokio::spawn(async move {
        let mut last_swap: Option<Instant> = None;
        let mut next_full = Instant::now() + FULL_RELOAD_EVERY;
        loop {
            let mut edits = Vec::new();
            let mut full = tokio::select! {
                r = events.recv() => match r {
                    Ok(e) => collect(&e, &mut edits),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(next_full) => true,
            };
            if let Some(wait) = last_swap
                .filter(|_| spaced && !full)
                .and_then(|t| SWAP_SPACING.checked_sub(t.elapsed()))
            {
                tokio::time::sleep(wait).await;
            }
            // Whatever else is already queued goes into the same swap.
            while !full {
                match events.try_recv() {
                    Ok(e) => full = collect(&e, &mut edits),
                    Err(TryRecvError::Lagged(_)) => full = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if !full && !edits.is_empty() {
                let t0 = std::time::Instant::now();
                match snapshot.load_full().apply(edits) {
                    Ok(Some(next)) => {
                        snapshot.store(Arc::new(next));
                        last_swap = Some(Instant::now());
                        tracing::debug!(
                            elapsed_us = t0.elapsed().as_micros() as u64,
                            "configuration snapshot updated"
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot apply the change to the snapshot; reloading everything");
                        full = true;
                    }
                }
            }
            if full {
                // Events from here on are replayed over what the load reads.
                events = events.resubscribe();
                next_full = Instant::now()
                    + match reload(store.as_ref(), &snapshot, &consumers).await {
                        Ok(()) => {
                            healthy_db.store(true, Ordering::Relaxed);
                            last_swap = Some(Instant::now());
                            FULL_RELOAD_EVERY
                        }
                        Err(Reload::Load(e)) => {
                            healthy_db.store(false, Ordering::Relaxed);
                            tracing::error!(error = %e, "cannot load the configuration; still serving the previous one");
                            RETRY_AFTER
                        }
                        Err(Reload::Compile(e)) => {
                            healthy_db.store(true, Ordering::Relaxed);
                            tracing::error!(error = %e, "cannot compile the new configuration; still serving the previous one");
                            FULL_RELOAD_EVERY
                        }
                    };
            }
        }
    });
}

/// Adds an event's rows to `edits`; `true` when it asks for a full reload instead.
fn collect(e: &ChangeEvent, edits: &mut Vec<Edit>) -> bool {
    let rows = match e {
        ChangeEvent::Reset => return true,
        ChangeEvent::Rows(rows) => rows,
    };
    for r in rows.iter().filter(|r| ENTITIES.contains(&r.entity)) {
        let new = match &r.new {
            Some(n) => match serde_json::from_str(&n.text) {
                Ok(row) => Some(row),
                Err(e) => {
                    tracing::warn!(entity = r.entity, id = %r.id, error = %e, "unreadable row in a change event; reloading everything");
                    return true;
                }
            },
            None => None,
        };
        edits.push(Edit {
            entity: r.entity,
            id: (*r.id).into(),
            new,
        });
    }
    false
}

enum Reload {
    Load(tollgate_model::Error),
    Compile(String),
}

/// Reads every snapshot entity and compiles them; swaps only when the rows differ from
/// what is serving (the periodic reload of an unchanged configuration changes nothing).
async fn reload(
    store: &dyn Store,
    snapshot: &SharedSnapshot,
    consumers: &SharedConsumers,
) -> Result<(), Reload> {
    let t0 = std::time::Instant::now();
    let source = Source::from_dataset(store.load(ENTITIES).await.map_err(Reload::Load)?);
    if *snapshot.load().source() == source {
        return Ok(());
    }
    let next = Snapshot::from_source(source, consumers.clone(), tollgate_plugins::spec)
        .map_err(Reload::Compile)?;
    snapshot.store(Arc::new(next));
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "configuration snapshot reloaded"
    );
    Ok(())
}

/// The first snapshot, before any listener opens.
pub(super) async fn first(
    store: &dyn Store,
    consumers: SharedConsumers,
) -> anyhow::Result<Snapshot> {
    let source = Source::from_dataset(store.load(ENTITIES).await?);
    Snapshot::from_source(source, consumers, tollgate_plugins::spec)
        .map_err(|e| anyhow::anyhow!("cannot compile the configuration: {e}"))
}
