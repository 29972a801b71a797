//! response-ratelimiting (`kong/plugins/response-ratelimiting/*`, 3.9): named limits
//! consumed by the upstream. The upstream says what a response cost in a header
//! (`X-Kong-Limit: videos=2, images=1`); the access phase blocks a request once a limit is
//! used up (with `block_on_first_violation`) and tells the upstream what remains, and the
//! header_filter phase counts the response, answers the usage headers and strips the
//! upstream's header. A response that spends an exhausted limit becomes an empty 429.
//!
//! Kong counts in its log phase; here the header_filter counts (never waiting: a local
//! shard, the cluster counters or a background Redis call), which is the same moment as
//! far as any later request can tell.

use crate::api::{
    Deferred, Exit, Flow, InstanceScope, Phases, Plugin, PluginError, PluginSpec, RequestCx,
    ResponseCx, Resume,
};
use crate::rate_limiting::{
    hv, lua_number, periods_order, redis_pool, redis_record, validate_redis, Period, EMPTY_UUID,
    PERIODS,
};
use crate::rate_limiting_cluster::{self as cluster, Cluster, ClusterWindow, Scope};
use crate::rate_limiting_store::{self as store, RedisPool, Window};
use http::header::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tollgate_model::counters::CounterTable;
use tollgate_model::schema::{Check, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "response-ratelimiting";
pub const PRIORITY: i32 = 900;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        access: true,
        header_filter: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

// ----------------------------------------------------------------------------------------
// schema

/// Kong's `validate_periods_order` of one limit (lower-case "the", unlike rate-limiting).
fn validate_periods(limit: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    periods_order(limit, "the")
}

/// Limit names become header names (`X-RateLimit-Limit-<name>-<period>`); one that cannot
/// would fail every response, so it is refused here.
fn validate_config(cfg: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    if let Some(limits) = cfg.get("limits").and_then(Value::as_object) {
        // Kong's `len_min = 1` on the map.
        if limits.is_empty() {
            return Err((Some("limits"), "length must be at least 1".into()));
        }
        for name in limits.keys() {
            if HeaderName::from_bytes(format!("x-ratelimit-remaining-{name}").as_bytes()).is_err() {
                return Err((
                    Some("limits"),
                    format!("'{name}' cannot be used in a header name"),
                ));
            }
        }
    }
    validate_redis(cfg)
}

fn limit_record() -> Field {
    let periods = PERIODS
        .iter()
        .map(|p| Field::new(p.name(), Type::Number).check(Check::Gt(0.0)))
        .collect();
    Field::new(
        "limit",
        Type::Record(
            periods,
            vec![
                EntityCheck::AtLeastOneOf(PERIODS.iter().map(|p| p.name()).collect()),
                EntityCheck::Custom(validate_periods),
            ],
        ),
    )
    .required()
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("header_name", Type::String).default(json!("x-kong-limit")).describe("The name of the response header used to increment the counters."),
            Field::new("limit_by", Type::String)
                .default(json!("consumer"))
                .one_of(&["consumer", "credential", "ip"])
                .describe("The entity that will be used when aggregating the limits: `consumer`, `credential`, `ip`. If the `consumer` or the `credential` cannot be determined, the system will always fallback to `ip`."),
            Field::new("policy", Type::String)
                .default(json!("local"))
                .one_of(crate::policies())
                .describe("The rate-limiting policies to use for retrieving and incrementing the limits."),
            Field::new("fault_tolerant", Type::Boolean).required().default(json!(true)).describe("A boolean value that determines if the requests should be proxied even if Kong has troubles connecting a third-party datastore. If `true`, requests will be proxied anyway, effectively disabling the rate-limiting function until the datastore is working again. If `false`, then the clients will see `500` errors."),
            redis_record(),
            Field::new("block_on_first_violation", Type::Boolean).required().default(json!(false)).describe("A boolean value that determines if the requests should be blocked as soon as one limit is being exceeded. This will block requests that are supposed to consume other limits too."),
            Field::new("hide_client_headers", Type::Boolean).required().default(json!(false)).describe("Optionally hide informative response headers."),
            Field::new(
                "limits",
                Type::Map {
                    keys: Box::new(Field::new("key", Type::String)),
                    values: Box::new(limit_record()),
                },
            )
            .required()
            .check(Check::LenMin(1))
            .describe("A map that defines rate limits for the plugin."),
        ],
        config_checks: vec![EntityCheck::Custom(validate_config)],
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

// ----------------------------------------------------------------------------------------
// compiled

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LimitBy {
    Consumer,
    Credential,
    Ip,
}

enum Policy {
    Local,
    Cluster(Arc<Cluster>),
    Redis(Arc<RedisPool>),
}

/// One named limit and its header names, built once.
struct Limit {
    name: String,
    periods: Vec<Period>,
    limits: Vec<f64>,
    /// Per period: `X-RateLimit-Limit-<name>-<period>`, `X-RateLimit-Remaining-<name>-<period>`.
    headers: Vec<(HeaderName, HeaderName)>,
    /// `X-RateLimit-Remaining-<name>`, for the upstream.
    upstream: HeaderName,
}

/// What decides the answers once the usages are known; shared with a request waiting on
/// Redis.
struct Rules {
    limits: Vec<Limit>,
    fault_tolerant: bool,
    block_on_first_violation: bool,
}

/// response-ratelimiting compiled.
pub struct ResponseRateLimiting {
    rules: Arc<Rules>,
    header_name: HeaderName,
    limit_by: LimitBy,
    policy: Policy,
    hide_client_headers: bool,
    plugin_id: String,
    route_id: String,
    service_id: String,
}

/// What access keeps for header_filter (Kong's `kong.ctx.plugin`).
struct Seen {
    identifier: String,
    now: u64,
    /// Per limit, per period: the remaining count before this response.
    remaining: Vec<Vec<f64>>,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    Ok(Box::new(build(config)?))
}

fn build(config: &Value) -> Result<ResponseRateLimiting, String> {
    let c = config.as_object().ok_or("config is not an object")?;
    let s = |k: &str| c.get(k).and_then(Value::as_str);
    let b = |k: &str, d: bool| c.get(k).and_then(Value::as_bool).unwrap_or(d);
    let mut limits = Vec::new();
    for (name, rec) in c
        .get("limits")
        .and_then(Value::as_object)
        .ok_or("limits missing")?
    {
        let (mut periods, mut values, mut headers) = (Vec::new(), Vec::new(), Vec::new());
        for p in PERIODS {
            if let Some(l) = rec.get(p.name()).and_then(Value::as_f64) {
                let name = |kind: &str| {
                    HeaderName::from_bytes(
                        format!("x-ratelimit-{kind}-{name}-{}", p.name()).as_bytes(),
                    )
                    .map_err(|_| format!("limit name {name:?} is not a header token"))
                };
                periods.push(p);
                values.push(l);
                headers.push((name("limit")?, name("remaining")?));
            }
        }
        limits.push(Limit {
            upstream: HeaderName::from_bytes(format!("x-ratelimit-remaining-{name}").as_bytes())
                .map_err(|_| format!("limit name {name:?} is not a header token"))?,
            name: name.clone(),
            periods,
            limits: values,
            headers,
        });
    }
    let policy = match s("policy").unwrap_or("local") {
        "local" => Policy::Local,
        "cluster" => {
            Policy::Cluster(cluster::installed().ok_or(crate::rate_limiting::ERR_NO_DATABASE)?)
        }
        "redis" => Policy::Redis(redis_pool(c)?),
        o => return Err(format!("unknown policy {o}")),
    };
    Ok(ResponseRateLimiting {
        rules: Arc::new(Rules {
            limits,
            fault_tolerant: b("fault_tolerant", true),
            block_on_first_violation: b("block_on_first_violation", false),
        }),
        header_name: HeaderName::from_bytes(s("header_name").unwrap_or("x-kong-limit").as_bytes())
            .map_err(|_| "header_name is not a header name")?,
        limit_by: match s("limit_by").unwrap_or("consumer") {
            "consumer" => LimitBy::Consumer,
            "credential" => LimitBy::Credential,
            "ip" => LimitBy::Ip,
            o => return Err(format!("unknown limit_by {o}")),
        },
        policy,
        hide_client_headers: b("hide_client_headers", false),
        plugin_id: String::new(),
        route_id: EMPTY_UUID.into(),
        service_id: EMPTY_UUID.into(),
    })
}

/// Kong's `parse_header`: `name=n` pairs separated by commas (across repeated headers),
/// for configured names only; a value that is not a base-10 integer counts as absent.
fn parse_increments(values: http::header::GetAll<'_, HeaderValue>, rules: &Rules) -> Vec<i64> {
    let mut out = vec![0; rules.limits.len()];
    for v in values.iter().filter_map(|v| v.to_str().ok()) {
        for part in v.split(',') {
            let mut kv = part.split('=');
            let (Some(k), Some(n), None) = (kv.next(), kv.next(), kv.next()) else {
                continue;
            };
            if let Some(i) = rules.limits.iter().position(|l| l.name == k.trim()) {
                if let Ok(n) = n.trim().parse::<i64>() {
                    out[i] = n;
                }
            }
        }
    }
    out
}

impl ResponseRateLimiting {
    /// Kong's `get_identifier`.
    fn identifier(&self, cx: &RequestCx<'_>) -> String {
        let id = match self.limit_by {
            LimitBy::Consumer => cx
                .consumer()
                .map(|c| c.id.to_string())
                .or_else(|| cx.credential().map(|c| c.id.to_owned())),
            LimitBy::Credential => cx.credential().map(|c| c.id.to_owned()),
            LimitBy::Ip => None,
        };
        id.unwrap_or_else(|| cx.client_ip.to_string())
    }

    /// Every (limit, period) window in order, keyed as Kong keys them
    /// (`response-ratelimit:<route>:<service>:<identifier>:<window ms>:<name>:<period>`);
    /// local keys are prefixed with the plugin id. With `only`, one limit's windows.
    fn windows(&self, identifier: &str, now: u64, only: Option<usize>) -> Vec<Window> {
        let local = matches!(self.policy, Policy::Local);
        let mut out = Vec::new();
        for (i, l) in self.rules.limits.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            for p in &l.periods {
                let key = format!(
                    "response-ratelimit:{}:{}:{identifier}:{}:{}:{}",
                    self.route_id,
                    self.service_id,
                    p.start(now) * 1000,
                    l.name,
                    p.name()
                );
                out.push(Window {
                    key: if local {
                        format!("{}:{key}", self.plugin_id)
                    } else {
                        key
                    },
                    ttl: p.expiration(),
                });
            }
        }
        out
    }

    /// The cluster rows of `windows` (in [`Self::windows`] order for the same `only`).
    fn cluster_windows<'w>(
        &self,
        windows: &'w [Window],
        periods: &'w [String],
        now: u64,
        only: Option<usize>,
    ) -> Vec<ClusterWindow<'w>> {
        let starts = self
            .rules
            .limits
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i))
            .flat_map(|(_, l)| l.periods.iter().map(move |p| p.start(now)));
        windows
            .iter()
            .zip(periods)
            .zip(starts)
            .map(|((window, period), start)| ClusterWindow {
                window,
                period,
                start,
            })
            .collect()
    }

    /// Kong's cluster `period` column: `<name>_<period>`.
    fn cluster_periods(&self, only: Option<usize>) -> Vec<String> {
        self.rules
            .limits
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i))
            .flat_map(|(_, l)| l.periods.iter().map(|p| format!("{}_{}", l.name, p.name())))
            .collect()
    }

    fn scope<'a>(&'a self, identifier: &'a str) -> Scope<'a> {
        Scope {
            table: CounterTable::ResponseRateLimiting,
            identifier,
            service_id: &self.service_id,
            route_id: &self.route_id,
        }
    }

    /// Counts one response's increments (Kong's log phase), never waiting.
    fn increment(&self, seen: &Seen, increments: &[i64]) {
        for (i, by) in increments.iter().enumerate().filter(|(_, by)| **by != 0) {
            let windows = self.windows(&seen.identifier, seen.now, Some(i));
            match &self.policy {
                Policy::Local => store::LOCAL.add(
                    &format!("{}:{}", self.plugin_id, seen.identifier),
                    &windows,
                    (*by).max(0) as u64,
                    seen.now,
                ),
                Policy::Cluster(c) => {
                    let periods = self.cluster_periods(Some(i));
                    let cw = self.cluster_windows(&windows, &periods, seen.now, Some(i));
                    if let Err(e) =
                        c.count(&self.scope(&seen.identifier), &seen.identifier, &cw, |_| {
                            Some(*by)
                        })
                    {
                        tracing::error!(plugin = NAME, "cluster policy: could not increment: {e}");
                    }
                }
                Policy::Redis(pool) => pool.increment(windows, *by),
            }
        }
    }
}

impl Rules {
    /// Kong's access once the usages are known (flat, in [`ResponseRateLimiting::windows`]
    /// order): the first exhausted limit blocks with `block_on_first_violation`; else each
    /// limit's smallest remaining goes upstream and the usage is kept for header_filter.
    fn answer(
        &self,
        cx: &mut RequestCx<'_>,
        identifier: String,
        now: u64,
        used: Result<Vec<u64>, String>,
    ) -> Result<Flow, PluginError> {
        let used = match used {
            Ok(u) => u,
            Err(e) if self.fault_tolerant => {
                tracing::error!(plugin = NAME, "failed to get usage: {e}");
                return Ok(Flow::Continue);
            }
            Err(e) => return Err(PluginError::new(format!("failed to get usage: {e}"))),
        };
        let mut used = used.into_iter();
        let mut remaining = Vec::with_capacity(self.limits.len());
        for l in &self.limits {
            let r: Vec<f64> = l
                .limits
                .iter()
                .map(|limit| limit - used.next().unwrap_or(0) as f64)
                .collect();
            if self.block_on_first_violation && r.contains(&0.0) {
                return Ok(Flow::Exit(Exit::error(
                    429,
                    format!("API rate limit exceeded for '{}'", l.name),
                )));
            }
            let least = r.iter().copied().fold(f64::INFINITY, f64::min);
            cx.req
                .headers
                .insert(l.upstream.clone(), hv(&lua_number(least)));
            remaining.push(r);
        }
        cx.set_plugin_state(Box::new(Seen {
            identifier,
            now,
            remaining,
        }));
        Ok(Flow::Continue)
    }
}

impl Plugin for ResponseRateLimiting {
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.plugin_id = scope.id.to_owned();
        self.route_id = scope.route.unwrap_or(EMPTY_UUID).to_owned();
        self.service_id = scope.service.unwrap_or(EMPTY_UUID).to_owned();
    }

    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        if self.rules.limits.is_empty() {
            return Ok(Flow::Continue);
        }
        let now = cx.now();
        let identifier = self.identifier(cx);
        let windows = self.windows(&identifier, now, None);
        let used = match &self.policy {
            Policy::Local => {
                Ok(store::LOCAL.get(&format!("{}:{identifier}", self.plugin_id), &windows, now))
            }
            Policy::Cluster(c) => {
                let periods = self.cluster_periods(None);
                let cw = self.cluster_windows(&windows, &periods, now, None);
                c.count(&self.scope(&identifier), &identifier, &cw, |_| None)
            }
            Policy::Redis(pool) => {
                let usage = pool.get(windows.into_iter().map(|w| w.key).collect());
                let rules = self.rules.clone();
                return Ok(Flow::Await(Deferred::new(async move {
                    let used = usage.await;
                    Box::new(move |cx: &mut RequestCx<'_>| rules.answer(cx, identifier, now, used))
                        as Resume
                })));
            }
        };
        self.rules.answer(cx, identifier, now, used)
    }

    fn header_filter(&self, cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        let rules = &self.rules;
        let increments = parse_increments(cx.resp.headers.get_all(&self.header_name), rules);
        // No usage (no limits, or the store failed and fault_tolerant let it through):
        // Kong returns before touching the response.
        let Some(seen) = cx.state.take().and_then(|s| s.downcast::<Seen>().ok()) else {
            return Ok(());
        };
        let mut stop = false;
        for ((l, remaining), inc) in rules.limits.iter().zip(&seen.remaining).zip(&increments) {
            for ((limit, rem), (limit_h, rem_h)) in l.limits.iter().zip(remaining).zip(&l.headers) {
                if !self.hide_client_headers {
                    let left = (rem - *inc as f64).max(0.0);
                    cx.resp
                        .headers
                        .insert(limit_h.clone(), hv(&lua_number(*limit)));
                    cx.resp.headers.insert(rem_h.clone(), hv(&lua_number(left)));
                }
                if *inc > 0 && *rem <= 0.0 {
                    stop = true;
                }
            }
        }
        cx.resp.headers.remove(&self.header_name);
        if stop {
            // Kong's `stop_log`: the blocked response is not counted.
            cx.exit_empty(http::StatusCode::TOO_MANY_REQUESTS);
            return Ok(());
        }
        self.increment(&seen, &increments);
        Ok(())
    }
}

#[cfg(test)]
#[path = "response_ratelimiting_tests.rs"]
mod tests;
