//! Kong's `/metrics` text exposition (exporter.lua `metric_data` over prometheus.lua):
//! every series sorted by its full name, as Kong sorts its shared dict's keys (bucket
//! bounds zero-padded while sorting, printed plain: `le="1"` … `le="+Inf"`), with
//! `# HELP` and `# TYPE` before the first series of each family, names prefixed `kong_`.
//!
//! Without any prometheus plugin configured only the gauges are exported, as Kong does
//! (`metric_data(write_fn, not IS_PROMETHEUS_ENABLED)`).

use super::registry::{
    Registry, RouteSeries, KONG_AT, KONG_BUCKETS, REQUEST_AT, UPSTREAM_AT, UPSTREAM_BUCKETS,
};
use std::collections::HashSet;
use std::fmt::Write;

const PREFIX: &str = "kong_";
/// Kong's `workspace` label: the default workspace (there are no others here).
const WORKSPACE: &str = "default";
/// `kong_subsystem` / `subsystem`: only the http subsystem exists here.
const SUBSYSTEM: &str = "http";
/// The shared dict Kong reports for its metrics; here the registry's own capacity.
const METRICS_DICT: &str = "prometheus_metrics";

/// nginx's connection counters (`kong.nginx.get_statistics()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Connections {
    pub accepted: u64,
    pub handled: u64,
    /// Requests served (`total_requests`).
    pub total: u64,
    pub active: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// One address of an upstream target and its health state.
#[derive(Clone, Debug)]
pub struct TargetHealth {
    pub upstream: String,
    /// `host:port` as configured.
    pub target: String,
    /// `ip:port` it resolved to; empty with `dns_error`.
    pub address: String,
    /// `healthchecks_off`, `healthy`, `unhealthy` or `dns_error`.
    pub state: &'static str,
}

/// The states `kong_upstream_target_health` reports per address (one series each).
pub const TARGET_STATES: [&str; 4] = ["healthchecks_off", "healthy", "unhealthy", "dns_error"];

/// The node's gauges, gathered by the caller at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Gauges<'a> {
    pub node_id: &'a str,
    pub connections: Connections,
    pub timers_running: u64,
    pub timers_pending: u64,
    pub datastore_reachable: bool,
    /// Every upstream target address (reported when a plugin asks for upstream health).
    pub targets: &'a [TargetHealth],
    pub pid: u32,
    /// Where Kong reports each worker's Lua VM: this process's resident memory.
    pub worker_bytes: u64,
    /// Whether any prometheus plugin is configured.
    pub enabled: bool,
}

/// One exposition line with the key it sorts by.
struct Entry {
    key: String,
    /// The family whose HELP/TYPE precede it (Kong prints none for `_count`/`_sum`).
    family: Option<&'static str>,
    line: String,
}

/// HELP and TYPE of each family (exporter.lua `init`).
fn family(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "nginx_connections_total" => ("Number of connections by subsystem", "gauge"),
        "nginx_requests_total" => ("Number of requests total", "gauge"),
        "nginx_timers" => ("Number of nginx timers", "gauge"),
        "datastore_reachable" => ("Datastore reachable from Kong, 0 is unreachable", "gauge"),
        "node_info" => ("Kong Node metadata information", "gauge"),
        "upstream_target_health" => ("Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.", "gauge"),
        "memory_workers_lua_vms_bytes" => ("Allocated bytes in worker Lua VM", "gauge"),
        "memory_lua_shared_dict_bytes" => ("Allocated slabs in bytes in a shared_dict", "gauge"),
        "memory_lua_shared_dict_total_bytes" => ("Total capacity in bytes of a shared_dict", "gauge"),
        "nginx_metric_errors_total" => ("Number of nginx-lua-prometheus errors", "counter"),
        "http_requests_total" => ("HTTP status codes per consumer/service/route in Kong", "counter"),
        "bandwidth_bytes" => ("Total bandwidth (ingress/egress) throughput in bytes", "counter"),
        "kong_latency_ms" => ("Latency added by Kong and enabled plugins for each service/route in Kong", "histogram"),
        "upstream_latency_ms" => ("Latency added by upstream response for each service/route in Kong", "histogram"),
        "request_latency_ms" => ("Total latency incurred during requests for each service/route in Kong", "histogram"),
        _ => return None,
    })
}

/// A label value as the exposition format needs it.
fn escape(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `{a="x",b="y"}` (empty for no labels).
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        escape(v, &mut s);
        s.push('"');
    }
    s.push('}');
    s
}

struct Out(Vec<Entry>);

impl Out {
    fn push(&mut self, name: &'static str, pairs: &[(&str, &str)], value: u64) {
        let key = format!("{name}{}", labels(pairs));
        let line = format!("{PREFIX}{key} {value}\n");
        self.0.push(Entry {
            key,
            family: Some(name),
            line,
        });
    }

    /// A histogram's series for one label set; nothing until it has an observation.
    fn histogram(
        &mut self,
        name: &'static str,
        pairs: &[(&str, &str)],
        buckets: &[u64],
        (counts, sum): (Vec<u64>, u64),
    ) {
        let count = counts.last().copied().unwrap_or(0);
        if count == 0 {
            return;
        }
        // Kong's `bucket_format`: zero-padded to the widest bound, one decimal.
        let width = buckets.last().map_or(1, |b| b.to_string().len()) + 2;
        let base = labels(pairs);
        let inner = &base[..base.len() - 1];
        for (i, n) in counts.iter().enumerate() {
            let (sort_le, le) = match buckets.get(i) {
                Some(b) => (format!("{:0width$.1}", *b as f64), b.to_string()),
                None => ("Inf".to_owned(), "+Inf".to_owned()),
            };
            self.0.push(Entry {
                key: format!("{name}_bucket{inner},le=\"{sort_le}\"}}"),
                family: Some(name),
                line: format!("{PREFIX}{name}_bucket{inner},le=\"{le}\"}} {n}\n"),
            });
        }
        for (suffix, v) in [("_count", count), ("_sum", sum)] {
            let key = format!("{name}{suffix}{base}");
            self.0.push(Entry {
                line: format!("{PREFIX}{key} {v}\n"),
                key,
                family: None,
            });
        }
    }
}

fn route_series(out: &mut Out, s: &RouteSeries) {
    let (svc, route) = (&*s.service, &*s.route);
    let lat = [("service", svc), ("route", route), ("workspace", WORKSPACE)];
    out.histogram(
        "kong_latency_ms",
        &lat,
        KONG_BUCKETS,
        s.histogram(KONG_AT, KONG_BUCKETS),
    );
    out.histogram(
        "upstream_latency_ms",
        &lat,
        UPSTREAM_BUCKETS,
        s.histogram(UPSTREAM_AT, UPSTREAM_BUCKETS),
    );
    out.histogram(
        "request_latency_ms",
        &lat,
        UPSTREAM_BUCKETS,
        s.histogram(REQUEST_AT, UPSTREAM_BUCKETS),
    );
    let named = s.consumer_series();
    let all = std::iter::once(s.plain()).chain(named.iter().map(|c| &**c));
    for c in all {
        let consumer = &*c.consumer;
        let (ingress, egress) = c.bandwidth();
        for (direction, v) in [("ingress", ingress), ("egress", egress)] {
            if v > 0 {
                out.push(
                    "bandwidth_bytes",
                    &[
                        ("service", svc),
                        ("route", route),
                        ("direction", direction),
                        ("workspace", WORKSPACE),
                        ("consumer", consumer),
                    ],
                    v,
                );
            }
        }
        for code in c.codes().iter() {
            let code_s = code.code.to_string();
            out.push(
                "http_requests_total",
                &[
                    ("service", svc),
                    ("route", route),
                    ("code", &code_s),
                    ("source", if code.from_service { "service" } else { "kong" }),
                    ("workspace", WORKSPACE),
                    ("consumer", consumer),
                ],
                code.count(),
            );
        }
    }
}

/// The whole exposition: the gauges, and the plugin's series when it is configured.
pub fn render(g: &Gauges<'_>, reg: &Registry) -> String {
    let mut out = Out(Vec::new());
    let node = g.node_id;
    let c = g.connections;
    for (state, v) in [
        ("accepted", c.accepted),
        ("handled", c.handled),
        ("total", c.total),
        ("active", c.active),
        ("reading", c.reading),
        ("writing", c.writing),
        ("waiting", c.waiting),
    ] {
        out.push(
            "nginx_connections_total",
            &[
                ("node_id", node),
                ("subsystem", SUBSYSTEM),
                ("state", state),
            ],
            v,
        );
    }
    out.push(
        "nginx_requests_total",
        &[("node_id", node), ("subsystem", SUBSYSTEM)],
        c.total,
    );
    out.push("nginx_timers", &[("state", "running")], g.timers_running);
    out.push("nginx_timers", &[("state", "pending")], g.timers_pending);
    out.push("datastore_reachable", &[], u64::from(g.datastore_reachable));
    out.push(
        "node_info",
        &[("node_id", node), ("version", crate::VERSION)],
        1,
    );
    if reg.upstream_health_metrics() {
        for t in g.targets {
            for state in TARGET_STATES {
                out.push(
                    "upstream_target_health",
                    &[
                        ("upstream", &t.upstream),
                        ("target", &t.target),
                        ("address", &t.address),
                        ("state", state),
                        ("subsystem", SUBSYSTEM),
                    ],
                    u64::from(state == t.state),
                );
            }
        }
    }
    let pid = g.pid.to_string();
    out.push(
        "memory_workers_lua_vms_bytes",
        &[
            ("node_id", node),
            ("pid", &pid),
            ("kong_subsystem", SUBSYSTEM),
        ],
        g.worker_bytes,
    );
    let dict = [
        ("node_id", node),
        ("shared_dict", METRICS_DICT),
        ("kong_subsystem", SUBSYSTEM),
    ];
    out.push(
        "memory_lua_shared_dict_bytes",
        &dict,
        reg.used_bytes() as u64,
    );
    out.push(
        "memory_lua_shared_dict_total_bytes",
        &dict,
        reg.capacity() as u64,
    );
    if g.enabled {
        out.push("nginx_metric_errors_total", &[], reg.errors());
        for s in reg.routes() {
            route_series(&mut out, &s);
        }
    }
    let mut entries = out.0;
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let mut text = String::with_capacity(entries.len() * 96);
    let mut seen = HashSet::new();
    for e in &entries {
        if let Some(f) = e.family {
            if seen.insert(f) {
                if let Some((help, ty)) = family(f) {
                    let _ = writeln!(text, "# HELP {PREFIX}{f} {help}");
                    let _ = writeln!(text, "# TYPE {PREFIX}{f} {ty}");
                }
            }
        }
        text.push_str(&e.line);
    }
    text
}
