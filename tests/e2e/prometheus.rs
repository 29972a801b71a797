//! prometheus: `/metrics` on the status and Admin listeners, parsed strictly, against
//! Kong 3.9's exporter (names, TYPEs, label sets, bucket bounds, flag gating) and
//! against every query of Kong's official Grafana dashboard (tests/fixtures/grafana).

use crate::plugin_support::{echo, get, ok, until};
use crate::support::Gateway;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: family types and samples.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

/// A strict parser of the text format (0.0.4): HELP then TYPE once per family, before its
/// samples; label values quoted with `\\`, `\"`, `\n` escapes; no duplicate series.
fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut seen = BTreeSet::new();
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                ["counter", "gauge", "histogram"].contains(&ty),
                "bad TYPE {line}"
            );
            assert!(helped.contains(name), "TYPE without HELP: {line}");
            assert!(
                e.types.insert(name.to_owned(), ty.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((n, rest)) => (n.to_owned(), parse_labels(rest, line)),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'),
            "bad name {line}"
        );
        let fam = family_of(&name);
        let ty = e
            .types
            .get(&fam)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if ty == "histogram" {
            assert!(name != fam, "histogram sample without a suffix: {line}");
        }
        assert!(seen.insert(series.to_owned()), "duplicate series {series}");
        e.samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    e
}

fn parse_labels(rest: &str, line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        assert_eq!(chars.next(), Some('='), "label = in {line}");
        assert_eq!(chars.next(), Some('"'), "label quote in {line}");
        let mut v = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => match chars.next() {
                    Some('\\') => v.push('\\'),
                    Some('"') => v.push('"'),
                    Some('n') => v.push('\n'),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                '"' => break,
                c => v.push(c),
            }
        }
        assert!(out.insert(name, v).is_none(), "label twice in {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
    assert!(chars.next().is_none(), "trailing text in {line}");
    out
}

/// The family a sample belongs to (histograms: without `_bucket`/`_count`/`_sum`).
fn family_of(name: &str) -> String {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if base.ends_with("_ms") {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

impl Exposition {
    fn find<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
    fn one(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let v: Vec<&Sample> = self.find(name, want).collect();
        assert_eq!(v.len(), 1, "{name} {want:?}: {v:?}");
        v[0].value
    }
    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
    fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .flat_map(|s| s.labels.keys().cloned())
            .collect()
    }
}

async fn scrape(g: &Gateway, base: &str) -> Exposition {
    let r = g
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=UTF-8"
    );
    parse(&r.text().await.unwrap())
}

/// Scrapes the status listener until `cond` holds (log phases run after the response).
async fn scrape_until(g: &Gateway, cond: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let e = scrape(g, &g.status).await;
        if cond(&e) || Instant::now() > deadline {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

const KONG_LE: &[&str] = &[
    "1", "2", "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750", "1000",
    "3000", "6000", "+Inf",
];
const UPSTREAM_LE: &[&str] = &[
    "25", "50", "80", "100", "250", "400", "700", "1000", "2000", "5000", "10000", "30000",
    "60000", "+Inf",
];

/// The `le` values of a histogram series, in exposition order, with their counts.
fn buckets(e: &Exposition, name: &str, route: &str) -> Vec<(String, f64)> {
    e.find(name, &[("route", route)])
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect()
}

/// Upstream `u1` (a literal address and a name that does not resolve), service `s` on the
/// echo upstream with routes `r-open` (/open) and `r-auth` (/auth, key-auth), consumer
/// alice with key `alice-key`.
async fn setup(g: &Gateway) {
    let up = echo().await;
    ok(g, "/services", json!({"name": "s", "url": up})).await;
    ok(
        g,
        "/services/s/routes",
        json!({"name": "r-open", "paths": ["/open"]}),
    )
    .await;
    ok(
        g,
        "/services/s/routes",
        json!({"name": "r-auth", "paths": ["/auth"]}),
    )
    .await;
    ok(g, "/routes/r-auth/plugins", json!({"name": "key-auth"})).await;
    ok(g, "/consumers", json!({"username": "alice"})).await;
    ok(g, "/consumers/alice/key-auth", json!({"key": "alice-key"})).await;
    ok(g, "/upstreams", json!({"name": "u1"})).await;
    ok(g, "/upstreams/u1/targets", json!({"target": "127.0.0.1:9"})).await;
    ok(
        g,
        "/upstreams/u1/targets",
        json!({"target": "no-such-host.invalid:80"}),
    )
    .await;
}

const ALL_ON: fn() -> Value = || {
    json!({"per_consumer": true, "status_code_metrics": true, "latency_metrics": true,
           "bandwidth_metrics": true, "upstream_health_metrics": true})
};

#[tokio::test]
async fn global_plugin_exports_kongs_series_on_both_listeners() {
    let g = Gateway::start().await;
    setup(&g).await;
    ok(
        &g,
        "/plugins",
        json!({"name": "prometheus", "config": ALL_ON()}),
    )
    .await;
    // The plugin is in force once a request is logged (configuration applies
    // asynchronously): warm up until one is, and count from there.
    let warm = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            get(&g, "/open", &[]).await;
            let e = scrape(&g, &g.status).await;
            let n: f64 = e
                .find("kong_http_requests_total", &[("route", "r-open")])
                .map(|s| s.value)
                .sum();
            if n > 0.0 || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    assert!(warm > 0.0, "no request counted");
    for _ in 0..2 {
        assert_eq!(get(&g, "/open", &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&g, "/nope", &[]).await.status, 404);
    }
    assert_eq!(get(&g, "/auth", &[]).await.status, 401);
    for _ in 0..2 {
        assert_eq!(
            get(&g, "/auth", &[("apikey", "alice-key")]).await.status,
            200
        );
    }
    let open_count = |e: &Exposition| {
        e.find("kong_http_requests_total", &[("route", "r-open")])
            .map(|s| s.value)
            .sum::<f64>()
    };
    let total = |e: &Exposition| {
        e.find("kong_http_requests_total", &[])
            .map(|s| s.value)
            .sum::<f64>()
    };
    let e = scrape_until(&g, |e| total(e) >= warm + 5.0).await;
    let open = open_count(&e);
    assert_eq!(open, warm + 2.0);

    let l =
        |route: &'static str, code: &'static str, source: &'static str, consumer: &'static str| {
            [
                ("service", "s"),
                ("route", route),
                ("code", code),
                ("source", source),
                ("workspace", "default"),
                ("consumer", consumer),
            ]
        };
    assert_eq!(
        e.one(
            "kong_http_requests_total",
            &l("r-open", "200", "service", "")
        ),
        open
    );
    assert_eq!(
        e.one("kong_http_requests_total", &l("r-auth", "401", "kong", "")),
        1.0
    );
    assert_eq!(
        e.one(
            "kong_http_requests_total",
            &l("r-auth", "200", "service", "alice")
        ),
        2.0
    );
    // Kong's exporter counts nothing for a request no route matched.
    assert_eq!(
        e.find("kong_http_requests_total", &[("code", "404")])
            .count(),
        0
    );
    let want: BTreeSet<String> = [
        "service",
        "route",
        "code",
        "source",
        "workspace",
        "consumer",
    ]
    .map(String::from)
    .into();
    assert_eq!(e.label_names("kong_http_requests_total"), want);

    // Histograms: Kong's bounds in milliseconds, cumulative, +Inf = _count.
    for (name, bounds) in [
        ("kong_kong_latency_ms_bucket", KONG_LE),
        ("kong_request_latency_ms_bucket", UPSTREAM_LE),
        ("kong_upstream_latency_ms_bucket", UPSTREAM_LE),
    ] {
        let b = buckets(&e, name, "r-open");
        let les: Vec<&str> = b.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(les, bounds, "{name}");
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "{name} cumulative");
        let count_name = name.replace("_bucket", "_count");
        let count = e.one(&count_name, &[("route", "r-open")]);
        assert_eq!(b.last().unwrap().1, count);
        assert_eq!(count, open, "{count_name}");
        let want: BTreeSet<String> = ["service", "route", "workspace", "le"]
            .map(String::from)
            .into();
        assert_eq!(e.label_names(name), want);
        e.one(&name.replace("_bucket", "_sum"), &[("route", "r-open")]);
    }
    // The 401 never reached the upstream: two upstream observations, three overall.
    assert_eq!(
        e.one("kong_upstream_latency_ms_count", &[("route", "r-auth")]),
        2.0
    );
    assert_eq!(
        e.one("kong_request_latency_ms_count", &[("route", "r-auth")]),
        3.0
    );
    assert_eq!(e.types["kong_kong_latency_ms"], "histogram");

    // Bandwidth: no _total suffix, ingress and egress, consumer filled.
    assert!(!e.has("kong_bandwidth_bytes_total"));
    assert_eq!(e.types["kong_bandwidth_bytes"], "counter");
    for dir in ["ingress", "egress"] {
        let v = e.one(
            "kong_bandwidth_bytes",
            &[
                ("route", "r-open"),
                ("direction", dir),
                ("consumer", ""),
                ("workspace", "default"),
            ],
        );
        assert!(v > 0.0, "{dir}");
        e.one(
            "kong_bandwidth_bytes",
            &[
                ("route", "r-auth"),
                ("direction", dir),
                ("consumer", "alice"),
            ],
        );
    }

    // Gauges.
    assert_eq!(e.types["kong_nginx_connections_total"], "gauge");
    for state in [
        "accepted", "active", "handled", "reading", "waiting", "writing", "total",
    ] {
        e.one(
            "kong_nginx_connections_total",
            &[("state", state), ("subsystem", "http")],
        );
    }
    assert_eq!(e.find("kong_nginx_connections_total", &[]).count(), 7);
    assert!(e.one("kong_nginx_connections_total", &[("state", "total")]) >= 8.0);
    assert!(e.one("kong_nginx_requests_total", &[("subsystem", "http")]) >= 8.0);
    assert_eq!(e.one("kong_datastore_reachable", &[]), 1.0);
    assert_eq!(e.one("kong_node_info", &[("version", "3.9.1")]), 1.0);
    assert_eq!(e.one("kong_nginx_metric_errors_total", &[]), 0.0);
    assert!(
        e.one(
            "kong_memory_workers_lua_vms_bytes",
            &[("kong_subsystem", "http")]
        ) > 0.0
    );
    let dicts = |n| -> BTreeSet<BTreeMap<String, String>> {
        e.find(n, &[]).map(|s| s.labels.clone()).collect()
    };
    assert!(!dicts("kong_memory_lua_shared_dict_bytes").is_empty());
    assert_eq!(
        dicts("kong_memory_lua_shared_dict_bytes"),
        dicts("kong_memory_lua_shared_dict_total_bytes"),
        "the dashboard divides one by the other"
    );

    // Upstream targets: four states each; no health checks, a name that does not
    // resolve is a DNS error.
    let th = |target: &'static str, state: &'static str| {
        e.one(
            "kong_upstream_target_health",
            &[("upstream", "u1"), ("target", target), ("state", state)],
        )
    };
    assert_eq!(th("127.0.0.1:9", "healthchecks_off"), 1.0);
    for s in ["healthy", "unhealthy", "dns_error"] {
        assert_eq!(th("127.0.0.1:9", s), 0.0);
    }
    assert_eq!(th("no-such-host.invalid:80", "dns_error"), 1.0);
    assert_eq!(th("no-such-host.invalid:80", "healthchecks_off"), 0.0);
    assert_eq!(
        e.find(
            "kong_upstream_target_health",
            &[("target", "no-such-host.invalid:80")]
        )
        .filter(|s| s.labels["address"].is_empty())
        .count(),
        4
    );
    assert_eq!(
        e.find("kong_upstream_target_health", &[("target", "127.0.0.1:9")])
            .filter(|s| s.labels["address"] == "127.0.0.1:9")
            .count(),
        4
    );

    // The Admin API serves the same exposition.
    let a = scrape(&g, &g.admin).await;
    assert!(a.one("kong_http_requests_total", &l("r-auth", "401", "kong", "")) >= 1.0);
    assert_eq!(a.types, e.types);

    dashboard_queries_are_served(&e);
}

/// Every metric the dashboard's panels and variables query is exported, with every label
/// those queries select or group by.
fn dashboard_queries_are_served(e: &Exposition) {
    let text = include_str!("../fixtures/grafana/kong-official.json");
    let dash: Value = serde_json::from_str(text).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 40, "{}", exprs.len());
    let metric = regex::Regex::new(r"\b(kong_[a-z_]+)\s*(\{[^}]*\})?").unwrap();
    let label = regex::Regex::new(r"([a-z_]+)\s*(?:=~|!~|!=|=)").unwrap();
    let by = regex::Regex::new(r"by\s*\(([^)]*)\)").unwrap();
    let fn_label =
        regex::Regex::new(r"label_values\(\s*(kong_[a-z_]+)\s*,\s*([a-z_]+)\s*\)").unwrap();
    // `instance` comes from Prometheus' scrape; `type` is Kong 2.x's bandwidth label the
    // dashboard still groups by (Kong 3.x exports `direction`); `state_value` is made by
    // the query's own label_replace.
    let external = ["instance", "type", "state_value"];
    let mut names = BTreeSet::new();
    for x in &exprs {
        let mut in_expr = Vec::new();
        for c in metric.captures_iter(x) {
            let name = c[1].to_owned();
            let mut used: Vec<String> = Vec::new();
            if let Some(sel) = c.get(2) {
                used.extend(label.captures_iter(sel.as_str()).map(|l| l[1].to_owned()));
            }
            in_expr.push(name.clone());
            names.insert(name.clone());
            check_labels(e, &name, &used, &external, x);
        }
        for c in fn_label.captures_iter(x) {
            check_labels(e, &c[1], &[c[2].to_owned()], &external, x);
        }
        for c in by.captures_iter(x) {
            let grouped: Vec<String> = c[1]
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            for name in &in_expr {
                check_labels(e, name, &grouped, &external, x);
            }
        }
    }
    let want: BTreeSet<&str> = [
        "kong_bandwidth_bytes",
        "kong_http_requests_total",
        "kong_kong_latency_ms_bucket",
        "kong_memory_lua_shared_dict_bytes",
        "kong_memory_lua_shared_dict_total_bytes",
        "kong_memory_workers_lua_vms_bytes",
        "kong_nginx_connections_total",
        "kong_request_latency_ms_bucket",
        "kong_upstream_latency_ms_bucket",
        "kong_upstream_target_health",
    ]
    .into();
    assert_eq!(
        names.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        want
    );
}

fn check_labels(e: &Exposition, name: &str, used: &[String], external: &[&str], expr: &str) {
    assert!(
        e.has(name),
        "the dashboard queries {name}, not exported ({expr})"
    );
    let have = e.label_names(name);
    for l in used {
        if external.contains(&l.as_str()) {
            continue;
        }
        assert!(
            have.contains(l),
            "{name} has no label {l} ({expr}); has {have:?}"
        );
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains("kong_") => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn each_flag_gates_its_series_and_no_plugin_means_gauges_only() {
    let g = Gateway::start().await;
    setup(&g).await;
    assert_eq!(until(&g, "/open", &[], 200).await.status, 200);
    get(&g, "/open", &[]).await;
    // No prometheus plugin: only the node's gauges (Kong's `local_only`).
    let e = scrape(&g, &g.status).await;
    assert!(e.has("kong_nginx_connections_total"));
    assert!(e.has("kong_datastore_reachable"));
    assert!(e.has("kong_memory_lua_shared_dict_bytes"));
    for absent in [
        "kong_nginx_metric_errors_total",
        "kong_http_requests_total",
        "kong_bandwidth_bytes",
        "kong_kong_latency_ms_bucket",
        "kong_upstream_target_health",
    ] {
        assert!(!e.has(absent), "{absent} without a plugin");
    }

    // One route-scoped instance per flag, each on its own route: the route's series
    // appear for that flag's families only.
    let flags: [(&str, &str, &[&str]); 3] = [
        (
            "status_code_metrics",
            "/f-status",
            &["kong_http_requests_total"],
        ),
        (
            "latency_metrics",
            "/f-latency",
            &[
                "kong_kong_latency_ms_bucket",
                "kong_request_latency_ms_bucket",
                "kong_upstream_latency_ms_bucket",
            ],
        ),
        (
            "bandwidth_metrics",
            "/f-bandwidth",
            &["kong_bandwidth_bytes"],
        ),
    ];
    let families = [
        "kong_http_requests_total",
        "kong_kong_latency_ms_bucket",
        "kong_request_latency_ms_bucket",
        "kong_upstream_latency_ms_bucket",
        "kong_bandwidth_bytes",
    ];
    for (flag, path, on) in flags {
        let route = format!("r{}", path.trim_start_matches('/'));
        ok(
            &g,
            "/services/s/routes",
            json!({"name": route, "paths": [path]}),
        )
        .await;
        ok(
            &g,
            &format!("/routes/{route}/plugins"),
            json!({"name": "prometheus", "config": {flag: true}}),
        )
        .await;
        let present = |e: &Exposition| e.find(on[0], &[("route", &route)]).count() > 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = loop {
            get(&g, path, &[]).await;
            let e = scrape(&g, &g.status).await;
            if present(&e) || Instant::now() > deadline {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        };
        for f in families {
            let n = e.find(f, &[("route", &route)]).count();
            assert_eq!(n > 0, on.contains(&f), "{flag}: {f} for {route}");
        }
        assert!(e.has("kong_nginx_metric_errors_total"));
        assert!(!e.has("kong_upstream_target_health"), "{flag}");
    }

    // per_consumer off: an authenticated consumer still counts under consumer="".
    ok(
        &g,
        "/routes/r-auth/plugins",
        json!({"name": "prometheus", "config": {"status_code_metrics": true}}),
    )
    .await;
    let e = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            get(&g, "/auth", &[("apikey", "alice-key")]).await;
            let e = scrape(&g, &g.status).await;
            if e.find("kong_http_requests_total", &[("route", "r-auth")])
                .count()
                > 0
                || Instant::now() > deadline
            {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    assert!(
        e.one(
            "kong_http_requests_total",
            &[("route", "r-auth"), ("code", "200"), ("consumer", "")]
        ) >= 1.0
    );
    assert_eq!(
        e.find("kong_http_requests_total", &[("consumer", "alice")])
            .count(),
        0
    );

    // upstream_health_metrics: on once a request logged by an instance that sets it.
    ok(
        &g,
        "/routes/r-open/plugins",
        json!({"name": "prometheus", "config": {"upstream_health_metrics": true}}),
    )
    .await;
    let e = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            get(&g, "/open", &[]).await;
            let e = scrape(&g, &g.status).await;
            if e.has("kong_upstream_target_health") || Instant::now() > deadline {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    assert_eq!(
        e.find("kong_upstream_target_health", &[("upstream", "u1")])
            .count(),
        8
    );
    assert_eq!(
        e.find("kong_http_requests_total", &[("route", "r-open")])
            .count(),
        0
    );
    // …and off again after a request logged by one that does not (Kong: the last wins).
    get(&g, "/f-status", &[]).await;
    let e = scrape_until(&g, |e| !e.has("kong_upstream_target_health")).await;
    assert!(!e.has("kong_upstream_target_health"));
}

#[tokio::test]
async fn metrics_exist_only_while_the_plugin_is_loaded() {
    // Kong mounts /metrics with the plugin's api.lua / status_api.lua.
    let g = Gateway::start_with(&[("TOLLGATE_PLUGINS", "key-auth")]).await;
    for base in [&g.status, &g.admin] {
        let r = g
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{base}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"message": "Not found"})
        );
    }
    let (s, _) = g.post("/plugins", json!({"name": "prometheus"})).await;
    assert_eq!(s, 400, "a plugin outside the plugins key is refused");
}
