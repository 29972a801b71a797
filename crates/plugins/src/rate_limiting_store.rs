//! The counter stores of rate-limiting: `local` (in-process, outside the snapshot so
//! counters survive configuration changes) and `redis` (a real Redis, shared by nodes).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// One window of one period: its counter key and how long the counter lives.
#[derive(Clone, Debug)]
pub struct Window {
    pub key: String,
    /// Kong's `EXPIRATION[period]`, seconds.
    pub ttl: u64,
}

// ----------------------------------------------------------------------------------------
// local

/// One window of rate-limiting (local and redis policies): its key's suffix
/// (`<start ms>:<period>`), how long its counter lives and its limit.
#[derive(Clone, Copy, Debug)]
pub struct LocalWindow {
    pub start_ms: u64,
    pub period: &'static str,
    pub ttl: u64,
    pub limit: f64,
}

impl LocalWindow {
    /// Writes this window's key: `key[..prefix]` then the suffix.
    pub(crate) fn key(&self, key: &mut String, prefix: usize) {
        key.truncate(prefix);
        key.push_str(itoa::Buffer::new().format(self.start_ms));
        key.push(':');
        key.push_str(self.period);
    }
}

const SHARDS: usize = 16;
/// At most this many counters are kept per shard (Kong's shm is bounded too; past it the
/// entries closest to expiry are evicted, as `shm:incr` with `forcible` does).
const SHARD_CAP: usize = 65_536;

#[derive(Default)]
struct Shard {
    /// key → (count, expires at, seconds since the epoch)
    counters: HashMap<String, (u64, u64)>,
}

impl Shard {
    fn sweep(&mut self, now: u64) {
        self.counters.retain(|_, (_, exp)| *exp > now);
        if self.counters.len() >= SHARD_CAP {
            // Still full of live counters: drop the half that expires soonest.
            let mut exps: Vec<u64> = self.counters.values().map(|(_, e)| *e).collect();
            exps.sort_unstable();
            let cut = exps[exps.len() / 2];
            self.counters.retain(|_, (_, exp)| *exp > cut);
        }
    }
}

/// The process-wide counters of the `local` policy.
pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
}

pub static LOCAL: LazyLock<LocalStore> = LazyLock::new(LocalStore::new);

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalStore {
    pub fn new() -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
        }
    }

    /// Reads the usage of every window and, when none is at its limit, counts this request
    /// in all of them, atomically (one shard, chosen by the prefix, holds every window).
    /// A window's key is `key` (its prefix, left as it was on return) followed by
    /// `<start ms>:<period>`, built in place: no allocation unless the counter is new.
    /// Answers the usages before this request into `usage` (one per window).
    pub fn usage_and_increment(
        &self,
        key: &mut String,
        windows: &[LocalWindow],
        now: u64,
        usage: &mut [u64],
    ) {
        let prefix = key.len();
        let mut s = self.lock(key.as_str());
        let mut stop = false;
        for (w, u) in windows.iter().zip(usage.iter_mut()) {
            w.key(key, prefix);
            *u = match s.counters.get(key.as_str()) {
                Some((n, exp)) if *exp > now => *n,
                _ => 0,
            };
            stop |= w.limit - *u as f64 <= 0.0;
        }
        if !stop {
            if s.counters.len() >= SHARD_CAP {
                s.sweep(now);
            }
            for w in windows {
                w.key(key, prefix);
                let e = match s.counters.get_mut(key.as_str()) {
                    Some(e) => e,
                    None => s.counters.entry(key.clone()).or_insert((0, 0)),
                };
                if e.1 <= now {
                    *e = (0, now + w.ttl);
                }
                e.0 += 1;
            }
        }
        key.truncate(prefix);
    }

    /// The counters' values (response-ratelimiting's read, without counting).
    pub fn get(&self, shard_key: &str, windows: &[Window], now: u64) -> Vec<u64> {
        let s = self.lock(shard_key);
        windows
            .iter()
            .map(|w| match s.counters.get(&w.key) {
                Some((n, exp)) if *exp > now => *n,
                _ => 0,
            })
            .collect()
    }

    /// Adds `by` to every window (response-ratelimiting's increment).
    pub fn add(&self, shard_key: &str, windows: &[Window], by: u64, now: u64) {
        let mut s = self.lock(shard_key);
        if s.counters.len() >= SHARD_CAP {
            s.sweep(now);
        }
        for w in windows {
            let e = s.counters.entry(w.key.clone()).or_insert((0, 0));
            if e.1 <= now {
                *e = (0, now + w.ttl);
            }
            e.0 += by;
        }
    }

    fn lock(&self, shard_key: impl Hash) -> std::sync::MutexGuard<'_, Shard> {
        let shard = &self.shards[(self.hasher.hash_one(shard_key) as usize) % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many counters are kept.
    pub fn counters(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().counters.len())
            .sum()
    }
}

// ----------------------------------------------------------------------------------------
// redis

/// Kong 3.9's `redis` record, as the plugin compiled it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RedisConf {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: i64,
    pub timeout_ms: u64,
    pub ssl: bool,
    pub ssl_verify: bool,
}

impl RedisConf {
    fn client(&self) -> redis::RedisResult<redis::Client> {
        let addr = if self.ssl {
            redis::ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: !self.ssl_verify,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let password = empty(&self.password);
        redis::Client::open(redis::ConnectionInfo {
            addr,
            redis: redis::RedisConnectionInfo {
                db: self.database,
                // AUTH is sent only with a password (Kong's `is_present(password)`).
                username: password.as_ref().and_then(|_| empty(&self.username)),
                password,
                protocol: redis::ProtocolVersion::RESP2,
            },
        })
    }
}

/// The runtime the Redis connections live on: independent of the proxy's, so a
/// connection outlives snapshots and request tasks. (rate-limiting's per-request counting
/// has its own connection on the proxy's runtime: see [`crate::rate_limiting_redis`].)
pub(crate) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ratelimit-redis")
        .enable_all()
        .build()
        .expect("the rate-limiting redis runtime starts")
});

/// One multiplexed, auto-reconnecting connection per distinct `redis` record, shared by
/// every plugin instance (and snapshot) that uses it.
pub struct RedisPool {
    conf: RedisConf,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    /// rate-limiting's per-request counting, pipelined across requests.
    pub usage: Arc<crate::rate_limiting_redis::Coalescer>,
}

static POOLS: LazyLock<Mutex<HashMap<RedisConf, Arc<RedisPool>>>> = LazyLock::new(Default::default);

/// The shared pool for a `redis` record.
pub fn pool(conf: &RedisConf) -> Arc<RedisPool> {
    let mut m = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(conf.clone())
        .or_insert_with(|| {
            Arc::new(RedisPool {
                conf: conf.clone(),
                conn: tokio::sync::Mutex::new(None),
                usage: crate::rate_limiting_redis::Coalescer::new(conf.clone()),
            })
        })
        .clone()
}

impl RedisPool {
    async fn connection(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let t = Duration::from_millis(self.conf.timeout_ms);
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(t)
            .set_response_timeout(t)
            .set_number_of_retries(1);
        let c = redis::aio::ConnectionManager::new_with_config(self.conf.client()?, cfg).await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on a connection, on the Redis runtime: the caller's task waits for the
    /// answer without holding its worker thread, at most the configured timeout.
    pub fn run<T, F, Fut>(
        self: &Arc<Self>,
        f: F,
    ) -> impl Future<Output = Result<T, String>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(redis::aio::ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send,
    {
        let t = Duration::from_millis(self.conf.timeout_ms);
        let me = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        RUNTIME.spawn(async move {
            let work = async {
                let c = me.connection().await?;
                f(c).await
            };
            let r = match tokio::time::timeout(t, work).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("timeout".to_owned()),
            };
            let _ = tx.send(r);
        });
        async move {
            rx.await
                .unwrap_or_else(|_| Err("redis task ended".to_owned()))
        }
    }

    /// response-ratelimiting's usage: the counters' values (`GET`), 0 when absent.
    pub fn get(
        self: &Arc<Self>,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<Vec<u64>, String>> + Send + 'static {
        self.run(move |mut c| async move {
            let mut p = redis::pipe();
            for k in &keys {
                p.cmd("GET").arg(k);
            }
            let v: Vec<Option<i64>> = p.query_async(&mut c).await?;
            Ok(v.into_iter()
                .map(|n| n.unwrap_or(0).max(0) as u64)
                .collect())
        })
    }

    /// response-ratelimiting's increment, in the background: `INCRBY` each window,
    /// setting the expiry of a counter that did not exist (Kong's `exists` then pipeline).
    pub fn increment(self: &Arc<Self>, windows: Vec<Window>, by: i64) {
        let done = self.run(move |mut c| async move {
            let mut p = redis::pipe();
            for w in &windows {
                p.cmd("EVAL")
                    .arg(INCRBY_SCRIPT)
                    .arg(1)
                    .arg(&w.key)
                    .arg(by)
                    .arg(w.ttl)
                    .ignore();
            }
            p.query_async::<()>(&mut c).await
        });
        RUNTIME.spawn(async move {
            if let Err(e) = done.await {
                tracing::error!("failed to increment counters in Redis: {e}");
            }
        });
    }
}

/// rate-limiting's `redis` policy with a `sync_rate`: counters kept by the node and sent to
/// Redis at most once per `sync_rate` (see [`crate::rate_limiting_cluster`]), one engine per
/// Redis and rate, shared by every instance and snapshot that uses them.
pub fn synced(pool: &Arc<RedisPool>, sync_rate: f64) -> Arc<crate::rate_limiting_cluster::Cluster> {
    use crate::rate_limiting_cluster::Cluster;
    /// By Redis and `sync_rate` (its bits).
    type Engines = HashMap<(RedisConf, u64), Arc<Cluster>>;
    static SYNCED: LazyLock<Mutex<Engines>> = LazyLock::new(Default::default);
    let mut m = SYNCED.lock().unwrap_or_else(|e| e.into_inner());
    m.entry((pool.conf.clone(), sync_rate.to_bits()))
        .or_insert_with(|| {
            let c = Arc::new(Cluster::with_interval(
                Arc::new(RedisCounters(pool.clone())),
                Duration::from_secs_f64(sync_rate),
            ));
            RUNTIME.spawn(c.clone().run());
            c
        })
        .clone()
}

/// Redis as the synced engine's store: Kong's `sync_to_redis` (`INCRBY` the delta, set
/// the expiry of a new key to the window's end), answering the totals.
struct RedisCounters(Arc<RedisPool>);

impl crate::rate_limiting_cluster::CounterBackend for RedisCounters {
    fn increment(
        &self,
        _table: tollgate_model::counters::CounterTable,
        rows: Vec<tollgate_model::counters::CounterIncrement>,
    ) -> crate::rate_limiting_cluster::BoxFuture<Vec<i64>> {
        Box::pin(self.0.run(move |mut c| async move {
            let mut p = redis::pipe();
            for r in &rows {
                // Kong's key (`get_local_key`), from the row's columns.
                let key = format!(
                    "ratelimit:{}:{}:{}:{}:{}",
                    r.route_id,
                    r.service_id,
                    r.identifier,
                    r.period_date * 1000,
                    r.period
                );
                p.cmd("EVAL")
                    .arg(SYNC_SCRIPT)
                    .arg(1)
                    .arg(key)
                    .arg(r.value)
                    .arg(r.expires_at);
            }
            p.query_async::<Vec<i64>>(&mut c).await
        }))
    }
    fn purge(&self, _now: i64) -> crate::rate_limiting_cluster::BoxFuture<()> {
        // Redis expires the keys itself.
        Box::pin(async { Ok(()) })
    }
}

/// Kong's `sync_to_redis` script, answering the total.
const SYNC_SCRIPT: &str = r#"
local key, value, expiration = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local exists = redis.call("exists", key)
local total = redis.call("incrby", key, value)
if exists == 0 then
  redis.call("expireat", key, expiration)
end
return total
"#;

/// `INCRBY`, and `EXPIRE` when the key is new: one script, so a crash between the two
/// cannot leave a counter without an expiry.
const INCRBY_SCRIPT: &str = r#"
local key, by, expiration = KEYS[1], ARGV[1], ARGV[2]
local exists = redis.call("exists", key)
redis.call("incrby", key, by)
if exists == 0 then
  redis.call("expire", key, expiration)
end
return 0
"#;

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}
