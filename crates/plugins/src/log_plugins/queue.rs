//! Kong's queue (`kong/tools/queue.lua`, 3.9): entries wait in a bounded buffer and one
//! background task per queue hands them to a [`Sender`] in batches, retrying a failed
//! batch with exponential backoff until `max_retry_time`, then dropping it with an error.
//!
//! The log phase only ever calls [`QueueHandle::enqueue`]: a short lock, a push, a wake-up.
//! When the buffer is full the oldest entry is dropped (Kong's "queue full, dropping old
//! entries"), so a dead log endpoint costs at most `max_entries` (and `max_bytes`).
//!
//! Queues live in a registry outside the snapshot, keyed by name (Kong's queue name), so
//! a configuration change hands the same queue, with what it holds, to the new instances.
//! A queue's task ends once no instance holds it and it is empty.

use bytes::Bytes;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// Kong's `COALESCE_MIN_TIME`: below this much coalescing budget the batch goes as is.
const COALESCE_MIN_TIME: Duration = Duration::from_millis(50);
/// Kong's `CAPACITY_WARNING_THRESHOLD`.
const CAPACITY_WARNING_THRESHOLD: f64 = 0.8;
/// Kong's `COALESCE_POLL_TIME`: how often a coalescing queue looks for the exit.
const COALESCE_POLL_TIME: Duration = Duration::from_secs(1);

/// Entries of every queue not yet sent or dropped (waiting or in a batch being sent).
static PENDING: AtomicI64 = AtomicI64::new(0);
/// Set by [`flush`]: queues stop coalescing and send what they have.
static EXITING: AtomicBool = AtomicBool::new(false);

/// At shutdown, after the last response: lets the queues send what they hold (Kong's
/// queues do the same when the worker exits, coalescing no more). Waits at most
/// `timeout`, and gives up sooner when nothing went out for a second (a dead endpoint).
/// Returns how many entries were left unsent.
pub async fn flush(timeout: Duration) -> u64 {
    EXITING.store(true, Ordering::Release);
    let start = Instant::now();
    let (mut last, mut moved) = (PENDING.load(Ordering::Acquire), Instant::now());
    loop {
        let n = PENDING.load(Ordering::Acquire);
        if n <= 0 {
            return 0;
        }
        if n != last {
            (last, moved) = (n, Instant::now());
        }
        if start.elapsed() >= timeout || moved.elapsed() >= Duration::from_secs(1) {
            return n as u64;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The runtime every log sender runs on: apart from the proxy's, so a stalled log
/// endpoint never takes a proxy thread, and queues outlive snapshots and requests.
pub(crate) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("log-plugins")
        .enable_all()
        .build()
        .expect("the log plugins' runtime starts")
});

/// Kong's `queue` record (`kong/tools/queue_schema.lua`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConf {
    pub max_batch_size: usize,
    /// Seconds.
    pub max_coalescing_delay: f64,
    pub max_entries: usize,
    pub max_bytes: Option<usize>,
    /// Seconds; a failed batch is retried until this much time went by (-1: never).
    pub max_retry_time: f64,
    pub initial_retry_delay: f64,
    pub max_retry_delay: f64,
    /// 1: one task sends batches in order; -1: every entry is sent at once on its own.
    pub concurrency_limit: i64,
    /// Not Kong's: take every waiting entry (up to `max_batch_size`) without coalescing.
    /// The plugins without a Kong queue (file, tcp, udp, syslog) use it to write what
    /// piled up in one go.
    pub take_available: bool,
}

impl Default for QueueConf {
    fn default() -> Self {
        QueueConf {
            max_batch_size: 1,
            max_coalescing_delay: 1.0,
            max_entries: 10_000,
            max_bytes: None,
            max_retry_time: 60.0,
            initial_retry_delay: 0.01,
            max_retry_delay: 60.0,
            concurrency_limit: 1,
            take_available: false,
        }
    }
}

impl QueueConf {
    /// The queue of a plugin with no Kong queue: bounded, batched by what is waiting, no
    /// retries (Kong's file/tcp/udp/syslog loggers send once and log the error).
    pub fn unqueued() -> QueueConf {
        QueueConf {
            max_batch_size: 1000,
            max_coalescing_delay: 0.0,
            max_retry_time: -1.0,
            take_available: true,
            ..QueueConf::default()
        }
    }

    /// The `queue` record of a plugin config (defaults filled in by the schema).
    pub fn from_json(q: &serde_json::Value) -> Result<QueueConf, String> {
        let d = QueueConf::default();
        let num = |k: &str, dflt: f64| -> Result<f64, String> {
            match q.get(k) {
                None | Some(serde_json::Value::Null) => Ok(dflt),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| format!("queue.{k}: expected a number")),
            }
        };
        Ok(QueueConf {
            max_batch_size: num("max_batch_size", 1.0)?.max(1.0) as usize,
            max_coalescing_delay: num("max_coalescing_delay", d.max_coalescing_delay)?,
            max_entries: num("max_entries", d.max_entries as f64)?.max(1.0) as usize,
            max_bytes: match q.get("max_bytes") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or("queue.max_bytes: expected an integer")? as usize),
            },
            max_retry_time: num("max_retry_time", d.max_retry_time)?,
            initial_retry_delay: num("initial_retry_delay", d.initial_retry_delay)?,
            max_retry_delay: num("max_retry_delay", d.max_retry_delay)?,
            concurrency_limit: num("concurrency_limit", 1.0)? as i64,
            take_available: false,
        })
    }
}

/// What sends a batch: one per queue task, so it may keep a connection open.
pub trait Sender: Default + Send + 'static {
    /// The handler's configuration, as the latest instance on the queue compiled it
    /// (Kong: "we always use the latest configuration that we have seen").
    type Conf: Send + Sync + 'static;
    fn send(
        &mut self,
        conf: &Self::Conf,
        batch: &[Bytes],
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Counters of one queue (tests, and the error log).
#[derive(Default, Debug)]
pub struct QueueStats {
    /// Entries that were sent.
    pub sent: AtomicU64,
    /// Entries dropped: queue full, too large, or their batch gave up.
    pub dropped: AtomicU64,
}

#[derive(Default)]
struct Buffer {
    entries: VecDeque<Bytes>,
    bytes: usize,
    /// Kong's `already_dropped_entries`: logs "queue full" once per episode.
    dropping: bool,
    warned: bool,
}

struct Shared<S: Sender> {
    name: String,
    /// Kong's `log_tag` (`http-log plugin <id>`).
    tag: Mutex<String>,
    conf: QueueConf,
    buf: Mutex<Buffer>,
    wake: tokio::sync::Notify,
    handler_conf: Mutex<Arc<S::Conf>>,
    /// Instances holding the queue; the task ends when none does and it is empty.
    handles: AtomicUsize,
    /// Entries being sent by their own tasks (`concurrency_limit = -1`).
    in_flight: AtomicUsize,
    stats: QueueStats,
    /// Whether a task serves the queue (it is started with the first handle).
    running: AtomicBool,
}

/// An instance's hold on a queue.
pub struct QueueHandle<S: Sender> {
    shared: Arc<Shared<S>>,
}

type Registry = Mutex<HashMap<String, Box<dyn Any + Send>>>;
static QUEUES: LazyLock<Registry> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The queue `name` (created with `conf` if no live queue with these settings has that
/// name), now sending with `handler_conf`.
pub fn queue<S: Sender>(
    name: &str,
    tag: String,
    conf: QueueConf,
    handler_conf: S::Conf,
) -> QueueHandle<S> {
    let handler_conf = Arc::new(handler_conf);
    let mut reg = lock(&QUEUES);
    let live = reg
        .get(name)
        .and_then(|b| b.downcast_ref::<Weak<Shared<S>>>())
        .and_then(Weak::upgrade)
        // Changed queue settings get a new queue; the old one drains for the instances
        // still holding it (Kong keeps a queue's settings until it is emptied).
        .filter(|s| s.running.load(Ordering::Acquire) && s.conf == conf);
    let shared = match live {
        Some(s) => {
            *lock(&s.handler_conf) = handler_conf;
            *lock(&s.tag) = tag;
            s
        }
        None => {
            let s = Arc::new(Shared::<S> {
                name: name.to_owned(),
                tag: Mutex::new(tag),
                conf,
                buf: Mutex::new(Buffer::default()),
                wake: tokio::sync::Notify::new(),
                handler_conf: Mutex::new(handler_conf),
                handles: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                stats: QueueStats::default(),
                running: AtomicBool::new(true),
            });
            reg.insert(name.to_owned(), Box::new(Arc::downgrade(&s)));
            if s.conf.concurrency_limit != -1 {
                RUNTIME.spawn(run(s.clone()));
            }
            s
        }
    };
    shared.handles.fetch_add(1, Ordering::AcqRel);
    QueueHandle { shared }
}

impl<S: Sender> Drop for QueueHandle<S> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.notify_one();
        }
    }
}

impl<S: Sender> QueueHandle<S> {
    /// Names the instance in the queue's messages (Kong's `log_tag`).
    pub fn set_tag(&self, tag: String) {
        *lock(&self.shared.tag) = tag;
    }

    pub fn stats(&self) -> &QueueStats {
        &self.shared.stats
    }

    /// Entries waiting.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// Queues an entry; never waits. A full queue drops its oldest entries to make room.
    pub fn enqueue(&self, entry: Bytes) -> Result<(), String> {
        let s = &self.shared;
        let c = &s.conf;
        if c.concurrency_limit == -1 {
            // Kong starts a timer per entry; bounded here by max_entries in flight.
            if s.in_flight.fetch_add(1, Ordering::AcqRel) >= c.max_entries {
                s.in_flight.fetch_sub(1, Ordering::AcqRel);
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Err("too many entries in flight".into());
            }
            PENDING.fetch_add(1, Ordering::AcqRel);
            RUNTIME.spawn(send_alone(self.shared.clone(), entry));
            return Ok(());
        }
        if let Some(max) = c.max_bytes {
            if entry.len() > max {
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "string to be queued is longer ({} bytes) than the queue's max_bytes ({max} bytes)",
                    entry.len()
                );
                s.log_err(&msg);
                return Err(msg);
            }
        }
        let mut b = lock(&s.buf);
        let n = b.entries.len();
        if n as f64 >= c.max_entries as f64 * CAPACITY_WARNING_THRESHOLD {
            if !b.warned {
                b.warned = true;
                s.log_warn("queue at 80% capacity");
            }
        } else {
            b.warned = false;
        }
        let mut dropped = 0u64;
        if n >= c.max_entries {
            if !b.dropping {
                s.log_err("queue full, dropping old entries until processing is successful again");
            }
            b.dropping = true;
            if let Some(old) = b.entries.pop_front() {
                b.bytes -= old.len();
                dropped += 1;
            }
        }
        if let Some(max) = c.max_bytes {
            let before = dropped;
            while b.bytes + entry.len() > max {
                let Some(old) = b.entries.pop_front() else {
                    break;
                };
                b.bytes -= old.len();
                dropped += 1;
            }
            if dropped > before {
                b.dropping = true;
                s.log_err(&format!(
                    "byte capacity exceeded, {} queue entries were dropped",
                    dropped - before
                ));
            }
        }
        b.bytes += entry.len();
        b.entries.push_back(entry);
        drop(b);
        PENDING.fetch_add(1 - dropped as i64, Ordering::AcqRel);
        if dropped > 0 {
            s.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        s.wake.notify_one();
        Ok(())
    }
}

impl<S: Sender> Shared<S> {
    fn log_warn(&self, msg: &str) {
        tracing::warn!("[{}] queue {}: {msg}", lock(&self.tag), self.name);
    }
    fn log_err(&self, msg: &str) {
        tracing::error!("[{}] queue {}: {msg}", lock(&self.tag), self.name);
    }

    /// Kong's `handle`: the batch until it is sent or `max_retry_time` went by.
    async fn handle(&self, sender: &mut S, batch: &[Bytes]) {
        let c = &self.conf;
        let start = Instant::now();
        let mut retries = 0i32;
        loop {
            let conf = lock(&self.handler_conf).clone();
            match sender.send(&conf, batch).await {
                Ok(()) => {
                    self.stats
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    self.log_warn(&format!("handler could not process entries: {e}"));
                }
            }
            if start.elapsed().as_secs_f64() > c.max_retry_time {
                self.log_err(&format!(
                    "could not send entries due to max_retry_time exceeded. {} queue entries were lost",
                    batch.len()
                ));
                self.stats
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                return;
            }
            let delay = (2f64.powi(retries) * c.initial_retry_delay).min(c.max_retry_delay);
            tokio::time::sleep(Duration::from_secs_f64(delay.max(0.0))).await;
            retries = retries.saturating_add(1);
        }
    }

    fn waiting(&self) -> usize {
        lock(&self.buf).entries.len()
    }

    fn take(&self, n: usize) -> Vec<Bytes> {
        let mut b = lock(&self.buf);
        let n = n.min(b.entries.len());
        let batch: Vec<Bytes> = b.entries.drain(..n).collect();
        b.bytes -= batch.iter().map(Bytes::len).sum::<usize>();
        if b.dropping && !batch.is_empty() {
            b.dropping = false;
            drop(b);
            tracing::info!(
                "[{}] queue {}: queue resumed processing",
                lock(&self.tag),
                self.name
            );
        }
        batch
    }
}

/// The queue's task (Kong's `process_once` in a loop).
async fn run<S: Sender>(s: Arc<Shared<S>>) {
    let mut sender = S::default();
    let c = s.conf.clone();
    let coalesce = Duration::from_secs_f64(c.max_coalescing_delay.max(0.0));
    loop {
        // Wait for a first entry (or for the last instance to let go of an empty queue).
        loop {
            if s.waiting() > 0 {
                break;
            }
            if s.handles.load(Ordering::Acquire) == 0 {
                // Unregister under the registry lock, so `queue()` never revives it.
                let mut reg = lock(&QUEUES);
                if s.waiting() == 0 && s.handles.load(Ordering::Acquire) == 0 {
                    s.running.store(false, Ordering::Release);
                    let ours = reg
                        .get(&s.name)
                        .and_then(|b| b.downcast_ref::<Weak<Shared<S>>>())
                        .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&s)));
                    if ours {
                        reg.remove(&s.name);
                    }
                    return;
                }
                continue;
            }
            s.wake.notified().await;
        }
        let first_at = tokio::time::Instant::now();
        let n = if c.take_available {
            c.max_batch_size
        } else {
            // Coalesce: wait for a full batch until the delay (from the first entry) runs out.
            let mut have = 1;
            while have < c.max_batch_size && !EXITING.load(Ordering::Acquire) {
                let left = coalesce.saturating_sub(first_at.elapsed());
                if left < COALESCE_MIN_TIME {
                    break;
                }
                if s.waiting() > have {
                    have = s.waiting().min(c.max_batch_size);
                    continue;
                }
                let wait = left.min(COALESCE_POLL_TIME);
                let _ = tokio::time::timeout(wait, s.wake.notified()).await;
                have = s.waiting().min(c.max_batch_size).max(1);
            }
            have
        };
        let batch = s.take(n);
        if !batch.is_empty() {
            s.handle(&mut sender, &batch).await;
            PENDING.fetch_sub(batch.len() as i64, Ordering::AcqRel);
        }
    }
}

/// One entry on its own task (`concurrency_limit = -1`).
async fn send_alone<S: Sender>(s: Arc<Shared<S>>, entry: Bytes) {
    let mut sender = S::default();
    s.handle(&mut sender, std::slice::from_ref(&entry)).await;
    s.in_flight.fetch_sub(1, Ordering::AcqRel);
    PENDING.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests;
