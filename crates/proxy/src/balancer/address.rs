//! The addresses a target's name resolves to, each with its own health
//! (Kong's balancer and healthchecker key health by ip, port and the target's
//! name, so one dead instance behind a name does not take the others out).

use super::dns::Resolved;
use super::state::{self, TargetState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One resolved address of a named target.
#[derive(Debug)]
pub struct Address {
    pub addr: SocketAddr,
    /// The SRV record's target name (`use_srv_name`).
    pub srv_name: Option<String>,
    pub state: Arc<TargetState>,
}

/// A target's addresses from one DNS answer; a new answer makes a new set
/// whose addresses find their state again in the registry.
#[derive(Debug)]
pub struct AddrSet {
    pub source: Arc<Resolved>,
    pub addrs: Vec<Address>,
    next: AtomicUsize,
}

/// The registry key of an address of `target` (`name:port|ip:port`).
pub fn address_key(target: &str, addr: &SocketAddr) -> String {
    format!("{target}|{addr}")
}

impl AddrSet {
    pub fn build(upstream_id: &str, target: &str, source: Arc<Resolved>) -> AddrSet {
        let addrs = source
            .addrs
            .iter()
            .map(|(a, n)| Address {
                addr: *a,
                srv_name: n.clone(),
                state: state::target_state(upstream_id, &address_key(target, a)),
            })
            .collect();
        AddrSet {
            source,
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    /// An address `ok` accepts: round-robin, or for a hash value always the
    /// same one while it is up (stickiness within the name).
    pub fn pick(&self, hash: Option<u64>, ok: impl Fn(usize, &Address) -> bool) -> Option<usize> {
        let n = self.addrs.len();
        if n == 0 {
            return None;
        }
        let start = match hash {
            Some(h) => (h % n as u64) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&k| ok(k, &self.addrs[k]))
    }

    pub fn any_healthy(&self) -> bool {
        self.addrs.iter().any(|a| a.state.is_healthy())
    }
}

/// Addresses a request already tried (a retry prefers others): a bit per
/// (target, address) pair, folded into 128 bits so the request future stays
/// small; a fold collision only makes a retry less choosy, never wrong.
#[derive(Default, Clone, Copy)]
pub struct TriedAddrs(u128);

impl TriedAddrs {
    fn bit(target: usize, addr: usize) -> u128 {
        1 << ((target.wrapping_mul(16).wrapping_add(addr)) % 128)
    }
    pub fn add(&mut self, target: usize, addr: usize) {
        self.0 |= Self::bit(target, addr);
    }
    pub fn contains(&self, target: usize, addr: usize) -> bool {
        self.0 & Self::bit(target, addr) != 0
    }
}
