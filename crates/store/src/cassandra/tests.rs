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

#[tokio::test]
async fn broadcasts_reach_every_node() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_millis(200)).await;
    crate::conformance::broadcasts_reach_every_node(&a, &b).await;
}

/// Every page of `q` read through `stores` in turn (each page on the next store, as a
/// client going through a load balancer): the rows' ids and each page's length.
async fn page_through(
    stores: &[&CassandraStore],
    entity: &str,
    mut q: PageQuery,
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for turn in 0.. {
        let p = stores[turn % stores.len()]
            .page(schema(entity), &q)
            .await
            .unwrap();
        sizes.push(p.rows.len());
        ids.extend(p.rows.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        match p.next_offset {
            Some(o) => q.offset = Some(o),
            None => return (ids, sizes),
        }
    }
    unreachable!()
}

async fn insert_all(s: &CassandraStore, entity: &str, rows: Vec<tollgate_model::Row>) {
    use futures_util::StreamExt;
    futures_util::stream::iter(rows)
        .for_each_concurrent(16, |r| async move {
            s.insert(schema(entity), r).await.unwrap();
        })
        .await;
}

#[tokio::test]
async fn paging_states_move_between_stores_without_repeats_and_pages_are_full() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_secs(5)).await;
    // 250 services (no name: no unique claims), every fifth tagged "odd-one".
    let rows: Vec<_> = (0..250)
        .map(|i| {
            let tags = if i % 5 == 0 {
                json!(["odd-one"])
            } else {
                json!(["x"])
            };
            row(
                "services",
                json!({"host": format!("h{i}.com"), "tags": tags}),
            )
        })
        .collect();
    let mut all: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    all.sort();
    insert_all(&a, "services", rows).await;

    let q = PageQuery {
        size: 7,
        ..Default::default()
    };
    let (ids, sizes) = page_through(&[&a, &b], "services", q).await;
    // 35 full pages and one of 5: no page cut short, no entity twice or missed.
    assert_eq!(sizes.len(), 36, "{sizes:?}");
    assert!(sizes[..35].iter().all(|n| *n == 7), "{sizes:?}");
    assert_eq!(sizes[35], 5);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, all);

    // A tag filter keeps 50 of them: pages of 7 are full although Cassandra's reads
    // mostly hold rows that do not match.
    let q = PageQuery {
        size: 7,
        tags: Some(crate::TagFilter::All(vec!["odd-one".into()])),
        ..Default::default()
    };
    let (ids, sizes) = page_through(&[&b, &a], "services", q).await;
    assert_eq!(sizes, [7, 7, 7, 7, 7, 7, 7, 1]);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        50
    );
}

#[tokio::test]
async fn exactly_full_last_pages_have_no_next_nested_listings_too() {
    let (_k, s) = open().await;
    let svc = row("services", json!({"name": "parent", "host": "a.com"}));
    let sid = svc["id"].clone();
    s.insert(schema("services"), svc).await.unwrap();
    let routes = (0..14)
        .map(|i| {
            row(
                "routes",
                json!({"paths": [format!("/r{i}")], "service": {"id": sid}}),
            )
        })
        .collect();
    insert_all(&s, "routes", routes).await;
    for foreign in [None, Some(("service", sid.as_str().unwrap().to_string()))] {
        let q = PageQuery {
            size: 7,
            foreign: foreign.clone(),
            ..Default::default()
        };
        let (ids, sizes) = page_through(&[&s], "routes", q).await;
        assert_eq!(sizes, [7, 7], "{foreign:?}");
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            14
        );
    }
    // A listing of exactly `size` rows: one page, no `next`.
    let one = s
        .page(
            schema("routes"),
            &PageQuery {
                size: 14,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((one.rows.len(), one.next_offset), (14, None));
}

#[tokio::test]
async fn malformed_and_foreign_offsets_are_kongs_invalid_offset() {
    use super::paging::encode_token;
    use scylla::response::PagingState;
    let (_k, s) = open().await;
    for i in 0..4 {
        s.insert(
            schema("consumers"),
            row("consumers", json!({"username": format!("u{i}")})),
        )
        .await
        .unwrap();
    }
    let first = s
        .page(
            schema("consumers"),
            &PageQuery {
                size: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let token = first.next_offset.expect("a next page");
    let garbage = encode_token(
        "consumers",
        &PagingState::new_from_raw_bytes(&[0xff; 9][..]),
    )
    .unwrap();
    let cases = [
        ("services", "!!!".to_string(), "bad base64 encoding"),
        // A consumers token on the services listing.
        ("services", token, "Invalid value for the paging state"),
        // Ours, but Cassandra cannot read the state.
        ("consumers", garbage, "Invalid value for the paging state"),
    ];
    for (entity, offset, why) in cases {
        let q = PageQuery {
            size: 2,
            offset: Some(offset.clone()),
            ..Default::default()
        };
        let e = s.page(schema(entity), &q).await.unwrap_err();
        assert_eq!(e.http_status(), 400, "{offset}: {e:?}");
        assert_eq!(e.to_json()["name"], "invalid offset");
        assert_eq!(
            e.message(),
            format!("'{offset}' is not a valid offset: {why}")
        );
    }
}

/// The test node serves TLS and plaintext on one port (`optional`), with a certificate
/// for its IP address signed by the test CA.
#[tokio::test]
async fn tls_with_verification_against_the_trusted_ca_or_without_verification() {
    let node = TestCassandra::shared();
    let tls = |verify: bool, cas: Vec<std::path::PathBuf>| {
        let mut st = node.settings(&fresh_keyspace(), Duration::from_secs(5));
        st.ssl = true;
        st.ssl_verify = verify;
        st.trusted_cas = cas;
        st
    };
    let ca = super::test_server::test_ca();
    // Verified against lua_ssl_trusted_certificate's CA: works.
    let s = CassandraStore::connect(tls(true, vec![ca.clone()]))
        .await
        .unwrap();
    s.ping().await.unwrap();
    // Verified against the bundled web roots, which do not know the test CA: refused,
    // saying why and which keys decide it.
    let s = CassandraStore::connect(tls(true, Vec::new()))
        .await
        .unwrap();
    let e = s.ping().await.unwrap_err();
    let msg = e.message();
    assert!(msg.contains("certificate"), "{msg}");
    assert!(
        msg.contains("cassandra_ssl_verify") && msg.contains("lua_ssl_trusted_certificate"),
        "{msg}"
    );
    // Not verified (Kong's default): encrypted, and it works without the CA.
    let s = CassandraStore::connect(tls(false, Vec::new()))
        .await
        .unwrap();
    s.ping().await.unwrap();
    // A CA file that cannot be read is named.
    let s = CassandraStore::connect(tls(true, vec![ca.with_extension("missing")]))
        .await
        .unwrap();
    let msg = s.ping().await.unwrap_err().message().to_string();
    assert!(msg.contains("cannot read the trusted certificate"), "{msg}");
}

#[tokio::test]
async fn a_write_that_surely_failed_gives_its_claims_back_and_writes_nothing() {
    use super::conn::Kind;
    let (_k, s) = open().await;
    let svc = row("services", json!({"host": "a.com"}));
    let sid = svc["id"].clone();
    s.insert(schema("services"), svc).await.unwrap();
    // Without `refs`, the route's batch (its row, its reference, its event) is refused
    // before anything is written — after its name was claimed.
    s.conn()
        .ddl(&format!("DROP TABLE {}", s.conn().ks.t("refs")))
        .await
        .unwrap();
    let route = row(
        "routes",
        json!({"name": "r1", "paths": ["/r1"], "service": {"id": sid}}),
    );
    let rid = route["id"].as_str().unwrap().to_string();
    s.insert(schema("routes"), route).await.unwrap_err();
    let claims = s
        .conn()
        .rows(
            &format!("SELECT k FROM {}", s.conn().ks.t("uniques")),
            Kind::Read,
            (),
        )
        .await
        .unwrap();
    assert_eq!(claims.rows_num(), 0, "the name's claim was given back");
    assert!(s.select(schema("routes"), &rid).await.unwrap().is_none());
}

#[tokio::test]
async fn a_write_above_the_batch_size_limit_is_written_statement_by_statement() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_millis(100)).await;
    let mut ev = b.events();
    // ~80 KiB of tags: the row and its event exceed Cassandra's 50 KiB batch limit.
    let tags: Vec<String> = (0..800).map(|i| format!("{i:0>95}")).collect();
    let svc = row(
        "services",
        json!({"name": "big", "host": "a.com", "tags": tags}),
    );
    let id = svc["id"].as_str().unwrap().to_string();
    a.insert(schema("services"), svc).await.unwrap();
    let got = b.select(schema("services"), &id).await.unwrap().unwrap();
    assert_eq!(got["tags"].as_array().unwrap().len(), 800);
    // Its event still reaches the other store.
    let e = tokio::time::timeout(Duration::from_secs(5), ev.recv())
        .await
        .expect("polled")
        .unwrap();
    match &*e {
        ChangeEvent::Rows(r) => assert_eq!(&*r[0].id, id.as_str()),
        ChangeEvent::Reset => panic!("reset"),
    }
}
