//! The log phase and the exposition against Kong 3.9's exporter.lua / prometheus.lua.

use super::*;
use crate::chain::Row;
use crate::log::{Latencies, LogConsumer, LogRequest, LogResponse};
use http::HeaderMap;

fn plugin(conf: Value) -> (Prometheus, &'static Registry) {
    let reg: &'static Registry = Box::leak(Box::default());
    let conf: PrometheusConfig = serde_json::from_value(conf).unwrap();
    (
        Prometheus {
            conf,
            registry: reg,
        },
        reg,
    )
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

struct Req {
    route: Option<Row>,
    service: Option<Row>,
    status: u16,
    latencies: Latencies,
    consumer: Option<(&'static str, Option<&'static str>)>,
    proxied: bool,
}

fn req(status: u16, kong: u64, proxy: Option<u64>, request: u64) -> Req {
    Req {
        route: Some(row(json!({"id": "r-id", "name": "r1"}))),
        service: Some(row(
            json!({"id": "s-id", "name": "s1", "host": "up.example"}),
        )),
        status,
        latencies: Latencies {
            kong,
            proxy,
            request,
            receive: 0,
        },
        consumer: None,
        proxied: proxy.is_some(),
    }
}

fn log(p: &Prometheus, r: &Req) {
    let h = HeaderMap::new();
    let cx = LogCx {
        request_id: "rid",
        status: r.status,
        route_id: r.route.as_ref().map(|_| "r-id"),
        service_id: r.service.as_ref().map(|_| "s-id"),
        request: LogRequest {
            method: "GET",
            uri: "/",
            scheme: "http",
            host: "h",
            port: 8000,
            headers: &h,
            size: 100,
            tls: None,
        },
        response: LogResponse {
            status: r.status,
            headers: &h,
            size: 250,
        },
        upstream_uri: "/",
        upstream_status: r.proxied.then_some(r.status),
        route: r.route.as_ref(),
        service: r.service.as_ref(),
        consumer: r.consumer.map(|(id, username)| LogConsumer {
            id,
            username,
            custom_id: None,
        }),
        credential_id: None,
        latencies: r.latencies,
        tries: &[],
        client_ip: "127.0.0.1".parse().unwrap(),
        started_at: 0,
        proxied: r.proxied,
    };
    p.log(&cx);
}

fn scrape(reg: &Registry, enabled: bool) -> String {
    render(
        &Gauges {
            node_id: "n1",
            pid: 42,
            enabled,
            ..Gauges::default()
        },
        reg,
    )
}

const ALL: &str = r#"{"per_consumer": true, "status_code_metrics": true, "latency_metrics": true,
    "bandwidth_metrics": true, "upstream_health_metrics": true}"#;

#[test]
fn counts_statuses_latencies_and_bandwidth_as_kong() {
    let (p, reg) = plugin(serde_json::from_str(ALL).unwrap());
    log(&p, &req(200, 3, Some(30), 40));
    log(&p, &req(200, 0, Some(90_000), 90_010));
    log(&p, &req(401, 1, None, 1));
    let text = scrape(reg, true);
    let want = [
        r#"kong_http_requests_total{service="s1",route="r1",code="200",source="service",workspace="default",consumer=""} 2"#,
        r#"kong_http_requests_total{service="s1",route="r1",code="401",source="kong",workspace="default",consumer=""} 1"#,
        r#"kong_bandwidth_bytes{service="s1",route="r1",direction="ingress",workspace="default",consumer=""} 300"#,
        r#"kong_bandwidth_bytes{service="s1",route="r1",direction="egress",workspace="default",consumer=""} 750"#,
        // 0, 1 and 3 ms: 1 → le=1 holds two, le=5 all three.
        r#"kong_kong_latency_ms_bucket{service="s1",route="r1",workspace="default",le="1"} 2"#,
        r#"kong_kong_latency_ms_bucket{service="s1",route="r1",workspace="default",le="2"} 2"#,
        r#"kong_kong_latency_ms_bucket{service="s1",route="r1",workspace="default",le="5"} 3"#,
        r#"kong_kong_latency_ms_bucket{service="s1",route="r1",workspace="default",le="6000"} 3"#,
        r#"kong_kong_latency_ms_bucket{service="s1",route="r1",workspace="default",le="+Inf"} 3"#,
        r#"kong_kong_latency_ms_count{service="s1",route="r1",workspace="default"} 3"#,
        r#"kong_kong_latency_ms_sum{service="s1",route="r1",workspace="default"} 4"#,
        // The 401 was not proxied: two upstream observations, one past 60000 ms.
        r#"kong_upstream_latency_ms_bucket{service="s1",route="r1",workspace="default",le="25"} 0"#,
        r#"kong_upstream_latency_ms_bucket{service="s1",route="r1",workspace="default",le="50"} 1"#,
        r#"kong_upstream_latency_ms_bucket{service="s1",route="r1",workspace="default",le="60000"} 1"#,
        r#"kong_upstream_latency_ms_bucket{service="s1",route="r1",workspace="default",le="+Inf"} 2"#,
        r#"kong_upstream_latency_ms_count{service="s1",route="r1",workspace="default"} 2"#,
        r#"kong_upstream_latency_ms_sum{service="s1",route="r1",workspace="default"} 90030"#,
        r#"kong_request_latency_ms_bucket{service="s1",route="r1",workspace="default",le="25"} 1"#,
        r#"kong_request_latency_ms_count{service="s1",route="r1",workspace="default"} 3"#,
        "kong_nginx_metric_errors_total 0",
        "# TYPE kong_kong_latency_ms histogram",
        "# TYPE kong_http_requests_total counter",
        "# TYPE kong_bandwidth_bytes counter",
        "# TYPE kong_nginx_connections_total gauge",
    ];
    for w in want {
        assert!(text.lines().any(|l| l == w), "missing {w} in\n{text}");
    }
    // Buckets in increasing order, then count, then sum (Kong's sorted keys).
    let kong_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kong_kong_latency_ms"))
        .collect();
    assert_eq!(kong_lines.len(), 17 + 1 + 2);
    assert!(kong_lines[0].contains("le=\"1\""));
    assert!(kong_lines[16].contains("le=\"6000\""));
    assert!(kong_lines[17].contains("le=\"+Inf\""));
    assert!(kong_lines[18].starts_with("kong_kong_latency_ms_count"));
    assert!(kong_lines[19].starts_with("kong_kong_latency_ms_sum"));
    // HELP/TYPE come once, right before the family's first series.
    let i = text.find("# HELP kong_kong_latency_ms ").unwrap();
    let j = text.find("kong_kong_latency_ms_bucket").unwrap();
    assert!(i < j);
    assert_eq!(text.matches("# TYPE kong_kong_latency_ms ").count(), 1);
}

#[test]
fn every_flag_gates_its_family() {
    let (p, reg) = plugin(json!({}));
    log(&p, &req(200, 3, Some(30), 40));
    let text = scrape(reg, true);
    for absent in [
        "kong_http_requests_total{",
        "kong_bandwidth_bytes{",
        "kong_kong_latency_ms_bucket",
        "kong_upstream_target_health",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    let (p, reg) = plugin(json!({"latency_metrics": true}));
    log(&p, &req(200, 3, Some(30), 40));
    let text = scrape(reg, true);
    assert!(text.contains("kong_request_latency_ms_bucket{"));
    assert!(!text.contains("kong_http_requests_total{"));
    assert!(!text.contains("kong_bandwidth_bytes{"));
}

#[test]
fn per_consumer_fills_the_consumer_label_with_the_username() {
    let (p, reg) = plugin(serde_json::from_str(ALL).unwrap());
    let mut r = req(200, 1, Some(1), 2);
    r.consumer = Some(("c-id", Some("alice")));
    log(&p, &r);
    r.consumer = Some(("c2", None));
    log(&p, &r);
    let text = scrape(reg, true);
    assert!(text.contains(r#"code="200",source="service",workspace="default",consumer="alice"} 1"#));
    // A consumer without a username counts under the empty label, as in Kong.
    assert!(text.contains(r#"code="200",source="service",workspace="default",consumer=""} 1"#));
    assert!(text.contains(r#"direction="ingress",workspace="default",consumer="alice"} 100"#));

    let (p, reg) = plugin(json!({"status_code_metrics": true}));
    r.consumer = Some(("c-id", Some("alice")));
    log(&p, &r);
    let text = scrape(reg, true);
    assert!(text.contains(r#"consumer=""} 1"#));
    assert!(!text.contains("alice"));
}

#[test]
fn labels_fall_back_to_host_and_id_and_no_route_counts_nothing() {
    let (p, reg) = plugin(serde_json::from_str(ALL).unwrap());
    let mut r = req(200, 1, Some(1), 2);
    r.route = Some(row(json!({"id": "r-id"})));
    r.service = Some(row(json!({"id": "s-id", "host": "up.example"})));
    log(&p, &r);
    let mut no_route = req(404, 1, None, 1);
    no_route.route = None;
    no_route.service = None;
    log(&p, &no_route);
    let text = scrape(reg, true);
    assert!(
        text.contains(r#"kong_http_requests_total{service="up.example",route="r-id",code="200""#)
    );
    assert!(!text.contains(r#"code="404""#));
    // The request without a route still switched upstream health on.
    assert!(reg.upstream_health_metrics());
}

#[test]
fn without_a_plugin_only_gauges_are_exported() {
    let (p, reg) = plugin(serde_json::from_str(ALL).unwrap());
    log(&p, &req(200, 1, Some(1), 2));
    let targets = [TargetHealth {
        upstream: "u".into(),
        target: "127.0.0.1:9".into(),
        address: "127.0.0.1:9".into(),
        state: "healthchecks_off",
    }];
    let g = Gauges {
        node_id: "n1",
        pid: 7,
        worker_bytes: 1234,
        datastore_reachable: true,
        targets: &targets,
        enabled: false,
        connections: Connections {
            accepted: 5,
            total: 9,
            ..Connections::default()
        },
        ..Gauges::default()
    };
    let text = render(&g, reg);
    assert!(!text.contains("kong_http_requests_total"));
    assert!(!text.contains("kong_nginx_metric_errors_total"));
    for w in [
        r#"kong_nginx_connections_total{node_id="n1",subsystem="http",state="accepted"} 5"#,
        r#"kong_nginx_connections_total{node_id="n1",subsystem="http",state="total"} 9"#,
        r#"kong_nginx_requests_total{node_id="n1",subsystem="http"} 9"#,
        "kong_datastore_reachable 1",
        r#"kong_memory_workers_lua_vms_bytes{node_id="n1",pid="7",kong_subsystem="http"} 1234"#,
        r#"kong_upstream_target_health{upstream="u",target="127.0.0.1:9",address="127.0.0.1:9",state="healthchecks_off",subsystem="http"} 1"#,
        r#"kong_upstream_target_health{upstream="u",target="127.0.0.1:9",address="127.0.0.1:9",state="dns_error",subsystem="http"} 0"#,
        "# TYPE kong_upstream_target_health gauge",
    ] {
        assert!(text.lines().any(|l| l == w), "missing {w} in\n{text}");
    }
    assert_eq!(text.matches("state=\"waiting\"").count(), 1);
}

#[test]
fn label_values_are_escaped() {
    let (p, reg) = plugin(json!({"status_code_metrics": true}));
    let mut r = req(200, 1, Some(1), 2);
    r.route = Some(row(json!({"id": "x", "name": "a\"b\\c"})));
    log(&p, &r);
    let text = scrape(reg, true);
    assert!(text.contains(r#"route="a\"b\\c""#), "{text}");
}

#[test]
fn a_full_registry_drops_new_series_and_counts_errors() {
    let reg = Registry::with_capacity(64 * 1024);
    let mut made = 0;
    for i in 0..2_000 {
        if reg
            .with_route("svc", &format!("route-{i}"), |s| s.observe_kong(1))
            .is_some()
        {
            made += 1;
        }
    }
    assert!(made > 10 && made < 2_000, "{made}");
    assert!(reg.used_bytes() <= 64 * 1024);
    assert_eq!(reg.errors(), 2_000 - made);
    // Existing series keep counting.
    assert!(reg
        .with_route("svc", "route-0", |s| s.observe_kong(1))
        .is_some());
}

#[test]
fn schema_has_kongs_flags_all_off_by_default() {
    let c = crate::testing::defaults(&SPEC, json!({}));
    for k in [
        "per_consumer",
        "status_code_metrics",
        "ai_metrics",
        "latency_metrics",
        "bandwidth_metrics",
        "upstream_health_metrics",
    ] {
        assert_eq!(c.get(k), Some(&json!(false)), "{k}");
    }
}
