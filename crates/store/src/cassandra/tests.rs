//! The Cassandra store against a real node: the shared backend behaviour
//! (`conformance.rs`), concurrent bootstraps on an absent keyspace, the unique-name race,
//! paging and propagation between stores.

use super::test_server::{fresh_keyspace, TestCassandra};
use super::CassandraStore;
use crate::conformance::{row, schema};
use crate::{ChangeEvent, PageQuery, Store, MIGRATIONS};
use serde_json::json;
use std::time::Duration;

pub(super) struct Ks;

pub(super) async fn store(ks: &str, frequency: Duration) -> CassandraStore {
    CassandraStore::connect(TestCassandra::shared().settings(ks, frequency))
        .await
        .unwrap()
}

pub(super) async fn open() -> (Ks, CassandraStore) {
    let s = store(&fresh_keyspace(), Duration::from_millis(200)).await;
    assert_eq!(s.migrations_bootstrap().await.unwrap(), MIGRATIONS.to_vec());
    (Ks, s)
}

crate::conformance_tests!(open());

#[tokio::test]
async fn concurrent_bootstraps_on_an_absent_keyspace_make_one_schema() {
    let ks = fresh_keyspace();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(store(&ks, Duration::from_secs(5)).await);
    }
    let runs =
        futures_util::future::join_all(stores.iter().map(|s| s.migrations_bootstrap())).await;
    let ran: Vec<Vec<String>> = runs.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(ran.iter().filter(|r| !r.is_empty()).count(), 1, "{ran:?}");
    let st = stores[3].migrations_status().await.unwrap();
    assert!(st.pending.is_empty() && st.bootstrapped());
    // Every store can write and read.
    for (i, s) in stores.iter().enumerate() {
        let svc = row(
            "services",
            json!({"name": format!("s{i}"), "host": "a.com"}),
        );
        s.insert(schema("services"), svc).await.unwrap();
    }
    assert_eq!(
        stores[0].load(&["services"]).await.unwrap()["services"].len(),
        4
    );
    stores[0].migrations_reset().await.unwrap();
    assert!(!stores[0].migrations_status().await.unwrap().bootstrapped());
}

#[tokio::test]
async fn the_same_name_created_at_once_through_two_stores_has_one_winner() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_secs(5)).await;
    for round in 0..10 {
        let name = format!("race-{round}");
        let r1 = row("services", json!({"name": name, "host": "a.com"}));
        let r2 = row("services", json!({"name": name, "host": "b.com"}));
        let (x, y) = tokio::join!(
            a.insert(schema("services"), r1),
            b.insert(schema("services"), r2)
        );
        let oks = [x.is_ok(), y.is_ok()];
        assert_eq!(oks.iter().filter(|o| **o).count(), 1, "{x:?} {y:?}");
        let e = x.err().or(y.err()).unwrap();
        assert_eq!(e.http_status(), 409, "{e:?}");
    }
}

#[tokio::test]
async fn renames_release_names_and_exactly_full_pages_have_no_next() {
    let (_k, s) = open().await;
    let svc = row("services", json!({"name": "old", "host": "a.com"}));
    let id = svc["id"].as_str().unwrap().to_string();
    s.insert(schema("services"), svc.clone()).await.unwrap();
    let mut renamed = svc.clone();
    renamed.insert("name".into(), json!("new"));
    s.update(schema("services"), renamed).await.unwrap();
    assert!(s
        .select_by_field(schema("services"), "name", "old")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.select_by_field(schema("services"), "name", "new")
            .await
            .unwrap()
            .unwrap()["id"],
        id
    );
    // The old name is free again; the new one is taken.
    s.insert(
        schema("services"),
        row("services", json!({"name": "old", "host": "b.com"})),
    )
    .await
    .unwrap();
    let e = s
        .insert(
            schema("services"),
            row("services", json!({"name": "new", "host": "b.com"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 409);

    // 4 services: pages of 2 are exactly full, and the last one has no `next`.
    for i in 0..2 {
        s.insert(
            schema("services"),
            row(
                "services",
                json!({"name": format!("p{i}"), "host": "c.com"}),
            ),
        )
        .await
        .unwrap();
    }
    let mut q = PageQuery {
        size: 2,
        ..Default::default()
    };
    let first = s.page(schema("services"), &q).await.unwrap();
    assert_eq!(first.rows.len(), 2);
    q.offset = first.next_offset.clone();
    let second = s.page(schema("services"), &q).await.unwrap();
    assert_eq!(second.rows.len(), 2);
    assert!(second.next_offset.is_none());
    // An offset from one node works on another.
    let other = store(s.settings().keyspace.as_str(), Duration::from_secs(5)).await;
    q.offset = first.next_offset;
    let again = other.page(schema("services"), &q).await.unwrap();
    assert_eq!(again.rows, second.rows);
}

#[tokio::test]
async fn writes_reach_other_stores_by_polling() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_millis(100)).await;
    let mut ev = b.events();
    let c = row("consumers", json!({"username": "carol"}));
    let cid = c["id"].as_str().unwrap().to_string();
    let t = std::time::Instant::now();
    a.insert(schema("consumers"), c).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), ev.recv())
        .await
        .expect("polled")
        .unwrap();
    match &*e {
        ChangeEvent::Rows(r) => assert_eq!((r[0].entity, &*r[0].id), ("consumers", &*cid)),
        ChangeEvent::Reset => panic!("reset"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(b.changes().borrow().get("consumers"), 1);
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_writer_is_taken_over_only_once_old() {
    use super::conn::Kind;
    let (_k, s) = open().await;
    let ghost = "6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a";
    let s = &s;
    let claim = |name: &str, micros_ago: i64| {
        let key = format!("services\u{1f}u_name\u{1f}{name}");
        let at = (crate::rules::now() * 1_000_000) - micros_ago;
        let cql = format!(
            "INSERT INTO {} (k, id) VALUES (?, ?) USING TIMESTAMP {at}",
            s.conn().ks.t("uniques")
        );
        async move { s.conn().run(&cql, Kind::Write, (key, ghost)).await.unwrap() }
    };
    // An hour-old claim whose row was never written: taken over.
    claim("old", 3_600_000_000).await;
    s.insert(
        schema("services"),
        row("services", json!({"name": "old", "host": "a.com"})),
    )
    .await
    .unwrap();
    // A fresh one may be a create in progress: the name is taken.
    claim("fresh", 0).await;
    let e = s
        .insert(
            schema("services"),
            row("services", json!({"name": "fresh", "host": "a.com"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 409);
}

/// Opt-in (two more JVMs, ~2 GB): `cargo test -p tollgate-store -- --ignored ring`.
#[tokio::test]
#[ignore = "starts a two-node Cassandra ring (~2 GB of memory)"]
async fn ring_two_coordinators_bootstrap_together_and_race_names_at_quorum() {
    use super::{Consistency, Replication};
    let ring = TestCassandra::ring();
    let ks = fresh_keyspace();
    let mut stores = Vec::new();
    for node in &ring {
        let mut st = node.settings(&ks, Duration::from_millis(200));
        st.replication = Replication::Simple(2);
        st.read_consistency = Consistency::Quorum;
        st.write_consistency = Consistency::Quorum;
        stores.push(CassandraStore::connect(st).await.unwrap());
    }
    let (a, b) = (&stores[0], &stores[1]);
    let (x, y) = tokio::join!(a.migrations_bootstrap(), b.migrations_bootstrap());
    let ran = [x.unwrap(), y.unwrap()];
    assert_eq!(ran.iter().filter(|r| !r.is_empty()).count(), 1, "{ran:?}");
    for round in 0..10 {
        let name = format!("ring-{round}");
        let (x, y) = tokio::join!(
            a.insert(
                schema("services"),
                row("services", json!({"name": name, "host": "a.com"}))
            ),
            b.insert(
                schema("services"),
                row("services", json!({"name": name, "host": "b.com"}))
            )
        );
        assert_eq!(
            [x.is_ok(), y.is_ok()].iter().filter(|o| **o).count(),
            1,
            "{x:?} {y:?}"
        );
        let e = x.err().or(y.err()).unwrap();
        assert_eq!(e.http_status(), 409, "{e:?}");
    }
    // Each coordinator sees the other's rows and pages.
    let p = b
        .page(
            schema("services"),
            &PageQuery {
                size: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.rows.len(), 10);
}
