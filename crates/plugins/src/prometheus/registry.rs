//! The metric state behind `/metrics`: one per process, outside any snapshot, keyed by
//! label values as Kong's `prometheus_metrics` shared dict is (a renamed route starts a
//! new series; the old one stays until restart, as in Kong).
//!
//! The log phase finds its (service, route) series through an [`ArcSwap`]ed map (no lock,
//! no allocation once the series exists), then adds to counters sharded per thread so
//! that cores do not fight over one cache line. Histograms count each observation in one
//! bucket and are made cumulative at scrape time. Per-consumer series sit in a sharded
//! map (read-locked per request only when `per_consumer` is on).
//!
//! Like Kong's 5 MiB dict, the registry has a capacity: a series that would exceed it is
//! not created, and `kong_nginx_metric_errors_total` counts the dropped update.

use arc_swap::ArcSwap;
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

/// `kong_latency_ms` buckets (exporter.lua `KONG_LATENCY_BUCKETS`), milliseconds.
pub const KONG_BUCKETS: &[u64] = &[
    1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000,
];
/// `upstream_latency_ms` / `request_latency_ms` buckets (`UPSTREAM_LATENCY_BUCKETS`).
pub const UPSTREAM_BUCKETS: &[u64] = &[
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
];

/// What Kong's `lua_shared_dict prometheus_metrics 5m` holds at most.
pub const CAPACITY: usize = 5 * 1024 * 1024;

/// A histogram's cells: one per bucket, one for `+Inf`, then the sum.
const fn hist_cells(buckets: &[u64]) -> usize {
    buckets.len() + 2
}
pub(crate) const KONG_AT: usize = 0;
pub(crate) const UPSTREAM_AT: usize = KONG_AT + hist_cells(KONG_BUCKETS);
pub(crate) const REQUEST_AT: usize = UPSTREAM_AT + hist_cells(UPSTREAM_BUCKETS);
const LATENCY_CELLS: usize = REQUEST_AT + hist_cells(UPSTREAM_BUCKETS);

/// One cache line of counters.
#[repr(align(64))]
#[derive(Default)]
struct Line([AtomicU64; 8]);

/// `n` counters, repeated per shard; a thread adds to its own shard, a scrape sums them.
pub(crate) struct Cells {
    lines: Box<[Line]>,
    per_shard: usize,
    shards: usize,
}

/// How many shards the busiest series get: one per core, bounded.
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
});

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, handed out round-robin on first use.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn shard() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SHARD.fetch_add(1, Relaxed);
        s.set(v);
        v
    })
}

impl Cells {
    fn new(n: usize, shards: usize) -> Cells {
        let per_shard = n.div_ceil(8).max(1);
        let lines = (0..per_shard * shards).map(|_| Line::default()).collect();
        Cells {
            lines,
            per_shard,
            shards,
        }
    }
    #[inline]
    fn add(&self, i: usize, v: u64) {
        let s = if self.shards == 1 {
            0
        } else {
            shard() % self.shards
        };
        self.lines[s * self.per_shard + i / 8].0[i % 8].fetch_add(v, Relaxed);
    }
    pub(crate) fn get(&self, i: usize) -> u64 {
        (0..self.shards)
            .map(|s| self.lines[s * self.per_shard + i / 8].0[i % 8].load(Relaxed))
            .sum()
    }
    /// What these cells cost against [`CAPACITY`] (logical, not per shard).
    fn cost(n: usize) -> usize {
        n * 8
    }
}

/// A stable hash of label values (no per-process random state, no allocation).
fn fnv(parts: &[&str]) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for p in parts {
        p.hash(&mut h);
    }
    h.0
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Overhead charged per series besides its cells and labels (map entry, headers).
const SERIES_OVERHEAD: usize = 64;

/// Everything counted for one (service, route): the latency histograms, and the
/// request and bandwidth counters per consumer.
pub struct RouteSeries {
    pub service: Box<str>,
    pub route: Box<str>,
    latency: Cells,
    /// The series with an empty consumer label (every request without `per_consumer`).
    plain: ConsumerSeries,
    /// By consumer username, sharded by its hash.
    consumers: Box<[RwLock<ConsumerMap>]>,
}

/// A consumer series as the log phase holds it: the empty label borrowed (no reference
/// count to bump on the hot path), a named one shared.
pub enum Consumer<'a> {
    Plain(&'a ConsumerSeries),
    Named(Arc<ConsumerSeries>),
}

impl std::ops::Deref for Consumer<'_> {
    type Target = ConsumerSeries;
    fn deref(&self) -> &ConsumerSeries {
        match self {
            Consumer::Plain(s) => s,
            Consumer::Named(s) => s,
        }
    }
}

/// `http_requests_total` and `bandwidth_bytes` for one consumer label.
pub struct ConsumerSeries {
    pub consumer: Box<str>,
    /// ingress, egress.
    bandwidth: Cells,
    codes: ArcSwap<Vec<Arc<CodeSeries>>>,
    codes_write: Mutex<()>,
    shards: usize,
}

/// One `http_requests_total` series: a status code and its source.
pub struct CodeSeries {
    pub code: u16,
    /// `source="service"` (else `"kong"`).
    pub from_service: bool,
    n: Cells,
}

const CONSUMER_SHARDS: usize = 16;

type ConsumerMap = HashMap<Box<str>, Arc<ConsumerSeries>>;

fn bucket_of(buckets: &[u64], v: u64) -> usize {
    buckets.partition_point(|b| *b < v)
}

impl RouteSeries {
    fn new(service: &str, route: &str) -> RouteSeries {
        RouteSeries {
            service: service.into(),
            route: route.into(),
            latency: Cells::new(LATENCY_CELLS, *SHARDS),
            plain: ConsumerSeries::new("", *SHARDS),
            consumers: (0..CONSUMER_SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn cost(service: &str, route: &str) -> usize {
        SERIES_OVERHEAD * 2
            + Cells::cost(LATENCY_CELLS)
            + Cells::cost(2)
            + 2 * (service.len() + route.len())
    }

    fn observe(&self, at: usize, buckets: &[u64], v: u64) {
        self.latency.add(at + bucket_of(buckets, v), 1);
        self.latency.add(at + buckets.len() + 1, v);
    }
    pub fn observe_kong(&self, ms: u64) {
        self.observe(KONG_AT, KONG_BUCKETS, ms);
    }
    pub fn observe_upstream(&self, ms: u64) {
        self.observe(UPSTREAM_AT, UPSTREAM_BUCKETS, ms);
    }
    pub fn observe_request(&self, ms: u64) {
        self.observe(REQUEST_AT, UPSTREAM_BUCKETS, ms);
    }

    /// A histogram's cumulative bucket counts (`+Inf` last) and its sum.
    pub(crate) fn histogram(&self, at: usize, buckets: &[u64]) -> (Vec<u64>, u64) {
        let mut acc = 0;
        let counts = (0..=buckets.len())
            .map(|i| {
                acc += self.latency.get(at + i);
                acc
            })
            .collect();
        (counts, self.latency.get(at + buckets.len() + 1))
    }

    /// The series of a consumer label (`""`: without one); created on first use.
    pub fn consumer(&self, consumer: &str, reg: &Registry) -> Option<Consumer<'_>> {
        if consumer.is_empty() {
            return Some(Consumer::Plain(&self.plain));
        }
        let shard = &self.consumers[(fnv(&[consumer]) as usize) % CONSUMER_SHARDS];
        if let Some(s) = shard.read().ok()?.get(consumer) {
            return Some(Consumer::Named(s.clone()));
        }
        let mut w = shard.write().ok()?;
        if let Some(s) = w.get(consumer) {
            return Some(Consumer::Named(s.clone()));
        }
        let cost = SERIES_OVERHEAD + Cells::cost(2) + consumer.len() * 2;
        if !reg.charge(cost) {
            return None;
        }
        // Per-consumer series are many and each is light: one shard.
        let s = Arc::new(ConsumerSeries::new(consumer, 1));
        w.insert(consumer.into(), s.clone());
        Some(Consumer::Named(s))
    }

    /// Every consumer series with its label, the empty one first.
    pub(crate) fn consumer_series(&self) -> Vec<Arc<ConsumerSeries>> {
        let mut out = Vec::new();
        for shard in self.consumers.iter() {
            if let Ok(m) = shard.read() {
                out.extend(m.values().cloned());
            }
        }
        out
    }

    pub(crate) fn plain(&self) -> &ConsumerSeries {
        &self.plain
    }
}

impl ConsumerSeries {
    fn new(consumer: &str, shards: usize) -> ConsumerSeries {
        ConsumerSeries {
            consumer: consumer.into(),
            bandwidth: Cells::new(2, shards),
            codes: ArcSwap::from_pointee(Vec::new()),
            codes_write: Mutex::new(()),
            shards,
        }
    }

    /// Kong adds only sizes above zero.
    pub fn add_bandwidth(&self, ingress: u64, egress: u64) {
        if ingress > 0 {
            self.bandwidth.add(0, ingress);
        }
        if egress > 0 {
            self.bandwidth.add(1, egress);
        }
    }

    /// (ingress, egress) bytes.
    pub fn bandwidth(&self) -> (u64, u64) {
        (self.bandwidth.get(0), self.bandwidth.get(1))
    }

    pub fn count_status(&self, code: u16, from_service: bool, reg: &Registry) {
        let find = |list: &[Arc<CodeSeries>]| {
            list.iter()
                .find(|c| c.code == code && c.from_service == from_service)
                .cloned()
        };
        if let Some(c) = self
            .codes
            .load()
            .iter()
            .find(|c| c.code == code && c.from_service == from_service)
        {
            c.n.add(0, 1);
            return;
        }
        let Ok(_g) = self.codes_write.lock() else {
            return;
        };
        let cur = self.codes.load_full();
        let c = match find(&cur) {
            Some(c) => c,
            None => {
                if !reg.charge(SERIES_OVERHEAD + Cells::cost(1)) {
                    return;
                }
                let c = Arc::new(CodeSeries {
                    code,
                    from_service,
                    n: Cells::new(1, self.shards),
                });
                let mut next = (*cur).clone();
                next.push(c.clone());
                self.codes.store(Arc::new(next));
                c
            }
        };
        c.n.add(0, 1);
    }

    pub(crate) fn codes(&self) -> Arc<Vec<Arc<CodeSeries>>> {
        self.codes.load_full()
    }
}

impl CodeSeries {
    pub fn count(&self) -> u64 {
        self.n.get(0)
    }
}

/// Series by hash of their (service, route) labels: the key is a hash already, so the
/// map uses it as is.
type RouteMap = HashMap<u64, Box<[Arc<RouteSeries>]>, BuildHasherDefault<Identity>>;

#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in case.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The process-wide metric state.
pub struct Registry {
    /// Bytes the series may take ([`CAPACITY`]).
    capacity: usize,
    routes: ArcSwap<RouteMap>,
    routes_write: Mutex<()>,
    /// Bytes charged against [`CAPACITY`].
    used: AtomicUsize,
    /// `kong_nginx_metric_errors_total`.
    errors: AtomicU64,
    /// Whether the scrape reports `kong_upstream_target_health`.
    upstream_health: AtomicBool,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::with_capacity(CAPACITY)
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The registry of this process.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    pub fn with_capacity(capacity: usize) -> Registry {
        Registry {
            capacity,
            routes: ArcSwap::default(),
            routes_write: Mutex::new(()),
            used: AtomicUsize::new(0),
            errors: AtomicU64::new(0),
            upstream_health: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the (service, route) series, created on first use. `None` when the
    /// registry is full (the update is dropped and counted as an error). The common
    /// case is one lock-free map load: no reference count is touched.
    #[inline]
    pub fn with_route<R>(
        &self,
        service: &str,
        route: &str,
        f: impl FnOnce(&RouteSeries) -> R,
    ) -> Option<R> {
        let h = fnv(&[service, route]);
        let find = |m: &RouteMap| -> Option<Arc<RouteSeries>> {
            m.get(&h)?
                .iter()
                .find(|s| &*s.service == service && &*s.route == route)
                .cloned()
        };
        {
            let map = self.routes.load();
            let hit = map.get(&h).and_then(|l| {
                l.iter()
                    .find(|s| &*s.service == service && &*s.route == route)
            });
            if let Some(s) = hit {
                return Some(f(s));
            }
        }
        let s = {
            let _g = self.routes_write.lock().ok()?;
            let cur = self.routes.load_full();
            match find(&cur) {
                Some(s) => s,
                None => {
                    if !self.charge(RouteSeries::cost(service, route)) {
                        return None;
                    }
                    let s = Arc::new(RouteSeries::new(service, route));
                    let mut next = (*cur).clone();
                    let list = next.entry(h).or_default();
                    let mut v = list.to_vec();
                    v.push(s.clone());
                    *list = v.into_boxed_slice();
                    self.routes.store(Arc::new(next));
                    s
                }
            }
        };
        Some(f(&s))
    }

    /// Reserves `bytes` of capacity; counts an error when there is none left.
    fn charge(&self, bytes: usize) -> bool {
        let ok = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| {
                (u + bytes <= self.capacity).then_some(u + bytes)
            })
            .is_ok();
        if !ok {
            self.errors.fetch_add(1, Relaxed);
            tracing::error!(
                capacity = self.capacity,
                "prometheus: the metrics registry is full; update dropped"
            );
        }
        ok
    }

    /// Every (service, route) series.
    pub fn routes(&self) -> Vec<Arc<RouteSeries>> {
        self.routes
            .load()
            .values()
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// Bytes in use, as Kong reports its dict's allocated slabs.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Kong's `set_export_upstream_health_metrics`, called on every logged request.
    #[inline]
    pub fn set_upstream_health_metrics(&self, on: bool) {
        // A load first: the store would dirty the line shared by every core.
        if self.upstream_health.load(Relaxed) != on {
            self.upstream_health.store(on, Relaxed);
        }
    }

    pub fn upstream_health_metrics(&self) -> bool {
        self.upstream_health.load(Relaxed)
    }
}
