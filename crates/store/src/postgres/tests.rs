//! The PostgreSQL store against a real server: the shared backend behaviour
//! (`conformance.rs`), migrations under concurrency and propagation between stores.

use super::test_server::TestServer;
use super::{PgSettings, PostgresStore};
use crate::conformance::{row, schema};
use crate::{ChangeEvent, Store, MIGRATIONS};
use serde_json::json;
use std::time::Duration;

struct Db {
    name: String,
}

async fn settings(db: &str, frequency: Duration) -> PgSettings {
    PgSettings {
        primary: TestServer::shared().options(db),
        read_only: None,
        update_frequency: frequency,
        node_id: format!("test-{db}"),
    }
}

async fn open() -> (Db, PostgresStore) {
    let name = TestServer::shared().fresh_database().await;
    let s = PostgresStore::connect(settings(&name, Duration::from_millis(200)).await)
        .await
        .unwrap();
    assert_eq!(s.migrations_bootstrap().await.unwrap(), MIGRATIONS.to_vec());
    (Db { name }, s)
}

crate::conformance_tests!(open());

/// A second store on `db` that polls rarely, so what it sees within seconds came through
/// LISTEN/NOTIFY; returned once its LISTEN connection had time to come up.
async fn listener(db: &Db) -> (PostgresStore, crate::ChangeEvents) {
    let b = PostgresStore::connect(settings(&db.name, Duration::from_secs(30)).await)
        .await
        .unwrap();
    let ev = b.events();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (b, ev)
}

#[tokio::test]
async fn concurrent_bootstraps_make_one_schema() {
    let name = TestServer::shared().fresh_database().await;
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(
            PostgresStore::connect(settings(&name, Duration::from_secs(5)).await)
                .await
                .unwrap(),
        );
    }
    let runs =
        futures_util::future::join_all(stores.iter().map(|s| s.migrations_bootstrap())).await;
    let ran: Vec<Vec<String>> = runs.into_iter().map(|r| r.unwrap()).collect();
    // Exactly one ran the migrations; the others waited for it and found nothing to do.
    assert_eq!(ran.iter().filter(|r| !r.is_empty()).count(), 1, "{ran:?}");
    assert!(ran.contains(&MIGRATIONS.iter().map(|m| m.to_string()).collect()));
    let st = stores[0].migrations_status().await.unwrap();
    assert!(st.pending.is_empty() && st.bootstrapped());
    stores[0].migrations_reset().await.unwrap();
    assert!(!stores[0].migrations_status().await.unwrap().bootstrapped());
}

#[tokio::test]
async fn writes_reach_other_stores_and_polling_covers_lost_notifications() {
    let (db, a) = open().await;
    let (b, mut ev) = listener(&db).await;
    let c = row("consumers", json!({"username": "carol"}));
    let cid = c["id"].as_str().unwrap().to_string();
    a.insert(schema("consumers"), c).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(2), ev.recv())
        .await
        .expect("notified")
        .unwrap();
    match &*e {
        ChangeEvent::Rows(r) => assert_eq!((r[0].entity, &*r[0].id), ("consumers", &*cid)),
        ChangeEvent::Reset => panic!("reset"),
    }
    assert_eq!(b.changes().borrow().get("consumers"), 1);

    // c never gets a notification it can use (its LISTEN connection is killed repeatedly);
    // polling every 200 ms still delivers.
    let c_store = PostgresStore::connect(settings(&db.name, Duration::from_millis(200)).await)
        .await
        .unwrap();
    let mut ev = c_store.events();
    TestServer::shared()
        .execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'tollgate-listen'",
            db.name
        ))
        .await;
    a.delete(schema("consumers"), &cid).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(3), ev.recv())
        .await
        .expect("polled")
        .unwrap();
    assert!(matches!(&*e, ChangeEvent::Rows(r) if r[0].op == crate::ChangeOp::Delete));
}

/// The events ride in their notifications; what does not (an event too large for a
/// payload, a skipped id) is read from the table, in order, with nothing lost.
#[tokio::test]
async fn notified_events_skipped_ids_and_large_events_arrive_in_order() {
    let (db, a) = open().await;
    let (b, mut ev) = listener(&db).await;
    let mut expect = Vec::new();
    for i in 0..6 {
        if i == 2 {
            // An id taken and never committed (a rolled-back write): a gap in the ids.
            TestServer::shared()
                .execute_in(&db.name, "SELECT nextval('cluster_events_id_seq')")
                .await;
        }
        // Event 4 is larger than a notification payload carries.
        let custom = if i == 4 {
            "x".repeat(10_000)
        } else {
            format!("c{i}")
        };
        let c = row(
            "consumers",
            json!({"username": format!("u{i}"), "custom_id": custom}),
        );
        expect.push(c["id"].as_str().unwrap().to_string());
        a.insert(schema("consumers"), c).await.unwrap();
    }
    for (i, id) in expect.iter().enumerate() {
        let e = tokio::time::timeout(Duration::from_secs(3), ev.recv())
            .await
            .unwrap_or_else(|_| panic!("event {i} not notified"))
            .unwrap();
        match &*e {
            ChangeEvent::Rows(r) => assert_eq!(&*r[0].id, id.as_str(), "event {i}"),
            ChangeEvent::Reset => panic!("reset"),
        }
    }
    assert_eq!(b.changes().borrow().get("consumers"), 6);
}

#[tokio::test]
async fn pg_schema_and_a_read_only_pool() {
    let name = TestServer::shared().fresh_database().await;
    let mut settings = settings(&name, Duration::from_millis(200)).await;
    settings.primary.schema = Some("Tollgate Data".into());
    // The "replica" is the same server here: what matters is that bulk reads use it.
    let mut ro = settings.primary.clone();
    ro.pool_size = 2;
    settings.read_only = Some(ro);
    let s = PostgresStore::connect(settings).await.unwrap();
    s.migrations_bootstrap().await.unwrap();
    let svc = row("services", json!({"name": "in-schema", "host": "a.com"}));
    s.insert(schema("services"), svc).await.unwrap();
    let data = s.load(&["services"]).await.unwrap();
    assert_eq!(data["services"][0]["name"], "in-schema");
    // The tables live in the configured schema, not in public.
    let (client, conn) = TestServer::shared()
        .options(&name)
        .pg_config("probe")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = client
        .query_one(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'services'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "Tollgate Data");
}

#[tokio::test]
async fn broadcasts_reach_every_node() {
    let (db, a) = open().await;
    let b = PostgresStore::connect(settings(&db.name, Duration::from_millis(200)).await)
        .await
        .unwrap();
    crate::conformance::broadcasts_reach_every_node(&a, &b).await;
}
