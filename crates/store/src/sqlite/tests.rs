use super::*;
use crate::conformance::{row, schema};
use serde_json::json;

crate::conformance_tests!(open());

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    assert_eq!(s.migrations_bootstrap().await.unwrap(), MIGRATIONS.to_vec());
    (dir, s)
}

#[tokio::test]
async fn import_is_all_or_nothing_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.migrations_bootstrap().await.unwrap();
        let mut good = Dataset::new();
        good.insert(
            "services".into(),
            vec![row("services", json!({"name": "s1", "host": "a.com"}))],
        );
        s.import(EntitySet::from_dataset(&good)).await.unwrap();
        let mut bad = Dataset::new();
        bad.insert(
            "services".into(),
            vec![
                row("services", json!({"name": "s2", "host": "a.com"})),
                row("services", json!({"name": "s1", "host": "b.com"})),
            ],
        );
        let e = s.import(EntitySet::from_dataset(&bad)).await.unwrap_err();
        assert_eq!(e.to_json()["code"], 5, "{e:?}");
    }
    let s = SqliteStore::open(&path).unwrap();
    assert!(s.migrations_status().await.unwrap().pending.is_empty());
    let all = s.load_all().await.unwrap();
    let names: Vec<&str> = all["services"]
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["s1"]);
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_it_missed_events() {
    let (_d, s) = open().await;
    let mut ev = s.events();
    for i in 0..crate::EVENT_CAPACITY + 1 {
        let c = row("consumers", json!({ "username": format!("u{i}") }));
        s.insert(schema("consumers"), c).await.unwrap();
    }
    assert!(matches!(
        ev.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(1))
    ));
}
