//! The `cluster` policy's counters (rate-limiting and response-ratelimiting): Kong's
//! `ratelimiting_metrics` rows in the shared database, without a database wait on the
//! request path.
//!
//! Kong reads each counter from the database during access and increments it in a timer
//! (`sync_rate` must be -1 for `cluster`). Here each node keeps, per counter, the total it
//! last read back from the database plus what it counted since; a request answers from
//! those and wakes one background task that sends every pending increment in one
//! transaction (`INSERT … ON CONFLICT DO UPDATE … RETURNING value`) and stores the totals
//! it gets back, which include the other nodes' counts. Requests that arrive while a batch
//! is in flight join the next one, so a node holds at most one transaction open and the
//! cost is one round trip per batch, not per request. The price is staleness: a node sees
//! another node's requests one round trip late, so a cluster may let through about one
//! extra request per node near the limit (Kong's read-then-increment has the same race).
//!
//! When the database fails, the task keeps the increments for the next try and retries
//! every second; meanwhile [`Cluster::count`] answers the error, which the plugin turns
//! into Kong's `fault_tolerant` behaviour (proxy and log, or 500).
//!
//! The same engine serves rate-limiting's `redis` policy with a `sync_rate` (Kong's local
//! counters plus `rate_limited_sync`): one instance per Redis and rate, whose task waits
//! `sync_rate` seconds after being woken before it sends, so a node makes one Redis round
//! trip per `sync_rate` however many requests it serves.

use crate::rate_limiting_store::Window;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tollgate_model::counters::{CounterIncrement, CounterTable};

/// The database the counters live in (the node's store, wired at start).
pub trait CounterBackend: Send + Sync + 'static {
    /// Adds the increments and answers the totals after them, in order; an empty batch
    /// checks that the database answers.
    fn increment(&self, table: CounterTable, rows: Vec<CounterIncrement>) -> BoxFuture<Vec<i64>>;
    /// Deletes counters whose window ended before `now`.
    fn purge(&self, now: i64) -> BoxFuture<()>;
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// How long one batch may take before it counts as a failure.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a failing database is retried, and ended windows purged.
const RETRY: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;

/// One counter as this node knows it.
struct Counter {
    table: CounterTable,
    row: CounterIncrement,
    /// The database's total when last read back.
    synced: i64,
    /// Counted here, not yet sent.
    pending: i64,
    /// In the batch on its way.
    sending: i64,
}

/// A counter in a batch: (shard, key) and what to send.
type Entry = ((usize, String), CounterIncrement);

/// The node's cluster counters and the task that syncs them.
pub struct Cluster {
    backend: Arc<dyn CounterBackend>,
    /// How long the task gathers increments before it sends (`sync_rate`; zero: at once).
    interval: Duration,
    shards: Box<[Mutex<HashMap<String, Counter>>]>,
    hasher: std::collections::hash_map::RandomState,
    wake: tokio::sync::Notify,
    /// The last sync's error, while the database fails.
    failing: AtomicBool,
    error: Mutex<String>,
}

static CLUSTER: OnceLock<Arc<Cluster>> = OnceLock::new();

/// Wires the node's database and starts the sync task on the current runtime. Without it
/// (DB-less mode) the `cluster` policy does not compile.
pub fn install(backend: Arc<dyn CounterBackend>) {
    let c = Arc::new(Cluster::new(backend));
    if CLUSTER.set(c.clone()).is_ok() {
        tokio::spawn(c.run());
    }
}

/// The installed counters, if this node has a database.
pub fn installed() -> Option<Arc<Cluster>> {
    CLUSTER.get().cloned()
}

/// The columns a plugin instance adds to its windows' counters.
pub struct Scope<'a> {
    pub table: CounterTable,
    pub identifier: &'a str,
    pub service_id: &'a str,
    pub route_id: &'a str,
}

/// One window of a request: its cache key (unique across instances and tables) and the
/// row it maps to.
pub struct ClusterWindow<'a> {
    pub window: &'a Window,
    /// Kong's `period` column (`minute`; response-ratelimiting: `<name>_minute`).
    pub period: &'a str,
    pub start: u64,
}

impl Cluster {
    pub fn new(backend: Arc<dyn CounterBackend>) -> Self {
        Self::with_interval(backend, Duration::ZERO)
    }

    /// Counters sent at most once per `interval` (Kong's `sync_rate`).
    pub fn with_interval(backend: Arc<dyn CounterBackend>, interval: Duration) -> Self {
        Cluster {
            backend,
            interval,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            wake: tokio::sync::Notify::new(),
            failing: AtomicBool::new(false),
            error: Mutex::default(),
        }
    }

    fn shard(&self, shard_key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Counter>> {
        let i = (self.hasher.hash_one(shard_key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The usage of each window before this request, as far as this node knows; then,
    /// when `count` says so for those usages, adds `by` to every window. `shard_key` keeps
    /// one request's windows together. Errors while the database fails.
    pub fn count(
        &self,
        scope: &Scope<'_>,
        shard_key: &str,
        windows: &[ClusterWindow<'_>],
        count: impl FnOnce(&[u64]) -> Option<i64>,
    ) -> Result<Vec<u64>, String> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(self.error.lock().map(|e| e.clone()).unwrap_or_default());
        }
        let mut shard = self.shard(shard_key);
        let usage: Vec<u64> = windows
            .iter()
            .map(|w| {
                shard
                    .get(&w.window.key)
                    .map_or(0, |c| (c.synced + c.pending + c.sending).max(0) as u64)
            })
            .collect();
        let Some(by) = count(&usage) else {
            return Ok(usage);
        };
        for w in windows {
            let c = shard
                .entry(w.window.key.clone())
                .or_insert_with(|| Counter {
                    table: scope.table,
                    row: CounterIncrement {
                        identifier: scope.identifier.to_owned(),
                        period: w.period.to_owned(),
                        period_date: w.start as i64,
                        service_id: scope.service_id.to_owned(),
                        route_id: scope.route_id.to_owned(),
                        value: 0,
                        expires_at: (w.start + w.window.ttl) as i64,
                    },
                    synced: 0,
                    pending: 0,
                    sending: 0,
                });
            c.pending += by;
        }
        drop(shard);
        // sync_rate -1: sent as soon as the task is free; else after `interval`.
        self.wake.notify_one();
        Ok(usage)
    }

    /// Moves every pending increment into a batch per table, dropping counters whose
    /// window ended and that have nothing left to send.
    fn take_batch(&self, now: i64) -> Vec<(CounterTable, Vec<Entry>)> {
        let mut by_table: Vec<(CounterTable, Vec<Entry>)> = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|_, c| c.pending != 0 || c.sending != 0 || c.row.expires_at > now);
            for (key, c) in s.iter_mut().filter(|(_, c)| c.pending != 0) {
                c.sending = c.pending;
                c.pending = 0;
                let mut row = c.row.clone();
                row.value = c.sending;
                let e = ((i, key.clone()), row);
                match by_table.iter_mut().find(|(t, _)| *t == c.table) {
                    Some((_, rows)) => rows.push(e),
                    None => by_table.push((c.table, vec![e])),
                }
            }
        }
        by_table
    }

    /// Records a batch's outcome: the totals read back, or the increments kept for the
    /// next try.
    fn settle(&self, keys: &[(usize, String)], totals: Option<&[i64]>) {
        for (n, (shard, key)) in keys.iter().enumerate() {
            let mut s = self.shards[*shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(c) = s.get_mut(key) {
                match totals {
                    Some(t) => c.synced = t[n],
                    None => c.pending += c.sending,
                }
                c.sending = 0;
            }
        }
    }

    /// One sync: every pending increment, or a check of the database while it fails.
    pub async fn sync_once(&self) -> Result<(), String> {
        let now = crate::rate_limiting_store::now_secs() as i64;
        let batches = self.take_batch(now);
        let mut result = Ok(());
        if batches.is_empty() && self.failing.load(Ordering::Relaxed) {
            result = self
                .send(CounterTable::RateLimiting, Vec::new())
                .await
                .map(drop);
        }
        for (table, rows) in batches {
            let (keys, rows): (Vec<(usize, String)>, Vec<CounterIncrement>) =
                rows.into_iter().unzip();
            match self.send(table, rows).await {
                Ok(totals) if totals.len() == keys.len() => self.settle(&keys, Some(&totals)),
                Ok(_) => {
                    self.settle(&keys, None);
                    result = Err("the database answered a different number of counters".into());
                }
                Err(e) => {
                    self.settle(&keys, None);
                    result = Err(e);
                }
            }
        }
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("cluster rate-limiting counters: the database answers again");
                }
            }
            Err(e) => {
                if let Ok(mut g) = self.error.lock() {
                    e.clone_into(&mut g);
                }
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!("cluster rate-limiting counters: cannot sync: {e}");
                }
            }
        }
        result
    }

    async fn send(
        &self,
        table: CounterTable,
        rows: Vec<CounterIncrement>,
    ) -> Result<Vec<i64>, String> {
        match tokio::time::timeout(BATCH_TIMEOUT, self.backend.increment(table, rows)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", BATCH_TIMEOUT.as_secs())),
        }
    }

    pub(crate) async fn run(self: Arc<Self>) {
        let mut last_purge = tokio::time::Instant::now();
        loop {
            let idle = if self.failing.load(Ordering::Relaxed) {
                RETRY
            } else {
                PURGE_EVERY
            };
            if tokio::time::timeout(idle, self.wake.notified())
                .await
                .is_ok()
                && !self.interval.is_zero()
            {
                tokio::time::sleep(self.interval).await;
            }
            let _ = self.sync_once().await;
            if last_purge.elapsed() >= PURGE_EVERY && !self.failing.load(Ordering::Relaxed) {
                last_purge = tokio::time::Instant::now();
                let now = crate::rate_limiting_store::now_secs() as i64;
                if let Err(e) = self.backend.purge(now).await {
                    tracing::warn!("cluster rate-limiting counters: purge failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "rate_limiting_cluster_tests.rs"]
mod tests;
