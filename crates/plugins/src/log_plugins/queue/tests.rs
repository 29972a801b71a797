//! Kong's queue semantics against a sender that records, fails or stalls.

use super::*;
use std::sync::atomic::AtomicUsize;

#[derive(Default)]
struct Rec {
    batches: Mutex<Vec<Vec<Bytes>>>,
    /// Fail this many sends first.
    fail_first: AtomicUsize,
    stall: bool,
}

#[derive(Default)]
struct TestSender;

impl Sender for TestSender {
    type Conf = Arc<Rec>;
    async fn send(&mut self, c: &Arc<Rec>, batch: &[Bytes]) -> Result<(), String> {
        if c.stall {
            std::future::pending::<()>().await;
        }
        if c.fail_first
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("receiver down".into());
        }
        lock(&c.batches).push(batch.to_vec());
        Ok(())
    }
}

fn entries(n: usize) -> impl Iterator<Item = Bytes> {
    (0..n).map(|i| Bytes::from(format!("{{\"n\":{i}}}")))
}

async fn wait_for(what: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !what() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn batches_coalesce_up_to_max_batch_size() {
    let rec = Arc::new(Rec::default());
    let conf = QueueConf {
        max_batch_size: 3,
        max_coalescing_delay: 0.3,
        ..QueueConf::default()
    };
    let q = queue::<TestSender>("t-batches", "t".into(), conf, rec.clone());
    for e in entries(7) {
        q.enqueue(e).unwrap();
    }
    wait_for(|| q.stats().sent.load(Ordering::Relaxed) == 7).await;
    let sizes: Vec<usize> = lock(&rec.batches).iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let batches = lock(&rec.batches);
    let first: Vec<&[u8]> = batches[0].iter().map(|b| &b[..]).collect();
    assert_eq!(
        first,
        [&b"{\"n\":0}"[..], b"{\"n\":1}", b"{\"n\":2}"],
        "in order"
    );
}

#[tokio::test]
async fn a_failed_batch_is_retried_until_it_goes() {
    let rec = Arc::new(Rec {
        fail_first: AtomicUsize::new(3),
        ..Rec::default()
    });
    let q = queue::<TestSender>("t-retry", "t".into(), QueueConf::default(), rec.clone());
    q.enqueue(Bytes::from_static(b"x")).unwrap();
    wait_for(|| q.stats().sent.load(Ordering::Relaxed) == 1).await;
    assert_eq!(lock(&rec.batches).len(), 1);
    assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_batch_is_dropped_after_max_retry_time() {
    let rec = Arc::new(Rec {
        fail_first: AtomicUsize::new(usize::MAX),
        ..Rec::default()
    });
    let conf = QueueConf {
        max_retry_time: 0.1,
        initial_retry_delay: 0.01,
        ..QueueConf::default()
    };
    let q = queue::<TestSender>("t-giveup", "t".into(), conf, rec.clone());
    q.enqueue(Bytes::from_static(b"x")).unwrap();
    q.enqueue(Bytes::from_static(b"y")).unwrap();
    wait_for(|| q.stats().dropped.load(Ordering::Relaxed) == 2).await;
    assert!(lock(&rec.batches).is_empty());
}

#[tokio::test]
async fn a_stalled_sender_costs_at_most_max_entries() {
    let rec = Arc::new(Rec {
        stall: true,
        ..Rec::default()
    });
    let conf = QueueConf {
        max_entries: 10,
        ..QueueConf::default()
    };
    let q = queue::<TestSender>("t-stall", "t".into(), conf, rec);
    for e in entries(1000) {
        q.enqueue(e).unwrap();
        assert!(q.waiting() <= 10);
    }
    // One entry is in the stalled send; ten wait; the rest were dropped oldest first.
    let dropped = q.stats().dropped.load(Ordering::Relaxed);
    assert!((989..=990).contains(&dropped), "{dropped}");
}

#[tokio::test]
async fn max_bytes_bounds_the_queue() {
    let rec = Arc::new(Rec {
        stall: true,
        ..Rec::default()
    });
    let conf = QueueConf {
        max_bytes: Some(20),
        ..QueueConf::default()
    };
    let q = queue::<TestSender>("t-bytes", "t".into(), conf, rec);
    assert!(
        q.enqueue(Bytes::from(vec![b'x'; 21])).is_err(),
        "larger than max_bytes"
    );
    for _ in 0..10 {
        q.enqueue(Bytes::from(vec![b'x'; 8])).unwrap();
        assert!(lock(&q.shared.buf).bytes <= 20);
    }
}

#[tokio::test]
async fn instances_share_a_queue_by_name_and_it_ends_with_them() {
    let rec = Arc::new(Rec::default());
    let a = queue::<TestSender>("t-share", "a".into(), QueueConf::default(), rec.clone());
    let b = queue::<TestSender>("t-share", "b".into(), QueueConf::default(), rec.clone());
    assert!(Arc::ptr_eq(&a.shared, &b.shared));
    let shared = a.shared.clone();
    drop(a);
    drop(b);
    wait_for(|| !shared.running.load(Ordering::Acquire)).await;
    assert!(!lock(&QUEUES).contains_key("t-share"));
    // A new instance gets a new queue.
    let c = queue::<TestSender>("t-share", "c".into(), QueueConf::default(), rec);
    assert!(!Arc::ptr_eq(&c.shared, &shared));
}

#[tokio::test]
async fn changed_settings_get_a_new_queue() {
    let rec = Arc::new(Rec::default());
    let a = queue::<TestSender>("t-conf", "a".into(), QueueConf::default(), rec.clone());
    let b = queue::<TestSender>("t-conf", "b".into(), QueueConf::default(), rec.clone());
    assert!(Arc::ptr_eq(&a.shared, &b.shared));
    let bigger = QueueConf {
        max_batch_size: 10,
        ..QueueConf::default()
    };
    let c = queue::<TestSender>("t-conf", "c".into(), bigger, rec);
    assert!(!Arc::ptr_eq(&a.shared, &c.shared));
    assert_eq!(c.shared.conf.max_batch_size, 10);
}
