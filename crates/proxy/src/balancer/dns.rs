//! Name resolution for targets whose host is a name, as Kong does it
//! (`dns_order` LAST,SRV,A,CNAME): an SRV lookup first (its records give the
//! ports and the names to resolve), else A/AAAA. Answers are cached until
//! their TTL runs out (hickory's `valid_until`); the nameservers are Kong's
//! `dns_resolver` key, or the system's.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Instant;

/// A name's addresses, valid until `until`.
#[derive(Debug)]
pub struct Resolved {
    /// Address, and the SRV record's target name (for `use_srv_name`).
    pub addrs: Vec<(SocketAddr, Option<String>)>,
    until: Instant,
    next: AtomicUsize,
}

impl Resolved {
    /// The next address, round-robin.
    pub fn pick(&self) -> Option<&(SocketAddr, Option<String>)> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        self.addrs.get(i)
    }
}

static SERVERS: OnceLock<Vec<SocketAddr>> = OnceLock::new();
static RESOLVER: OnceLock<Result<TokioResolver, String>> = OnceLock::new();
type Cache = HashMap<(String, u16), Arc<Resolved>>;
static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Parses Kong's `dns_resolver` (`ip[:port]`, comma-separated; port 53).
pub fn parse_servers(v: &str) -> Result<Vec<SocketAddr>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("invalid dns_resolver entry: {s}"))
        })
        .collect()
}

/// Sets the nameservers (before the first lookup; later calls are ignored).
pub fn configure(servers: Vec<SocketAddr>) {
    let _ = SERVERS.set(servers);
}

fn resolver() -> Result<&'static TokioResolver, String> {
    RESOLVER
        .get_or_init(|| {
            let servers = SERVERS.get().cloned().unwrap_or_default();
            let builder = if servers.is_empty() {
                TokioResolver::builder_tokio().map_err(|e| e.to_string())?
            } else {
                let ns = servers
                    .iter()
                    .map(|a| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = a.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = a.port();
                        NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), ns),
                    TokioRuntimeProvider::default(),
                )
            };
            builder.build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The cached answer for `name`, even if expired (health reports).
pub fn cached(name: &str, port: u16) -> Option<Arc<Resolved>> {
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(name.to_owned(), port))
        .cloned()
}

/// `name`'s addresses (SRV, else A/AAAA with `port`), from the cache while
/// their TTL lasts.
pub async fn resolve(name: &str, port: u16) -> Result<Arc<Resolved>, String> {
    let key = (name.to_owned(), port);
    if let Some(r) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .filter(|r| r.until > Instant::now())
    {
        return Ok(r.clone());
    }
    let r = Arc::new(lookup(name, port).await?);
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, r.clone());
    Ok(r)
}

async fn lookup(name: &str, port: u16) -> Result<Resolved, String> {
    let res = resolver()?;
    if let Ok(srv) = res.srv_lookup(name).await {
        let mut until = srv.valid_until();
        let mut addrs = Vec::new();
        for rec in srv.answers() {
            let RData::SRV(s) = &rec.data else { continue };
            let target = s.target.to_utf8();
            let target = target.trim_end_matches('.').to_owned();
            if let Ok(ips) = res.lookup_ip(target.as_str()).await {
                until = until.min(ips.valid_until());
                for ip in ips.iter() {
                    addrs.push((SocketAddr::new(ip, s.port), Some(target.clone())));
                }
            }
        }
        if !addrs.is_empty() {
            return Ok(Resolved {
                addrs,
                until,
                next: AtomicUsize::new(0),
            });
        }
    }
    let ips = res
        .lookup_ip(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let addrs: Vec<_> = ips
        .iter()
        .map(|ip| (SocketAddr::new(ip, port), None))
        .collect();
    if addrs.is_empty() {
        return Err(format!("{name}: no addresses"));
    }
    Ok(Resolved {
        addrs,
        until: ips.valid_until(),
        next: AtomicUsize::new(0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_parse() {
        let s = super::parse_servers("127.0.0.1:5353, 10.0.0.1").unwrap();
        assert_eq!(s[0].port(), 5353);
        assert_eq!(s[1].port(), 53);
        assert!(super::parse_servers("nope").is_err());
    }
}
