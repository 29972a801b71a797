//! Balancer state that outlives snapshots: health counters, connection counts,
//! latency averages and round-robin positions, keyed by upstream id and target
//! address. A snapshot holds `Arc` handles; the registry holds `Weak` ones, so
//! a rebuilt snapshot finds the state of the one it replaces and a removed
//! target's state goes away with the last snapshot using it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// lua-resty-healthcheck's four counters: a failure resets only the success
/// counter, a success resets the three failure counters.
#[derive(Default, Debug)]
struct Counters {
    successes: u32,
    tcp_failures: u32,
    timeouts: u32,
    http_failures: u32,
}

/// What a check (active or passive) observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    TcpFailure,
    Timeout,
    HttpFailure,
}

/// Thresholds for one kind of check (0 disables that counter).
#[derive(Clone, Copy, Debug, Default)]
pub struct Thresholds {
    pub successes: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
    pub http_failures: u32,
}

/// One target address's shared state.
#[derive(Debug)]
pub struct TargetState {
    healthy: AtomicBool,
    /// The target's name did not resolve the last time it was tried.
    pub dns_error: AtomicBool,
    counters: Mutex<Counters>,
    /// Requests in flight (least-connections).
    pub active: AtomicU32,
    /// EWMA of the upstream latency in microseconds, as f64 bits (latency).
    ewma: AtomicU64,
    /// When `ewma` was last updated (ms since [`EPOCH`]).
    ewma_at: AtomicU64,
}

/// Time base for `ewma_at`.
static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Kong's latency balancer decays a target's average with a 10 s time
/// constant, so a target that was slow once gets tried again later.
const DECAY_MS: f64 = 10_000.0;

impl Default for TargetState {
    fn default() -> Self {
        TargetState {
            healthy: AtomicBool::new(true),
            dns_error: AtomicBool::new(false),
            counters: Mutex::new(Counters::default()),
            active: AtomicU32::new(0),
            ewma: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
        }
    }
}

impl TargetState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the state by hand (Admin API), resetting the counters.
    pub fn set_healthy(&self, healthy: bool) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = Counters::default();
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Counts an outcome; flips the state when its counter reaches its
    /// threshold. Returns the new state when it changed.
    pub fn report(&self, outcome: Outcome, t: &Thresholds) -> Option<bool> {
        let limit = match outcome {
            Outcome::Success => t.successes,
            Outcome::TcpFailure => t.tcp_failures,
            Outcome::Timeout => t.timeouts,
            Outcome::HttpFailure => t.http_failures,
        };
        let healthy = self.is_healthy();
        let success = outcome == Outcome::Success;
        // lua-resty-healthcheck: a zero limit disables the counter, and a
        // report matching the current state changes nothing, except that a
        // success still clears failures counted so far (consecutive failures).
        if limit == 0 || success == healthy {
            if success {
                let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
                if c.tcp_failures | c.timeouts | c.http_failures != 0 {
                    *c = Counters::default();
                }
            }
            return None;
        }
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let n = match outcome {
            Outcome::Success => {
                c.tcp_failures = 0;
                c.timeouts = 0;
                c.http_failures = 0;
                c.successes += 1;
                c.successes
            }
            o => {
                c.successes = 0;
                let ctr = match o {
                    Outcome::TcpFailure => &mut c.tcp_failures,
                    Outcome::Timeout => &mut c.timeouts,
                    _ => &mut c.http_failures,
                };
                *ctr += 1;
                *ctr
            }
        };
        if n >= limit {
            *c = Counters::default();
            self.healthy.store(success, Ordering::Relaxed);
            return Some(success);
        }
        None
    }

    /// Kong's latency balancer: an exponentially weighted moving average,
    /// weighted by the time since the previous sample.
    pub fn record_latency(&self, micros: u64) {
        let now = now_ms();
        let old = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            micros as f64
        } else {
            let dt = now.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
            let w = (-dt / DECAY_MS).exp();
            old * w + micros as f64 * (1.0 - w)
        };
        self.ewma.store(new.to_bits(), Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);
    }

    /// The average, decayed toward 0 while the target gets no traffic.
    pub fn ewma(&self) -> f64 {
        let v = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        if v == 0.0 {
            return 0.0;
        }
        let dt = now_ms().saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
        v * (-dt / DECAY_MS).exp()
    }
}

/// Per-upstream state.
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// Round-robin position on the wheel.
    pub position: AtomicUsize,
}

#[derive(Default)]
struct Registry {
    targets: HashMap<(String, String), Weak<TargetState>>,
    upstreams: HashMap<String, Weak<UpstreamState>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// The state of `address` (`ip:port` or `name:port`) in upstream `upstream_id`.
pub fn target_state(upstream_id: &str, address: &str) -> Arc<TargetState> {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let key = (upstream_id.to_owned(), address.to_owned());
    if let Some(s) = r.targets.get(&key).and_then(Weak::upgrade) {
        return s;
    }
    let s = Arc::new(TargetState::default());
    r.targets.insert(key, Arc::downgrade(&s));
    s
}

/// The state of upstream `upstream_id`.
pub fn upstream_state(upstream_id: &str) -> Arc<UpstreamState> {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = r.upstreams.get(upstream_id).and_then(Weak::upgrade) {
        return s;
    }
    let s = Arc::new(UpstreamState::default());
    r.upstreams
        .insert(upstream_id.to_owned(), Arc::downgrade(&s));
    s
}

/// Forgets state no snapshot uses any more.
pub fn prune() {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    r.targets.retain(|_, w| w.strong_count() > 0);
    r.upstreams.retain(|_, w| w.strong_count() > 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_flip_after_threshold_and_success_resets() {
        let s = TargetState::default();
        let t = Thresholds {
            successes: 2,
            tcp_failures: 2,
            timeouts: 0,
            http_failures: 3,
        };
        assert_eq!(s.report(Outcome::HttpFailure, &t), None);
        assert_eq!(s.report(Outcome::HttpFailure, &t), None);
        // a success in between: failures are consecutive
        assert_eq!(s.report(Outcome::Success, &t), None);
        assert_eq!(s.report(Outcome::HttpFailure, &t), None);
        assert_eq!(s.report(Outcome::HttpFailure, &t), None);
        assert_eq!(s.report(Outcome::HttpFailure, &t), Some(false));
        assert!(!s.is_healthy());
        // timeouts are disabled (0)
        assert_eq!(s.report(Outcome::Timeout, &t), None);
        assert_eq!(s.report(Outcome::Success, &t), None);
        assert_eq!(s.report(Outcome::Success, &t), Some(true));
        assert!(s.is_healthy());
    }

    #[test]
    fn registry_keeps_state_while_used() {
        let a = target_state("u-test-1", "10.0.0.1:80");
        a.set_healthy(false);
        let b = target_state("u-test-1", "10.0.0.1:80");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        prune();
        assert!(target_state("u-test-1", "10.0.0.1:80").is_healthy());
    }
}
