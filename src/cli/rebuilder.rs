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
/// past); on one node (SQLite) a write's own swap is what its writer waits for. Cassandra's
/// events already arrive in one batch per poll, so spacing would only add delay there.
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
    // A DB-less store changes only by replacing everything, which it announces with a
    // reset in this process: a periodic reload would only read the unchanged rows again,
    // holding a second parsed copy of a large configuration while it compares.
    let periodic = store.kind() != "off";
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
                _ = tokio::time::sleep_until(next_full), if periodic => true,
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
        drop(source);
        crate::memory::release_freed();
        return Ok(());
    }
    let next = Snapshot::from_source(source, consumers.clone(), tollgate_plugins::spec)
        .map_err(Reload::Compile)?;
    // The previous snapshot goes once no request holds it any more; what the load parsed
    // is free now.
    snapshot.store(Arc::new(next));
    crate::memory::release_freed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tollgate_model::entities;
    use tollgate_model::schema::{Context, Operation};
    use tollgate_store::SqliteStore;

    fn row(entity: &str, v: Value) -> tollgate_model::Row {
        let Value::Object(m) = v else { unreachable!() };
        entities::by_name(entity)
            .unwrap()
            .process(m, &Context::new(Operation::Insert))
            .unwrap_or_else(|e| panic!("{entity}: {e:?}"))
    }

    fn uuid(kind: u8, n: u64) -> String {
        format!("00000000-0000-4000-8{kind:03}-{n:012}")
    }

    /// Everything a request reads of a snapshot that the rows decide.
    fn observable(s: &Snapshot) -> String {
        let mut routes: Vec<String> = s
            .routes
            .iter()
            .map(|(_, r)| {
                let svc = r.service.as_ref().map(|s| (&s.id, &s.host, s.enabled));
                format!("{} {svc:?} {}", r.id, r.plugins.fingerprint())
            })
            .collect();
        routes.sort();
        let mut specs: Vec<_> = s.router.routes().map(|(_, r)| r).collect();
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        let mut ups: Vec<String> = s
            .upstreams
            .values()
            .map(|b| format!("{} {} {:?}", b.id, b.name, b.targets))
            .collect();
        ups.sort();
        format!(
            "{routes:?}\n{specs:?}\n{ups:?}\n{}",
            s.plugins.fingerprint()
        )
    }

    /// A long loop of random Admin-style writes to a real store (its constraints, cascades
    /// and events): after each batch the snapshot patched from the events holds the same
    /// rows as a full load and serves the same as a full build.
    #[tokio::test]
    async fn events_patch_the_snapshot_to_what_a_full_reload_builds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        crate::node::ensure_migrated(&store).await.unwrap();
        let mut events = store.events();
        let consumers: SharedConsumers = Arc::new(arc_swap::ArcSwap::from_pointee(
            tollgate_plugins::ConsumerIndex::default(),
        ));
        let mut snap = first(&store, consumers.clone()).await.unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut applied, mut refused) = (0, 0);
        for step in 0..400 {
            for _ in 0..1 + rand(3) {
                let s = |e: &str| entities::by_name(e).unwrap();
                let (svc, route, up) = (uuid(1, rand(3)), uuid(2, rand(8)), uuid(3, rand(2)));
                let result = match rand(11) {
                    0 | 1 => {
                        let v = json!({"id": svc, "host": "example.com", "enabled": rand(5) > 0});
                        store
                            .upsert(s("services"), row("services", v))
                            .await
                            .map(drop)
                    }
                    2 => store.delete(s("services"), &svc).await,
                    3 | 4 => {
                        let v = json!({"id": route, "paths": [format!("/p{}", rand(4))],
                                       "service": {"id": svc}});
                        store.upsert(s("routes"), row("routes", v)).await.map(drop)
                    }
                    5 => store.delete(s("routes"), &route).await,
                    6 => {
                        let v = json!({"id": up, "name": format!("up{}", rand(3))});
                        store
                            .upsert(s("upstreams"), row("upstreams", v))
                            .await
                            .map(drop)
                    }
                    7 => store.delete(s("upstreams"), &up).await,
                    8 => {
                        let v = json!({"id": uuid(4, rand(4)), "upstream": {"id": up},
                                       "target": format!("127.0.0.{}:80", 1 + rand(3))});
                        store
                            .upsert(s("targets"), row("targets", v))
                            .await
                            .map(drop)
                    }
                    9 => {
                        let scope = match rand(3) {
                            0 => json!({"route": {"id": route}}),
                            1 => json!({"service": {"id": svc}}),
                            _ => json!({}),
                        };
                        let mut v = json!({"id": uuid(6, rand(4)), "name": "cors", "config": {}});
                        v.as_object_mut()
                            .unwrap()
                            .extend(scope.as_object().unwrap().clone());
                        store
                            .upsert(s("plugins"), row("plugins", v))
                            .await
                            .map(drop)
                    }
                    _ => store.delete(s("plugins"), &uuid(6, rand(4))).await,
                };
                match result {
                    Ok(()) => applied += 1,
                    Err(_) => refused += 1, // a foreign key, unique or restrict rule
                }
            }
            let mut edits = Vec::new();
            while let Ok(e) = events.try_recv() {
                assert!(!collect(&e, &mut edits), "step {step}: a reset");
            }
            if let Some(next) = snap.apply(edits).unwrap() {
                snap = next;
            }
            let full = first(&store, consumers.clone()).await.unwrap();
            assert!(*snap.source() == *full.source(), "step {step}: rows differ");
            assert_eq!(observable(&snap), observable(&full), "step {step}");
        }
        assert!(
            applied > 500 && refused > 0,
            "{applied} writes, {refused} refused"
        );
    }
}
