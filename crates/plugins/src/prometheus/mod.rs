//! prometheus (`kong/plugins/prometheus/{schema,handler,exporter}.lua`): counts requests,
//! latencies and bandwidth per service and route in the log phase, and renders them with
//! the node's gauges as Kong's `/metrics` exposition.
//!
//! * [`registry`]: the process-wide metric state. It lives outside the snapshot, keyed
//!   by label values as Kong's shared dict is, so counters survive configuration
//!   changes; the log phase only does atomic adds on per-thread shards.
//! * [`render`]: the text exposition at scrape time, with the gauges the caller
//!   gathers ([`Gauges`]: connections, datastore, upstream targets, memory).
//!
//! Where this differs from Kong 3.9, and why:
//! * `kong_memory_workers_lua_vms_bytes` reports the process's resident memory (there is
//!   no Lua VM; one series, `pid` = this process).
//! * `kong_memory_lua_shared_dict_{bytes,total_bytes}` report one dict,
//!   `prometheus_metrics`: the registry's usage and its 5 MiB capacity.
//! * `kong_upstream_target_health`: no health checks exist yet, so each target address is
//!   `healthchecks_off`, or `dns_error` (empty address) when its name does not resolve;
//!   targets with weight 0 are not reported.
//! * `kong_nginx_timers` are 0 (background work runs as tokio tasks, not nginx timers).
//! * Kong has no config-hash metric in traditional or DB-less mode (only a control plane's
//!   `data_plane_config_hash`), so none is exported; `ai_metrics` is accepted and unused.

pub mod registry;
pub mod render;

pub use registry::{registry, Registry};
pub use render::{render, Connections, Gauges, TargetHealth};

use crate::api::{Phases, Plugin, PluginSpec};
use crate::log::LogCx;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "prometheus";
pub const PRIORITY: i32 = 13;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        log: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

fn schema() -> PluginDef {
    let flag = |name, d| {
        Field::new(name, Type::Boolean)
            .default(json!(false))
            .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            flag("per_consumer", "A boolean value that determines if per-consumer metrics should be collected. If enabled, the `kong_http_requests_total` and `kong_bandwidth_bytes` metrics fill in the consumer label when available."),
            flag("status_code_metrics", "A boolean value that determines if status code metrics should be collected. If enabled, `http_requests_total`, `stream_sessions_total` metrics will be exported."),
            flag("ai_metrics", "A boolean value that determines if ai metrics should be collected. If enabled, the `ai_llm_requests_total`, `ai_llm_cost_total` and `ai_llm_tokens_total` metrics will be exported."),
            flag("latency_metrics", "A boolean value that determines if latency metrics should be collected. If enabled, `kong_latency_ms`, `upstream_latency_ms` and `request_latency_ms` metrics will be exported."),
            flag("bandwidth_metrics", "A boolean value that determines if bandwidth metrics should be collected. If enabled, `bandwidth_bytes` and `stream_sessions_total` metrics will be exported."),
            flag("upstream_health_metrics", "A boolean value that determines if upstream metrics should be collected. If enabled, `upstream_target_health` metric will be exported."),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

/// The plugin's `config`, as Kong's schema defines it.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(default)]
pub struct PrometheusConfig {
    pub per_consumer: bool,
    pub status_code_metrics: bool,
    /// Accepted for compatibility; no AI plugin produces these figures here.
    pub ai_metrics: bool,
    pub latency_metrics: bool,
    pub bandwidth_metrics: bool,
    pub upstream_health_metrics: bool,
}

/// A compiled configuration: its flags and the process-wide registry.
pub struct Prometheus {
    conf: PrometheusConfig,
    registry: &'static Registry,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let conf: PrometheusConfig =
        serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    Ok(Box::new(Prometheus {
        conf,
        registry: registry(),
    }))
}

/// A row's text field, `None` when absent or not a string.
fn text<'r>(row: &'r crate::chain::Row, key: &str) -> Option<&'r str> {
    row.get(key).and_then(Value::as_str)
}

impl Plugin for Prometheus {
    /// A few atomic adds: cheaper than a task of its own.
    fn log_inline(&self) -> bool {
        true
    }

    /// Status, sizes, latencies and names only: nothing else is captured for it.
    fn log_reads_details(&self) -> bool {
        false
    }

    fn log(&self, cx: &LogCx<'_>) {
        let c = &self.conf;
        // Kong sets this on every logged request, routed or not: the last instance to
        // log decides whether the scrape walks the upstreams.
        self.registry
            .set_upstream_health_metrics(c.upstream_health_metrics);
        // Kong's exporter counts nothing for a request without a route.
        let Some(route) = cx.route else { return };
        if !(c.status_code_metrics || c.latency_metrics || c.bandwidth_metrics) {
            return;
        }
        let route_label = text(route, "name")
            .or(cx.route_id)
            .or_else(|| text(route, "id"))
            .unwrap_or_default();
        let service_label = cx
            .service
            .and_then(|s| text(s, "name").or_else(|| text(s, "host")))
            .unwrap_or_default();
        let consumer = match (c.per_consumer, cx.consumer) {
            (true, Some(co)) => co.username.unwrap_or_default(),
            _ => "",
        };
        let reg = self.registry;
        reg.with_route(service_label, route_label, |series| {
            if c.latency_metrics {
                let l = &cx.latencies;
                series.observe_request(l.request);
                if let Some(p) = l.proxy {
                    series.observe_upstream(p);
                }
                series.observe_kong(l.kong);
            }
            if !(c.status_code_metrics || c.bandwidth_metrics) {
                return;
            }
            let Some(cs) = series.consumer(consumer, reg) else {
                return;
            };
            if c.bandwidth_metrics {
                cs.add_bandwidth(cx.request.size, cx.response.size);
            }
            if c.status_code_metrics {
                // `kong.response.get_source()`: "service" when the upstream answered.
                let from_service = cx.proxied && cx.upstream_status.is_some();
                cs.count_status(cx.status, from_service, reg);
            }
        });
    }
}

#[cfg(test)]
mod tests;
