//! `/metrics` wiring: the prometheus plugin's registry rendered with this node's gauges
//! (connections, datastore, upstream targets, memory), gathered at scrape time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tollgate_admin::MetricsFn;
use tollgate_plugins::prometheus::{self, Connections, Gauges, TargetHealth};
use tollgate_proxy::balancer::Health;
use tollgate_proxy::{SharedSnapshot, Snapshot, Stats};
use tollgate_store::Store;

/// How long a scrape waits for a target's DNS answer before reporting `dns_error`.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub fn metrics_fn(
    snapshot: SharedSnapshot,
    stats: Arc<Stats>,
    store: Arc<dyn Store>,
    node_id: String,
) -> MetricsFn {
    let node_id: Arc<str> = node_id.into();
    Arc::new(move || {
        let (snapshot, stats, store, node_id) = (
            snapshot.clone(),
            stats.clone(),
            store.clone(),
            node_id.clone(),
        );
        Box::pin(async move {
            // Kong's `kong.db.connector:connect()`; DB-less always answers.
            let reachable = store.ping().await.is_ok();
            let snap = snapshot.load_full();
            let reg = prometheus::registry();
            let targets = if reg.upstream_health_metrics() {
                target_health(&snap).await
            } else {
                Vec::new()
            };
            let g = Gauges {
                node_id: &node_id,
                connections: connections(&stats),
                // No nginx timers here: background work runs as tokio tasks.
                timers_running: 0,
                timers_pending: 0,
                datastore_reachable: reachable,
                targets: &targets,
                pid: std::process::id(),
                worker_bytes: tollgate_admin::rss_bytes(),
                enabled: snap.plugins.has(prometheus::NAME),
            };
            prometheus::render(&g, reg)
        })
    })
}

/// nginx's statistics as `/status` reports them.
fn connections(stats: &Stats) -> Connections {
    let v = stats.to_json();
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    Connections {
        accepted: n("connections_accepted"),
        handled: n("connections_handled"),
        total: n("total_requests"),
        active: n("connections_active"),
        reading: n("connections_reading"),
        writing: n("connections_writing"),
        waiting: n("connections_waiting"),
    }
}

/// Every address of every upstream target, in the state the balancer holds for it
/// (`healthy`, `unhealthy`, `healthchecks_off`; `dns_error` with an empty address for a
/// name that does not resolve), as Kong's exporter reads `get_upstream_health`.
async fn target_health(snap: &Snapshot) -> Vec<TargetHealth> {
    let mut out = Vec::new();
    let mut upstreams: Vec<_> = snap.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    for u in upstreams {
        for a in u.health_states() {
            let (address, health) = match a.ip.parse::<IpAddr>() {
                Ok(ip) => (SocketAddr::new(ip, a.port).to_string(), a.health),
                // A name no request has resolved yet: resolve it now (cached for the
                // proxy too), as Kong's balancer does when it is created.
                Err(_) if a.health != Health::DnsError => {
                    let lookup = tollgate_proxy::balancer::dns::resolve(&a.ip);
                    match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
                        Ok(Ok(r)) => {
                            for addr in r.addrs(a.port) {
                                out.push(TargetHealth {
                                    upstream: u.name.clone(),
                                    target: a.target.clone(),
                                    address: addr.to_string(),
                                    state: state_name(a.health),
                                });
                            }
                            continue;
                        }
                        _ => (String::new(), Health::DnsError),
                    }
                }
                Err(_) => (String::new(), a.health),
            };
            out.push(TargetHealth {
                upstream: u.name.clone(),
                target: a.target,
                address,
                state: state_name(health),
            });
        }
    }
    out
}

/// The `state` label of `kong_upstream_target_health`.
fn state_name(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::HealthchecksOff => "healthchecks_off",
        Health::DnsError => "dns_error",
    }
}
