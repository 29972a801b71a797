//! rate-limiting with `policy: cluster`: counters in the node's database (SQLite alone,
//! PostgreSQL or Cassandra shared by two nodes, within one sync of each other), and Kong's refusal of
//! `cluster` in DB-less mode.

use crate::plugin_support::{echo, get, ok, routes, until_with, Resp};
use crate::rate_limiting::{h, num};
use crate::shared_db::{pairs, shared_env, SharedDb};
use crate::support::{pg_env, Gateway, TestServer};
use serde_json::json;
use std::time::Duration;

fn limited(r: &Resp) -> bool {
    h(r, "x-ratelimit-limit-hour").is_some() || r.status == 429
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_policy_on_sqlite_counts_in_the_database() {
    let up = echo().await;
    let mut g = Gateway::start().await;
    routes(&g, &up, &[("c", "/c")]).await;
    ok(
        &g,
        "/routes/c/plugins",
        json!({"name": "rate-limiting",
               "config": {"hour": 3, "policy": "cluster", "limit_by": "ip"}}),
    )
    .await;
    let r = until_with(&g, "/c", &[], limited).await;
    assert_eq!(r.status, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 2);
    assert_eq!(
        num(&get(&g, "/c", &[]).await, "x-ratelimit-remaining-hour"),
        1
    );
    assert_eq!(
        num(&get(&g, "/c", &[]).await, "x-ratelimit-remaining-hour"),
        0
    );
    let r = get(&g, "/c", &[]).await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.body["message"], "API rate limit exceeded");

    // The counts live in the database: a restarted node blocks as soon as it has read
    // them back (its first request, which it cannot know is over, syncs them).
    tokio::time::sleep(Duration::from_millis(300)).await;
    g.stop();
    let g2 = Gateway::launch(g.prefix.clone(), &[]).await;
    let mut passed = 0;
    for _ in 0..5 {
        let r = until_with(&g2, "/c", &[], limited).await;
        if r.status == 429 {
            break;
        }
        passed += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        passed <= 1,
        "{passed} requests passed a used-up limit after a restart"
    );
    assert_eq!(get(&g2, "/c", &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_postgres_share_cluster_counters() {
    two_nodes_share_cluster_counters(SharedDb::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_cassandra_share_cluster_counters() {
    two_nodes_share_cluster_counters(SharedDb::Cassandra).await;
}

async fn two_nodes_share_cluster_counters(db: SharedDb) {
    // Cassandra propagates the route and plugin by polling: poll often.
    let env = shared_env(db, "0.2").await;
    let env = pairs(&env);
    let a = Gateway::start_with(&env).await;
    let b = Gateway::start_with(&env).await;
    let up = echo().await;
    routes(&a, &up, &[("c", "/c")]).await;
    ok(
        &a,
        "/routes/c/plugins",
        json!({"name": "rate-limiting",
               "config": {"hour": 6, "policy": "cluster", "limit_by": "ip"}}),
    )
    .await;
    // Each node's first limited request; the pause between requests lets each node's
    // sync (one round trip) land, so every answer below is exact.
    let pause = || tokio::time::sleep(Duration::from_millis(400));
    let mut allowed = 0;
    let r = until_with(&a, "/c", &[], limited).await;
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 5);
    allowed += 1;
    pause().await;
    let r = until_with(&b, "/c", &[], limited).await;
    // b has not read the counter yet: it knows only its own request.
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 5);
    allowed += 1;
    pause().await;
    assert_eq!(get(&a, "/c", &[]).await.status, 200);
    allowed += 1;
    pause().await;
    // b read back 2 (a's first, its own) with its sync, and counts this one: 6-2-1.
    let r = get(&b, "/c", &[]).await;
    assert_eq!(
        num(&r, "x-ratelimit-remaining-hour"),
        3,
        "b sees a's requests"
    );
    allowed += 1;
    pause().await;
    for g in [&a, &b, &a, &b, &a, &b] {
        let r = get(g, "/c", &[]).await;
        if r.status == 200 {
            allowed += 1;
        } else {
            assert_eq!(r.status, 429, "{:?}", r.body);
        }
        pause().await;
    }
    // Within one request per node of Kong's limit; both nodes now refuse.
    assert!((6..=7).contains(&allowed), "{allowed} allowed");
    assert_eq!(get(&a, "/c", &[]).await.status, 429);
    assert_eq!(get(&b, "/c", &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn dbless_refuses_the_cluster_policy_as_kong_does() {
    let up = echo().await;
    let g = Gateway::start_with(&[("TOLLGATE_DATABASE", "off")]).await;
    let config = |policy: &str| {
        json!({"_format_version": "3.0",
               "services": [{"name": "s", "url": up, "routes": [{"name": "r", "paths": ["/r"]}]}],
               "plugins": [{"name": "rate-limiting", "config": {"minute": 5, "policy": policy}},
                           {"name": "response-ratelimiting", "route": "r",
                            "config": {"limits": {"v": {"minute": 5}}, "policy": policy}}]})
    };
    let (s, e) = g.post("/config", config("cluster")).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["name"], "invalid declarative configuration", "{e}");
    let text = e.to_string();
    assert!(text.contains("expected one of: local, redis"), "{e}");
    // The schema a DB-less node serves leaves `cluster` out too.
    let (_, schema) = g.get("/schemas/plugins/rate-limiting").await;
    assert!(!schema.to_string().contains("\"cluster\""), "{schema}");
    assert!(schema.to_string().contains("\"redis\""), "{schema}");
    let (s, e) = g.post("/config", config("local")).await;
    assert_eq!(s, 201, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_fault_tolerant_passes_and_strict_fails() {
    let server = TestServer::private();
    let db = server.fresh_database().await;
    let mut env = pg_env(&server, &db);
    env.push(("TOLLGATE_PG_TIMEOUT".into(), "2000".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let g = Gateway::start_with(&env).await;
    let up = echo().await;
    routes(&g, &up, &[("ft", "/ft"), ("strict", "/strict")]).await;
    for (route, ft) in [("ft", true), ("strict", false)] {
        ok(
            &g,
            &format!("/routes/{route}/plugins"),
            json!({"name": "rate-limiting",
                   "config": {"hour": 100, "policy": "cluster", "limit_by": "ip",
                              "fault_tolerant": ft}}),
        )
        .await;
        let r = until_with(&g, &format!("/{route}"), &[], limited).await;
        assert_eq!(r.status, 200);
    }

    server.stop();
    // Once a sync has failed: Kong's 500 without fault_tolerant, a pass without the
    // headers with it.
    let r = until_with(&g, "/strict", &[], |r| r.status == 500).await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    assert_eq!(r.body["message"], "An unexpected error occurred");
    let r = get(&g, "/ft", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(h(&r, "x-ratelimit-limit-hour").is_none(), "{:?}", r.headers);

    server.start();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let r = get(&g, "/strict", &[]).await;
            if r.status == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the cluster policy recovers when the database is back");
    assert!(h(&r, "x-ratelimit-limit-hour").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_with_sync_rate_counts_locally_and_syncs_kong_keys() {
    let redis = crate::rate_limiting::Redis::start();
    let up = echo().await;
    let g = Gateway::start().await;
    routes(&g, &up, &[("s", "/s")]).await;
    ok(
        &g,
        "/routes/s/plugins",
        json!({"name": "rate-limiting",
               "config": {"hour": 3, "policy": "redis", "sync_rate": 0.2, "limit_by": "ip",
                          "redis": {"host": "127.0.0.1", "port": redis.port}}}),
    )
    .await;
    let r = until_with(&g, "/s", &[], limited).await;
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 2);
    assert_eq!(
        num(&get(&g, "/s", &[]).await, "x-ratelimit-remaining-hour"),
        1
    );
    assert_eq!(
        num(&get(&g, "/s", &[]).await, "x-ratelimit-remaining-hour"),
        0
    );
    assert_eq!(get(&g, "/s", &[]).await.status, 429);
    // Within sync_rate the node's count reaches Redis under Kong's key.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let keys = redis.cli(&["--scan", "--pattern", "ratelimit:*:hour"]);
        let key = keys.lines().next().unwrap_or_default().to_owned();
        if !key.is_empty() && redis.cli(&["GET", &key]).trim() == "3" {
            assert!(key.contains(":127.0.0.1:"), "{key}");
            let ttl: i64 = redis.cli(&["TTL", &key]).trim().parse().unwrap();
            assert!(
                (1..=3600).contains(&ttl),
                "expiry at the window's end: {ttl}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not synced: {keys:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
