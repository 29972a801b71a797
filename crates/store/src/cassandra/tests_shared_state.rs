//! What two stores on one keyspace share besides entities: Admin API tokens (one winner
//! per name, changes announced to every node) and the `cluster` rate-limiting counters.

use super::conn::{decode, Kind};
use super::tests::{open, store};
use crate::{AdminToken, CounterIncrement, CounterTable, Store, ADMIN_TOKENS};
use scylla::value::Counter;
use std::time::Duration;

fn token(name: &str, hash: &str) -> AdminToken {
    AdminToken {
        name: name.into(),
        hash: hash.into(),
        read_only: false,
        created_at: 1_700_000_000,
    }
}

#[tokio::test]
async fn admin_tokens_have_one_owner_per_name_and_reach_other_stores() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_millis(100)).await;
    let mut changes = b.changes();
    let before = changes.borrow_and_update().get(ADMIN_TOKENS);
    // The same name through both stores at once: exactly one is kept.
    let (ra, rb) = tokio::join!(
        a.admin_token_create(token("ops", "aa")),
        b.admin_token_create(token("ops", "bb"))
    );
    assert_eq!(
        [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{ra:?} {rb:?}"
    );
    let loser = ra.err().or(rb.err()).unwrap();
    assert_eq!(loser.code(), tollgate_model::ErrorCode::UniqueViolation);
    let kept = a.admin_tokens().await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(b.admin_tokens().await.unwrap(), kept);
    // A token made through `a` moves `b`'s counter (its cluster event is polled).
    a.admin_token_create(token("auditor", "cc")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while changes.borrow_and_update().get(ADMIN_TOKENS) < before + 2 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("b heard of a's token");
    assert!(a.admin_token_revoke("auditor").await.unwrap());
    assert!(!b.admin_token_revoke("auditor").await.unwrap());
    // Never an entity: exports do not carry them.
    assert!(!a.load_all().await.unwrap().contains_key("admin_tokens"));
}

#[tokio::test]
async fn counters_are_shared_between_stores_and_purged_by_expiry() {
    let (_k, a) = open().await;
    let b = store(a.settings().keyspace.as_str(), Duration::from_secs(5)).await;
    let now = crate::rules::now();
    let inc = |value: i64, expires_at: i64| CounterIncrement {
        identifier: "10.0.0.9".into(),
        period: "minute".into(),
        period_date: now - now % 60,
        service_id: "s".into(),
        route_id: "r".into(),
        value,
        expires_at,
    };
    let t = CounterTable::RateLimiting;
    let live = now + 120;
    let both = futures_util::future::join_all(
        (0..10).map(|i| if i % 2 == 0 { &a } else { &b }.increment_counters(t, vec![inc(1, live)])),
    )
    .await;
    assert!(both.iter().all(|r| r.is_ok()), "{both:?}");
    assert_eq!(
        b.increment_counters(t, vec![inc(0, live)]).await.unwrap(),
        vec![10]
    );
    // The other plugin's counter with the same key is another counter.
    let other = a
        .increment_counters(CounterTable::ResponseRateLimiting, vec![inc(2, live)])
        .await
        .unwrap();
    assert_eq!(other, vec![2]);
    // A purge at the window's expiry keeps it; one past it deletes it (read from the
    // table: an increment, even of 0, would bring a deleted counter back, which is why
    // only ended windows are purged).
    let stored = || async {
        let cql = format!("SELECT value FROM {}", a.conn().ks.t("counters"));
        let r = a.conn().rows(&cql, Kind::Read, ()).await.unwrap();
        let mut v: Vec<i64> = decode::<(Counter,)>(&r)
            .unwrap()
            .into_iter()
            .map(|(c,)| c.0)
            .collect();
        v.sort();
        v
    };
    a.purge_counters(live).await.unwrap();
    assert_eq!(stored().await, vec![2, 10]);
    b.purge_counters(live + 1).await.unwrap();
    assert_eq!(stored().await, Vec::<i64>::new());
}
