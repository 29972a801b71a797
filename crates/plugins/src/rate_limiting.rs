//! rate-limiting (`kong/plugins/rate-limiting/{schema,handler,policies/init}.lua`, 3.9):
//! counts requests per second, minute, hour, day, month and year windows (calendar
//! windows, UTC) for a consumer, credential, IP, service, header or path, and answers
//! `error_code` once a limit is reached.
//!
//! Policies: `local` (process-wide counters outside the snapshot, see
//! [`crate::rate_limiting_store`]), `cluster` (Kong's `ratelimiting_metrics` rows in the
//! node's database, synced in the background: see [`crate::rate_limiting_cluster`]; refused
//! in DB-less mode, as Kong's schema does) and `redis` (Kong's keys and script, so Kong and
//! Tollgate nodes can share a Redis; the round trip is awaited on the request's task, see
//! [`Flow::Await`], and the counts of concurrent requests go out as one pipeline, see
//! [`crate::rate_limiting_redis`]; with a `sync_rate`, counted by the node and synced every `sync_rate`
//! seconds by the same engine as `cluster`). `redis.server_name` other than the host is
//! refused.

use crate::api::{
    Deferred, Exit, Flow, InstanceScope, Phases, Plugin, PluginError, PluginSpec, RequestCx, Resume,
};
use crate::rate_limiting_cluster::{self as cluster, Cluster, ClusterWindow};
use crate::rate_limiting_redis::Counts;
use crate::rate_limiting_store::{self as store, LocalWindow, RedisConf, RedisPool, Window};
use http::header::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tollgate_model::schema::{typedefs, EntityCheck, Field, Pred, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "rate-limiting";
pub const PRIORITY: i32 = 910;

pub const DEFAULT_ERROR_MESSAGE: &str = "API rate limit exceeded";
pub const ERR_NO_DATABASE: &str = "policy 'cluster' needs the node's database";
pub const ERR_SYNC_RATE_POLICY: &str = "sync_rate can only be used with the redis policy";
pub const ERR_SYNC_RATE_MIN: &str = "sync_rate must be greater than 0.02, or -1 to disable";
pub const ERR_SERVER_NAME: &str =
    "redis.server_name is not supported yet: the TLS server name is redis.host";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

/// The periods, in Kong's `ORDERED_PERIODS` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

pub const PERIODS: [Period; 6] = [
    Period::Second,
    Period::Minute,
    Period::Hour,
    Period::Day,
    Period::Month,
    Period::Year,
];

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }
    /// Kong's `expiration.lua`: the window length in seconds (a month is 30 days).
    pub fn expiration(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }
    /// Kong's `timestamp.get_timestamps`: the start of the calendar window containing
    /// `now` (seconds since the epoch, UTC), in seconds.
    pub fn start(self, now: u64) -> u64 {
        let days = now / 86400;
        match self {
            Period::Second => now,
            Period::Minute => now - now % 60,
            Period::Hour => now - now % 3600,
            Period::Day => days * 86400,
            Period::Month | Period::Year => {
                let (y, m, _) = civil_from_days(days as i64);
                let m = if self == Period::Year { 1 } else { m };
                days_from_civil(y, m, 1) as u64 * 86400
            }
        }
    }
    fn limit_header(self) -> HeaderName {
        HeaderName::from_static(match self {
            Period::Second => "x-ratelimit-limit-second",
            Period::Minute => "x-ratelimit-limit-minute",
            Period::Hour => "x-ratelimit-limit-hour",
            Period::Day => "x-ratelimit-limit-day",
            Period::Month => "x-ratelimit-limit-month",
            Period::Year => "x-ratelimit-limit-year",
        })
    }
    fn remaining_header(self) -> HeaderName {
        HeaderName::from_static(match self {
            Period::Second => "x-ratelimit-remaining-second",
            Period::Minute => "x-ratelimit-remaining-minute",
            Period::Hour => "x-ratelimit-remaining-hour",
            Period::Day => "x-ratelimit-remaining-day",
            Period::Month => "x-ratelimit-remaining-month",
            Period::Year => "x-ratelimit-remaining-year",
        })
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A Lua number as Kong prints it in a header: integers without a fraction.
pub(crate) fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// [`lua_number`] as a header value: small counts from a static table, other integers
/// written without `fmt` (the request path sets a few of these per request).
pub(crate) fn number_value(n: f64) -> HeaderValue {
    if n.fract() != 0.0 || n.abs() >= 1e15 {
        return hv(&lua_number(n));
    }
    let i = n as i64;
    match usize::try_from(i).ok().and_then(|i| small_values().get(i)) {
        Some(v) => v.clone(),
        None => HeaderValue::from_bytes(itoa::Buffer::new().format(i).as_bytes())
            .unwrap_or(HeaderValue::from_static("0")),
    }
}

/// `0`..`SMALL_VALUES` as static header values (cloning one copies no bytes).
const SMALL_VALUES: usize = 4096;

fn small_values() -> &'static [HeaderValue] {
    static VALUES: std::sync::LazyLock<Box<[HeaderValue]>> = std::sync::LazyLock::new(|| {
        (0..SMALL_VALUES)
            .map(|i| {
                // One process-wide table, built once: leaking it makes the values static.
                let s: &'static str = Box::leak(i.to_string().into_boxed_str());
                HeaderValue::from_static(s)
            })
            .collect()
    });
    &VALUES
}

// ----------------------------------------------------------------------------------------
// schema

/// Kong's `validate_periods_order`: a longer period may not have a lower limit. `the` is
/// how the message starts ("The" here, "the" in response-ratelimiting, as Kong writes them).
pub(crate) fn periods_order(
    cfg: &Map<String, Value>,
    the: &str,
) -> Result<(), (Option<&'static str>, String)> {
    for (i, lower) in PERIODS.iter().enumerate() {
        let Some(v1) = cfg.get(lower.name()).and_then(Value::as_f64) else {
            continue;
        };
        for upper in &PERIODS[i + 1..] {
            if let Some(v2) = cfg.get(upper.name()).and_then(Value::as_f64) {
                if v2 < v1 {
                    return Err((
                        None,
                        format!(
                            "{the} limit for {}({v2:.1}) cannot be lower than the limit for {}({v1:.1})",
                            upper.name(),
                            lower.name()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Kong's `validate_periods_order` plus what this build refuses.
fn validate_config(cfg: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    periods_order(cfg, "The")?;
    let policy = cfg.get("policy").and_then(Value::as_str).unwrap_or("local");
    let sync_rate = cfg.get("sync_rate").and_then(Value::as_f64).unwrap_or(-1.0);
    if policy != "redis" && sync_rate != -1.0 {
        return Err((None, ERR_SYNC_RATE_POLICY.into()));
    }
    if policy == "redis" && sync_rate != -1.0 && sync_rate < 0.02 {
        return Err((None, ERR_SYNC_RATE_MIN.into()));
    }
    validate_redis(cfg)
}

/// Kong's conditional checks on `redis` when `policy` is redis, plus the `server_name`
/// this build refuses (shared with response-ratelimiting).
pub(crate) fn validate_redis(
    cfg: &Map<String, Value>,
) -> Result<(), (Option<&'static str>, String)> {
    if cfg.get("policy").and_then(Value::as_str) == Some("redis") {
        let redis = cfg.get("redis").and_then(Value::as_object);
        let get = |k: &str| redis.and_then(|r| r.get(k)).filter(|v| !v.is_null());
        for k in ["host", "port", "timeout"] {
            if get(k).is_none() {
                return Err((Some("redis"), format!("{k}: required field missing")));
            }
        }
        if let Some(sn) = get("server_name").and_then(Value::as_str) {
            if Some(sn) != get("host").and_then(Value::as_str) {
                return Err((Some("redis"), ERR_SERVER_NAME.into()));
            }
        }
    }
    Ok(())
}

/// Kong's `at_least_one_of` on the six periods (an entity check, so its message names
/// them with `config.`).
fn validate_entity(rec: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    let Some(cfg) = rec.get("config").and_then(Value::as_object) else {
        return Ok(());
    };
    if PERIODS
        .iter()
        .all(|p| cfg.get(p.name()).is_none_or(Value::is_null))
    {
        return Err((
            None,
            "at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'".into(),
        ));
    }
    Ok(())
}

fn period_field(p: Period, desc: &'static str) -> Field {
    Field::new(p.name(), Type::Number)
        .check(tollgate_model::schema::Check::Gt(0.0))
        .describe(desc)
}

pub(crate) fn redis_record() -> Field {
    Field::new(
        "redis",
        Type::Record(
            vec![
                typedefs::host("host"),
                typedefs::port("port").default(json!(6379)),
                typedefs::timeout("timeout", 2000),
                Field::new("username", Type::String).referenceable().describe("Username to use for Redis connections. If undefined, ACL authentication won't be performed. This requires Redis v6.0.0+. To be compatible with Redis v5.x.y, you can set it to `default`."),
                Field::new("password", Type::String)
                    .referenceable()
                    .sensitive()
                    .check(tollgate_model::schema::Check::LenMin(0))
                    .describe("Password to use for Redis connections. If undefined, no AUTH commands are sent to Redis."),
                Field::new("database", Type::Integer).default(json!(0)).describe("Database to use for the Redis connection when using the `redis` strategy"),
                Field::new("ssl", Type::Boolean).default(json!(false)).describe("If set to true, uses SSL to connect to Redis."),
                Field::new("ssl_verify", Type::Boolean).default(json!(false)).describe("If set to true, verifies the validity of the server SSL certificate."),
                Field::new("server_name", Type::String).custom(typedefs::validate_host).describe("A string representing an SNI (server name indication) value for TLS."),
            ],
            Vec::new(),
        ),
    )
    .describe("Redis configuration")
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            period_field(Period::Second, "The number of HTTP requests that can be made per second."),
            period_field(Period::Minute, "The number of HTTP requests that can be made per minute."),
            period_field(Period::Hour, "The number of HTTP requests that can be made per hour."),
            period_field(Period::Day, "The number of HTTP requests that can be made per day."),
            period_field(Period::Month, "The number of HTTP requests that can be made per month."),
            period_field(Period::Year, "The number of HTTP requests that can be made per year."),
            Field::new("limit_by", Type::String)
                .default(json!("consumer"))
                .one_of(&["consumer", "credential", "ip", "service", "header", "path"])
                .describe("The entity that is used when aggregating the limits."),
            typedefs::header_name("header_name").describe("A string representing an HTTP header name."),
            typedefs::path("path").describe("A string representing a URL path, such as /path/to/resource. Must start with a forward slash (/) and must not contain empty segments (i.e., two consecutive forward slashes)."),
            Field::new("policy", Type::String)
                .default(json!("local"))
                .check(tollgate_model::schema::Check::LenMin(0))
                .one_of(crate::policies())
                .describe("The rate-limiting policies to use for retrieving and incrementing the limits."),
            Field::new("fault_tolerant", Type::Boolean).required().default(json!(true)).describe("A boolean value that determines if the requests should be proxied even if Kong has troubles connecting a third-party data store. If `true`, requests will be proxied anyway, effectively disabling the rate-limiting function until the data store is working again. If `false`, then the clients will see `500` errors."),
            redis_record(),
            Field::new("hide_client_headers", Type::Boolean).required().default(json!(false)).describe("Optionally hide informative response headers."),
            Field::new("error_code", Type::Number).default(json!(429)).check(tollgate_model::schema::Check::Gt(0.0)).describe("Set a custom error code to return when the rate limit is exceeded."),
            Field::new("error_message", Type::String).default(json!(DEFAULT_ERROR_MESSAGE)).describe("Set a custom error message to return when the rate limit is exceeded."),
            Field::new("sync_rate", Type::Number).required().default(json!(-1)).describe("How often to sync counter data to the central data store. A value of -1 results in synchronous behavior."),
        ],
        config_checks: vec![
            EntityCheck::Conditional {
                if_field: "limit_by",
                if_match: Pred::Eq(json!("header")),
                then_field: "header_name",
                then_match: Pred::NotNull,
                then_err: Some("required field missing"),
            },
            EntityCheck::Conditional {
                if_field: "limit_by",
                if_match: Pred::Eq(json!("path")),
                then_field: "path",
                then_match: Pred::NotNull,
                then_err: Some("required field missing"),
            },
            EntityCheck::Custom(validate_config),
        ],
        checks: vec![EntityCheck::Custom(validate_entity)],
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

// ----------------------------------------------------------------------------------------
// compiled

#[derive(Clone, Debug, PartialEq)]
pub enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    Header(String),
    Path(String),
}

enum Policy {
    Local,
    Cluster(Arc<Cluster>),
    Redis(Arc<RedisPool>),
}

/// What decides the answer once the usages are known; shared with a request waiting on
/// Redis.
struct Rules {
    /// The configured periods and their limits, in period order.
    limits: Vec<(Period, f64)>,
    /// The limits as header values (made once, cloned per request).
    limit_values: Vec<HeaderValue>,
    fault_tolerant: bool,
    hide_client_headers: bool,
    error_code: u16,
    error_message: String,
}

/// rate-limiting compiled.
pub struct RateLimiting {
    rules: Arc<Rules>,
    limit_by: LimitBy,
    policy: Policy,
    /// The `plugins` row id (local keys) and Kong's `route_id:service_id` key prefix
    /// (redis keys and cluster counters, as Kong writes them).
    plugin_id: String,
    scope: String,
    route_id: String,
    service_id: String,
}

pub(crate) const EMPTY_UUID: &str = "00000000-0000-0000-0000-000000000000";

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    Ok(Box::new(build(config)?))
}

fn build(config: &Value) -> Result<RateLimiting, String> {
    let c = config.as_object().ok_or("config is not an object")?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
    let b = |k: &str, d: bool| c.get(k).and_then(Value::as_bool).unwrap_or(d);
    let limits: Vec<(Period, f64)> = PERIODS
        .iter()
        .filter_map(|p| c.get(p.name()).and_then(Value::as_f64).map(|l| (*p, l)))
        .collect();
    if limits.is_empty() {
        return Err("no limit configured".into());
    }
    let limit_by = match s("limit_by").as_deref().unwrap_or("consumer") {
        "consumer" => LimitBy::Consumer,
        "credential" => LimitBy::Credential,
        "ip" => LimitBy::Ip,
        "service" => LimitBy::Service,
        "header" => LimitBy::Header(s("header_name").ok_or("header_name missing")?),
        "path" => LimitBy::Path(s("path").ok_or("path missing")?),
        o => return Err(format!("unknown limit_by {o}")),
    };
    let policy = match s("policy").as_deref().unwrap_or("local") {
        "local" => Policy::Local,
        "redis" => {
            let pool = redis_pool(c)?;
            match c.get("sync_rate").and_then(Value::as_f64).unwrap_or(-1.0) {
                -1.0 => Policy::Redis(pool),
                rate => Policy::Cluster(store::synced(&pool, rate)),
            }
        }
        "cluster" => Policy::Cluster(cluster::installed().ok_or(ERR_NO_DATABASE)?),
        o => return Err(format!("unknown policy {o}")),
    };
    let error_code = c.get("error_code").and_then(Value::as_f64).unwrap_or(429.0);
    Ok(RateLimiting {
        rules: Arc::new(Rules {
            limit_values: limits.iter().map(|(_, l)| number_value(*l)).collect(),
            limits,
            fault_tolerant: b("fault_tolerant", true),
            hide_client_headers: b("hide_client_headers", false),
            error_code: if (100.0..1000.0).contains(&error_code) {
                error_code as u16
            } else {
                500
            },
            error_message: s("error_message").unwrap_or_else(|| DEFAULT_ERROR_MESSAGE.into()),
        }),
        limit_by,
        policy,
        plugin_id: String::new(),
        scope: format!("{EMPTY_UUID}:{EMPTY_UUID}"),
        route_id: EMPTY_UUID.into(),
        service_id: EMPTY_UUID.into(),
    })
}

/// The shared connection for a config's `redis` record.
pub(crate) fn redis_pool(c: &Map<String, Value>) -> Result<Arc<RedisPool>, String> {
    let r = c
        .get("redis")
        .and_then(Value::as_object)
        .ok_or("redis missing")?;
    let rs = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    let rb = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
    if rs("server_name").is_some_and(|sn| Some(sn) != rs("host")) {
        return Err(ERR_SERVER_NAME.into());
    }
    Ok(store::pool(&RedisConf {
        host: rs("host").ok_or("redis.host missing")?,
        port: r.get("port").and_then(Value::as_u64).unwrap_or(6379) as u16,
        username: rs("username"),
        password: rs("password"),
        database: r.get("database").and_then(Value::as_i64).unwrap_or(0),
        timeout_ms: r.get("timeout").and_then(Value::as_u64).unwrap_or(2000),
        ssl: rb("ssl"),
        ssl_verify: rb("ssl_verify"),
    }))
}

/// One period's usage, as Kong's `get_usage` records it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub period: Period,
    pub limit: f64,
    pub remaining: f64,
}

/// Kong's header computation. `now` in seconds. Returns the headers and, when a limit
/// is reached, the `Retry-After` value.
pub fn headers(
    usage: &[Usage],
    now: u64,
    hide: bool,
) -> (Vec<(HeaderName, HeaderValue)>, Option<u64>) {
    headers_with(usage, &[], now, hide)
}

/// [`headers`], with the limits' values made once per configuration when given
/// (`limit_values[i]` is `usage[i].limit`'s).
fn headers_with(
    usage: &[Usage],
    limit_values: &[HeaderValue],
    now: u64,
    hide: bool,
) -> (Vec<(HeaderName, HeaderValue)>, Option<u64>) {
    let limit_value = |i: usize| {
        limit_values
            .get(i)
            .cloned()
            .unwrap_or_else(|| number_value(usage[i].limit))
    };
    // Kong's `stop`: the last exhausted period in iteration order.
    let stop = usage
        .iter()
        .rev()
        .find(|u| u.remaining <= 0.0)
        .map(|u| u.period);
    if hide {
        return (Vec::new(), stop.map(|_| 0));
    }
    // (room for Retry-After too)
    let mut out = Vec::with_capacity(2 * usage.len() + 4);
    let mut best: Option<(usize, u64, f64, u64)> = None; // index, window, remaining, reset
    for (i, u) in usage.iter().enumerate() {
        let window = u.period.expiration();
        let mut remaining = u.remaining;
        if stop.is_none() || stop == Some(u.period) {
            remaining -= 1.0;
        }
        let remaining = remaining.max(0.0);
        let better = match best {
            None => true,
            Some((_, w, r, _)) => remaining < r || (remaining == r && window > w),
        };
        if better {
            let elapsed = now - u.period.start(now);
            let reset = window.saturating_sub(elapsed).max(1);
            best = Some((i, window, remaining, reset));
        }
        out.push((u.period.limit_header(), limit_value(i)));
        out.push((u.period.remaining_header(), number_value(remaining)));
    }
    let (limit, _, remaining, reset) = match best {
        Some((i, w, r, reset)) => (limit_value(i), w, r, reset),
        None => (number_value(0.0), 0, 0.0, 0),
    };
    out.push((RATELIMIT_LIMIT, limit));
    out.push((RATELIMIT_REMAINING, number_value(remaining)));
    out.push((RATELIMIT_RESET, number_value(reset as f64)));
    (out, stop.map(|_| reset))
}

pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("0"))
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Writes an address as its `Display` does; IPv4 (the common case) without `fmt`.
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(*o));
            }
        }
        v6 => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

impl RateLimiting {
    /// Kong's `get_identifier`.
    #[cfg(test)]
    fn identifier(&self, cx: &RequestCx<'_>) -> String {
        let mut out = String::new();
        self.push_identifier(cx, &mut out);
        out
    }

    /// Kong's `get_identifier`, written at the end of `out`.
    fn push_identifier(&self, cx: &RequestCx<'_>, out: &mut String) {
        let id = match &self.limit_by {
            LimitBy::Service => cx.service_id,
            LimitBy::Consumer => match cx.consumer() {
                Some(c) => Some(&*c.id),
                None => cx.credential().map(|c| c.id),
            },
            LimitBy::Credential => cx.credential().map(|c| c.id),
            LimitBy::Header(h) => cx.header(h),
            LimitBy::Path(p) => (cx.req.uri.path() == p).then_some(p.as_str()),
            LimitBy::Ip => None,
        };
        match id {
            Some(id) => out.push_str(id),
            None => push_ip(out, cx.client_ip),
        }
    }

    /// The windows of this request, keyed as Kong keys them
    /// (`ratelimit:<route>:<service>:<identifier>:<window start ms>:<period>`).
    fn windows(&self, identifier: &str, now: u64) -> Vec<Window> {
        self.rules
            .limits
            .iter()
            .map(|(p, _)| {
                let start_ms = p.start(now) * 1000;
                let key = format!(
                    "ratelimit:{}:{identifier}:{start_ms}:{}",
                    self.scope,
                    p.name()
                );
                Window {
                    key,
                    ttl: p.expiration(),
                }
            })
            .collect()
    }

    /// This request's windows (key suffixes, expiries and limits), the first
    /// `limits.len()` of the array.
    fn key_windows(&self, now: u64) -> [LocalWindow; PERIODS.len()] {
        let mut windows = [LocalWindow {
            start_ms: 0,
            period: "",
            ttl: 0,
            limit: 0.0,
        }; PERIODS.len()];
        for (w, (p, limit)) in windows.iter_mut().zip(&self.rules.limits) {
            *w = LocalWindow {
                start_ms: p.start(now) * 1000,
                period: p.name(),
                ttl: p.expiration(),
                limit: *limit,
            };
        }
        windows
    }

    /// The local policy: the windows' counters under
    /// `<plugin id>:<identifier>:<window start ms>:<period>`, in one shard per identifier.
    fn count_local(&self, cx: &RequestCx<'_>, now: u64) -> [u64; PERIODS.len()] {
        let mut key = String::with_capacity(self.plugin_id.len() + 64);
        key.push_str(&self.plugin_id);
        key.push(':');
        self.push_identifier(cx, &mut key);
        key.push(':');
        let windows = self.key_windows(now);
        let n = self.rules.limits.len();
        let mut usage = [0; PERIODS.len()];
        store::LOCAL.usage_and_increment(&mut key, &windows[..n], now, &mut usage[..n]);
        usage
    }

    /// The redis policy: Kong's keys
    /// (`ratelimit:<route>:<service>:<identifier>:<window start ms>:<period>`), counted
    /// by the pool's pipelined connection.
    fn count_redis(
        &self,
        pool: &RedisPool,
        cx: &RequestCx<'_>,
        now: u64,
    ) -> impl std::future::Future<Output = Result<Counts, String>> + Send + 'static {
        let mut key = String::with_capacity(self.scope.len() + 96);
        key.push_str("ratelimit:");
        key.push_str(&self.scope);
        key.push(':');
        self.push_identifier(cx, &mut key);
        key.push(':');
        let windows = self.key_windows(now);
        pool.usage
            .usage(&mut key, &windows[..self.rules.limits.len()])
    }
}

impl Plugin for RateLimiting {
    fn bind(&mut self, scope: &InstanceScope<'_>) {
        self.plugin_id = scope.id.to_owned();
        self.route_id = scope.route.unwrap_or(EMPTY_UUID).to_owned();
        self.service_id = scope.service.unwrap_or(EMPTY_UUID).to_owned();
        self.scope = format!("{}:{}", self.route_id, self.service_id);
    }

    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let now = cx.now();
        let rules = &self.rules;
        if let Policy::Local = self.policy {
            let used = self.count_local(cx, now);
            return rules.answer(cx, now, Ok(&used[..rules.limits.len()]));
        }
        if let Policy::Redis(pool) = &self.policy {
            let usage = self.count_redis(pool, cx, now);
            let rules = rules.clone();
            return Ok(Flow::Await(Deferred::new(async move {
                let used = usage.await;
                Box::new(move |cx: &mut RequestCx<'_>| {
                    let used = used.as_ref().map(|u| &u[..rules.limits.len()]);
                    rules.answer(cx, now, used.map_err(String::as_str))
                }) as Resume
            })));
        }
        let mut identifier = String::new();
        self.push_identifier(cx, &mut identifier);
        let used = match &self.policy {
            Policy::Local | Policy::Redis(_) => unreachable!("counted above"),
            Policy::Cluster(c) => {
                let windows = self.windows(&identifier, now);
                let cw: Vec<ClusterWindow<'_>> = windows
                    .iter()
                    .zip(&rules.limits)
                    .map(|(window, (p, _))| ClusterWindow {
                        window,
                        period: p.name(),
                        start: p.start(now),
                    })
                    .collect();
                let scope = cluster::Scope {
                    table: tollgate_model::counters::CounterTable::RateLimiting,
                    identifier: &identifier,
                    service_id: &self.service_id,
                    route_id: &self.route_id,
                };
                let shard = format!("{}:{identifier}", self.scope);
                // Kong counts a request only when no limit stopped it.
                c.count(&scope, &shard, &cw, |usage| {
                    (!rules.stopped(usage)).then_some(1)
                })
            }
        };
        rules.answer(cx, now, used.as_deref().map_err(String::as_str))
    }
}

impl Rules {
    /// Whether some limit is reached at these usages.
    fn stopped(&self, usage: &[u64]) -> bool {
        usage
            .iter()
            .zip(&self.limits)
            .any(|(u, (_, l))| l - *u as f64 <= 0.0)
    }

    /// Kong's access phase once the usages are known: headers, or the limit's error;
    /// a store's failure passes (logged) when `fault_tolerant`, else fails the request.
    fn answer(
        &self,
        cx: &mut RequestCx<'_>,
        now: u64,
        used: Result<&[u64], &str>,
    ) -> Result<Flow, PluginError> {
        let used = match used {
            Ok(u) => u,
            Err(e) if self.fault_tolerant => {
                tracing::error!(plugin = NAME, "failed to get usage: {e}");
                return Ok(Flow::Continue);
            }
            Err(e) => return Err(PluginError::new(format!("failed to get usage: {e}"))),
        };
        let mut usage = [Usage {
            period: Period::Second,
            limit: 0.0,
            remaining: 0.0,
        }; PERIODS.len()];
        let n = self.limits.len().min(used.len());
        for (out, ((period, limit), &u)) in usage.iter_mut().zip(self.limits.iter().zip(used)) {
            *out = Usage {
                period: *period,
                limit: *limit,
                remaining: limit - u as f64,
            };
        }
        let (hdrs, stop) = headers_with(
            &usage[..n],
            &self.limit_values,
            now,
            self.hide_client_headers,
        );
        if let Some(retry) = stop {
            let mut e = Exit::error(self.error_code, self.error_message.clone());
            if !self.hide_client_headers {
                e.headers = hdrs;
                e.headers
                    .push((http::header::RETRY_AFTER, HeaderValue::from(retry)));
            }
            return Ok(Flow::Exit(e));
        }
        cx.set_response_headers(hdrs);
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
#[path = "rate_limiting_tests.rs"]
mod tests;
