//! Kong's load balancer: upstreams compiled per snapshot (by name, so a
//! service whose host names an upstream goes through it), with their state
//! ([`state`]) kept outside the snapshot so it survives rebuilds.
//!
//! Kong balances over addresses, not targets: an IP target is one address,
//! a named target the addresses of its DNS answer ([`address`]: A/AAAA
//! records weigh the target's weight, SRV records their own). The
//! addresses and what picks among them make a [`plan::Plan`], rebuilt when
//! an answer changes. Picking is lock-free: an atomic position on a
//! precomputed weighted wheel (round-robin), Kong's continuum of `slots`
//! positions (consistent-hashing, [`hash`]), or a scan of the addresses'
//! atomics (least-connections, latency). Unhealthy addresses, and addresses
//! this request already tried, are skipped.

pub mod address;
pub mod dns;
pub mod hash;
pub mod health;
pub mod plan;
pub mod state;

use crate::snapshot::{split_host_port, Row};
use crate::tls::CertPair;
use address::{AddrSet, Address};
use arc_swap::ArcSwap;
use plan::{Plan, Slot};
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
    /// Target-wide state: connections, latency and health of an IP target,
    /// DNS errors of a name (a name's health is per address, in the plan).
    pub state: Arc<TargetState>,
}

/// A picked address.
#[derive(Debug, Clone, Copy)]
pub struct Pick {
    /// Its index in the plan's slots (what `tried` marks).
    pub slot: usize,
    pub target: usize,
    /// The address in the target's set (`None`: an IP target).
    pub addr: Option<usize>,
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
    /// The addresses and what picks among them.
    plan: ArcSwap<Plan>,
    /// Held while named targets are resolved again.
    refreshing: tokio::sync::Mutex<()>,
    /// `slots`.
    slots: usize,
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
            list.push(BTarget {
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
        // A name's known answer: its addresses keep their health across
        // this rebuild.
        let sets = list
            .iter()
            .map(|t| match t.ip {
                Some(_) => None,
                None => dns::cached(&t.host)
                    .map(|r| Arc::new(AddrSet::build(&id, &t.target, t.port, t.weight, r))),
            })
            .collect();
        let plan = Plan::build(&list, sets, algorithm, slots, false);
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
            plan: ArcSwap::from_pointee(plan),
            refreshing: tokio::sync::Mutex::new(()),
            slots,
            checks_enabled,
            active,
            passive,
            threshold: num(&hc, &["threshold"]),
        })
    }

    /// The addresses and what picks among them.
    pub fn plan(&self) -> arc_swap::Guard<Arc<Plan>> {
        self.plan.load()
    }

    /// Resolves named targets again once an answer ran out (Kong's renewal
    /// timer; here the first request or health check after it, the others
    /// waiting for it). A changed answer makes a new plan: the addresses
    /// that stayed keep their state and, on the ring, their points.
    pub async fn refresh_names(&self) {
        if !self.plan.load().due() {
            return;
        }
        let _g = self.refreshing.lock().await;
        let plan = self.plan.load_full();
        if !plan.due() {
            return;
        }
        let mut sets = plan.sets.clone();
        let mut changed = false;
        for (i, t) in self.targets.iter().enumerate() {
            if t.ip.is_some() || plan.sets[i].as_ref().is_some_and(|s| s.source.fresh()) {
                continue;
            }
            match dns::resolve(&t.host).await {
                Ok(r) => {
                    t.state.dns_error.store(false, Ordering::Relaxed);
                    if plan.sets[i]
                        .as_ref()
                        .is_none_or(|s| !Arc::ptr_eq(&s.source, &r))
                    {
                        let set = AddrSet::build(&self.id, &t.target, t.port, t.weight, r);
                        sets[i] = Some(Arc::new(set));
                        changed = true;
                    }
                }
                // Kong leaves a name that does not resolve without addresses.
                Err(e) => {
                    tracing::debug!(target = %t.target, "target name resolution failed: {e}");
                    t.state.dns_error.store(true, Ordering::Relaxed);
                    changed |= sets[i].take().is_some();
                }
            }
        }
        if changed {
            let p = Plan::build(&self.targets, sets, self.algorithm, self.slots, true);
            self.plan.store(Arc::new(p));
        } else {
            plan.set_recheck(&self.targets, true);
        }
    }

    fn usable(&self, plan: &Plan, k: usize, tried: u64) -> bool {
        let s = &plan.slots[k];
        s.weight > 0
            && (!self.checks_enabled || plan.state(&self.targets, s).is_healthy())
            && !is_tried(tried, k)
    }

    /// Kong's balancer health (balancers.lua): the available share of the
    /// addresses' weight is above `threshold` percent.
    pub fn is_healthy(&self) -> bool {
        let plan = self.plan.load();
        let (mut total, mut unavailable) = (0u64, 0u64);
        for s in &plan.slots {
            let w = s.weight as u64;
            total += w;
            if self.checks_enabled && !plan.state(&self.targets, s).is_healthy() {
                unavailable += w;
            }
        }
        total > 0 && ((total - unavailable) as f64 / total as f64 * 100.0) > self.threshold
    }

    /// Whether some address can take traffic.
    pub fn has_healthy(&self) -> bool {
        let plan = self.plan.load();
        (0..plan.slots.len()).any(|k| self.usable(&plan, k, 0))
    }

    /// Picks an address for a request from `plan`: `hash` for
    /// consistent-hashing, `tried` a bit set of slots this request already
    /// failed on (avoided while another address is available). `None`: no
    /// healthy address.
    pub fn pick(&self, plan: &Plan, hash: Option<u64>, tried: u64) -> Option<Pick> {
        if self.threshold > 0.0 && !self.is_healthy() {
            return None;
        }
        let k = self.pick_avoiding(plan, hash, tried).or_else(|| {
            (tried != 0)
                .then(|| self.pick_avoiding(plan, hash, 0))
                .flatten()
        })?;
        let Slot { target, addr, .. } = plan.slots[k];
        Some(Pick {
            slot: k,
            target: target as usize,
            addr: addr.map(|a| a as usize),
        })
    }

    fn pick_avoiding(&self, plan: &Plan, hash: Option<u64>, tried: u64) -> Option<usize> {
        match self.algorithm {
            Algorithm::ConsistentHashing if !plan.ring.is_empty() => {
                // Without a value to hash, a round-robin walk of the ring.
                let h = hash
                    .unwrap_or_else(|| self.state.position.fetch_add(1, Ordering::Relaxed) as u64);
                plan.ring.walk(h).find(|&k| self.usable(plan, k, tried))
            }
            Algorithm::LeastConnections | Algorithm::Latency => {
                let start = self.state.position.fetch_add(1, Ordering::Relaxed);
                let n = plan.slots.len();
                let mut best: Option<(f64, usize)> = None;
                for j in 0..n {
                    let k = (start + j) % n;
                    if !self.usable(plan, k, tried) {
                        continue;
                    }
                    let s = &plan.slots[k];
                    let st = plan.state(&self.targets, s);
                    let load = st.active.load(Ordering::Relaxed) as f64 + 1.0;
                    let score = if self.algorithm == Algorithm::Latency {
                        st.ewma() * load / s.weight as f64
                    } else {
                        load / s.weight as f64
                    };
                    if best.is_none_or(|(b, _)| score < b) {
                        best = Some((score, k));
                    }
                }
                best.map(|(_, k)| k)
            }
            _ => {
                let n = plan.wheel.len();
                if n == 0 {
                    return None;
                }
                let start = self.state.position.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|j| plan.wheel[(start + j) % n] as usize)
                    .find(|&k| self.usable(plan, k, tried))
            }
        }
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
                address = ?a.map(|a| (&a.ip, a.port)), healthy = h,
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

/// Marks slot `i` as tried in a bit set (slots past 63 are not tracked).
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
pub(crate) fn build_wheel(weights: &[u32]) -> Vec<u32> {
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
    /// Kong's `address.ip`: an IP, or an SRV record's target name.
    pub ip: String,
    pub port: u16,
    /// The address's weight (an SRV record's own).
    pub weight: u32,
    /// The target's weight.
    pub node_weight: u32,
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
        let plan = self.plan.load();
        for (i, t) in self.targets.iter().enumerate() {
            let one = |ip: String, port: u16, weight: u32, health: Health| AddressHealth {
                target: t.target.clone(),
                ip,
                port,
                weight,
                node_weight: t.weight,
                health,
            };
            if t.state.dns_error.load(Ordering::Relaxed) {
                out.push(one(t.host.clone(), t.port, t.weight, Health::DnsError));
                continue;
            }
            match (t.ip, &plan.sets[i]) {
                // A name lists the addresses it last resolved to, each with
                // its weight and health.
                (None, Some(set)) => out.extend(
                    set.addrs
                        .iter()
                        .map(|a| one(a.ip.clone(), a.port, a.weight, health(t, &a.state))),
                ),
                _ => out.push(one(t.host.clone(), t.port, t.weight, health(t, &t.state))),
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
        let plan = self.plan.load();
        let mut found = false;
        for (i, t) in self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.target == target)
        {
            match (want, t.ip, &plan.sets[i]) {
                (Some(w), None, Some(set)) => {
                    let same = |a: &Address| {
                        a.port == w.port() && a.ip.parse::<IpAddr>().is_ok_and(|ip| ip == w.ip())
                    };
                    for a in set.addrs.iter().filter(|a| same(a)) {
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
