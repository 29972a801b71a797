//! Faults with real processes under a bounded load on loopback (issue 13): SIGTERM while
//! requests are in flight, SIGKILL during Admin writes, a full disk under the prefix, and ten
//! configuration changes a second (the store-dependent ones on each database). The database outage and a
//! target dying under load live with their subjects (outage.rs, upstreams.rs). Each test
//! prints its figures; tests/hardening/REPORT.md keeps them.

use crate::support::{echo_upstream, pages, pairs, Db, Gateway, Load};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers every request after `delay`, with a body of 64 KiB so a
/// truncated response shows.
pub(crate) async fn slow_upstream(delay: Duration) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let body = vec![b'x'; 64 * 1024];
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}")
}

fn signal(g: &Gateway, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(g.pid().expect("running") as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut g = Gateway::start().await;
    let up = slow_upstream(Duration::from_millis(1500)).await;
    let (s, _) = g
        .post("/services", json!({"name": "slow", "url": up}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post("/services/slow/routes", json!({"paths": ["/slow"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    g.proxy_until("/slow", None, |s| s == StatusCode::OK).await;

    let url = format!("{}/slow", g.proxy);
    let inflight: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (g.client.clone(), url.clone());
            tokio::spawn(async move {
                let r = c.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = r.status();
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, body.len()))
            })
        })
        .collect();
    // All twenty reach the upstream, then the gateway is told to stop.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t0 = Instant::now();
    signal(&g, nix::sys::signal::Signal::SIGTERM);
    let mut done = 0;
    for h in inflight {
        let (status, len) = h.await.unwrap().expect("an in-flight request failed");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(len, 64 * 1024, "a response was cut short");
        done += 1;
    }
    let drained = t0.elapsed();
    assert_eq!(g.stop(), Some(0), "{}", g.stderr());
    eprintln!("SIGTERM with 20 requests in flight: {done} completed in full, drained in {drained:?}, exit 0");
    // Stopped: nothing listens any more.
    let after = reqwest::Client::new().get(&url).send().await;
    assert!(after.is_err(), "the proxy still answers after exit");
}

/// Ids and names acknowledged (201) by a gateway that was killed with SIGKILL while four
/// writers created consumers and certificates with SNIs (two rows in one write), once
/// `KILL_AFTER` consumers were acknowledged (a slow store takes longer to get there).
/// Acknowledged consumers, and acknowledged certificates with the SNI names each may have.
type Written = (Vec<String>, Vec<(String, Vec<String>)>);

async fn write_until_killed(g: &mut Gateway) -> Written {
    const KILL_AFTER: usize = 40;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, admin, stop) = (g.client.clone(), g.admin.clone(), stop.clone());
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut consumers = Vec::new();
                let mut certs = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{w}-{n}");
                    let r = c
                        .post(format!("{admin}/consumers"))
                        .json(&json!({"username": name}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            consumers.push(name)
                        }
                        _ => break,
                    }
                    if n % 4 == 0 {
                        let host = format!("h{w}-{n}.example.test");
                        let (cert, key) = cert_pair(&host);
                        let r = c
                            .post(format!("{admin}/certificates"))
                            .json(&json!({"cert": cert, "key": key, "snis": [host]}))
                            .send()
                            .await;
                        let id = match r {
                            Ok(r) if r.status() == StatusCode::CREATED => {
                                let v: Value = r.json().await.unwrap();
                                v["id"].as_str().unwrap().to_string()
                            }
                            _ => break,
                        };
                        certs.push((id.clone(), vec![host]));
                        // Every other certificate moves to a new SNI: the old one goes and
                        // the new one comes in the same write. Until acknowledged, either
                        // name may be the one stored.
                        if n % 8 == 0 {
                            let moved = format!("m{w}-{n}.example.test");
                            certs.last_mut().unwrap().1.push(moved.clone());
                            let r = c
                                .patch(format!("{admin}/certificates/{id}"))
                                .json(&json!({"snis": [moved.clone()]}))
                                .send()
                                .await;
                            match r {
                                Ok(r) if r.status() == StatusCode::OK => {
                                    certs.last_mut().unwrap().1 = vec![moved]
                                }
                                _ => break,
                            }
                        }
                    }
                }
                (consumers, certs)
            })
        })
        .collect();
    let t0 = Instant::now();
    while acked.load(Ordering::Relaxed) < KILL_AFTER {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} consumers acknowledged in a minute",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    g.kill();
    stop.store(true, Ordering::Relaxed);
    let (mut consumers, mut certs) = (Vec::new(), Vec::new());
    for w in writers {
        let (c, k) = w.await.unwrap();
        consumers.extend(c);
        certs.extend(k);
    }
    (consumers, certs)
}

fn cert_pair(name: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

async fn all_rows(g: &Gateway, path: &str) -> Vec<Value> {
    pages(g, &format!("{path}?size=1000")).await.concat()
}

/// After a restart every acknowledged write is there, and no write is half there: every
/// certificate has its SNI and every SNI its certificate.
async fn check_after_restart(g: &Gateway, consumers: &[String], certs: &[(String, Vec<String>)]) {
    let names: HashSet<String> = all_rows(g, "/consumers")
        .await
        .iter()
        .map(|c| c["username"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = consumers.iter().filter(|c| !names.contains(*c)).collect();
    assert!(lost.is_empty(), "acknowledged consumers lost: {lost:?}");
    let cert_rows = all_rows(g, "/certificates").await;
    let cert_ids: HashSet<&str> = cert_rows
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for (id, hosts) in certs {
        assert!(
            cert_ids.contains(id.as_str()),
            "acknowledged certificate {id} lost"
        );
        let mut found = 0;
        for host in hosts {
            let (s, sni) = g.get(&format!("/snis/{host}")).await;
            if s == StatusCode::OK {
                assert_eq!(sni["certificate"]["id"], id.as_str());
                found += 1;
            }
        }
        assert_eq!(
            found, 1,
            "certificate {id} has {found} of its possible SNIs {hosts:?}: a lost or half-applied write"
        );
    }
    let snis = all_rows(g, "/snis").await;
    for sni in &snis {
        let cert = sni["certificate"]["id"].as_str().unwrap();
        assert!(cert_ids.contains(cert), "SNI {sni} without its certificate");
    }
    for c in &cert_rows {
        let id = c["id"].as_str().unwrap();
        assert!(
            snis.iter().any(|s| s["certificate"]["id"] == id),
            "certificate {id} without its SNI: a half-written write"
        );
    }
    eprintln!(
        "{}: after SIGKILL: {} acknowledged consumers and {} certificates all present ({} consumers, {} certificates stored)",
        g.database,
        consumers.len(),
        certs.len(),
        names.len(),
        cert_rows.len()
    );
}

async fn sigkill_during_admin_writes_loses_nothing_acknowledged(db: Db) {
    let database = db.fresh().await;
    let env = pairs(&database.env);
    let dir = tempfile::tempdir().unwrap();
    let mut g = Gateway::launch(dir.path().to_path_buf(), &env).await;
    let (consumers, certs) = write_until_killed(&mut g).await;
    let g = Gateway::launch(dir.path().to_path_buf(), &env).await;
    check_after_restart(&g, &consumers, &certs).await;
}

/// A small filesystem of its own for the prefix (tmpfs; the tests run as root).
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs as the gateway's prefix and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path, _dir: dir }
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.path.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC: {e}");
                break;
            }
        }
        // The last bytes too: fill to the last block.
        while f.write_all(&[0u8; 512]).is_ok() {}
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

fn used_bytes(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_writes_clearly_and_keeps_serving() {
    let disk = SmallDisk::mount("8m");
    let prefix = disk.path.join("prefix");
    std::fs::create_dir(&prefix).unwrap();
    let mut g = Gateway::launch(prefix.clone(), &[]).await;
    let (up, _h) = echo_upstream().await;
    let (s, _) = g
        .post("/services", json!({"name": "echo", "url": up}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post(
            "/services/echo/routes",
            json!({"name": "r", "paths": ["/echo"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for n in 0..20 {
        let (s, _) = g
            .post("/consumers", json!({"username": format!("before-{n}")}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    g.proxy_until("/echo", None, |s| s == StatusCode::OK).await;

    let filler = disk.fill();
    eprintln!("disk full: filler {} bytes", used_bytes(&filler));
    // Writes fail with a clear answer (several, until the database's free pages run out).
    let mut refused = None;
    for n in 0..2000 {
        let (s, body) = g
            .post(
                "/consumers",
                json!({"username": format!("during-{n}-{}", "x".repeat(200))}),
            )
            .await;
        if s != StatusCode::CREATED {
            refused = Some((n, s, body));
            break;
        }
    }
    let (accepted, status, body) = refused.expect("writes never failed on a full disk");
    eprintln!("disk full: {accepted} writes fitted in free pages, then {status}: {body}");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains("disk") && msg.contains("full"), "{body}");
    // Reads and proxying go on.
    let (s, list) = g.get("/consumers?size=1000").await;
    assert_eq!(s, StatusCode::OK);
    assert!(list["data"].as_array().unwrap().len() >= 20);
    for _ in 0..50 {
        let r = g
            .client
            .get(format!("{}/echo", g.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Space again: writes work, and after a restart nothing is corrupted.
    std::fs::remove_file(&filler).unwrap();
    let (s, body) = g.post("/consumers", json!({"username": "after"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(g.stop(), Some(0));
    let g = Gateway::launch(prefix.clone(), &[]).await;
    let names: HashSet<String> = all_rows(&g, "/consumers")
        .await
        .iter()
        .map(|c| c["username"].as_str().unwrap().to_string())
        .collect();
    for n in 0..20 {
        assert!(names.contains(&format!("before-{n}")));
    }
    assert!(names.contains("after"));
    let (s, _) = g.get("/routes/r").await;
    assert_eq!(s, StatusCode::OK);
    drop(g);
}

/// Forty Admin API changes paced at ten a second (slower when the store is: the figures
/// say) while four clients proxy without pause: not one request fails.
async fn ten_changes_a_second_fail_no_request(db: Db) {
    let g = Gateway::start_on(db, &[]).await;
    let (up, _h) = echo_upstream().await;
    let (s, _) = g
        .post("/services", json!({"name": "echo", "url": up}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = g
        .post(
            "/services/echo/routes",
            json!({"name": "hot", "paths": ["/hot"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    g.proxy_until("/hot", None, |s| s == StatusCode::OK).await;

    let urls = (0..4).map(|i| format!("{}/hot/{i}", g.proxy));
    let load = Load::start(&g.client, urls, Duration::ZERO);
    let t0 = Instant::now();
    let mut changes = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // A slow change delays the next ones rather than bunching them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while changes < 40 {
        tick.tick().await;
        let n = changes;
        // Routes come and go, the hot route's service and plugins change.
        let (s, body) = match n % 4 {
            0 => {
                g.post(
                    "/services/echo/routes",
                    json!({"name": format!("c{n}"), "paths": [format!("/c{n}")]}),
                )
                .await
            }
            1 => (g.delete(&format!("/routes/c{}", n - 1)).await, Value::Null),
            2 => {
                g.patch(
                    "/services/echo",
                    json!({"retries": 5 + (n % 3), "read_timeout": 30000 + n}),
                )
                .await
            }
            _ => {
                g.post(
                    "/routes/hot/plugins",
                    json!({"name": "correlation-id", "config": {"header_name": format!("x-c{n}")}}),
                )
                .await
            }
        };
        assert!(s.is_success(), "change {n}: {s} {body}");
        if n % 4 == 3 {
            let id = body["id"].as_str().unwrap().to_string();
            assert!(g.delete(&format!("/plugins/{id}")).await.is_success());
        }
        changes += 1;
    }
    let elapsed = t0.elapsed();
    load.finish(&format!(
        "{}: {changes} changes in {elapsed:?} under load",
        g.database
    ))
    .await;
}

crate::on_each_database!(
    sigkill_during_admin_writes_loses_nothing_acknowledged,
    ten_changes_a_second_fail_no_request
);
