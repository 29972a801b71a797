mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn routes_and_404_bodies() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/echo"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let c = client();

    let v = echo_json(c.get(p.url("/echo/x?a=1&b")).send().await.unwrap()).await;
    assert_eq!(v["path"], "/x?a=1&b");
    assert_eq!(v["method"], "GET");

    let resp = c.get(p.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(resp.headers()["server"], "kong/3.9.1");
    assert!(resp.headers().contains_key("x-kong-response-latency"));
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(rid.len(), 32);
    let body = resp.text().await.unwrap();
    assert_eq!(
        body,
        format!("{{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"{rid}\"\n}}")
    );

    let resp = c
        .get(p.url("/nope"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("no Route matched with those values\nrequest_id: {rid}\n")
    );

    let resp = c
        .get(p.url("/nope"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("<p>no Route matched with those values.</p>"));
    p.shutdown().await;
}

#[tokio::test]
async fn strip_path_v0_cases() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({"path": "/s"}));
    let r1 = route(Some(&s), json!({"paths": ["/r"]}));
    let r2 = route(Some(&s), json!({"paths": ["/keep"], "strip_path": false}));
    let s2 = service("127.0.0.1", up.port(), json!({"path": "/t/"}));
    let r3 = route(Some(&s2), json!({"paths": ["/slash"]}));
    let p = start(
        &dataset(vec![
            ("services", s),
            ("services", s2),
            ("routes", r1),
            ("routes", r2),
            ("routes", r3),
        ]),
        &[],
    )
    .await;
    let c = client();
    for (req, want) in [
        ("/r/x", "/s/x"),
        ("/rx", "/s/x"),
        ("/r", "/s"),
        ("/r/", "/s/"),
        ("/r/x?q=1", "/s/x?q=1"),
        ("/keep/x", "/s/keep/x"),
        ("/slash/x", "/t/x"),
        ("/slash", "/t"),
        ("/r/a%20b", "/s/a%20b"),
    ] {
        let v = echo_json(c.get(p.url(req)).send().await.unwrap()).await;
        assert_eq!(v["path"], want, "request {req}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn strip_path_v1_concatenates() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({"path": "/srv"}));
    let strip = route(Some(&s), json!({"paths": ["/rou"], "path_handling": "v1"}));
    let keep = route(
        Some(&s),
        json!({"paths": ["/keep"], "path_handling": "v1", "strip_path": false}),
    );
    let p = start(
        &dataset(vec![("services", s), ("routes", strip), ("routes", keep)]),
        &[],
    )
    .await;
    let c = client();
    for (req, want) in [
        ("/roureq", "/srvreq"),
        ("/rou/x", "/srv/x"),
        ("/keep/x", "/srvkeep/x"),
    ] {
        let v = echo_json(c.get(p.url(req)).send().await.unwrap()).await;
        assert_eq!(v["path"], want, "request {req}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn preserve_host_and_host_header() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r1 = route(Some(&s), json!({"paths": ["/keep"], "preserve_host": true}));
    let r2 = route(Some(&s), json!({"paths": ["/replace"]}));
    let p = start(
        &dataset(vec![("services", s), ("routes", r1), ("routes", r2)]),
        &[],
    )
    .await;
    let c = client();
    let v = echo_json(
        c.get(p.url("/keep"))
            .header("host", "example.test:1234")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["headers"]["host"], "example.test:1234");
    let v = echo_json(
        c.get(p.url("/replace"))
            .header("host", "example.test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["headers"]["host"], format!("127.0.0.1:{}", up.port()));
    p.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_untrusted_peer() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/fw"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let c = client();
    let v = echo_json(
        c.get(p.url("/fw/a?x=1"))
            .header("host", "front.test")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.test")
            .header("x-forwarded-port", "9999")
            .header("x-forwarded-path", "/evil")
            .header("x-real-ip", "5.6.7.8")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "front.test");
    assert_eq!(h["x-forwarded-port"], p.addrs[0].port().to_string());
    assert_eq!(h["x-forwarded-path"], "/fw/a");
    assert_eq!(h["x-forwarded-prefix"], "/fw");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["via"], "1.1 kong/3.9.1");
    assert_eq!(h["connection"], "keep-alive");
    assert_eq!(h["x-kong-request-id"].as_str().unwrap().len(), 32);
    p.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_trusted_peer() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/fw"], "strip_path": false}));
    let p = start(
        &dataset(vec![("services", s), ("routes", r)]),
        &[
            ("trusted_ips", "127.0.0.1/32"),
            ("real_ip_header", "X-Forwarded-For"),
            ("real_ip_recursive", "on"),
        ],
    )
    .await;
    let c = client();
    let v = echo_json(
        c.get(p.url("/fw/a"))
            .header("x-forwarded-for", "9.9.9.9, 1.2.3.4")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "outer.test")
            .header("x-forwarded-port", "443")
            .header("x-forwarded-path", "/outer/fw/a")
            .header("x-forwarded-prefix", "/outer")
            .header("via", "1.1 edge")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "9.9.9.9, 1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "1.2.3.4");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "outer.test");
    assert_eq!(h["x-forwarded-port"], "443");
    assert_eq!(h["x-forwarded-path"], "/outer/fw/a");
    assert_eq!(h["x-forwarded-prefix"], "/outer");
    assert_eq!(h["via"], "1.1 edge, 1.1 kong/3.9.1");
    p.shutdown().await;
}

#[tokio::test]
async fn response_headers_via_latency_and_off() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let d = dataset(vec![("services", s), ("routes", r)]);
    let p = start(&d, &[]).await;
    let c = client();
    let resp = c
        .get(p.url("/x"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["via"], "1.1 kong/3.9.1");
    assert_eq!(resp.headers()["server"], "kong/3.9.1");
    assert!(resp.headers()["x-kong-upstream-latency"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(resp.headers()["x-kong-proxy-latency"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let v = echo_json(resp).await;
    assert_eq!(v["headers"]["x-kong-request-id"], rid.as_str());
    assert!(
        v["headers"].get("x-hop").is_none(),
        "hop-by-hop header listed in Connection forwarded"
    );
    p.shutdown().await;

    // latency_tokens alone: the latency headers, not Via/Server
    let p = start(&d, &[("headers", "latency_tokens")]).await;
    let resp = c.get(p.url("/x")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-kong-upstream-latency"));
    assert!(resp.headers().contains_key("x-kong-proxy-latency"));
    for h in ["via", "server", "x-kong-request-id"] {
        assert!(
            !resp.headers().contains_key(h),
            "{h} present with headers=latency_tokens"
        );
    }
    p.shutdown().await;

    let p = start(&d, &[("headers", "off"), ("headers_upstream", "off")]).await;
    let resp = c.get(p.url("/x")).send().await.unwrap();
    for h in [
        "via",
        "server",
        "x-kong-upstream-latency",
        "x-kong-proxy-latency",
        "x-kong-request-id",
    ] {
        assert!(
            !resp.headers().contains_key(h),
            "{h} present with headers=off"
        );
    }
    let v = echo_json(resp).await;
    assert!(v["headers"].get("x-kong-request-id").is_none());
    p.shutdown().await;
}

#[tokio::test]
async fn https_only_route_426_and_redirect() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r1 = route(
        Some(&s),
        json!({"paths": ["/secure"], "protocols": ["https"]}),
    );
    let r2 = route(
        Some(&s),
        json!({"paths": ["/moved"], "protocols": ["https"], "https_redirect_status_code": 308}),
    );
    let p = start(
        &dataset(vec![("services", s), ("routes", r1), ("routes", r2)]),
        &[],
    )
    .await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = c.get(p.url("/secure")).send().await.unwrap();
    assert_eq!(resp.status(), 426);
    assert_eq!(resp.headers()["connection"], "Upgrade");
    assert_eq!(resp.headers()["upgrade"], "TLS/1.2, HTTP/1.1");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("\"message\":\"Please use HTTPS protocol\""));

    let resp = c
        .get(p.url("/moved/a?b=1"))
        .header("host", "api.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "https://api.test/moved/a?b=1");

    // over TLS the route proxies
    let tls = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let v = echo_json(
        tls.get(format!("https://{}/secure/x", p.addrs[2]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["path"], "/x");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    p.shutdown().await;
}

#[tokio::test]
async fn route_without_service_503() {
    let r = route(None, json!({"paths": ["/none"]}));
    let p = start(&dataset(vec![("routes", r)]), &[]).await;
    let resp = client().get(p.url("/none")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("\"message\":\"no Service found with those values\""));
    p.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_and_h2_over_tls() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .get(format!("http://{}/h2", p.addrs[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let v = echo_json(resp).await;
    assert_eq!(v["headers"]["via"], "2 kong/3.9.1");
    assert_eq!(v["version"], "HTTP/1.1");
    // the plain listener without http2 speaks HTTP/1.1 only
    assert!(c.get(p.url("/h2")).send().await.is_err());
    // TLS + ALPN h2
    let tls = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let resp = tls
        .get(format!("https://{}/x", p.addrs[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_timeout_504() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({"read_timeout": 200}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let resp = client()
        .get(p.url("/slow?ms=2000"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let rid = resp.headers()["x-kong-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("The upstream server is timing out\nrequest_id: {rid}\n")
    );
    p.shutdown().await;
}

/// A pooled upstream connection keeps one timer for its requests, moved only
/// when a request's deadline is sooner: a request whose deadline is later than
/// the one the timer was last set for is answered, not cut at the old deadline,
/// and a slow one on the same connection still times out.
#[tokio::test]
async fn read_timeout_counts_from_each_request_on_a_pooled_connection() {
    let up = echo_upstream().await;
    // (no retries: a timeout must show, not be hidden by a second try)
    let s = service(
        "127.0.0.1",
        up.port(),
        json!({"read_timeout": 600, "retries": 0}),
    );
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let c = client();
    let status = |path: &'static str| {
        let c = c.clone();
        let url = p.url(path);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/fast").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // answered 750 ms after the first request, 450 ms after its own
    assert_eq!(status("/slow?ms=450").await, 200);
    assert_eq!(status("/slow?ms=1500").await, 504);
    p.shutdown().await;
}

/// A port that refuses connections for as long as the socket is held: bound but not
/// listening, so no other test's server can take it meanwhile (a released port can be
/// handed to a concurrent test, which then answers in its place).
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn connection_refused_502() {
    let (_held, port) = closed_port();
    let s = service("127.0.0.1", port, json!({"retries": 2}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let resp = client()
        .get(p.url("/x"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(resp
        .text()
        .await
        .unwrap()
        .starts_with("An invalid response was received from the upstream server\n"));
    let resp = client()
        .get(p.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("\"message\":\"An invalid response was received from the upstream server\""));
    p.shutdown().await;
}

#[tokio::test]
async fn retries_move_to_the_next_target() {
    let up = echo_upstream().await;
    let (_held, dead) = closed_port();
    let u = row("upstreams", json!({"name": "pool.test"}));
    let t1 = row(
        "targets",
        json!({"upstream": {"id": u["id"]}, "target": format!("127.0.0.1:{dead}")}),
    );
    let t2 = row(
        "targets",
        json!({"upstream": {"id": u["id"]}, "target": format!("127.0.0.1:{}", up.port())}),
    );
    let s = service("pool.test", 80, json!({"retries": 1}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let d = dataset(vec![
        ("upstreams", u),
        ("targets", t1),
        ("targets", t2),
        ("services", s),
        ("routes", r),
    ]);
    let p = start(&d, &[]).await;
    let c = client();
    for _ in 0..4 {
        let v = echo_json(c.get(p.url("/x")).send().await.unwrap()).await;
        assert_eq!(
            v["headers"]["host"],
            format!("127.0.0.1:{}", up.port()),
            "Host is the target"
        );
    }
    p.shutdown().await;

    // retries = 0: every other request hits the dead target
    let mut d0 = d.clone();
    d0.get_mut("services").unwrap()[0]["retries"] = json!(0);
    let p = start(&d0, &[]).await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(c.get(p.url("/x")).send().await.unwrap().status().as_u16());
    }
    codes.sort();
    assert_eq!(codes, vec![200, 200, 502, 502]);
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let c = client();
    let a = echo_json(c.get(p.url("/1")).send().await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = echo_json(c.get(p.url("/2")).send().await.unwrap()).await;
    assert_eq!(
        a["peer"], b["peer"],
        "keep-alive connection to the upstream reused"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn snapshot_swap_changes_routing() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let ra = route(Some(&s), json!({"paths": ["/a"]}));
    let rb = route(Some(&s), json!({"paths": ["/b"]}));
    let p = start(&dataset(vec![("services", s.clone()), ("routes", ra)]), &[]).await;
    let c = client();
    assert_eq!(c.get(p.url("/a")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(p.url("/b")).send().await.unwrap().status(), 404);
    let v1 = p.snapshot.load().version();
    p.swap(&dataset(vec![("services", s), ("routes", rb)]));
    assert!(p.snapshot.load().version() > v1);
    assert_eq!(c.get(p.url("/a")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(p.url("/b")).send().await.unwrap().status(), 200);
    p.shutdown().await;
}

#[tokio::test]
async fn request_body_streams_and_413() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(
        &dataset(vec![("services", s), ("routes", r)]),
        &[("client_max_body_size", "1k")],
    )
    .await;
    let c = client();
    let v = echo_json(c.post(p.url("/x")).body("hello").send().await.unwrap()).await;
    assert_eq!(v["body"], "hello");
    assert_eq!(v["method"], "POST");
    let resp = c
        .post(p.url("/x"))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // chunked, no Content-Length
    let stream = futures_util::stream::iter((0..8).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'b';
            512
        ])))
    }));
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(stream));
    let resp = c.post(p.url("/x")).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    p.shutdown().await;
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    let up = ws_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/ws"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", p.addrs[0]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["via"], "1.1 kong/3.9.1");
    for i in 0..3 {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
            "hello {i}"
        )))
        .await
        .unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.close(None).await.unwrap();
    p.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let r = route(Some(&s), json!({"paths": ["/"]}));
    let p = start(&dataset(vec![("services", s), ("routes", r)]), &[]).await;
    let url = p.url("/slow?ms=800");
    let addr = p.addrs[0];
    let inflight = tokio::spawn(async move { client().get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    p.shutdown().await;
    assert_eq!(inflight.await.unwrap(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "serve returned before the request finished"
    );
    // no longer accepting
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn stats_count_requests() {
    let p = start(&Dataset::new(), &[]).await;
    let c = client();
    for _ in 0..3 {
        c.get(p.url("/")).send().await.unwrap();
    }
    let j = p.stats.to_json();
    assert_eq!(j["total_requests"], 3);
    assert!(j["connections_accepted"].as_u64().unwrap() >= 1);
    for k in [
        "connections_active",
        "connections_handled",
        "connections_reading",
        "connections_waiting",
        "connections_writing",
    ] {
        assert!(j.get(k).is_some(), "{k}");
    }
    p.shutdown().await;
}

use tollgate_proxy::Dataset;
