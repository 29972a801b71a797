//! Under load, ten configuration changes per second cause no failed and no
//! stalled request (issue 3, Performance).

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_proxy::Snapshot;

const RUN: Duration = Duration::from_secs(3);
const STALL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_swaps_per_second_under_load() {
    let up = echo_upstream().await;
    let s = service("127.0.0.1", up.port(), json!({}));
    let hot = route(Some(&s), json!({"paths": ["/hot"]}));
    let base = vec![("services", s.clone()), ("routes", hot)];
    let p = start(&dataset(base.clone()), &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    // three HTTP/1.1 keep-alive clients and one h2c client
    for i in 0..4 {
        let (c, url) = if i == 3 {
            let c = reqwest::Client::builder()
                .no_proxy()
                .http2_prior_knowledge()
                .build()
                .unwrap();
            (c, format!("http://{}/hot/{i}", p.addrs[1]))
        } else {
            (client(), p.url(&format!("/hot/{i}")))
        };
        let (stop, ok) = (stop.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = tokio::time::timeout(STALL, async {
                    let resp = c.get(&url).send().await?;
                    let status = resp.status();
                    let v: serde_json::Value = resp.json().await?;
                    Ok::<_, reqwest::Error>((status, v))
                })
                .await;
                worst = worst.max(t.elapsed());
                match r {
                    Ok(Ok((status, v))) if status == 200 && v["path"] == format!("/{i}") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok((status, v))) => failures.push(format!("{status}: {v}")),
                    Ok(Err(e)) => failures.push(format!("error: {e}")),
                    Err(_) => failures.push(format!("stalled over {STALL:?}")),
                }
            }
            (worst, failures)
        }));
    }

    // 10 swaps a second: each adds or removes unrelated routes (and a
    // service), so the router, route table and services all change.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut swaps = 0u32;
    let first_version = p.snapshot.load().version();
    while started.elapsed() < RUN {
        tick.tick().await;
        swaps += 1;
        let mut entries = base.clone();
        let other = service(
            "127.0.0.1",
            up.port(),
            json!({"name": format!("other-{swaps}")}),
        );
        for k in 0..(swaps % 7) * 20 {
            entries.push((
                "routes",
                route(
                    Some(&other),
                    json!({"paths": [format!("/unrelated/{swaps}/{k}")], "hosts": [format!("h{k}.test")]}),
                ),
            ));
        }
        entries.push(("services", other));
        let d = dataset(entries);
        // built off the request threads, like the store's snapshot builder
        let snap = tokio::task::spawn_blocking(move || Snapshot::build(&d).unwrap())
            .await
            .unwrap();
        p.snapshot.store(Arc::new(snap));
    }
    stop.store(true, Ordering::Relaxed);

    let mut worst = Duration::ZERO;
    for c in clients {
        let (w, failures) = c.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        worst = worst.max(w);
    }
    let done = ok.load(Ordering::Relaxed);
    assert!(swaps >= 25, "only {swaps} swaps in {RUN:?}");
    assert!(p.snapshot.load().version() >= first_version + u64::from(swaps));
    assert!(done >= 100, "only {done} requests completed: no real load");
    assert!(worst < STALL, "slowest request took {worst:?}");
    eprintln!("{done} requests, {swaps} swaps, slowest {worst:?}");
    p.shutdown().await;
}
