//! The addresses a target's name resolves to, as Kong's balancer adds them
//! (`balancer_mt:addAddress`): one per A/AAAA record, weighing the target's
//! weight, or one per SRV record, weighing the record's weight (0 counts
//! as 1, Kong's `SRV_0_WEIGHT`; the target's weight is not used) and named
//! after the record's target. Each has its own health (Kong's healthchecker
//! keys it by ip, port and the target's name), so one dead instance behind
//! a name does not take the others out.

use super::dns::Resolved;
use super::state::{self, TargetState};
use std::net::SocketAddr;
use std::sync::Arc;

/// Kong's weight for an SRV record of weight 0: hit least, not never.
const SRV_0_WEIGHT: u32 = 1;

/// One balancer address of a named target.
#[derive(Debug)]
pub struct Address {
    /// Kong's `address.ip`: the IP of an A/AAAA record, or an SRV record's
    /// target (a name, or an IP).
    pub ip: String,
    pub port: u16,
    pub weight: u32,
    /// The record in `AddrSet::source`.
    entry: usize,
    pub state: Arc<TargetState>,
}

/// A target's addresses from one DNS answer; a new answer makes a new set
/// whose addresses find their state again in the registry.
#[derive(Debug)]
pub struct AddrSet {
    pub source: Arc<Resolved>,
    pub addrs: Vec<Address>,
}

/// The registry key of an address of `target` (`name:port|ip:port`).
pub fn address_key(target: &str, ip: &str, port: u16) -> String {
    format!("{target}|{ip}:{port}")
}

impl AddrSet {
    /// The addresses of `target` (port `port`, weight `weight`) in answer
    /// `source`.
    pub fn build(
        upstream_id: &str,
        target: &str,
        port: u16,
        weight: u32,
        source: Arc<Resolved>,
    ) -> AddrSet {
        let addrs = source
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let ip = match (&e.name, e.ips.first()) {
                    (Some(n), _) => n.clone(),
                    (None, Some(ip)) => ip.to_string(),
                    (None, None) => return None,
                };
                let port = e.port_or(port);
                Some(Address {
                    state: state::target_state(upstream_id, &address_key(target, &ip, port)),
                    weight: e.weight.map_or(weight, |w| u32::from(w).max(SRV_0_WEIGHT)),
                    ip,
                    port,
                    entry: i,
                })
            })
            .collect();
        AddrSet { source, addrs }
    }

    /// Where to send a request for address `k` now (an SRV record's target
    /// name with several addresses takes them in turn, Kong's `toip`), and
    /// the SRV record's target name.
    pub fn socket(&self, k: usize) -> Option<(SocketAddr, Option<&str>)> {
        let a = &self.addrs[k];
        let e = &self.source.entries[a.entry];
        Some((SocketAddr::new(e.ip()?, a.port), e.name.as_deref()))
    }

    pub fn any_healthy(&self) -> bool {
        self.addrs.iter().any(|a| a.state.is_healthy())
    }
}
