//! A cluster of gateways on one Cassandra node: two nodes bootstrapping an absent keyspace
//! at the same moment, propagation of writes by polling `cluster_events`, the unique-name
//! race through two nodes (exactly one 201), Kong's error bodies, pages whose offsets
//! work on any node. The outage under load is in outage.rs.

use crate::support::{cassandra_env, echo_upstream, until_status, Gateway, TestCassandra};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use tollgate_store::cassandra::test_server::fresh_keyspace;

/// Two gateways started at the same time on a keyspace that does not exist yet.
async fn two_nodes(frequency: &str) -> Vec<Gateway> {
    let extra = [("TOLLGATE_DB_UPDATE_FREQUENCY", frequency)];
    two_nodes_in(TestCassandra::shared(), &fresh_keyspace(), &extra).await
}

async fn two_nodes_in(
    node: &TestCassandra,
    keyspace: &str,
    extra: &[(&str, &str)],
) -> Vec<Gateway> {
    let mut env = cassandra_env(node, keyspace);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    crate::support::cluster(&env, 2).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_bootstrap_together_share_writes_and_pages() {
    let node = TestCassandra::shared();
    let keyspace = fresh_keyspace();
    let nodes = two_nodes_in(node, &keyspace, &[("TOLLGATE_DB_UPDATE_FREQUENCY", "0.2")]).await;
    crate::support::assert_one_schema(&nodes, &cassandra_env(node, &keyspace)).await;
    let (upstream, _h) = echo_upstream().await;
    let (s, svc) = nodes[0]
        .post("/services", json!({"name": "echo", "url": upstream}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{svc}");
    // A route made on node 1 is served by node 2 well within a second (polled at 0.2 s).
    let mut worst = Duration::ZERO;
    for i in 0..3 {
        let (s, r) = nodes[0]
            .post(
                "/services/echo/routes",
                json!({"name": format!("r{i}"), "paths": [format!("/p{i}")]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        let took = until_status(
            &nodes[1],
            &format!("/p{i}"),
            StatusCode::OK,
            Duration::from_secs(5),
        )
        .await;
        worst = worst.max(took);
    }
    assert!(worst < Duration::from_secs(1), "propagation took {worst:?}");

    // A service with routes cannot be deleted, from either node (Kong's 400 body).
    let (s, body) = nodes[1]
        .call(reqwest::Method::DELETE, "/services/echo", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["name"], "foreign key violation");
    assert_eq!(body["code"], 4);

    // PUT creates on one node, the other sees it; deleting a route on node 2 stops it on node 1.
    let (s, _) = nodes[1]
        .put("/consumers/alice", json!({"custom_id": "a-1"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, c) = nodes[0].get("/consumers/alice").await;
    assert_eq!((s, c["custom_id"].clone()), (StatusCode::OK, json!("a-1")));
    assert_eq!(nodes[1].delete("/routes/r0").await, StatusCode::NO_CONTENT);
    until_status(
        &nodes[0],
        "/p0",
        StatusCode::NOT_FOUND,
        Duration::from_secs(5),
    )
    .await;

    // Six consumers in pages of three: the offset from node 1 works on node 2, no
    // consumer twice, and the exactly full last page has no `next`.
    for i in 0..5 {
        let (s, _) = nodes[i % 2]
            .post("/consumers", json!({"username": format!("u{i}")}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, first) = nodes[0].get("/consumers?size=3").await;
    assert_eq!(s, StatusCode::OK);
    let offset = first["offset"].as_str().expect("an offset").to_string();
    assert!(first["next"].is_string(), "{first}");
    let (s, second) = nodes[1]
        .get(&format!("/consumers?size=3&offset={}", urlencode(&offset)))
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["data"].as_array().unwrap().len(), 3);
    assert!(second["next"].is_null(), "{second}");
    assert!(second.get("offset").is_none_or(Value::is_null), "{second}");
    let ids: HashSet<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6);
    // A bad offset is Kong's 400.
    let (s, body) = nodes[1].get("/consumers?offset=!!!").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_name_through_two_nodes_at_once_gives_one_201_and_one_409() {
    let nodes = two_nodes("1").await;
    for round in 0..5 {
        let name = format!("race-{round}");
        let body = json!({"name": name, "url": "http://example.com"});
        let (a, b) = tokio::join!(
            nodes[0].post("/services", body.clone()),
            nodes[1].post("/services", body.clone())
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "{a:?} {b:?}"
        );
        let conflict = if a.0 == StatusCode::CONFLICT {
            &a.1
        } else {
            &b.1
        };
        assert_eq!(conflict["name"], "unique constraint violation");
        assert_eq!(conflict["code"], 5);
        assert_eq!(conflict["fields"]["name"], name.as_str());
    }
    // Deleting frees the name for the other node at once.
    assert_eq!(
        nodes[0].delete("/services/race-0").await,
        StatusCode::NO_CONTENT
    );
    let (s, body) = nodes[1]
        .post(
            "/services",
            json!({"name": "race-0", "url": "http://example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
