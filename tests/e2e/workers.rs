//! The data plane on `nginx_worker_processes` threads, each with its own current-thread
//! runtime (crates/proxy/src/worker.rs): many connections at once are all served, every
//! worker takes a share of them, and SIGTERM still drains the requests in flight.

use crate::faults::slow_upstream;
use crate::support::{echo_upstream, Gateway};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// CPU time so far (ns, from schedstat) of each data-plane worker thread of `pid`.
fn worker_cpu(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with("proxy-worker-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
        let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
        out.insert(comm.to_string(), ns);
    }
    out
}

/// Listening sockets on `port` (IPv4), from /proc/net/tcp.
fn listening_sockets(port: u16) -> usize {
    let local = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_on_one_shared_socket() {
    two_workers_serve_many_connections_and_drain_on_sigterm(&[], 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_each_on_its_own_reuseport_socket() {
    let listen = ("TOLLGATE_PROXY_LISTEN", "127.0.0.1:{proxy_port} reuseport");
    two_workers_serve_many_connections_and_drain_on_sigterm(&[listen], 2).await;
}

/// `sockets`: how many listening sockets the proxy port should have.
async fn two_workers_serve_many_connections_and_drain_on_sigterm(
    env: &[(&str, &str)],
    sockets: usize,
) {
    const CONNS: usize = 64;
    const PER_CONN: usize = 25;
    const SLOW: usize = 16;
    let (echo, _h) = echo_upstream().await;
    let slow = slow_upstream(Duration::from_millis(1500)).await;
    let mut env = env.to_vec();
    env.push(("TOLLGATE_NGINX_WORKER_PROCESSES", "2"));
    let mut g = Gateway::start_with(&env).await;
    for (name, url, path) in [("echo", &echo, "/echo"), ("slow", &slow, "/slow")] {
        let (s, _) = g.post("/services", json!({"name": name, "url": url})).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = g
            .post(
                &format!("/services/{name}/routes"),
                json!({"paths": [path]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    g.proxy_until("/echo", None, |s| s == StatusCode::OK).await;
    g.proxy_until("/slow", None, |s| s == StatusCode::OK).await;
    let port: u16 = g.proxy.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        listening_sockets(port),
        sockets,
        "sockets on the proxy port"
    );
    let pid = g.pid().unwrap();
    let before = worker_cpu(pid);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["proxy-worker-1", "proxy-worker-2"],
        "the data-plane threads"
    );

    // Many connections at once, each with its keep-alive requests.
    let url = format!("{}/echo/x", g.proxy);
    let t0 = Instant::now();
    let load: Vec<_> = (0..CONNS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                for _ in 0..PER_CONN {
                    let r = c.get(&url).send().await.map_err(|e| e.to_string())?;
                    let status = r.status();
                    let body = r.bytes().await.map_err(|e| e.to_string())?;
                    if status != StatusCode::OK || !body.starts_with(b"{") {
                        return Err(format!("{status}: {body:?}"));
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in load {
        t.await.unwrap().expect("a request over the workers failed");
    }
    let took = t0.elapsed();
    let after = worker_cpu(pid);
    let used: Vec<u64> = after.iter().map(|(k, v)| v - before[k]).collect();
    let total: u64 = used.iter().sum();
    eprintln!(
        "{} requests on {CONNS} connections in {took:?}; worker CPU (ms): {:?}",
        CONNS * PER_CONN,
        used.iter().map(|n| n / 1_000_000).collect::<Vec<_>>()
    );
    // (a loose bound: a worker the machine leaves unscheduled for a while takes less)
    for (w, n) in after.keys().zip(&used) {
        assert!(
            *n * 20 >= total,
            "{w} took {n} ns of the workers' {total} ns: the connections went to one worker"
        );
    }

    // SIGTERM with requests in flight on both workers: each completes in full.
    let url = format!("{}/slow", g.proxy);
    let inflight: Vec<_> = (0..SLOW)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client().get(&url).send().await.map_err(|e| e.to_string())?;
                let status = r.status();
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, body.len()))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    for h in inflight {
        let (status, len) = h.await.unwrap().expect("an in-flight request failed");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(len, 64 * 1024, "a response was cut short");
    }
    assert_eq!(g.stop(), Some(0), "{}", g.stderr());
    let after = reqwest::Client::new()
        .get(format!("{}/echo", g.proxy))
        .send()
        .await;
    assert!(after.is_err(), "the proxy still answers after exit");
}
