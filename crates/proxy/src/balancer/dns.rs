//! Name resolution for upstream targets and service hosts, as Kong's DNS
//! client does it: the record types of `dns_order` in turn (LAST, the type
//! that last answered for the name; SRV, whose records give ports and names
//! to resolve; A; AAAA; CNAME, which hickory already follows inside A/AAAA
//! answers), names in `dns_hostsfile` answered from that file, the
//! nameservers of `dns_resolver` (else the system's). Answers are cached
//! until their TTL runs out (hickory's `valid_until`).

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A name's addresses, valid until `until`.
#[derive(Debug)]
pub struct Resolved {
    /// Address, and the SRV record's target name (for `use_srv_name`).
    pub addrs: Vec<(SocketAddr, Option<String>)>,
    until: Instant,
    next: AtomicUsize,
}

impl Resolved {
    fn new(addrs: Vec<(SocketAddr, Option<String>)>, until: Instant) -> Resolved {
        Resolved {
            addrs,
            until,
            next: AtomicUsize::new(0),
        }
    }

    /// The next address, round-robin (Kong's `toip`).
    pub fn pick(&self) -> Option<&(SocketAddr, Option<String>)> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        self.addrs.get(i)
    }

    /// Whether the answer's TTL still runs.
    pub fn fresh(&self) -> bool {
        self.until > Instant::now()
    }
}

/// A record type of `dns_order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Last,
    Srv,
    A,
    Aaaa,
    Cname,
}

/// The `dns_*` settings the resolver follows.
#[derive(Debug)]
struct Settings {
    servers: Vec<SocketAddr>,
    order: Vec<Kind>,
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            servers: Vec::new(),
            order: parse_order("LAST,SRV,A,CNAME"),
            hosts: HashMap::new(),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static RESOLVER: OnceLock<Result<TokioResolver, String>> = OnceLock::new();
/// name → (port, answer); looked up by `&str`, so a hit allocates nothing.
type Cache = HashMap<String, Vec<(u16, Arc<Resolved>)>>;
static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// name → the type that last answered (`LAST`).
static LAST: LazyLock<Mutex<HashMap<String, Kind>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// Hosts-file answers do not expire (Kong keeps them for the process's life).
const HOSTS_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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

/// Parses `dns_order` (validated by the config loader; unknown entries dropped).
fn parse_order(v: &str) -> Vec<Kind> {
    v.split(',')
        .filter_map(|s| match s.trim().to_ascii_uppercase().as_str() {
            "LAST" => Some(Kind::Last),
            "SRV" => Some(Kind::Srv),
            "A" => Some(Kind::A),
            "AAAA" => Some(Kind::Aaaa),
            "CNAME" => Some(Kind::Cname),
            _ => None,
        })
        .collect()
}

/// Parses a hosts file: `ip name [alias…]`, `#` comments; the first lines win.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut parts = line.split_whitespace();
        let Some(ip) = parts.next().and_then(|s| s.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in parts {
            let v = out.entry(name.to_ascii_lowercase()).or_default();
            if !v.contains(&ip) {
                v.push(ip);
            }
        }
    }
    out
}

/// Sets the resolver from Kong's `dns_resolver`, `dns_order` and
/// `dns_hostsfile` (before the first lookup; later calls are ignored).
pub fn configure(
    servers: Vec<SocketAddr>,
    order: Option<&str>,
    hostsfile: Option<&str>,
) -> Result<(), String> {
    let hosts = match hostsfile.filter(|p| !p.is_empty()) {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => parse_hosts(&t),
            // Kong starts without the file, and says so.
            Err(e) => {
                tracing::warn!("dns_hostsfile {p}: {e}");
                HashMap::new()
            }
        },
        None => HashMap::new(),
    };
    let order = parse_order(order.unwrap_or("LAST,SRV,A,CNAME"));
    if order.is_empty() {
        return Err("dns_order: no record type to try".into());
    }
    let _ = SETTINGS.set(Settings {
        servers,
        order,
        hosts,
    });
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

fn resolver() -> Result<&'static TokioResolver, String> {
    RESOLVER
        .get_or_init(|| {
            let servers = &settings().servers;
            let mut builder = if servers.is_empty() {
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
            // `dns_hostsfile` is read by us, not the system's hosts file.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder.build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn cache_get(name: &str, port: u16) -> Option<Arc<Resolved>> {
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)?
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, r)| r.clone())
}

/// The cached answer for `name`, even if expired (health reports).
pub fn cached(name: &str, port: u16) -> Option<Arc<Resolved>> {
    cache_get(name, port)
}

/// `name`'s addresses (types in `dns_order`, `port` for A/AAAA answers),
/// from the cache while their TTL lasts.
pub async fn resolve(name: &str, port: u16) -> Result<Arc<Resolved>, String> {
    if let Some(r) = cache_get(name, port).filter(|r| r.fresh()) {
        return Ok(r);
    }
    let r = Arc::new(lookup(name, port).await?);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let v = c.entry(name.to_owned()).or_default();
    v.retain(|(p, _)| *p != port);
    v.push((port, r.clone()));
    Ok(r)
}

/// A name resolved from `slot` while its answer is fresh (no lock, no
/// allocation), else through [`resolve`], refilling `slot`.
pub async fn resolve_in(
    slot: &arc_swap::ArcSwapOption<Resolved>,
    name: &str,
    port: u16,
) -> Result<Arc<Resolved>, String> {
    if let Some(r) = slot.load_full().filter(|r| r.fresh()) {
        return Ok(r);
    }
    let r = resolve(name, port).await?;
    slot.store(Some(r.clone()));
    Ok(r)
}

async fn lookup(name: &str, port: u16) -> Result<Resolved, String> {
    let s = settings();
    let key = name.to_ascii_lowercase();
    if let Some(ips) = s.hosts.get(&key) {
        // Kong's client answers hosts-file names first (their type is
        // preset as LAST): IPv4 entries, else IPv6 ones.
        let v4: Vec<_> = ips.iter().filter(|i| i.is_ipv4()).collect();
        let pick = if v4.is_empty() {
            ips.iter().collect()
        } else {
            v4
        };
        let addrs = pick
            .into_iter()
            .map(|ip| (SocketAddr::new(*ip, port), None))
            .collect();
        return Ok(Resolved::new(addrs, Instant::now() + HOSTS_TTL));
    }
    let res = resolver()?;
    let last = LAST
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    let mut err = format!("{name}: no record type to try");
    for kind in &s.order {
        let kind = match kind {
            Kind::Last => match last {
                Some(k) => k,
                None => continue,
            },
            k => *k,
        };
        let r = match kind {
            Kind::Srv => srv(res, name).await,
            Kind::A => ips(res, name, port, false).await,
            Kind::Aaaa => ips(res, name, port, true).await,
            // hickory follows a CNAME inside the A/AAAA answers.
            Kind::Cname | Kind::Last => continue,
        };
        match r {
            Ok(r) if !r.addrs.is_empty() => {
                if last != Some(kind) {
                    LAST.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, kind);
                }
                return Ok(r);
            }
            Ok(_) => err = format!("{name}: no addresses"),
            Err(e) => err = e,
        }
    }
    Err(err)
}

async fn srv(res: &TokioResolver, name: &str) -> Result<Resolved, String> {
    let srv = res
        .srv_lookup(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
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
    Ok(Resolved::new(addrs, until))
}

async fn ips(res: &TokioResolver, name: &str, port: u16, v6: bool) -> Result<Resolved, String> {
    let l = if v6 {
        res.ipv6_lookup(name).await
    } else {
        res.ipv4_lookup(name).await
    }
    .map_err(|e| format!("{name}: {e}"))?;
    let addrs = l
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) if !v6 => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if v6 => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .map(|ip| (SocketAddr::new(ip, port), None))
        .collect();
    Ok(Resolved::new(addrs, l.valid_until()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse() {
        let s = parse_servers("127.0.0.1:5353, 10.0.0.1").unwrap();
        assert_eq!(s[0].port(), 5353);
        assert_eq!(s[1].port(), 53);
        assert!(parse_servers("nope").is_err());
    }

    #[test]
    fn order_and_hosts_parse() {
        assert_eq!(
            parse_order("LAST, srv,A,AAAA,CNAME"),
            vec![Kind::Last, Kind::Srv, Kind::A, Kind::Aaaa, Kind::Cname]
        );
        let h = parse_hosts(
            "127.0.0.1 localhost # me\n::1 localhost ip6-localhost\n# 10.0.0.1 x\n\
             10.1.2.3 App.Test app\n10.1.2.4 app\n",
        );
        assert_eq!(h["localhost"].len(), 2);
        assert_eq!(h["ip6-localhost"], vec!["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(h["app.test"], vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(h["app"].len(), 2);
        assert!(!h.contains_key("x"));
    }
}
