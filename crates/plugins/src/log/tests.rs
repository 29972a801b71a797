//! The serializer's shape against Kong 3.9's `kong.log.serialize()`.

use super::*;
use serde_json::json;

fn cx<'a>(
    req_h: &'a HeaderMap,
    resp_h: &'a HeaderMap,
    route: &'a Row,
    tries: &'a [Try],
) -> LogCx<'a> {
    LogCx {
        request_id: "rid",
        status: 201,
        route_id: Some("r1"),
        service_id: Some("s1"),
        request: LogRequest {
            method: "POST",
            uri: "/p/a?x=1&x=2&flag&e=&sp=a+b%21",
            scheme: "https",
            host: "example.com",
            port: 8443,
            headers: req_h,
            size: 321,
            tls: Some(("TLSv1.3", "TLS_AES_128_GCM_SHA256")),
        },
        response: LogResponse {
            status: 201,
            headers: resp_h,
            size: 77,
        },
        upstream_uri: "/a?x=1&x=2&flag&e=&sp=a+b%21",
        upstream_status: Some(201),
        route: Some(route),
        service: None,
        consumer: Some(LogConsumer {
            id: "c1",
            username: Some("alice"),
            custom_id: None,
        }),
        credential_id: Some("cred1"),
        latencies: Latencies {
            kong: 1,
            proxy: Some(5),
            request: 9,
            receive: 2,
        },
        tries,
        client_ip: "10.0.0.1".parse().unwrap(),
        started_at: 1_700_000_000_123,
        proxied: true,
    }
}

#[test]
fn serializes_kongs_basic_shape() {
    let mut req_h = HeaderMap::new();
    req_h.insert("authorization", "Basic eDp5".parse().unwrap());
    req_h.insert("proxy-authorization", "secret".parse().unwrap());
    req_h.insert("apikey", "k".parse().unwrap());
    req_h.append("x-multi", "a".parse().unwrap());
    req_h.append("x-multi", "b".parse().unwrap());
    let mut resp_h = HeaderMap::new();
    resp_h.insert("content-type", "application/json".parse().unwrap());
    let route = json!({"id": "r1", "name": null, "paths": ["/p"], "service": {"id": "s1"}});
    let tries = [Try {
        ip: "127.0.0.1".parse().unwrap(),
        port: 9000,
        balancer_start: 1_700_000_000_124,
        balancer_start_ns: 1_700_000_000_124_000_000,
        balancer_latency: 0,
        balancer_latency_ns: 1500,
        failed: None,
    }];
    let v = cx(&req_h, &resp_h, route.as_object().unwrap(), &tries).serialize();
    assert_eq!(
        v,
        json!({
            "request": {
                "id": "rid",
                "uri": "/p/a?x=1&x=2&flag&e=&sp=a+b%21",
                "url": "https://example.com:8443/p/a?x=1&x=2&flag&e=&sp=a+b%21",
                "querystring": {"x": ["1", "2"], "flag": true, "e": "", "sp": "a b!"},
                "method": "POST",
                "headers": {
                    "authorization": "REDACTED",
                    "proxy-authorization": "REDACTED",
                    "apikey": "k",
                    "x-multi": ["a", "b"],
                },
                "size": 321,
                "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "client_verify": "NONE"},
            },
            "upstream_uri": "/a?x=1&x=2&flag&e=&sp=a+b%21",
            "upstream_status": "201",
            "response": {"status": 201, "headers": {"content-type": "application/json"}, "size": 77},
            "latencies": {"kong": 1, "proxy": 5, "request": 9, "receive": 2},
            "tries": [{
                "ip": "127.0.0.1", "port": 9000,
                "balancer_start": 1_700_000_000_124u64,
                "balancer_start_ns": 1_700_000_000_124_000_000u64,
                "balancer_latency": 0, "balancer_latency_ns": 1500,
            }],
            "authenticated_entity": {"id": "cred1", "consumer_id": "c1"},
            "route": {"id": "r1", "paths": ["/p"], "service": {"id": "s1"}},
            "consumer": {"id": "c1", "username": "alice"},
            "client_ip": "10.0.0.1",
            "started_at": 1_700_000_000_123u64,
            "source": "upstream",
        })
    );
}

#[test]
fn a_kong_response_has_no_tries_and_proxy_latency_minus_one() {
    let h = HeaderMap::new();
    let route = Row::new();
    let mut c = cx(&h, &h, &route, &[]);
    c.proxied = false;
    c.route = None;
    c.consumer = None;
    c.credential_id = None;
    c.upstream_status = None;
    c.latencies.proxy = None;
    c.request.tls = None;
    let v = c.serialize();
    assert_eq!(v["source"], "kong");
    assert_eq!(v["latencies"]["proxy"], -1);
    assert_eq!(v["upstream_status"], "");
    for absent in [
        "tries",
        "route",
        "consumer",
        "authenticated_entity",
        "service",
    ] {
        assert!(v.get(absent).is_none(), "{absent} present");
    }
    assert!(v["request"].get("tls").is_none());
}
