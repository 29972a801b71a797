//! `/metrics` wiring: the prometheus plugin's registry rendered with this node's gauges
//! (connections, datastore, upstream targets, memory), gathered at scrape time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tollgate_admin::MetricsFn;
use tollgate_plugins::prometheus::{self, Connections, Gauges, TargetHealth};
use tollgate_proxy::{SharedSnapshot, Snapshot, Stats};
use tollgate_store::Store;

/// How long a scrape waits for a target's DNS answer before reporting `dns_error`.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Every address of every upstream target. There are no health checks yet, so each
/// address is `healthchecks_off` (Kong's state for an upstream without health checks);
/// a name that does not resolve is `dns_error` with an empty address.
async fn target_health(snap: &Snapshot) -> Vec<TargetHealth> {
    let mut out = Vec::new();
    let mut upstreams: Vec<_> = snap.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    for u in upstreams {
        for (host, port) in &u.targets {
            let target = match host.parse::<IpAddr>() {
                Ok(IpAddr::V6(_)) if !host.starts_with('[') => format!("[{host}]:{port}"),
                _ => format!("{host}:{port}"),
            };
            let addrs: Vec<SocketAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, *port)],
                Err(_) => {
                    match tokio::time::timeout(
                        DNS_TIMEOUT,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    )
                    .await
                    {
                        Ok(Ok(it)) => {
                            let mut v: Vec<SocketAddr> = it.collect();
                            v.sort();
                            v.dedup();
                            v
                        }
                        _ => Vec::new(),
                    }
                }
            };
            if addrs.is_empty() {
                out.push(TargetHealth {
                    upstream: u.name.clone(),
                    target,
                    address: String::new(),
                    state: "dns_error",
                });
                continue;
            }
            for a in addrs {
                out.push(TargetHealth {
                    upstream: u.name.clone(),
                    target: target.clone(),
                    address: a.to_string(),
                    state: "healthchecks_off",
                });
            }
        }
    }
    out
}
