//! Active health checks: one tokio task per upstream with
//! `healthchecks.active.*.interval > 0`. The task follows the upstream
//! across snapshot rebuilds (each build hands it the new balancer) and ends
//! when no snapshot holds the upstream any more. Target state lives in
//! [`super::state`], so it is the same state the request path reads.

use super::state::{Outcome, TargetState};
use super::{ActiveCfg, Balancer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

type Checkers = HashMap<String, watch::Sender<Weak<Balancer>>>;
static CHECKERS: LazyLock<Mutex<Checkers>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Starts the upstream's checker, or hands the running one the new balancer.
/// Needs a tokio runtime (outside one, e.g. in unit tests, nothing runs).
pub fn ensure_checker(b: &Arc<Balancer>) {
    if b.active.is_none() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut m = CHECKERS.lock().unwrap_or_else(|e| e.into_inner());
    // (checkers of removed upstreams have ended)
    m.retain(|_, tx| !tx.is_closed());
    if let Some(tx) = m.get(&b.id) {
        if tx.send(Arc::downgrade(b)).is_ok() {
            return;
        }
    }
    let (tx, rx) = watch::channel(Arc::downgrade(b));
    m.insert(b.id.clone(), tx);
    rt.spawn(run(rx));
}

async fn run(mut rx: watch::Receiver<Weak<Balancer>>) {
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        let tick = {
            let Some(b) = rx.borrow_and_update().upgrade() else {
                return;
            };
            let Some(cfg) = b.active.clone() else {
                return;
            };
            check_due(&b, &cfg, &mut last).await;
            [cfg.healthy_interval, cfg.unhealthy_interval]
                .into_iter()
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(10), Duration::from_secs(1))
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// One address to probe.
struct Job {
    /// The target's `target` and the address, for logs and `last`.
    key: String,
    host: String,
    addr: Option<SocketAddr>,
    state: Arc<TargetState>,
}

/// Probes the addresses whose interval (healthy or unhealthy, by their
/// state) has elapsed, `concurrency` at a time. A name's addresses are
/// probed one by one, each reporting to its own state.
async fn check_due(b: &Arc<Balancer>, cfg: &ActiveCfg, last: &mut HashMap<String, Instant>) {
    let now = Instant::now();
    let mut jobs = Vec::new();
    b.refresh_names().await;
    let plan = b.plan();
    for (i, t) in b.targets.iter().enumerate() {
        match (t.ip, &plan.sets[i]) {
            (Some(ip), _) if t.weight > 0 => jobs.push(Job {
                key: t.target.clone(),
                host: t.host.clone(),
                addr: Some(SocketAddr::new(ip, t.port)),
                state: t.state.clone(),
            }),
            // (Kong's healthchecker skips addresses of weight 0)
            (None, Some(set)) => {
                for (k, a) in set.addrs.iter().enumerate().filter(|(_, a)| a.weight > 0) {
                    jobs.push(Job {
                        key: super::address::address_key(&t.target, &a.ip, a.port),
                        host: t.host.clone(),
                        addr: set.socket(k).map(|(s, _)| s),
                        state: a.state.clone(),
                    })
                }
            }
            // (the request path marks the DNS error)
            (None, None) if t.weight > 0 => jobs.push(Job {
                key: t.target.clone(),
                host: t.host.clone(),
                addr: None,
                state: t.state.clone(),
            }),
            _ => {}
        }
    }
    drop(plan);
    jobs.retain(|j| {
        let every = if j.state.is_healthy() {
            cfg.healthy_interval
        } else {
            cfg.unhealthy_interval
        };
        !every.is_zero()
            && last
                .get(&j.key)
                .is_none_or(|l| now.duration_since(*l) >= every)
    });
    let tls = if cfg.kind == "https" {
        match crate::tls::client_config(cfg.https_verify, &[], b.client_cert.as_ref(), b"http/1.1")
        {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(upstream = %b.name, "health check TLS settings: {e}");
                return;
            }
        }
    } else {
        None
    };
    for chunk in jobs.chunks(cfg.concurrency) {
        let probes = chunk.iter().map(|j| {
            last.insert(j.key.clone(), now);
            let tls = tls.clone();
            async move { (j, probe(&j.host, j.addr, cfg, tls).await) }
        });
        for (j, outcome) in futures_util::future::join_all(probes).await {
            let Some(o) = outcome else { continue };
            if let Some(h) = j.state.report(o, &cfg.thresholds) {
                tracing::info!(upstream = %b.name, address = %j.key, healthy = h,
                    "active health check changed the target's state");
            }
        }
    }
}

/// One probe; `None` when the response status is in neither list.
async fn probe(
    host: &str,
    addr: Option<SocketAddr>,
    cfg: &ActiveCfg,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Option<Outcome> {
    let Some(addr) = addr else {
        return Some(Outcome::TcpFailure);
    };
    let fut = async {
        let tcp = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => return Some(Outcome::TcpFailure),
        };
        if cfg.kind == "tcp" {
            return Some(Outcome::Success);
        }
        let status = match tls {
            Some(tls) => {
                let sni = cfg.https_sni.clone().unwrap_or_else(|| host.to_owned());
                let name = rustls::pki_types::ServerName::try_from(sni).ok()?;
                match tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                {
                    Ok(s) => http_status(s, host, cfg).await,
                    Err(_) => return Some(Outcome::TcpFailure),
                }
            }
            None => http_status(tcp, host, cfg).await,
        };
        let Some(status) = status else {
            return Some(Outcome::TcpFailure);
        };
        if cfg.healthy_statuses.contains(&status) {
            Some(Outcome::Success)
        } else if cfg.unhealthy_statuses.contains(&status) {
            Some(Outcome::HttpFailure)
        } else {
            None
        }
    };
    match tokio::time::timeout(cfg.timeout, fut).await {
        Ok(o) => o,
        Err(_) => Some(Outcome::Timeout),
    }
}

/// Sends lua-resty-healthcheck's request (`GET <path> HTTP/1.0`, `Host`, the
/// configured headers) and reads the status code.
async fn http_status<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    cfg: &ActiveCfg,
) -> Option<u16> {
    let mut req = format!("GET {} HTTP/1.0\r\nHost: {host}\r\n", cfg.http_path);
    for (k, v) in &cfg.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = std::str::from_utf8(&buf).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}
