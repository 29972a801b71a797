//! The pipelined connection against a real redis-server (and a silent one for timeouts).

use super::*;
use std::process::{Child, Command, Stdio};

/// A redis-server on a free loopback port, killed (by its PID) when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start(port: u16, extra: &[&str]) -> Server {
        let port_arg = port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(extra)
            // Nothing is written (no snapshot, no append-only file).
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install -y redis-server; scripts/test installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child: Some(child),
            port,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn conf(port: u16) -> RedisConf {
    RedisConf {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        database: 0,
        timeout_ms: 1000,
        ssl: false,
        ssl_verify: false,
    }
}

const MINUTE: LocalWindow = LocalWindow {
    start_ms: 60_000,
    period: "minute",
    ttl: 60,
    limit: 0.0,
};
const HOUR: LocalWindow = LocalWindow {
    start_ms: 3_600_000,
    period: "hour",
    ttl: 3600,
    limit: 0.0,
};

fn count(
    c: &Arc<Coalescer>,
    prefix: &str,
    windows: &[LocalWindow],
) -> impl std::future::Future<Output = Answer> {
    let mut p = prefix.to_owned();
    let f = c.usage(&mut p, windows);
    assert_eq!(p, prefix, "the prefix is given back as it was");
    f
}

/// Many requests queued together: each is counted once in each window, and each sees its
/// own count before it (every count from 0 to n-1 exactly once); the first increment set
/// the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_counts() {
    let s = Server::start(free_port(), &[]);
    let c = Coalescer::new(conf(s.port));
    let n = 500;
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(count(&c, "ratelimit:a:b:id:", &[MINUTE, HOUR])))
        .collect();
    let mut minute = Vec::new();
    let mut hour = Vec::new();
    for t in tasks {
        let counts = t.await.unwrap().unwrap();
        minute.push(counts[0]);
        hour.push(counts[1]);
        assert_eq!(&counts[2..], &[0; 4]);
    }
    minute.sort_unstable();
    hour.sort_unstable();
    let all: Vec<u64> = (0..n).collect();
    assert_eq!(minute, all);
    assert_eq!(hour, all);
    assert_eq!(
        s.cli(&["GET", "ratelimit:a:b:id:60000:minute"]),
        n.to_string()
    );
    assert_eq!(
        s.cli(&["GET", "ratelimit:a:b:id:3600000:hour"]),
        n.to_string()
    );
    let ttl: i64 = s
        .cli(&["TTL", "ratelimit:a:b:id:60000:minute"])
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    let ttl: i64 = s
        .cli(&["TTL", "ratelimit:a:b:id:3600000:hour"])
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    // One after another: the next counts.
    let counts = count(&c, "ratelimit:a:b:id:", &[MINUTE]).await.unwrap();
    assert_eq!(counts[0], n);
}

/// Redis stopped with requests in flight and after: every one fails (none is answered
/// with counts), within the timeout; Redis back on its port: counting resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_fails_every_request_then_recovers() {
    let port = free_port();
    let mut s = Server::start(port, &[]);
    let c = Coalescer::new(conf(port));
    assert_eq!(count(&c, "k:", &[MINUTE]).await.unwrap()[0], 0);
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(count(&c, "k:", &[MINUTE])))
        .collect();
    s.stop();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap().is_ok() as usize;
    }
    let t0 = std::time::Instant::now();
    for _ in 0..20 {
        let r = count(&c, "k:", &[MINUTE]).await;
        assert!(r.is_err(), "{r:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // Those answered before the stop were really counted.
    let _s = Server::start(port, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = count(&c, "k:", &[MINUTE]).await;
        if r.is_ok() || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        r.unwrap()[0],
        0,
        "a fresh server counts from 0 ({ok} passed before)"
    );
}

/// A server that accepts and never answers: the request fails with a timeout, in about
/// `redis.timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            kept.push(s);
        }
    });
    let c = Coalescer::new(RedisConf {
        timeout_ms: 300,
        ..conf(port)
    });
    let t0 = std::time::Instant::now();
    let r = count(&c, "k:", &[MINUTE]).await;
    assert_eq!(r, Err("timeout".to_owned()));
    let e = t0.elapsed();
    assert!(
        e >= Duration::from_millis(250) && e < Duration::from_secs(2),
        "{e:?}"
    );
    held.abort();
}

/// ACL user and password, a database: the keys land there; a wrong password fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_database() {
    let s = Server::start(
        free_port(),
        &["--user", "rl", "on", ">pw", "~*", "&*", "+@all"],
    );
    let good = Coalescer::new(RedisConf {
        username: Some("rl".into()),
        password: Some("pw".into()),
        database: 2,
        ..conf(s.port)
    });
    assert_eq!(count(&good, "db:", &[MINUTE]).await.unwrap()[0], 0);
    assert_eq!(count(&good, "db:", &[MINUTE]).await.unwrap()[0], 1);
    let v = s.cli(&[
        "--user",
        "rl",
        "--pass",
        "pw",
        "--no-auth-warning",
        "-n",
        "2",
        "GET",
        "db:60000:minute",
    ]);
    assert_eq!(v, "2");
    let bad = Coalescer::new(RedisConf {
        username: Some("rl".into()),
        password: Some("nope".into()),
        ..conf(s.port)
    });
    let e = count(&bad, "db:", &[MINUTE]).await.unwrap_err();
    assert!(e.contains("WRONGPASS"), "{e}");
}

/// The task lives on the runtime of the request that started it: when that runtime ends,
/// a request on another runtime starts a new one.
#[test]
fn survives_the_runtime_that_started_it() {
    let s = Server::start(free_port(), &[]);
    let c = Coalescer::new(conf(s.port));
    for i in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let counts = rt.block_on(count(&c, "rt:", &[MINUTE])).unwrap();
        assert_eq!(counts[0], i);
    }
}

#[test]
fn parses_replies_and_waits_for_complete_ones() {
    assert_eq!(parse(b":12\r\n:3").unwrap(), Some((Reply::Int(12), 5)));
    assert_eq!(parse(b":12").unwrap(), None);
    assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Nil, 5)));
    assert_eq!(parse(b"$2\r\n42\r\n").unwrap(), Some((Reply::Int(42), 8)));
    assert_eq!(parse(b"$2\r\n42").unwrap(), None);
    assert_eq!(
        parse(b"-ERR wrong\r\n").unwrap(),
        Some((Reply::Error("ERR wrong".into()), 12))
    );
    assert_eq!(
        parse(b"+OK\r\n").unwrap(),
        Some((Reply::Status("OK".into()), 5))
    );
    assert!(parse(b"*1\r\n").is_err());
    assert!(parse(b":x\r\n").is_err());
}
