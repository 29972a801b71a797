//! Behaviour every database backend must share, run against each (SQLite in
//! `sqlite/tests.rs`, PostgreSQL in `postgres/tests.rs`, Cassandra in `cassandra/tests.rs`): the same calls must give the
//! same rows, errors and change events.

use crate::rules::now;
use crate::{
    ChangeEvent, ChangeEvents, ChangeOp, PageQuery, Purge, Row, Store, TagFilter, WriteMode,
};
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_model::schema::{Context, Operation};
use tollgate_model::{entities, EntitySchema};

pub(crate) fn schema(name: &str) -> &'static EntitySchema {
    entities::by_name(name).unwrap()
}

pub(crate) fn row(name: &str, v: Value) -> Row {
    let Value::Object(m) = v else { panic!() };
    schema(name)
        .process(m, &Context::new(Operation::Insert))
        .unwrap()
}

/// The next event, waiting for backends that deliver after the commit.
async fn next_event(ev: &mut ChangeEvents) -> Arc<ChangeEvent> {
    tokio::time::timeout(std::time::Duration::from_secs(10), ev.recv())
        .await
        .expect("no change event within 10 s")
        .expect("event channel")
}

/// Runs every shared test against the store `open` returns.
#[macro_export]
#[doc(hidden)]
macro_rules! conformance_tests {
    ($open:expr) => {
        #[tokio::test]
        async fn insert_select_unique_and_primary_key() {
            let (_guard, s) = $open.await;
            $crate::conformance::insert_select_unique_and_primary_key(&s).await;
        }
        #[tokio::test]
        async fn foreign_keys_cascade_and_restrict() {
            let (_guard, s) = $open.await;
            $crate::conformance::foreign_keys_cascade_and_restrict(&s).await;
        }
        #[tokio::test]
        async fn paging_tags_and_cache_keys() {
            let (_guard, s) = $open.await;
            $crate::conformance::paging_tags_and_cache_keys(&s).await;
        }
        #[tokio::test]
        async fn counters_increment_atomically() {
            let (_guard, s) = $open.await;
            $crate::conformance::counters_increment_atomically(&s).await;
        }
        #[tokio::test]
        async fn ttl_credentials_expire() {
            let (_guard, s) = $open.await;
            $crate::conformance::ttl_credentials_expire(&s).await;
        }
        #[tokio::test]
        async fn scan_pages_rows_as_stored_text() {
            let (_guard, s) = $open.await;
            $crate::conformance::scan_pages_rows_as_stored_text(&s).await;
        }
        #[tokio::test]
        async fn writes_emit_row_events_in_commit_order_with_cascades() {
            let (_guard, s) = $open.await;
            $crate::conformance::writes_emit_row_events_in_commit_order_with_cascades(&s).await;
        }
        #[tokio::test]
        async fn a_row_and_its_children_are_one_write() {
            let (_guard, s) = $open.await;
            $crate::conformance::a_row_and_its_children_are_one_write(&s).await;
        }
        #[tokio::test]
        async fn import_is_all_or_nothing() {
            let (_guard, s) = $open.await;
            $crate::conformance::import_is_all_or_nothing(&s).await;
        }
        #[tokio::test]
        async fn broadcasts_reach_this_node_once_and_are_no_row_events() {
            let (_guard, s) = $open.await;
            $crate::conformance::broadcasts_reach_this_node_once_and_are_no_row_events(&s).await;
        }
        #[tokio::test]
        async fn admin_tokens_are_kept_apart_from_entities() {
            let (_guard, s) = $open.await;
            $crate::conformance::admin_tokens_are_kept_apart_from_entities(&s).await;
        }
    };
}

pub(crate) async fn admin_tokens_are_kept_apart_from_entities(s: &dyn Store) {
    let mut changes = s.changes();
    let token = |name: &str, read_only| crate::AdminToken {
        name: name.into(),
        hash: format!("{:064x}", name.len()),
        read_only,
        created_at: 1_700_000_000,
    };
    s.admin_token_create(token("ops", false)).await.unwrap();
    s.admin_token_create(token("auditor", true)).await.unwrap();
    let e = s.admin_token_create(token("ops", true)).await.unwrap_err();
    assert_eq!(e.code(), tollgate_model::ErrorCode::UniqueViolation);
    assert_eq!(
        s.admin_tokens().await.unwrap(),
        vec![token("auditor", true), token("ops", false)]
    );
    // The counter moves (on PostgreSQL once the cluster event is replayed).
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while changes.borrow_and_update().get(crate::ADMIN_TOKENS) < 2 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the admin_tokens counter moved");
    assert!(s.admin_token_revoke("ops").await.unwrap());
    assert!(!s.admin_token_revoke("ops").await.unwrap());
    assert_eq!(
        s.admin_tokens().await.unwrap(),
        vec![token("auditor", true)]
    );
    // Never part of a configuration.
    assert!(!s.load_all().await.unwrap().contains_key("admin_tokens"));
}

pub(crate) async fn insert_select_unique_and_primary_key(s: &dyn Store) {
    let svc = row("services", json!({"name": "a", "host": "example.com"}));
    let id = svc["id"].as_str().unwrap().to_string();
    s.insert(schema("services"), svc.clone()).await.unwrap();
    assert_eq!(
        s.select(schema("services"), &id).await.unwrap().unwrap()["host"],
        "example.com"
    );
    assert_eq!(
        s.select_by_field(schema("services"), "name", "a")
            .await
            .unwrap()
            .unwrap()["id"],
        id
    );

    let e = s.insert(schema("services"), svc).await.unwrap_err();
    assert_eq!(e.to_json()["code"], 3);
    let e = s
        .insert(
            schema("services"),
            row("services", json!({"name": "a", "host": "b.com"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.message(), "UNIQUE violation detected on '{name=\"a\"}'");
    assert_eq!(e.http_status(), 409);
}

pub(crate) async fn foreign_keys_cascade_and_restrict(s: &dyn Store) {
    let svc = row("services", json!({"host": "example.com"}));
    let sid = svc["id"].as_str().unwrap().to_string();
    let missing = row(
        "routes",
        json!({"paths": ["/"], "service": {"id": "6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a"}}),
    );
    let e = s.insert(schema("routes"), missing).await.unwrap_err();
    assert_eq!(
        e.message(),
        "the foreign key '{id=\"6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a\"}' does not reference an existing 'services' entity."
    );
    s.insert(schema("services"), svc).await.unwrap();
    let r = row("routes", json!({"paths": ["/"], "service": {"id": sid}}));
    s.insert(schema("routes"), r).await.unwrap();
    // A service with routes cannot go (Kong restricts), its plugins would cascade.
    let e = s.delete(schema("services"), &sid).await.unwrap_err();
    assert_eq!(
        e.message(),
        "an existing 'routes' entity references this 'services' entity"
    );

    let c = row("consumers", json!({"username": "bob"}));
    let cid = c["id"].as_str().unwrap().to_string();
    s.insert(schema("consumers"), c).await.unwrap();
    s.insert(
        schema("keyauth_credentials"),
        row(
            "keyauth_credentials",
            json!({"consumer": {"id": cid}, "key": "k1"}),
        ),
    )
    .await
    .unwrap();
    s.delete(schema("consumers"), &cid).await.unwrap();
    assert!(s
        .select_by_field(schema("keyauth_credentials"), "key", "k1")
        .await
        .unwrap()
        .is_none());
}

pub(crate) async fn paging_tags_and_cache_keys(s: &dyn Store) {
    for i in 0..25 {
        let tags = if i % 2 == 0 {
            json!(["even", "all"])
        } else {
            json!(["odd", "all"])
        };
        s.insert(
            schema("consumers"),
            row(
                "consumers",
                json!({"username": format!("u{i}"), "tags": tags}),
            ),
        )
        .await
        .unwrap();
    }
    let mut q = PageQuery {
        size: 10,
        ..Default::default()
    };
    let mut seen = 0;
    loop {
        let p = s.page(schema("consumers"), &q).await.unwrap();
        seen += p.rows.len();
        match p.next_offset {
            Some(o) => q.offset = Some(o),
            None => break,
        }
    }
    assert_eq!(seen, 25);
    let q = PageQuery {
        size: 100,
        tags: Some(TagFilter::All(vec!["even".into(), "all".into()])),
        ..Default::default()
    };
    assert_eq!(
        s.page(schema("consumers"), &q).await.unwrap().rows.len(),
        13
    );
    let q = PageQuery {
        size: 100,
        tags: Some(TagFilter::Any(vec!["even".into(), "odd".into()])),
        ..Default::default()
    };
    assert_eq!(
        s.page(schema("consumers"), &q).await.unwrap().rows.len(),
        25
    );

    let c = s
        .select_by_field(schema("consumers"), "username", "u1")
        .await
        .unwrap()
        .unwrap();
    let cid = c["id"].clone();
    s.insert(
        schema("acls"),
        row("acls", json!({"consumer": {"id": cid}, "group": "g"})),
    )
    .await
    .unwrap();
    let e = s
        .insert(
            schema("acls"),
            row("acls", json!({"consumer": {"id": cid}, "group": "g"})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.to_json()["code"], 5);
}

pub(crate) async fn ttl_credentials_expire(s: &dyn Store) {
    let c = row("consumers", json!({"username": "bob"}));
    let cid = c["id"].clone();
    s.insert(schema("consumers"), c).await.unwrap();
    let mut k = row(
        "keyauth_credentials",
        json!({"consumer": {"id": cid}, "key": "short"}),
    );
    // Two seconds: expiry has one-second resolution and a networked store's insert
    // takes a good part of one.
    k.insert("ttl".into(), json!(2));
    let out = s.insert(schema("keyauth_credentials"), k).await.unwrap();
    assert!(out["ttl"].as_i64().unwrap() <= 2);
    assert!(s
        .select_by_field(schema("keyauth_credentials"), "key", "short")
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert!(s
        .select_by_field(schema("keyauth_credentials"), "key", "short")
        .await
        .unwrap()
        .is_none());
}

pub(crate) async fn scan_pages_rows_as_stored_text(s: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = row("consumers", json!({ "username": format!("u{i}") }));
        ids.push(c["id"].as_str().unwrap().to_string());
        s.insert(schema("consumers"), c).await.unwrap();
    }
    ids.sort();
    let first = s.scan("consumers", None, 3).await.unwrap();
    assert_eq!(first.rows.len(), 3);
    let rest = s.scan("consumers", first.next.as_deref(), 3).await.unwrap();
    assert_eq!(rest.rows.len(), 2);
    assert!(rest.next.is_none());
    let mut got: Vec<&str> = first
        .rows
        .iter()
        .chain(&rest.rows)
        .map(|r| &*r.id)
        .collect();
    got.sort();
    assert_eq!(got, ids);
    let first = first.rows;
    let parsed: Row = serde_json::from_str(&first[0].text).unwrap();
    assert_eq!(parsed["id"].as_str(), Some(&*first[0].id));
    assert!(first[0].expires_at.is_none());
    assert!(s.scan("nope", None, 1).await.is_err());
}

pub(crate) async fn writes_emit_row_events_in_commit_order_with_cascades(s: &dyn Store) {
    let mut ev = s.events();
    let c = row("consumers", json!({"username": "alice"}));
    let cid = c["id"].as_str().unwrap().to_string();
    s.insert(schema("consumers"), c).await.unwrap();
    let mut k = row(
        "keyauth_credentials",
        json!({"key": "k1", "consumer": {"id": cid}}),
    );
    k.insert("ttl".into(), json!(100));
    let kid = k["id"].as_str().unwrap().to_string();
    s.insert(schema("keyauth_credentials"), k.clone())
        .await
        .unwrap();
    let mut k2 = k.clone();
    k2.insert("key".into(), json!("k2"));
    s.update(schema("keyauth_credentials"), k2).await.unwrap();
    s.delete(schema("consumers"), &cid).await.unwrap();

    // A feed that could not read once (a pool timeout on a loaded machine) catches up in
    // order and then also says Reset ("reload to be sure"): the rows still come, in order.
    async fn next_rows(ev: &mut ChangeEvents) -> Vec<crate::RowChange> {
        loop {
            if let ChangeEvent::Rows(r) = &*next_event(ev).await {
                return r.clone();
            }
        }
    }
    let created = next_rows(&mut ev).await;
    assert_eq!(created.len(), 1);
    assert_eq!((created[0].entity, &*created[0].id), ("consumers", &*cid));
    assert_eq!(created[0].op, ChangeOp::Upsert);
    assert!(created[0].old.is_none());

    let cred = next_rows(&mut ev).await;
    let new = cred[0].new.as_ref().unwrap();
    assert!(new.text.contains("\"k1\""));
    assert!(new.expires_at.unwrap() > now(), "absolute expiry");

    let updated = next_rows(&mut ev).await;
    assert!(updated[0].old.as_ref().unwrap().text.contains("\"k1\""));
    assert!(updated[0].new.as_ref().unwrap().text.contains("\"k2\""));

    // The cascade: the credential goes first, then its consumer, in one commit.
    let deleted = next_rows(&mut ev).await;
    let what: Vec<(&str, &str, ChangeOp)> =
        deleted.iter().map(|r| (r.entity, &*r.id, r.op)).collect();
    assert_eq!(
        what,
        [
            ("keyauth_credentials", &*kid, ChangeOp::Delete),
            ("consumers", &*cid, ChangeOp::Delete)
        ]
    );
    assert!(deleted[0].old.as_ref().unwrap().text.contains("\"k2\""));
    assert!(deleted.iter().all(|r| r.new.is_none()));

    // Deleting a missing row commits nothing to announce.
    s.delete(schema("consumers"), &cid).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(ev.try_recv().is_err());

    s.replace_all(crate::EntitySet::default()).await.unwrap();
    assert_eq!(*next_event(&mut ev).await, ChangeEvent::Reset);
}

/// `write_family` (a certificate and its SNIs): a refused child leaves nothing behind,
/// not even a claimed unique value, and a good write lands whole with one event; an
/// update that swaps children is one write too.
pub(crate) async fn a_row_and_its_children_are_one_write(s: &dyn Store) {
    let service = |name: &str| row("services", json!({"name": name, "host": "a.com"}));
    let route = |name: &str, sid: &Value| {
        row(
            "routes",
            json!({"name": name, "paths": [format!("/{name}")], "service": {"id": sid}}),
        )
    };
    let base = s.insert(schema("services"), service("base")).await.unwrap();
    s.insert(schema("routes"), route("taken", &base["id"]))
        .await
        .unwrap();
    let refused = service("refused");
    let kids = vec![
        (schema("routes"), route("free", &refused["id"])),
        (schema("routes"), route("taken", &refused["id"])),
    ];
    let e = s
        .write_family(
            schema("services"),
            refused.clone(),
            WriteMode::Insert,
            kids,
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tollgate_model::ErrorCode::UniqueViolation,
        "{e:?}"
    );
    let id = refused["id"].as_str().unwrap();
    assert!(s.select(schema("services"), id).await.unwrap().is_none());
    assert!(s
        .select_by_field(schema("routes"), "name", "free")
        .await
        .unwrap()
        .is_none());
    // The name the refused write wanted is free again.
    s.insert(schema("routes"), route("free", &base["id"]))
        .await
        .unwrap();

    let mut ev = s.events();
    let parent = service("parent");
    let kids: Vec<_> = ["one", "two"]
        .iter()
        .map(|n| (schema("routes"), route(n, &parent["id"])))
        .collect();
    let mut want: Vec<String> = std::iter::once(&parent)
        .chain(kids.iter().map(|(_, r)| r))
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let saved = s
        .write_family(
            schema("services"),
            parent.clone(),
            WriteMode::Insert,
            kids,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(saved["name"], "parent");
    for n in ["one", "two"] {
        let r = s
            .select_by_field(schema("routes"), "name", n)
            .await
            .unwrap();
        assert_eq!(r.unwrap()["service"]["id"], parent["id"]);
    }
    // One event carries the parent and its children (events of earlier writes may
    // still be arriving on backends that deliver after the commit).
    let mut got: Vec<String> = loop {
        if let ChangeEvent::Rows(rows) = &*next_event(&mut ev).await {
            if rows.iter().any(|r| *r.id == *want[0]) {
                break rows.iter().map(|r| r.id.to_string()).collect();
            }
        }
    };
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // An update that drops "one" and adds "taken" is refused whole: "one" stays, the
    // parent keeps its host.
    let one = s
        .select_by_field(schema("routes"), "name", "one")
        .await
        .unwrap()
        .unwrap();
    let one_id = one["id"].as_str().unwrap().to_string();
    let mut moved = parent.clone();
    moved.insert("host".into(), json!("b.com"));
    let e = s
        .write_family(
            schema("services"),
            moved.clone(),
            WriteMode::Update,
            vec![(schema("routes"), route("taken", &parent["id"]))],
            vec![(schema("routes"), one_id.clone())],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tollgate_model::ErrorCode::UniqueViolation,
        "{e:?}"
    );
    let pid = parent["id"].as_str().unwrap();
    let kept = s.select(schema("services"), pid).await.unwrap().unwrap();
    assert_eq!(kept["host"], "a.com");
    assert!(s.select(schema("routes"), &one_id).await.unwrap().is_some());
    // The same swap with a free name lands whole, and the dropped name is free again.
    s.write_family(
        schema("services"),
        moved,
        WriteMode::Update,
        vec![(schema("routes"), route("three", &parent["id"]))],
        vec![(schema("routes"), one_id.clone())],
    )
    .await
    .unwrap();
    let kept = s.select(schema("services"), pid).await.unwrap().unwrap();
    assert_eq!(kept["host"], "b.com");
    assert!(s.select(schema("routes"), &one_id).await.unwrap().is_none());
    let three = s
        .select_by_field(schema("routes"), "name", "three")
        .await
        .unwrap();
    assert_eq!(three.unwrap()["service"]["id"], parent["id"]);
    s.insert(schema("routes"), route("one", &base["id"]))
        .await
        .unwrap();
}

pub(crate) async fn import_is_all_or_nothing(s: &dyn Store) {
    use crate::{Dataset, EntitySet};
    let mut good = Dataset::new();
    good.insert(
        "services".into(),
        (0..150)
            .map(|i| {
                row(
                    "services",
                    json!({"name": format!("s{i}"), "host": "a.com"}),
                )
            })
            .collect(),
    );
    s.import(EntitySet::from_dataset(&good)).await.unwrap();
    // A name clash deep inside a large import (past the first pipelined batch).
    let mut bad = Dataset::new();
    let mut rows: Vec<Row> = (0..100)
        .map(|i| {
            row(
                "services",
                json!({"name": format!("n{i}"), "host": "b.com"}),
            )
        })
        .collect();
    rows.push(row("services", json!({"name": "s7", "host": "c.com"})));
    bad.insert("services".into(), rows);
    let e = s.import(EntitySet::from_dataset(&bad)).await.unwrap_err();
    assert_eq!(e.to_json()["code"], 5, "{e:?}");
    assert_eq!(e.message(), "UNIQUE violation detected on '{name=\"s7\"}'");
    // A route pointing nowhere.
    let mut dangling = Dataset::new();
    dangling.insert(
        "routes".into(),
        vec![row(
            "routes",
            json!({"paths": ["/"], "service": {"id": "6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a"}}),
        )],
    );
    let e = s
        .import(EntitySet::from_dataset(&dangling))
        .await
        .unwrap_err();
    assert_eq!(e.to_json()["code"], 4, "{e:?}");
    let all = s.load_all().await.unwrap();
    assert_eq!(all["services"].len(), 150);
    assert!(all["services"].iter().all(|r| r["host"] == "a.com"));
    assert!(all["routes"].is_empty());
}

/// The cluster policy's counters: increments add up per primary key, answer the totals in
/// the order given, concurrent batches lose nothing, and ended windows are purged.
pub(crate) async fn counters_increment_atomically<S: Store>(s: &S) {
    use crate::{CounterIncrement, CounterTable};
    let inc = |period: &str, value: i64, expires_at: i64| CounterIncrement {
        identifier: "10.0.0.1".into(),
        period: period.into(),
        period_date: 1_700_000_000,
        service_id: "s".into(),
        route_id: "r".into(),
        value,
        expires_at,
    };
    let t = CounterTable::RateLimiting;
    let live = now() + 60;
    let got = s
        .increment_counters(t, vec![inc("second", 1, live), inc("minute", 3, live)])
        .await
        .unwrap();
    assert_eq!(got, vec![1, 3]);
    let got = s
        .increment_counters(t, vec![inc("minute", 2, live), inc("second", 1, live)])
        .await
        .unwrap();
    assert_eq!(got, vec![5, 2], "totals in the order asked");
    // The other table is separate.
    let other = s
        .increment_counters(
            CounterTable::ResponseRateLimiting,
            vec![inc("minute", 1, live)],
        )
        .await
        .unwrap();
    assert_eq!(other, vec![1]);
    // Concurrent batches over the same rows (in opposite orders) all count.
    let batch = |i: usize| {
        if i.is_multiple_of(2) {
            vec![inc("hour", 1, live), inc("day", 1, live)]
        } else {
            vec![inc("day", 1, live), inc("hour", 1, live)]
        }
    };
    let all = futures_util::future::join_all((0..8).map(|i| s.increment_counters(t, batch(i))));
    for r in all.await {
        r.unwrap();
    }
    let got = s
        .increment_counters(t, vec![inc("hour", 0, live), inc("day", 0, live)])
        .await
        .unwrap();
    assert_eq!(got, vec![8, 8]);
    assert!(s
        .increment_counters(t, Vec::new())
        .await
        .unwrap()
        .is_empty());
    // A window that ended is purged; a live one stays.
    s.increment_counters(t, vec![inc("year", 4, now() - 10)])
        .await
        .unwrap();
    s.purge_counters(now()).await.unwrap();
    let got = s
        .increment_counters(t, vec![inc("year", 1, live), inc("minute", 0, live)])
        .await
        .unwrap();
    assert_eq!(got, vec![1, 5]);
}

/// Records what a channel's subscriber receives.
pub(crate) fn recorder(s: &dyn Store, channel: &str) -> Arc<std::sync::Mutex<Vec<Purge>>> {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    s.subscribe(
        channel,
        Arc::new(move |p: &Purge| g.lock().unwrap().push(p.clone())),
    );
    got
}

fn purges() -> [Purge; 3] {
    [
        Purge::Key {
            instance: "kong_db_cache".into(),
            key: "k:1\"/é".into(),
        },
        Purge::Instance("kong_db_cache".into()),
        Purge::All,
    ]
}

/// Longer than a feed cycle (200 ms in the tests): what a node would deliver twice, or
/// as a row event, has been by then.
async fn after_a_feed_cycle() {
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
}

pub(crate) async fn broadcasts_reach_this_node_once_and_are_no_row_events(s: &dyn Store) {
    let mut ev = s.events();
    let changes = s.changes().borrow().clone();
    let got = recorder(s, "proxy-cache:purge");
    let twice = recorder(s, "proxy-cache:purge");
    let other = recorder(s, "other");
    for p in purges() {
        s.broadcast("proxy-cache:purge", p.clone()).await.unwrap();
        // Delivered here before broadcast returned.
        assert_eq!(got.lock().unwrap().last(), Some(&p));
    }
    after_a_feed_cycle().await;
    assert_eq!(*got.lock().unwrap(), purges(), "each once, in order");
    assert_eq!(*twice.lock().unwrap(), purges(), "every subscriber");
    assert!(other.lock().unwrap().is_empty(), "only its channel");
    assert!(
        matches!(
            ev.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "no change event"
    );
    assert_eq!(*s.changes().borrow(), changes, "no counter moved");
}

/// Two stores on one database (PostgreSQL, Cassandra): a broadcast on either reaches the
/// other's subscribers, once each.
pub(crate) async fn broadcasts_reach_every_node(a: &dyn Store, b: &dyn Store) {
    let (on_a, on_b) = (recorder(a, "c"), recorder(b, "c"));
    for p in purges() {
        a.broadcast("c", p).await.unwrap();
    }
    b.broadcast("c", Purge::Instance("from-b".into()))
        .await
        .unwrap();
    let mut want = purges().to_vec();
    want.push(Purge::Instance("from-b".into()));
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while on_a.lock().unwrap().len() < 4 || on_b.lock().unwrap().len() < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a got {:?}, b got {:?}", on_a.lock(), on_b.lock()));
    after_a_feed_cycle().await;
    // Each node in the order it learnt them: its own at once, the other's when replayed.
    for got in [&on_a, &on_b] {
        let mut got = got.lock().unwrap().clone();
        got.sort_by_key(|p| format!("{p:?}"));
        let mut want = want.clone();
        want.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(got, want);
    }
}
