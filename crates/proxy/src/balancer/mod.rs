//! Kong's load balancer: upstreams compiled per snapshot (by name, so a
//! service whose host names an upstream goes through it), with their state
//! ([`state`]) kept outside the snapshot so it survives rebuilds.
//!
//! Picking is lock-free: an atomic position on a precomputed weighted wheel
//! (round-robin), Kong's continuum of `slots` positions (consistent-hashing,
//! [`hash`]), or a scan of the targets' atomics (least-connections, latency).
//! Unhealthy targets, and targets this request already tried, are skipped. A
//! target named by a host name then picks one of its resolved addresses
//! ([`address`]), each with its own health, as Kong keeps it per address.

pub mod address;
pub mod dns;
pub mod hash;
pub mod health;
pub mod state;

use crate::snapshot::{split_host_port, Row};
use crate::tls::CertPair;
use address::{AddrSet, Address};
use arc_swap::ArcSwapOption;
use state::{Outcome, TargetState, Thresholds, UpstreamState};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Kong's default target port.
pub const DEFAULT_PORT: u16 = 8000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    ConsistentHashing,
    LeastConnections,
    Latency,
}

/// One target as configured.
#[derive(Debug)]
pub struct BTarget {
    /// The entity's `target` (`host:port`, port defaulted).
    pub target: String,
    pub id: String,
    pub host: String,
    pub port: u16,
    pub ip: Option<IpAddr>,
    pub weight: u32,
    /// Target-wide state: connections, latency, DNS errors, and the health
    /// of an IP target (a name's health is per address, in `addrs`).
    pub state: Arc<TargetState>,
    /// A name's addresses from its latest DNS answer.
    pub addrs: ArcSwapOption<AddrSet>,
}

impl BTarget {
    /// Whether the target can take traffic (health checks aside): an IP
    /// target's own state, a name's addresses (any one up; not resolved yet
    /// counts as up).
    pub fn healthy(&self) -> bool {
        if self.ip.is_some() {
            return self.state.is_healthy();
        }
        self.addrs.load().as_ref().is_none_or(|s| s.any_healthy())
    }

    /// A name's addresses, from the set while its DNS answer is fresh (no
    /// lock, no allocation), else from the resolver.
    pub async fn resolve(&self, upstream_id: &str) -> Result<Arc<AddrSet>, String> {
        if let Some(s) = self.addrs.load_full().filter(|s| s.source.fresh()) {
            return Ok(s);
        }
        let r = dns::resolve(&self.host, self.port).await?;
        Ok(self.addresses(upstream_id, r))
    }

    /// The address set for answer `r`, rebuilt when the answer changed.
    fn addresses(&self, upstream_id: &str, r: Arc<dns::Resolved>) -> Arc<AddrSet> {
        if let Some(s) = self.addrs.load_full() {
            if Arc::ptr_eq(&s.source, &r) {
                return s;
            }
        }
        let s = Arc::new(AddrSet::build(upstream_id, &self.target, r));
        self.addrs.store(Some(s.clone()));
        s
    }
}

/// Active health check settings (`healthchecks.active`).
#[derive(Debug, Clone)]
pub struct ActiveCfg {
    pub kind: String,
    pub timeout: Duration,
    pub concurrency: usize,
    pub http_path: String,
    pub https_sni: Option<String>,
    pub https_verify: bool,
    pub headers: Vec<(String, String)>,
    pub healthy_interval: Duration,
    pub healthy_statuses: Vec<u16>,
    pub unhealthy_interval: Duration,
    pub unhealthy_statuses: Vec<u16>,
    pub thresholds: Thresholds,
}

/// Passive health check settings (`healthchecks.passive`).
#[derive(Debug, Clone, Default)]
pub struct PassiveCfg {
    pub healthy_statuses: Vec<u16>,
    pub unhealthy_statuses: Vec<u16>,
    pub thresholds: Thresholds,
}

/// A compiled upstream.
#[derive(Debug)]
pub struct Balancer {
    pub id: String,
    pub name: String,
    pub host_header: Option<String>,
    /// Send the SRV record's target name (not the target's) as Host and SNI.
    pub use_srv_name: bool,
    pub client_certificate: Option<String>,
    /// That certificate, for active https checks (healthcheckers.lua).
    pub client_cert: Option<Arc<rustls::sign::CertifiedKey>>,
    pub algorithm: Algorithm,
    /// Every target, weight 0 included (they are never picked).
    pub targets: Vec<BTarget>,
    /// Round-robin wheel: target indices interleaved by weight.
    wheel: Vec<u32>,
    /// Consistent-hashing ring: Kong's continuum of `slots` positions.
    ring: hash::Ring,
    pub hash: hash::HashCfg,
    state: Arc<UpstreamState>,
    /// Kong's `is_upstream_using_healthcheck`.
    pub checks_enabled: bool,
    pub active: Option<ActiveCfg>,
    pub passive: PassiveCfg,
    /// `healthchecks.threshold`: the % of weight that must be healthy for the
    /// upstream to take traffic at all.
    pub threshold: f64,
}

fn get<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}
fn num(v: &serde_json::Value, path: &[&str]) -> f64 {
    get(v, path).and_then(|x| x.as_f64()).unwrap_or(0.0)
}
fn statuses(v: &serde_json::Value, path: &[&str]) -> Vec<u16> {
    get(v, path)
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_u64())
                .map(|s| s as u16)
                .collect()
        })
        .unwrap_or_default()
}
fn thresholds(v: &serde_json::Value, kind: &str) -> Thresholds {
    Thresholds {
        successes: num(v, &[kind, "healthy", "successes"]) as u32,
        tcp_failures: num(v, &[kind, "unhealthy", "tcp_failures"]) as u32,
        timeouts: num(v, &[kind, "unhealthy", "timeouts"]) as u32,
        http_failures: num(v, &[kind, "unhealthy", "http_failures"]) as u32,
    }
}
fn secs(f: f64) -> Duration {
    Duration::from_secs_f64(f.clamp(0.0, 1e6))
}

impl Balancer {
    /// Compiles an upstream row and its target rows.
    pub fn build(
        row: &Row,
        targets: &[&Row],
        certs: &HashMap<String, Arc<CertPair>>,
    ) -> Result<Balancer, String> {
        let s = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let id = s("id").ok_or("upstream without id")?;
        let name = s("name").ok_or("upstream without name")?;
        let algorithm = match s("algorithm").as_deref().unwrap_or("round-robin") {
            "round-robin" => Algorithm::RoundRobin,
            "consistent-hashing" => Algorithm::ConsistentHashing,
            "least-connections" => Algorithm::LeastConnections,
            "latency" => Algorithm::Latency,
            a => return Err(format!("upstream {name}: unknown algorithm {a}")),
        };
        let mut list = Vec::new();
        for t in targets {
            let ts = t.get("target").and_then(|v| v.as_str()).unwrap_or_default();
            let Some((host, port)) = split_host_port(ts) else {
                return Err(format!("upstream {name}: bad target {ts}"));
            };
            let port = port.unwrap_or(DEFAULT_PORT);
            let ip = host.parse::<IpAddr>().ok();
            let target = match ip {
                Some(IpAddr::V6(_)) => format!("[{host}]:{port}"),
                _ => format!("{host}:{port}"),
            };
            let weight = t
                .get("weight")
                .and_then(|v| v.as_u64())
                .unwrap_or(100)
                .min(65535) as u32;
            // A name's known answer: its addresses keep their health
            // across this rebuild.
            let addrs = ArcSwapOption::from(match ip {
                Some(_) => None,
                None => dns::cached(&host, port).map(|r| Arc::new(AddrSet::build(&id, &target, r))),
            });
            list.push(BTarget {
                addrs,
                state: state::target_state(&id, &target),
                id: t
                    .get("id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                target,
                host,
                port,
                ip,
                weight,
            });
        }
        // Stable order, so the wheel and ring do not depend on row order.
        list.sort_by(|a, b| a.target.cmp(&b.target));
        list.dedup_by(|a, b| a.target == b.target);

        let hc = row
            .get("healthchecks")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let active = {
            let hi = num(&hc, &["active", "healthy", "interval"]);
            let ui = num(&hc, &["active", "unhealthy", "interval"]);
            (hi > 0.0 || ui > 0.0).then(|| ActiveCfg {
                kind: get(&hc, &["active", "type"])
                    .and_then(|v| v.as_str())
                    .unwrap_or("http")
                    .to_owned(),
                timeout: secs(match get(&hc, &["active", "timeout"]) {
                    Some(v) => v.as_f64().unwrap_or(1.0),
                    None => 1.0,
                }),
                concurrency: (num(&hc, &["active", "concurrency"]) as usize).max(1),
                http_path: get(&hc, &["active", "http_path"])
                    .and_then(|v| v.as_str())
                    .unwrap_or("/")
                    .to_owned(),
                https_sni: get(&hc, &["active", "https_sni"])
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                https_verify: get(&hc, &["active", "https_verify_certificate"])
                    .and_then(|v| v.as_bool())
                    .unwrap_or(true),
                headers: get(&hc, &["active", "headers"])
                    .and_then(|v| v.as_object())
                    .map(|m| {
                        m.iter()
                            .flat_map(|(k, vs)| {
                                vs.as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|v| v.as_str())
                                    .map(move |v| (k.clone(), v.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                healthy_interval: secs(hi),
                healthy_statuses: statuses(&hc, &["active", "healthy", "http_statuses"]),
                unhealthy_interval: secs(ui),
                unhealthy_statuses: statuses(&hc, &["active", "unhealthy", "http_statuses"]),
                thresholds: thresholds(&hc, "active"),
            })
        };
        let passive = PassiveCfg {
            healthy_statuses: statuses(&hc, &["passive", "healthy", "http_statuses"]),
            unhealthy_statuses: statuses(&hc, &["passive", "unhealthy", "http_statuses"]),
            thresholds: thresholds(&hc, "passive"),
        };
        let p = &passive.thresholds;
        let checks_enabled =
            active.is_some() || p.tcp_failures > 0 || p.timeouts > 0 || p.http_failures > 0;
        let slots = row
            .get("slots")
            .and_then(|v| v.as_u64())
            .unwrap_or(10000)
            .clamp(10, 65536) as usize;
        let weights: Vec<u32> = list.iter().map(|t| t.weight).collect();
        let wheel = build_wheel(&weights);
        let ring = if algorithm == Algorithm::ConsistentHashing {
            hash::build_ring(&list, slots)
        } else {
            hash::Ring::default()
        };
        let client_certificate = match row.get("client_certificate") {
            Some(serde_json::Value::Object(m)) => {
                m.get("id").and_then(|v| v.as_str()).map(str::to_owned)
            }
            _ => None,
        };
        let client_cert = client_certificate
            .as_ref()
            .and_then(|c| certs.get(c))
            .map(|c| c.primary.clone());
        Ok(Balancer {
            state: state::upstream_state(&id),
            client_cert,
            hash: hash::HashCfg::from_row(row),
            host_header: s("host_header"),
            use_srv_name: row
                .get("use_srv_name")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            client_certificate,
            id,
            name,
            algorithm,
            targets: list,
            wheel,
            ring,
            checks_enabled,
            active,
            passive,
            threshold: num(&hc, &["threshold"]),
        })
    }

    fn usable(&self, i: usize, tried: u64) -> bool {
        let t = &self.targets[i];
        t.weight > 0 && (!self.checks_enabled || t.healthy()) && !is_tried(tried, i)
    }

    /// Kong's balancer health (balancers.lua): the available share of the
    /// weight is above `threshold` percent.
    pub fn is_healthy(&self) -> bool {
        let (mut total, mut unavailable) = (0u64, 0u64);
        for t in &self.targets {
            let w = t.weight as u64;
            match (&t.ip, &*t.addrs.load()) {
                // Each address of a name weighs the target's weight (A records).
                (None, Some(set)) => {
                    for a in &set.addrs {
                        total += w;
                        if self.checks_enabled && !a.state.is_healthy() {
                            unavailable += w;
                        }
                    }
                }
                _ => {
                    total += w;
                    if self.checks_enabled && !t.healthy() {
                        unavailable += w;
                    }
                }
            }
        }
        total > 0 && ((total - unavailable) as f64 / total as f64 * 100.0) > self.threshold
    }

    /// Whether some target can take traffic.
    pub fn has_healthy(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.weight > 0 && (!self.checks_enabled || t.healthy()))
    }

    /// Picks a target for a request: `hash` for consistent-hashing, `tried`
    /// a bit set of target indices this request already failed on (they are
    /// avoided while another target is available). `None`: no healthy target.
    pub fn pick(&self, hash: Option<u64>, tried: u64) -> Option<usize> {
        if self.threshold > 0.0 && !self.is_healthy() {
            return None;
        }
        self.pick_avoiding(hash, tried)
            .or_else(|| (tried != 0).then(|| self.pick_avoiding(hash, 0)).flatten())
    }

    fn pick_avoiding(&self, hash: Option<u64>, tried: u64) -> Option<usize> {
        match self.algorithm {
            Algorithm::ConsistentHashing if !self.ring.is_empty() => {
                // Without a value to hash, a round-robin walk of the ring.
                let h = hash
                    .unwrap_or_else(|| self.state.position.fetch_add(1, Ordering::Relaxed) as u64);
                self.ring.walk(h).find(|&i| self.usable(i, tried))
            }
            Algorithm::LeastConnections | Algorithm::Latency => {
                let start = self.state.position.fetch_add(1, Ordering::Relaxed);
                let n = self.targets.len();
                let mut best: Option<(f64, usize)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !self.usable(i, tried) {
                        continue;
                    }
                    let t = &self.targets[i];
                    let load = t.state.active.load(Ordering::Relaxed) as f64 + 1.0;
                    let score = if self.algorithm == Algorithm::Latency {
                        t.state.ewma() * load / t.weight as f64
                    } else {
                        load / t.weight as f64
                    };
                    if best.is_none_or(|(b, _)| score < b) {
                        best = Some((score, i));
                    }
                }
                best.map(|(_, i)| i)
            }
            _ => {
                let n = self.wheel.len();
                if n == 0 {
                    return None;
                }
                let start = self.state.position.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| self.wheel[(start + k) % n] as usize)
                    .find(|&i| self.usable(i, tried))
            }
        }
    }

    /// Whether a name's address can take traffic.
    pub fn address_usable(&self, a: &Address) -> bool {
        !self.checks_enabled || a.state.is_healthy()
    }

    /// A request to target `t` (at address `a` for a name) ended with
    /// `outcome` (passive health check).
    pub fn report_passive(&self, t: &BTarget, a: Option<&Address>, outcome: Outcome) {
        if !self.checks_enabled {
            return;
        }
        let state = a.map_or(&t.state, |a| &a.state);
        if let Some(h) = state.report(outcome, &self.passive.thresholds) {
            tracing::info!(upstream = %self.name, target = %t.target,
                address = ?a.map(|a| a.addr), healthy = h,
                "passive health check changed the target's state");
        }
    }

    /// The passive outcome of an upstream response status.
    pub fn report_status(&self, t: &BTarget, a: Option<&Address>, status: u16) {
        if !self.checks_enabled {
            return;
        }
        if self.passive.unhealthy_statuses.contains(&status) {
            self.report_passive(t, a, Outcome::HttpFailure);
        } else if self.passive.healthy_statuses.contains(&status) {
            self.report_passive(t, a, Outcome::Success);
        }
    }
}

/// Marks target `i` as tried in a bit set (targets past 63 are not tracked).
pub fn mark_tried(tried: &mut u64, i: usize) {
    if i < 64 {
        *tried |= 1 << i;
    }
}
fn is_tried(tried: u64, i: usize) -> bool {
    i < 64 && tried & (1 << i) != 0
}

/// An interleaved weighted wheel (smooth weighted round-robin unrolled over
/// one period), so picking is an atomic increment. Weights are scaled down by
/// their gcd, and the period is capped at 2^16 entries.
fn build_wheel(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&x| (x / g) as u64).collect();
    let total: u64 = w.iter().sum();
    const CAP: u64 = 1 << 16;
    if total > CAP {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * CAP / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &wi) in w.iter().enumerate() {
            current[i] += wi as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        wheel.push(best as u32);
    }
    wheel
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A target's health as Kong's Admin API and metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
    HealthchecksOff,
    DnsError,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
            Health::HealthchecksOff => "HEALTHCHECKS_OFF",
            Health::DnsError => "DNS_ERROR",
        }
    }
}

/// One address of a target, as `/upstreams/{u}/health` reports it.
#[derive(Clone, Debug)]
pub struct AddressHealth {
    /// The entity's `target` (`host:port`).
    pub target: String,
    pub ip: String,
    pub port: u16,
    pub weight: u32,
    pub health: Health,
}

impl Balancer {
    /// The health of every target address (Kong's `get_upstream_health`:
    /// `HEALTHCHECKS_OFF` without health checks or with weight 0).
    pub fn health_states(&self) -> Vec<AddressHealth> {
        let mut out = Vec::new();
        let health = |t: &BTarget, s: &TargetState| {
            if !self.checks_enabled || t.weight == 0 {
                Health::HealthchecksOff
            } else if s.is_healthy() {
                Health::Healthy
            } else {
                Health::Unhealthy
            }
        };
        for t in &self.targets {
            let one = |ip: String, port: u16, health: Health| AddressHealth {
                target: t.target.clone(),
                ip,
                port,
                weight: t.weight,
                health,
            };
            if t.state.dns_error.load(Ordering::Relaxed) {
                out.push(one(t.host.clone(), t.port, Health::DnsError));
                continue;
            }
            match (t.ip, &*t.addrs.load()) {
                // A name lists the addresses it last resolved to, each with its health.
                (None, Some(set)) => out.extend(
                    set.addrs
                        .iter()
                        .map(|a| one(a.addr.ip().to_string(), a.addr.port(), health(t, &a.state))),
                ),
                _ => out.push(one(t.host.clone(), t.port, health(t, &t.state))),
            }
        }
        out
    }

    /// Sets targets' health by hand (`PUT …/healthy|unhealthy`): `target`
    /// is the entity's target, `address` optionally one `ip[:port]` of it
    /// (port 8000 when absent, as Kong's `post_health`); without one, every
    /// address of the target.
    pub fn set_health(
        &self,
        target: &str,
        address: Option<&str>,
        healthy: bool,
    ) -> Result<(), String> {
        if !self.checks_enabled {
            return Err(format!("no healthchecker found for {}", self.name));
        }
        let want = match address {
            Some(a) => {
                let (h, p) = split_host_port(a).ok_or_else(|| format!("invalid address: {a}"))?;
                // (a name instead of an ip means the whole target, as in Kong)
                h.parse::<IpAddr>()
                    .ok()
                    .map(|ip| std::net::SocketAddr::new(ip, p.unwrap_or(DEFAULT_PORT)))
            }
            None => None,
        };
        let mut found = false;
        for t in self.targets.iter().filter(|t| t.target == target) {
            let set = t.addrs.load();
            match (want, t.ip, &*set) {
                (Some(w), None, Some(set)) => {
                    for a in set.addrs.iter().filter(|a| a.addr == w) {
                        a.state.set_healthy(healthy);
                        found = true;
                    }
                }
                (Some(w), Some(ip), _) => {
                    if w.ip() == ip && w.port() == t.port {
                        t.state.set_healthy(healthy);
                        found = true;
                    }
                }
                (Some(_), None, None) => {}
                (None, _, set) => {
                    t.state.set_healthy(healthy);
                    for a in set.iter().flat_map(|s| &s.addrs) {
                        a.state.set_healthy(healthy);
                    }
                    found = true;
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(format!("target not found: {}", address.unwrap_or(target)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_respects_weights_and_interleaves() {
        let w = build_wheel(&[300, 100, 0]);
        assert_eq!(w.len(), 4);
        assert_eq!(w.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(w.iter().filter(|&&i| i == 1).count(), 1);
        assert!(!w.contains(&2));
        let w = build_wheel(&[1, 1, 1]);
        assert_eq!(w, vec![0, 1, 2]);
        assert!(build_wheel(&[0, 0]).is_empty());
        // capped period, proportions kept
        let w = build_wheel(&[65535, 65534]);
        assert!(w.len() <= 1 << 16 && w.len() > 65000);
        let a = w.iter().filter(|&&i| i == 0).count() as i64;
        assert!((a - (w.len() as i64 - a)).abs() <= 2);
    }
}
