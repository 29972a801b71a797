//! What an upstream balances over: its addresses, as Kong's balancer holds
//! them. An IP target is one address with the target's weight; a named
//! target is the addresses of its latest DNS answer ([`AddrSet`]). The
//! round-robin wheel, the consistent-hashing ring and the least-connections
//! scan all work on these addresses with their own weights, so an SRV
//! record's weight counts as in Kong. A new DNS answer makes a new plan.

use super::address::AddrSet;
use super::hash::{self, RingItem};
use super::state::TargetState;
use super::{build_wheel, Algorithm, BTarget};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// One address of the upstream.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub target: u32,
    /// The address in the target's set (`None`: an IP target).
    pub addr: Option<u32>,
    pub weight: u32,
}

/// The addresses of an upstream and the structures that pick among them.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each target's addresses (`None`: an IP target, or a name without
    /// records).
    pub sets: Vec<Option<Arc<AddrSet>>>,
    pub slots: Vec<Slot>,
    /// Round-robin: slot indices interleaved by weight.
    pub wheel: Vec<u32>,
    /// Consistent-hashing: Kong's continuum, owners are slot indices.
    pub ring: hash::Ring,
    /// When a named target's answer runs out (ms since [`EPOCH`];
    /// `u64::MAX`: no names).
    recheck_at: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn ms(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_millis() as u64
}

/// How long a stale answer is kept before asking again (Kong renews a
/// stale record 0.5 s later, once its background query had time to end).
const STALE_RECHECK: Duration = Duration::from_millis(500);

impl Plan {
    pub fn build(
        targets: &[BTarget],
        sets: Vec<Option<Arc<AddrSet>>>,
        algorithm: Algorithm,
        slots: usize,
        asked: bool,
    ) -> Plan {
        let mut list = Vec::new();
        let mut items = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            match (&t.ip, &sets[i]) {
                (Some(_), _) => {
                    list.push(Slot {
                        target: i as u32,
                        addr: None,
                        weight: t.weight,
                    });
                    items.push(RingItem {
                        target: &t.host,
                        target_port: t.port,
                        ip: &t.host,
                        port: t.port,
                        weight: t.weight,
                    });
                }
                (None, Some(set)) => {
                    for (k, a) in set.addrs.iter().enumerate() {
                        list.push(Slot {
                            target: i as u32,
                            addr: Some(k as u32),
                            weight: a.weight,
                        });
                        items.push(RingItem {
                            target: &t.host,
                            target_port: t.port,
                            ip: &a.ip,
                            port: a.port,
                            weight: a.weight,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        let weights: Vec<u32> = list.iter().map(|s| s.weight).collect();
        let ring = if algorithm == Algorithm::ConsistentHashing {
            hash::build_ring(&items, targets.len(), slots)
        } else {
            hash::Ring::default()
        };
        let plan = Plan {
            wheel: build_wheel(&weights),
            ring,
            slots: list,
            sets,
            recheck_at: AtomicU64::new(u64::MAX),
        };
        plan.set_recheck(targets, asked);
        plan
    }

    /// Sets when to look at the names again: the first answer to run out,
    /// soon for a stale answer or a name without one (`asked`: the resolver
    /// was asked for it; else now).
    pub fn set_recheck(&self, targets: &[BTarget], asked: bool) {
        let now = Instant::now();
        let at = targets
            .iter()
            .zip(&self.sets)
            .filter(|(t, _)| t.ip.is_none())
            .map(|(_, s)| match s {
                Some(s) if s.source.until() > now => ms(s.source.until()),
                Some(_) => ms(now + STALE_RECHECK),
                None if asked => ms(now + STALE_RECHECK),
                None => 0,
            })
            .min()
            .unwrap_or(u64::MAX);
        self.recheck_at.store(at, Ordering::Relaxed);
    }

    /// Whether a named target's answer may have changed.
    pub fn due(&self) -> bool {
        let at = self.recheck_at.load(Ordering::Relaxed);
        at != u64::MAX && ms(Instant::now()) >= at
    }

    /// The state of slot `s`: the address's for a name, the target's for an IP.
    pub fn state<'a>(&'a self, targets: &'a [BTarget], s: &Slot) -> &'a Arc<TargetState> {
        match (s.addr, &self.sets[s.target as usize]) {
            (Some(k), Some(set)) => &set.addrs[k as usize].state,
            _ => &targets[s.target as usize].state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::dns::{Entry, Resolved};
    use crate::balancer::hash::{hash_str, xxh32};

    fn target(host: &str, port: u16, weight: u32) -> BTarget {
        BTarget {
            target: format!("{host}:{port}"),
            id: String::new(),
            host: host.into(),
            port,
            ip: host.parse().ok(),
            weight,
            state: Arc::new(TargetState::default()),
        }
    }

    fn a_answer(ips: &[&str]) -> Arc<Resolved> {
        let e = ips
            .iter()
            .map(|ip| Entry::new(None, vec![ip.parse().unwrap()], None, None))
            .collect();
        Arc::new(Resolved::new(e, Instant::now() + Duration::from_secs(60)))
    }

    /// (SRV target, its address, port, weight)
    fn srv_answer(recs: &[(&str, &str, u16, u16)]) -> Arc<Resolved> {
        let e = recs
            .iter()
            .map(|(n, ip, port, w)| {
                Entry::new(
                    Some(n.to_string()),
                    vec![ip.parse().unwrap()],
                    Some(*port),
                    Some(*w),
                )
            })
            .collect();
        Arc::new(Resolved::new(e, Instant::now() + Duration::from_secs(60)))
    }

    fn plan(targets: &[BTarget], answers: Vec<Option<Arc<Resolved>>>, algo: Algorithm) -> Plan {
        let sets = targets
            .iter()
            .zip(answers)
            .map(|(t, r)| {
                r.map(|r| {
                    Arc::new(AddrSet::build(
                        "u-plan-test",
                        &t.target,
                        t.port,
                        t.weight,
                        r,
                    ))
                })
            })
            .collect();
        Plan::build(targets, sets, algo, 10000, true)
    }

    /// Kong's `address.ip` and port of slot `k`.
    fn addr(targets: &[BTarget], p: &Plan, k: usize) -> (String, u16) {
        let s = p.slots[k];
        match (s.addr, &p.sets[s.target as usize]) {
            (Some(a), Some(set)) => (set.addrs[a as usize].ip.clone(), set.addrs[a as usize].port),
            _ => {
                let t = &targets[s.target as usize];
                (t.host.clone(), t.port)
            }
        }
    }

    /// Ring positions owned by each address.
    fn positions(targets: &[BTarget], p: &Plan) -> HashMap<(String, u16), Vec<u32>> {
        let mut out: HashMap<_, Vec<u32>> = HashMap::new();
        for &(pos, k) in p.ring.entries() {
            out.entry(addr(targets, p, k as usize))
                .or_default()
                .push(pos);
        }
        out
    }

    fn owner(targets: &[BTarget], p: &Plan, key: &str) -> (String, u16) {
        addr(targets, p, p.ring.walk(hash_str(key)).next().unwrap())
    }

    use std::collections::HashMap;

    /// Kong's `afterHostUpdate` for an IP target 10.0.0.1:80 and a name
    /// svc.test:80 resolving to 10.0.0.2 and 10.0.0.3, all weight 100: two
    /// targets and a total weight of 300 give each address
    /// floor(100 / 300 * 2 * 160) = 106 points, each point named after the
    /// address ("10.0.0.2::80 <i>"), never after the target's name.
    #[test]
    fn a_names_addresses_are_placed_by_their_ip_and_port() {
        let ts = [target("10.0.0.1", 80, 100), target("svc.test", 80, 100)];
        let p = plan(
            &ts,
            vec![None, Some(a_answer(&["10.0.0.3", "10.0.0.2"]))],
            Algorithm::ConsistentHashing,
        );
        let pos = positions(&ts, &p);
        assert_eq!(pos.len(), 3);
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            let mine = &pos[&(ip.to_owned(), 80)];
            assert_eq!(mine.len(), 106, "{ip}");
            // every point is one of the address's names ("<ip>::80 <i>",
            // i past 106 only after collisions)
            let names: Vec<u32> = (1..=400)
                .map(|i| xxh32(format!("{ip}::80 {i}").as_bytes()) % 10000 + 1)
                .collect();
            assert!(mine.iter().all(|p| names.contains(p)), "{ip}");
            let by_name: Vec<u32> = (1..=400)
                .map(|i| xxh32(format!("svc.test::80 {i}").as_bytes()) % 10000 + 1)
                .collect();
            assert!(mine.iter().filter(|p| by_name.contains(p)).count() < 10);
        }
    }

    /// A new DNS answer with one more address: the addresses that stayed
    /// keep their points (Kong names them after the address, so a new
    /// answer does not reshuffle them), only fewer of them as the total
    /// weight grew (floor(100 / 400 * 160) = 40 of their 53). Keys move to
    /// the new address (about its quarter share) or off the points the old
    /// ones lost, as on Kong.
    #[test]
    fn a_new_answer_keeps_the_points_of_the_addresses_that_stayed() {
        let ts = [target("svc.test", 80, 100)];
        let before = plan(
            &ts,
            vec![Some(a_answer(&["10.0.0.2", "10.0.0.3", "10.0.0.4"]))],
            Algorithm::ConsistentHashing,
        );
        let after = plan(
            &ts,
            vec![Some(a_answer(&[
                "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5",
            ]))],
            Algorithm::ConsistentHashing,
        );
        let (old, new) = (positions(&ts, &before), positions(&ts, &after));
        for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4"] {
            let k = (ip.to_owned(), 80);
            assert_eq!((old[&k].len(), new[&k].len()), (53, 40), "{ip}");
            let kept = new[&k].iter().filter(|p| old[&k].contains(p)).count();
            assert!(kept >= 38, "{ip}: {kept} of 40 points kept");
        }
        let (mut to_new, mut elsewhere) = (0, 0);
        for i in 0..4000 {
            let k = format!("user-{i}");
            let (x, y) = (owner(&ts, &before, &k), owner(&ts, &after, &k));
            if x != y {
                if y.0 == "10.0.0.5" {
                    to_new += 1;
                } else {
                    elsewhere += 1;
                }
            }
        }
        // (1029 and 502 of these 4000 keys)
        assert!(
            (900..1150).contains(&to_new),
            "to the new address: {to_new}"
        );
        assert!(elsewhere < 600, "off the lost points: {elsewhere}");
    }

    /// SRV records weigh their own weight, not the target's (Kong's
    /// `addAddress`), 0 counting as 1; on the ring a record is placed by its
    /// target name and port ("node2.test::8002 <i>"), on the wheel by weight.
    #[test]
    fn srv_records_weigh_their_own_weight() {
        let ts = [target("_http._tcp.svc.test", 80, 0)];
        let answer = srv_answer(&[
            ("node1.test", "10.0.0.1", 8001, 10),
            ("node2.test", "10.0.0.2", 8002, 30),
            ("node3.test", "10.0.0.3", 8003, 0),
        ]);
        let p = plan(
            &ts,
            vec![Some(answer.clone())],
            Algorithm::ConsistentHashing,
        );
        let w: Vec<u32> = p.slots.iter().map(|s| s.weight).collect();
        assert_eq!(w, vec![10, 30, 1]);
        let pos = positions(&ts, &p);
        // floor(w / 41 * 1 * 160)
        assert_eq!(pos[&("node1.test".to_owned(), 8001)].len(), 39);
        assert_eq!(pos[&("node2.test".to_owned(), 8002)].len(), 117);
        assert_eq!(pos[&("node3.test".to_owned(), 8003)].len(), 3);
        let first = xxh32(b"node2.test::8002 1") % 10000 + 1;
        assert!(pos[&("node2.test".to_owned(), 8002)].contains(&first));

        let p = plan(&ts, vec![Some(answer)], Algorithm::RoundRobin);
        let count = |k: u32| p.wheel.iter().filter(|&&s| s == k).count();
        assert_eq!((count(0), count(1), count(2)), (10, 30, 1));

        // A/AAAA records take the target's weight: 0 disables them
        let ts = [target("a.test", 80, 0), target("b.test", 80, 50)];
        let p = plan(
            &ts,
            vec![
                Some(a_answer(&["10.0.0.1"])),
                Some(a_answer(&["10.0.0.2", "10.0.0.3"])),
            ],
            Algorithm::RoundRobin,
        );
        let w: Vec<u32> = p.slots.iter().map(|s| s.weight).collect();
        assert_eq!(w, vec![0, 50, 50]);
        assert_eq!(p.wheel, vec![1, 2]);
    }
}
