use super::*;
use std::sync::atomic::AtomicI64;

/// A database in memory: counters by primary key, and a switch that makes it fail.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<(String, String, i64), i64>>,
    down: AtomicBool,
    batches: AtomicI64,
}

impl CounterBackend for Arc<Db> {
    fn increment(&self, _t: CounterTable, rows: Vec<CounterIncrement>) -> BoxFuture<Vec<i64>> {
        let db = self.clone();
        Box::pin(async move {
            if db.down.load(Ordering::Relaxed) {
                return Err("connection refused".into());
            }
            db.batches.fetch_add(1, Ordering::Relaxed);
            let mut m = db.rows.lock().unwrap();
            Ok(rows
                .into_iter()
                .map(|r| {
                    let v = m
                        .entry((r.identifier, r.period, r.period_date))
                        .or_insert(0);
                    *v += r.value;
                    *v
                })
                .collect())
        })
    }
    fn purge(&self, _now: i64) -> BoxFuture<()> {
        Box::pin(async { Ok(()) })
    }
}

fn window(key: &str) -> Window {
    Window {
        key: key.into(),
        ttl: 60,
    }
}

/// Counts one request in the minute window of `id` on node `c`, when under `limit`.
fn hit(c: &Cluster, id: &str, limit: u64) -> Result<u64, String> {
    let now = crate::rate_limiting_store::now_secs();
    let start = now - now % 60;
    let w = window(&format!("k:{id}:{start}"));
    let cw = [ClusterWindow {
        window: &w,
        period: "minute",
        start,
    }];
    let scope = Scope {
        table: CounterTable::RateLimiting,
        identifier: id,
        service_id: "s",
        route_id: "r",
    };
    c.count(&scope, id, &cw, |u| (u[0] < limit).then_some(1))
        .map(|u| u[0])
}

#[tokio::test]
async fn nodes_share_counters_through_the_database() {
    let db = Arc::new(Db::default());
    let a = Cluster::new(Arc::new(db.clone()));
    let b = Cluster::new(Arc::new(db.clone()));
    for _ in 0..3 {
        hit(&a, "x", 5).unwrap();
    }
    assert_eq!(
        hit(&a, "x", 5).unwrap(),
        3,
        "counted locally before any sync"
    );
    a.sync_once().await.unwrap();
    assert_eq!(
        db.batches.load(Ordering::Relaxed),
        1,
        "one batch for four requests"
    );
    // b learns a's count with its own first sync.
    assert_eq!(hit(&b, "x", 5).unwrap(), 0);
    b.sync_once().await.unwrap();
    // 4 from a, 1 from b: at the limit, so not counted and nothing more to send.
    assert_eq!(hit(&b, "x", 5).unwrap(), 5);
    b.sync_once().await.unwrap();
    assert_eq!(hit(&b, "x", 5).unwrap(), 5);
    assert_eq!(db.batches.load(Ordering::Relaxed), 2);
    let total = *db.rows.lock().unwrap().values().next().unwrap();
    assert_eq!(total, 5);
}

#[tokio::test]
async fn a_failing_database_answers_errors_and_keeps_increments() {
    let db = Arc::new(Db::default());
    let c = Cluster::new(Arc::new(db.clone()));
    hit(&c, "y", 100).unwrap();
    db.down.store(true, Ordering::Relaxed);
    assert!(c.sync_once().await.is_err());
    let e = hit(&c, "y", 100).unwrap_err();
    assert!(e.contains("connection refused"), "{e}");
    // Back: the kept increment is sent, and requests count again.
    db.down.store(false, Ordering::Relaxed);
    c.sync_once().await.unwrap();
    assert_eq!(hit(&c, "y", 100).unwrap(), 1);
    c.sync_once().await.unwrap();
    assert_eq!(*db.rows.lock().unwrap().values().next().unwrap(), 2);
}

#[tokio::test]
async fn the_sync_task_sends_soon_after_a_request() {
    let db = Arc::new(Db::default());
    let c = Arc::new(Cluster::new(Arc::new(db.clone())));
    let task = tokio::spawn(c.clone().run());
    hit(&c, "z", 10).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while db.rows.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not synced");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
}

#[tokio::test]
async fn with_a_sync_rate_requests_are_gathered_for_that_long() {
    let db = Arc::new(Db::default());
    let c = Arc::new(Cluster::with_interval(
        Arc::new(db.clone()),
        Duration::from_millis(300),
    ));
    let task = tokio::spawn(c.clone().run());
    for _ in 0..5 {
        hit(&c, "w", 10).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(db.rows.lock().unwrap().is_empty(), "sent before sync_rate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while db.rows.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        db.batches.load(Ordering::Relaxed),
        1,
        "one batch for five requests"
    );
    assert_eq!(*db.rows.lock().unwrap().values().next().unwrap(), 5);
    task.abort();
}
