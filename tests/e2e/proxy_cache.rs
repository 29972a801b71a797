//! proxy-cache end to end: hits answered without the upstream (it counts what it
//! serves), Bypass for what may not be cached, TTL expiry, Cache-Control, and the Admin
//! API's inspect and purge endpoints, whose purges reach every node of a cluster.

use crate::plugin_support::{get, ok, send, until_with, Resp};
use crate::support::{cassandra_env, pg_env, Gateway, TestCassandra, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_store::cassandra::test_server::fresh_keyspace;

/// An upstream answering `{"n": <its request count>, "uri": …}`; the query picks the
/// status (`status=`), Content-Type (`ct=`) and Cache-Control (`cc=`).
async fn counting_upstream() -> (String, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let line = head.split("\r\n").next().unwrap_or_default();
                    let mut it = line.split(' ');
                    let (method, uri) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    let (mut status, mut ct, mut cc) =
                        ("200".to_owned(), "application/json".to_owned(), None);
                    if let Some((_, q)) = uri.split_once('?') {
                        for (k, v) in q.split('&').filter_map(|p| p.split_once('=')) {
                            match k {
                                "status" => status = v.to_owned(),
                                "ct" => ct = v.to_owned(),
                                "cc" => cc = Some(v.to_owned()),
                                _ => {}
                            }
                        }
                    }
                    let body = json!({"n": n, "uri": uri}).to_string();
                    let mut resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nx-count: {n}\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n",
                        if method == "HEAD" { 0 } else { body.len() }
                    );
                    if let Some(cc) = cc {
                        resp.push_str(&format!("cache-control: {cc}\r\n"));
                    }
                    resp.push_str("\r\n");
                    if method != "HEAD" {
                        resp.push_str(&body);
                    }
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

fn status(r: &Resp) -> &str {
    r.headers
        .get("x-cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn key(r: &Resp) -> String {
    r.headers["x-cache-key"].to_str().unwrap().to_owned()
}

/// A service on the counting upstream, a route at `path` with proxy-cache `config`;
/// waits until the plugin answers. Returns the plugin's id.
async fn cached_route(g: &Gateway, up: &str, name: &str, config: Value) -> String {
    if g.get("/services/s").await.0 == 404 {
        ok(g, "/services", json!({"name": "s", "url": up})).await;
    }
    ok(
        g,
        "/services/s/routes",
        json!({"name": name, "paths": [format!("/{name}")]}),
    )
    .await;
    let mut config = config;
    config["strategy"] = json!("memory");
    let p = ok(
        g,
        &format!("/routes/{name}/plugins"),
        json!({"name": "proxy-cache", "config": config}),
    )
    .await;
    until_with(g, &format!("/{name}/warm-up"), &[], |r| {
        r.headers.contains_key("x-cache-status")
    })
    .await;
    p["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_skip_the_upstream_and_bypass_what_is_not_cacheable() {
    let (up, count) = counting_upstream().await;
    let g = Gateway::start().await;
    cached_route(&g, &up, "c", json!({})).await;
    let n = || count.load(Ordering::SeqCst);

    let before = n();
    let r = get(&g, "/c/a?x=1", &[]).await;
    assert_eq!(status(&r), "Miss");
    assert_eq!(n(), before + 1);
    let k = key(&r);
    assert_eq!(k.len(), 64);
    let r2 = get(&g, "/c/a?x=1", &[]).await;
    assert_eq!(status(&r2), "Hit");
    assert_eq!(n(), before + 1, "answered from the cache");
    assert_eq!(r2.body, r.body);
    assert_eq!(key(&r2), k);
    assert_eq!(r2.headers["x-count"], r.headers["x-count"]);
    let age: u64 = r2.headers["age"].to_str().unwrap().parse().unwrap();
    assert!(age <= 2);
    let cookies: Vec<_> = r2.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"], "repeated headers replayed");
    assert_eq!(
        r2.headers["content-length"],
        r2.body.to_string().len().to_string().as_str()
    );
    // Query arguments in any order are one key; another value is another.
    let r = get(&g, "/c/a?x=1", &[]).await;
    assert_eq!(status(&r), "Hit");
    let r = get(&g, "/c/a?x=2", &[]).await;
    assert_eq!((status(&r), n()), ("Miss", before + 2));

    // Not cacheable: methods, statuses, content types. Each goes upstream every time.
    for _ in 0..2 {
        let b = n();
        let r = send(&g, Method::POST, "/c/a?x=1", &[], Some("x".into())).await;
        assert_eq!((status(&r), n()), ("Bypass", b + 1));
        let r = get(&g, "/c/s?status=500", &[]).await;
        assert_eq!((status(&r), r.status.as_u16(), n()), ("Bypass", 500, b + 2));
        let r = get(&g, "/c/t?ct=text/html", &[]).await;
        assert_eq!((status(&r), n()), ("Bypass", b + 3));
    }
    // 404 is cacheable by default.
    let r = get(&g, "/c/nf?status=404", &[]).await;
    assert_eq!(status(&r), "Miss");
    let r = get(&g, "/c/nf?status=404", &[]).await;
    assert_eq!((status(&r), r.status.as_u16()), ("Hit", 404));
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_expiry_cache_control_and_purge() {
    let (up, count) = counting_upstream().await;
    let g = Gateway::start().await;
    let n = || count.load(Ordering::SeqCst);
    let ttl_id = cached_route(
        &g,
        &up,
        "ttl",
        json!({"cache_ttl": 1, "response_headers": {"age": false}}),
    )
    .await;
    let cc_id = cached_route(&g, &up, "cc", json!({"cache_control": true})).await;

    // cache_ttl 1: the second request within the second hits, one after it misses.
    let r = get(&g, "/ttl/a", &[]).await;
    assert_eq!(status(&r), "Miss");
    let r = get(&g, "/ttl/a", &[]).await;
    assert_eq!(status(&r), "Hit");
    assert!(!r.headers.contains_key("age"), "toggled off");
    let b = n();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&g, "/ttl/a", &[]).await;
    assert_eq!((status(&r), n()), ("Miss", b + 1));

    // cache_control: the response says how long; without a lifetime it is not cached.
    let r = get(&g, "/cc/none", &[]).await;
    assert_eq!(status(&r), "Bypass");
    let r = get(&g, "/cc/p?cc=private,max-age=60", &[]).await;
    assert_eq!(status(&r), "Bypass");
    let r = get(&g, "/cc/a?cc=max-age=60", &[]).await;
    assert_eq!(status(&r), "Miss");
    let cc_key = key(&r);
    let r = get(&g, "/cc/a?cc=max-age=60", &[]).await;
    assert_eq!(status(&r), "Hit");
    // The client's no-cache bypasses; only-if-cached on a miss is 504.
    let r = get(&g, "/cc/a?cc=max-age=60", &[("cache-control", "no-cache")]).await;
    assert_eq!(status(&r), "Bypass");
    let r = get(&g, "/cc/other", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status.as_u16(), 504);

    // Admin API: inspect by plugin and by key alone.
    let (s, v) = g
        .get(&format!("/proxy-cache/{cc_id}/caches/{cc_key}"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["status"].clone(), v["ttl"].clone(), v["version"].clone()),
        (json!(200), json!(60.0), json!(1))
    );
    assert!(v["body"].as_str().unwrap().contains("\"n\""), "{v}");
    assert_eq!(v["headers"]["set-cookie"], json!(["a=1", "b=2"]));
    let (s, _) = g.get(&format!("/proxy-cache/{cc_key}")).await;
    assert_eq!(s, 200);
    let (s, _) = g
        .get(&format!("/proxy-cache/{ttl_id}/caches/{cc_key}"))
        .await;
    assert_eq!(
        s, 200,
        "one dictionary (kong_db_cache) for both instances, as Kong"
    );
    let (s, v) = g
        .get("/proxy-cache/00000000-0000-4000-8000-000000000000/caches/x")
        .await;
    assert_eq!((s.as_u16(), v), (404, Value::Null));
    let (s, _) = g.get("/proxy-cache/nope").await;
    assert_eq!(s, 404);

    // Purge one key through the plugin: the next request goes upstream.
    assert_eq!(
        g.delete(&format!("/proxy-cache/{cc_id}/caches/{cc_key}"))
            .await,
        204
    );
    assert_eq!(
        g.delete(&format!("/proxy-cache/{cc_id}/caches/{cc_key}"))
            .await,
        404
    );
    let b = n();
    let r = get(&g, "/cc/a?cc=max-age=60", &[]).await;
    assert_eq!((status(&r), n()), ("Miss", b + 1));
    // By key alone.
    assert_eq!(g.delete(&format!("/proxy-cache/{cc_key}")).await, 204);
    assert_eq!(g.delete(&format!("/proxy-cache/{cc_key}")).await, 404);
    let r = get(&g, "/cc/a?cc=max-age=60", &[]).await;
    assert_eq!(status(&r), "Miss");
    let r = get(&g, "/cc/a?cc=max-age=60", &[]).await;
    assert_eq!(status(&r), "Hit");
    // Everything.
    assert_eq!(g.delete("/proxy-cache").await, 204);
    let r = get(&g, "/cc/a?cc=max-age=60", &[]).await;
    assert_eq!(status(&r), "Miss");

    let (_, ep) = g.get("/endpoints").await;
    assert!(
        ep["data"]
            .as_array()
            .unwrap()
            .contains(&json!("/proxy-cache/{plugin_id}/caches/{cache_key}")),
        "{ep}"
    );

    // Only the memory strategy exists (redis is Kong Enterprise's).
    let (s, v) = g
        .post(
            "/plugins",
            json!({"name": "proxy-cache", "config": {"strategy": "redis"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["fields"]["config"]["strategy"], "expected one of: memory");
    let (s, v) = g
        .post(
            "/plugins",
            json!({"name": "proxy-cache", "config": {"strategy": "memory", "memory": {"dictionary_name": "nope"}}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("missing shared dict 'nope'"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dictionary_declared_in_the_configuration() {
    let (up, count) = counting_upstream().await;
    let g = Gateway::start_with(&[("KONG_NGINX_HTTP_LUA_SHARED_DICT", "my_cache 1m")]).await;
    cached_route(
        &g,
        &up,
        "own",
        json!({"memory": {"dictionary_name": "my_cache"}}),
    )
    .await;
    let r = get(&g, "/own/a", &[]).await;
    assert_eq!(status(&r), "Miss");
    let b = count.load(Ordering::SeqCst);
    let r = get(&g, "/own/a", &[]).await;
    assert_eq!((status(&r), count.load(Ordering::SeqCst)), ("Hit", b));
    let (s, v) = g.get(&format!("/proxy-cache/{}", key(&r))).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn purges_reach_every_node_on_postgres() {
    let server = TestServer::shared();
    let db = server.fresh_database().await;
    purges_reach_every_node(pg_env(server, &db)).await;
}

/// The same on Cassandra, whose nodes poll `cluster_events` (here every 0.2 s).
#[tokio::test(flavor = "multi_thread")]
async fn purges_reach_every_node_on_cassandra() {
    let mut env = cassandra_env(TestCassandra::shared(), &fresh_keyspace());
    env.push(("TOLLGATE_DB_UPDATE_FREQUENCY".into(), "0.2".into()));
    purges_reach_every_node(env).await;
}

/// Two nodes on one database, both holding the same entries: each of Kong's
/// purge forms sent to node 1's Admin API empties node 2's cache too, and node 1's own
/// cache before it answers. (That a node acts on its own purge once is the store's
/// conformance test: here its replay would land before the refill could show it.)
async fn purges_reach_every_node(env: Vec<(String, String)>) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = Gateway::start_with(&env).await;
    let b = Gateway::start_with(&env).await;
    let (up, _count) = counting_upstream().await;
    let id = cached_route(&a, &up, "p", json!({})).await;
    until_with(&b, "/p/warm-up", &[], |r| {
        r.headers.contains_key("x-cache-status")
    })
    .await;

    // Each path cached on both nodes, under the same key.
    let mut keys = Vec::new();
    for path in ["/p/one", "/p/two", "/p/three"] {
        let mut key_on = Vec::new();
        for g in [&a, &b] {
            let r = get(g, path, &[]).await;
            assert_eq!(status(&r), "Miss", "{path}");
            let r = get(g, path, &[]).await;
            assert_eq!(status(&r), "Hit", "{path}");
            key_on.push(key(&r));
        }
        assert_eq!(key_on[0], key_on[1], "{path}: one key on both nodes");
        keys.push(key_on.remove(0));
    }
    let miss = |r: &Resp| status(r) == "Miss";

    // By plugin and key.
    let purge = format!("/proxy-cache/{id}/caches/{}", keys[0]);
    assert_eq!(a.delete(&purge).await, 204);
    assert_eq!(status(&until_with(&b, "/p/one", &[], miss).await), "Miss");
    assert_eq!(
        status(&get(&b, "/p/two", &[]).await),
        "Hit",
        "only that key"
    );
    // Node 1 dropped it before answering; stored again, it stays.
    assert_eq!(status(&get(&a, "/p/one", &[]).await), "Miss");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(status(&get(&a, "/p/one", &[]).await), "Hit");

    // By key alone.
    assert_eq!(a.delete(&format!("/proxy-cache/{}", keys[1])).await, 204);
    assert_eq!(status(&until_with(&b, "/p/two", &[], miss).await), "Miss");
    assert_eq!(status(&get(&a, "/p/two", &[]).await), "Miss");
    assert_eq!(
        status(&get(&b, "/p/three", &[]).await),
        "Hit",
        "only that key"
    );

    // Everything: node 2 refilled /p/one and /p/two above; all of it goes.
    assert_eq!(status(&get(&b, "/p/one", &[]).await), "Hit");
    assert_eq!(a.delete("/proxy-cache").await, 204);
    for path in ["/p/three", "/p/one", "/p/two"] {
        assert_eq!(
            status(&until_with(&b, path, &[], miss).await),
            "Miss",
            "{path}"
        );
    }
    assert_eq!(status(&get(&a, "/p/three", &[]).await), "Miss");
}
