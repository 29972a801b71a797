//! Name resolution for upstream targets and service hosts, as Kong's DNS
//! client (`kong/resty/dns/client.lua`) does it: the record types of
//! `dns_order` in turn (LAST, the type that last answered for the name; SRV,
//! whose records give ports, weights and names to resolve; A; AAAA; CNAME,
//! which hickory already follows inside A/AAAA answers), names in
//! `dns_hostsfile` answered from that file, the nameservers of
//! `dns_resolver` (else the system's).
//!
//! Answers live in our own cache (hickory's is off), with Kong's lifetimes:
//! a record for its TTL (`dns_valid_ttl` overrides it), a name that does not
//! exist or has no records for `dns_not_found_ttl`, a server error for
//! `dns_error_ttl`; past that, an entry is served stale for `dns_stale_ttl`
//! while one background query refreshes it. An empty answer or a server
//! error does not replace records still held (they keep being served stale);
//! a network failure is not cached. Concurrent misses of one name share one
//! query unless `dns_no_sync`; at most `dns_cache_size` names are kept.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One record of an answer: an address (A/AAAA), or an SRV record with its
/// target's addresses.
#[derive(Debug)]
pub struct Entry {
    /// The SRV record's target (`use_srv_name`, and Kong's balancer key for
    /// the record); `None` for A/AAAA records.
    pub name: Option<String>,
    pub ips: Vec<IpAddr>,
    /// The SRV record's port (`None` for A/AAAA records, and for SRV port 0:
    /// the target's port then, as Kong).
    pub port: Option<u16>,
    /// The SRV record's weight (`None` for A/AAAA records).
    pub weight: Option<u16>,
    next: AtomicUsize,
}

impl Entry {
    pub(crate) fn new(
        name: Option<String>,
        ips: Vec<IpAddr>,
        port: Option<u16>,
        weight: Option<u16>,
    ) -> Self {
        Entry {
            name,
            ips,
            port,
            weight,
            next: AtomicUsize::new(0),
        }
    }

    /// The next of the entry's addresses, round-robin (Kong's `toip` of an
    /// SRV record's target name).
    pub fn ip(&self) -> Option<IpAddr> {
        match self.ips.len() {
            0 => None,
            1 => Some(self.ips[0]),
            n => Some(self.ips[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// The entry's port, `default` for A/AAAA records.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

/// A name's answer, valid until `until`.
#[derive(Debug)]
pub struct Resolved {
    /// A/AAAA records in address order, or the SRV records of the lowest
    /// priority value in Kong's order (priority, target, port).
    pub entries: Vec<Entry>,
    until: Instant,
    /// Entry indices interleaved by SRV weight (Kong's weighted round-robin
    /// for a service host), one each for A/AAAA records.
    wheel: Vec<u32>,
    next: AtomicUsize,
}

impl Resolved {
    pub(crate) fn new(entries: Vec<Entry>, until: Instant) -> Resolved {
        // Kong's SRV_0_WEIGHT: a 0 weight is hit least, not never.
        let weights: Vec<u32> = entries
            .iter()
            .map(|e| e.weight.map_or(1, |w| u32::from(w).max(1)))
            .collect();
        Resolved {
            wheel: super::build_wheel(&weights),
            entries,
            until,
            next: AtomicUsize::new(0),
        }
    }

    /// The next address for a service host (Kong's `toip`: weighted
    /// round-robin over SRV records, round-robin over A/AAAA ones); `port`
    /// for A/AAAA records.
    pub fn pick(&self, port: u16) -> Option<(SocketAddr, Option<&str>)> {
        let n = self.wheel.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|k| {
            let e = &self.entries[self.wheel[(start + k) % n] as usize];
            e.ip()
                .map(|ip| (SocketAddr::new(ip, e.port_or(port)), e.name.as_deref()))
        })
    }

    /// Every address of the answer (`port` for A/AAAA records).
    pub fn addrs(&self, port: u16) -> impl Iterator<Item = SocketAddr> + '_ {
        self.entries.iter().flat_map(move |e| {
            e.ips
                .iter()
                .map(move |ip| SocketAddr::new(*ip, e.port_or(port)))
        })
    }

    /// Whether the answer's TTL still runs.
    pub fn fresh(&self) -> bool {
        self.until > Instant::now()
    }

    /// When the answer's TTL runs out.
    pub fn until(&self) -> Instant {
        self.until
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

/// Kong's `dns_*` settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// `dns_resolver` (empty: the system's nameservers).
    pub servers: Vec<SocketAddr>,
    /// `dns_order`.
    pub order: String,
    /// `dns_hostsfile`.
    pub hostsfile: Option<String>,
    /// `dns_valid_ttl`: overrides the TTL of every record.
    pub valid_ttl: Option<Duration>,
    /// `dns_stale_ttl`.
    pub stale_ttl: Duration,
    /// `dns_not_found_ttl`: name error (NXDOMAIN) and empty answers.
    pub not_found_ttl: Duration,
    /// `dns_error_ttl`: other server errors.
    pub error_ttl: Duration,
    /// `dns_cache_size`: names cached.
    pub cache_size: usize,
    /// `dns_no_sync`: every miss queries on its own.
    pub no_sync: bool,
}

impl Default for Options {
    /// Kong's defaults (`kong_defaults.lua`).
    fn default() -> Self {
        Options {
            servers: Vec::new(),
            order: "LAST,SRV,A,CNAME".into(),
            hostsfile: None,
            valid_ttl: None,
            stale_ttl: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(30),
            error_ttl: Duration::from_secs(1),
            cache_size: 10000,
            no_sync: false,
        }
    }
}

/// The settings the resolver follows.
#[derive(Debug)]
struct Settings {
    opts: Options,
    order: Vec<Kind>,
    /// Hosts-file answers (they do not expire: Kong keeps them for the
    /// process's life).
    hosts: HashMap<String, Arc<Resolved>>,
}

fn settings_from(opts: Options, hosts: HashMap<String, Vec<IpAddr>>) -> Settings {
    let forever = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
    let hosts = hosts
        .into_iter()
        .map(|(name, ips)| {
            // Kong's client answers hosts-file names first (their type is
            // preset as LAST): IPv4 entries, else IPv6 ones.
            let v4: Vec<IpAddr> = ips.iter().copied().filter(IpAddr::is_ipv4).collect();
            let pick = if v4.is_empty() { ips } else { v4 };
            let entries = pick
                .into_iter()
                .map(|ip| Entry::new(None, vec![ip], None, None))
                .collect();
            (name, Arc::new(Resolved::new(entries, forever)))
        })
        .collect();
    Settings {
        order: parse_order(&opts.order),
        opts,
        hosts,
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static RESOLVER: OnceLock<Result<TokioResolver, String>> = OnceLock::new();

/// What the cache holds for a name.
#[derive(Debug, Clone)]
enum Answer {
    Found(Arc<Resolved>),
    /// Name error or no records (`dns_not_found_ttl`), server error
    /// (`dns_error_ttl`): the message.
    Failed(String),
}

#[derive(Debug)]
struct Cached {
    answer: Answer,
    until: Instant,
    /// Served stale (and refreshed in the background) until then.
    stale_until: Instant,
    refreshing: AtomicBool,
}

impl Cached {
    fn result(&self) -> Result<Arc<Resolved>, String> {
        match &self.answer {
            Answer::Found(r) => Ok(r.clone()),
            Answer::Failed(e) => Err(e.clone()),
        }
    }
}

/// lowercased name → its entry.
static CACHE: LazyLock<Mutex<HashMap<String, Arc<Cached>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// Queries in flight, shared by concurrent misses of a name.
type Flight = Arc<tokio::sync::OnceCell<Result<Arc<Resolved>, String>>>;
static INFLIGHT: LazyLock<Mutex<HashMap<String, Flight>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// name → the type that last answered (`LAST`).
static LAST: LazyLock<Mutex<HashMap<String, Kind>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Sets the resolver from Kong's `dns_*` keys (before the first lookup;
/// later calls are ignored).
pub fn configure(opts: Options) -> Result<(), String> {
    let hosts = match opts.hostsfile.as_deref().filter(|p| !p.is_empty()) {
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
    if parse_order(&opts.order).is_empty() {
        return Err("dns_order: no record type to try".into());
    }
    if opts.cache_size == 0 {
        return Err("dns_cache_size: must be at least 1".into());
    }
    let _ = SETTINGS.set(settings_from(opts, hosts));
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| settings_from(Options::default(), HashMap::new()))
}

fn resolver() -> Result<&'static TokioResolver, String> {
    RESOLVER
        .get_or_init(|| {
            let servers = &settings().opts.servers;
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
            let o = builder.options_mut();
            // `dns_hostsfile` is read by us, not the system's hosts file.
            o.use_hosts_file = ResolveHosts::Never;
            // Our cache has Kong's lifetimes; hickory's would answer past them.
            o.cache_size = 0;
            builder.build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn cache_get(key: &str) -> Option<Arc<Cached>> {
    lock(&CACHE).get(key).cloned()
}

/// The cached answer for `name`, even if expired (a rebuilt balancer keeps
/// its addresses).
pub fn cached(name: &str) -> Option<Arc<Resolved>> {
    if let Some(r) = settings().hosts.get(&*lower(name)) {
        return Some(r.clone());
    }
    match &cache_get(&lower(name))?.answer {
        Answer::Found(r) => Some(r.clone()),
        Answer::Failed(_) => None,
    }
}

fn lower(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// `name`'s answer: from the hosts file, else the cache while its entry
/// lives (stale entries refreshed in the background), else the nameservers.
pub async fn resolve(name: &str) -> Result<Arc<Resolved>, String> {
    let key = lower(name);
    if let Some(r) = settings().hosts.get(&*key) {
        return Ok(r.clone());
    }
    if let Some(c) = cache_get(&key) {
        let now = Instant::now();
        if now < c.until {
            return c.result();
        }
        if now < c.stale_until {
            if !c.refreshing.swap(true, Ordering::AcqRel) {
                let key = key.into_owned();
                tokio::spawn(async move {
                    let _ = query(&key).await;
                });
            }
            return c.result();
        }
    }
    query(&key).await
}

/// A service host resolved from `slot` while its answer is fresh (no lock,
/// no allocation), else through [`resolve`], refilling `slot`.
pub async fn resolve_in(
    slot: &arc_swap::ArcSwapOption<Resolved>,
    name: &str,
) -> Result<Arc<Resolved>, String> {
    if let Some(r) = slot.load_full().filter(|r| r.fresh()) {
        return Ok(r);
    }
    let r = resolve(name).await?;
    slot.store(Some(r.clone()));
    Ok(r)
}

/// Asks the nameservers for `key`, joining a query in flight for it unless
/// `dns_no_sync`.
async fn query(key: &str) -> Result<Arc<Resolved>, String> {
    if settings().opts.no_sync {
        return ask_and_store(key).await;
    }
    let cell = lock(&INFLIGHT).entry(key.to_owned()).or_default().clone();
    let r = cell.get_or_init(|| ask_and_store(key)).await.clone();
    let mut m = lock(&INFLIGHT);
    if m.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
        m.remove(key);
    }
    r
}

/// Why a lookup found nothing.
enum Failure {
    /// Name error (rcode 3), or no records of the types tried.
    NotFound { nx: bool, msg: String },
    /// Another rcode (SERVFAIL, REFUSED…).
    Server(String),
    /// No answer at all (timeout, connection): not cached.
    Network(String),
}

fn classify(name: &str, e: &NetError) -> Failure {
    let msg = format!("{name}: {e}");
    if e.is_no_records_found() {
        Failure::NotFound {
            nx: e.is_nx_domain(),
            msg,
        }
    } else if matches!(e, NetError::Dns(DnsError::ResponseCode(_))) {
        Failure::Server(msg)
    } else {
        Failure::Network(msg)
    }
}

async fn ask_and_store(key: &str) -> Result<Arc<Resolved>, String> {
    settle(key, lookup(key).await)
}

/// Caches the outcome of a lookup of `key` by Kong's rules (`cacheinsert`).
fn settle(key: &str, outcome: Result<Resolved, Failure>) -> Result<Arc<Resolved>, String> {
    let s = &settings().opts;
    let now = Instant::now();
    let (answer, ttl, keep_records) = match outcome {
        Ok(r) => {
            let until = r.until;
            let r = Arc::new(r);
            store(key, Answer::Found(r.clone()), until);
            return Ok(r);
        }
        // Kong's cacheinsert: a name error replaces what was held, an empty
        // answer or a server error does not replace records.
        Err(Failure::NotFound { nx, msg }) => (msg, s.not_found_ttl, !nx),
        Err(Failure::Server(msg)) => (msg, s.error_ttl, true),
        Err(Failure::Network(msg)) => {
            if let Some(c) = cache_get(key) {
                c.refreshing.store(false, Ordering::Release);
            }
            return Err(msg);
        }
    };
    if keep_records {
        let held = |c: &Arc<Cached>| matches!(c.answer, Answer::Found(_)) && c.stale_until > now;
        if let Some(c) = cache_get(key).filter(held) {
            c.refreshing.store(false, Ordering::Release);
            return Err(answer);
        }
    }
    store(key, Answer::Failed(answer.clone()), now + ttl);
    Err(answer)
}

fn store(key: &str, answer: Answer, until: Instant) {
    let s = &settings().opts;
    let entry = Arc::new(Cached {
        answer,
        until,
        stale_until: until + s.stale_ttl,
        refreshing: AtomicBool::new(false),
    });
    let mut c = lock(&CACHE);
    c.insert(key.to_owned(), entry);
    if c.len() > s.cache_size {
        // Entries past serving go first, then the ones ending soonest.
        let now = Instant::now();
        c.retain(|_, e| e.stale_until > now);
        while c.len() > s.cache_size {
            let Some(k) = c
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, e)| e.stale_until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            c.remove(&k);
        }
    }
}

/// The record types of `dns_order` in turn; the first with records answers.
async fn lookup(name: &str) -> Result<Resolved, Failure> {
    let s = settings();
    let res = resolver().map_err(Failure::Network)?;
    let last = lock(&LAST).get(name).copied();
    let mut fail = Failure::NotFound {
        nx: false,
        msg: format!("{name}: no record type to try"),
    };
    let mut tried: Vec<Kind> = Vec::with_capacity(4);
    for kind in &s.order {
        let kind = match kind {
            Kind::Last => match last {
                Some(k) => k,
                None => continue,
            },
            k => *k,
        };
        // (LAST is also in the list: asked once)
        if tried.contains(&kind) {
            continue;
        }
        tried.push(kind);
        let r = match kind {
            Kind::Srv => srv(res, name).await,
            Kind::A | Kind::Aaaa => ips(res, name, kind == Kind::Aaaa).await,
            // hickory follows a CNAME inside the A/AAAA answers.
            Kind::Cname | Kind::Last => continue,
        };
        match r {
            Ok(r) if !r.entries.is_empty() => {
                if last != Some(kind) {
                    lock(&LAST).insert(name.to_owned(), kind);
                }
                return Ok(r);
            }
            Ok(_) => {
                fail = Failure::NotFound {
                    nx: false,
                    msg: format!("{name}: no addresses"),
                }
            }
            // Kong stops at a failure to get an answer: another type's
            // records could be the wrong answer.
            Err(Failure::Network(m)) => return Err(Failure::Network(m)),
            Err(f) => fail = f,
        }
    }
    Err(fail)
}

fn ttl_until(ttl: u32) -> Instant {
    let ttl = settings()
        .opts
        .valid_ttl
        .unwrap_or(Duration::from_secs(u64::from(ttl)));
    Instant::now() + ttl
}

async fn srv(res: &TokioResolver, name: &str) -> Result<Resolved, Failure> {
    let srv = res.srv_lookup(name).await.map_err(|e| classify(name, &e))?;
    let mut recs: Vec<(u16, String, u16, u16, u32)> = srv
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => {
                let t = s.target.to_utf8();
                let t = t.trim_end_matches('.').to_ascii_lowercase();
                Some((s.priority, t, s.port, s.weight, rec.ttl))
            }
            _ => None,
        })
        // "." means no service there
        .filter(|r| !r.1.is_empty())
        .collect();
    // Kong: records pointing only to the name itself (Kubernetes) are no
    // answer; the next type is tried.
    if recs.iter().all(|r| r.1 == name) {
        return Ok(Resolved::new(Vec::new(), Instant::now()));
    }
    // Kong's balancer order (`%06d:target:port`), and only the records of the
    // lowest priority value (Kong's documented behaviour).
    recs.sort_by(|a, b| (a.0, &a.1, a.2.to_string()).cmp(&(b.0, &b.1, b.2.to_string())));
    let top = recs.first().map(|r| r.0);
    let mut until = recs.iter().map(|r| ttl_until(r.4)).min();
    let mut entries = Vec::new();
    for (prio, target, port, weight, _) in recs {
        if Some(prio) != top {
            break;
        }
        let ips = match target.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match res.lookup_ip(target.as_str()).await {
                Ok(l) => {
                    if let Some(t) = l.as_lookup().answers().iter().map(|r| r.ttl).min() {
                        until = until.min(Some(ttl_until(t)));
                    }
                    l.iter().collect()
                }
                // (a target that does not resolve takes no traffic)
                Err(_) => continue,
            },
        };
        let name = target.parse::<IpAddr>().is_err().then_some(target);
        let port = (port != 0).then_some(port);
        entries.push(Entry::new(name, ips, port, Some(weight)));
    }
    Ok(Resolved::new(entries, until.unwrap_or_else(Instant::now)))
}

async fn ips(res: &TokioResolver, name: &str, v6: bool) -> Result<Resolved, Failure> {
    let l = if v6 {
        res.ipv6_lookup(name).await
    } else {
        res.ipv4_lookup(name).await
    }
    .map_err(|e| classify(name, &e))?;
    let mut until = None;
    let mut ips: Vec<IpAddr> = l
        .answers()
        .iter()
        .filter_map(|r| {
            let ip = match &r.data {
                RData::A(a) if !v6 => IpAddr::V4(a.0),
                RData::AAAA(a) if v6 => IpAddr::V6(a.0),
                _ => return None,
            };
            until = until.min(Some(ttl_until(r.ttl))).or(Some(ttl_until(r.ttl)));
            Some(ip)
        })
        .collect();
    // Kong's balancer order for A/AAAA records: by address text.
    ips.sort_by_cached_key(|ip| ip.to_string());
    ips.dedup();
    let entries = ips
        .into_iter()
        .map(|ip| Entry::new(None, vec![ip], None, None))
        .collect();
    Ok(Resolved::new(entries, until.unwrap_or_else(Instant::now)))
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

    fn answer(ip: &str, ttl: Duration) -> Resolved {
        let e = Entry::new(None, vec![ip.parse().unwrap()], None, None);
        Resolved::new(vec![e], Instant::now() + ttl)
    }

    fn cached_ip(key: &str) -> Option<String> {
        match &cache_get(key)?.answer {
            Answer::Found(r) => Some(r.entries[0].ips[0].to_string()),
            Answer::Failed(e) => Some(format!("failed: {e}")),
        }
    }

    /// Kong's `cacheinsert` (default lifetimes): a name error replaces the
    /// records held, an empty answer or a server error does not, a network
    /// failure is not cached; failures are kept for their TTL.
    #[test]
    fn failures_replace_records_as_kongs_cache_does() {
        let k = "cache-rules.test";
        let ok = settle(k, Ok(answer("10.0.0.1", Duration::ZERO))).unwrap();
        assert!(!ok.fresh());
        let empty = Failure::NotFound {
            nx: false,
            msg: "empty".into(),
        };
        assert!(settle(k, Err(empty)).is_err());
        assert_eq!(cached_ip(k).as_deref(), Some("10.0.0.1"));
        assert!(settle(k, Err(Failure::Server("servfail".into()))).is_err());
        assert_eq!(cached_ip(k).as_deref(), Some("10.0.0.1"));
        assert!(settle(k, Err(Failure::Network("timeout".into()))).is_err());
        assert_eq!(cached_ip(k).as_deref(), Some("10.0.0.1"));
        let nx = Failure::NotFound {
            nx: true,
            msg: "nxdomain".into(),
        };
        assert!(settle(k, Err(nx)).is_err());
        assert_eq!(cached_ip(k).as_deref(), Some("failed: nxdomain"));
        let c = cache_get(k).unwrap();
        let ttl = c.until.saturating_duration_since(Instant::now());
        assert!(ttl > Duration::from_secs(29) && ttl <= Duration::from_secs(30));
        assert_eq!(c.stale_until - c.until, Duration::from_secs(3600));
        // no records held: a server error is kept for dns_error_ttl
        let k = "cache-rules-2.test";
        assert!(settle(k, Err(Failure::Server("servfail".into()))).is_err());
        let c = cache_get(k).unwrap();
        assert!(c.until.saturating_duration_since(Instant::now()) <= Duration::from_secs(1));
        assert!(settle(k, Ok(answer("10.0.0.2", Duration::from_secs(60)))).is_ok());
        assert_eq!(cached_ip(k).as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn service_hosts_pick_srv_records_by_weight() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = Resolved::new(
            vec![
                Entry::new(Some("a".into()), vec![ip("10.0.0.1")], Some(81), Some(30)),
                Entry::new(Some("b".into()), vec![ip("10.0.0.2")], None, Some(10)),
                Entry::new(Some("c".into()), vec![ip("10.0.0.3")], Some(83), Some(0)),
            ],
            Instant::now(),
        );
        // one wheel period is 30 + 10 + 1 (Kong's weight 0 counts as 1)
        let mut n = HashMap::new();
        for _ in 0..410 {
            let (a, name) = r.pick(9000).unwrap();
            *n.entry((a.to_string(), name.unwrap().to_owned()))
                .or_insert(0) += 1;
        }
        let get = |a: &str, name: &str| n[&(a.to_owned(), name.to_owned())];
        assert_eq!(get("10.0.0.1:81", "a"), 300);
        assert_eq!(get("10.0.0.2:9000", "b"), 100);
        assert_eq!(get("10.0.0.3:83", "c"), 10);
    }
}
