//! The shared database stopped for a minute under load, then started again (issues 12 and
//! 13), on each database server: two nodes keep proxying from their last configuration
//! without one failed request, say `database.reachable: false`, answer Admin calls with
//! a 503 and a JSON message, and take writes again, and each other's, once it is back.

use crate::support::{cluster, echo_upstream, until_status, Db, Gateway, Load, OwnDatabase};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// Polls `/status` until `database.reachable` is true again.
async fn until_reachable(g: &Gateway, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let (_, st) = g.get("/status").await;
        if st["database"]["reachable"] == true {
            return;
        }
        assert!(t0.elapsed() < limit, "database still unreachable: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_database_outage_keeps_proxying_and_resyncs(db: Db) {
    // A server of its own: this test stops it. The default timeouts: a stopped server
    // refuses connections at once, and a busy machine may take seconds to bootstrap.
    let database = OwnDatabase::start(db).await;
    let mut env = database.env.clone();
    env.push(("TOLLGATE_DB_UPDATE_FREQUENCY".into(), "0.5".into()));
    let nodes = cluster(&env, 2).await;
    let (upstream, _h) = echo_upstream().await;
    let (s, _) = nodes[0]
        .post("/services", json!({"name": "echo", "url": upstream}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = nodes[0]
        .post("/services/echo/routes", json!({"paths": ["/live"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for g in &nodes {
        until_status(g, "/live", StatusCode::OK, Duration::from_secs(5)).await;
    }

    // Light load on both nodes for the whole outage: not one request may fail.
    let urls = nodes.iter().map(|g| format!("{}/live", g.proxy));
    let load = Load::start(&nodes[0].client, urls, Duration::from_millis(10));

    database.stop();
    for g in &nodes {
        let (s, st) = g.get("/status").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(st["database"]["reachable"], false, "{st}");
    }
    // Admin writes fail clearly; reads of the database too.
    let (s, body) = nodes[1]
        .post("/services", json!({"name": "during", "url": upstream}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("The database is unreachable"), "{body}");
    let (s, body) = nodes[0].get("/services").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["message"].is_string(), "{body}");
    // Issue 13: a whole minute without the database, under load, costs no request.
    tokio::time::sleep(Duration::from_secs(60)).await;

    database.restart();
    for g in &nodes {
        until_reachable(g, Duration::from_secs(10)).await;
    }
    // Writes work again at once and reach the other node.
    let (s, body) = nodes[1]
        .post("/services/echo/routes", json!({"paths": ["/after"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    until_status(&nodes[0], "/after", StatusCode::OK, Duration::from_secs(5)).await;
    load.finish(&format!("{db:?} stopped for 60 s")).await;
    let (_, routes) = nodes[0].get("/routes").await;
    assert_eq!(routes["data"].as_array().map(Vec::len), Some(2), "{routes}");
}

crate::on_each_database!([postgres, cassandra] {
    a_database_outage_keeps_proxying_and_resyncs
});
