//! The immutable per-version view of the configuration the request path reads.

use crate::balancer::Balancer;
use crate::tls::{self, CertPair};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::vault;
use tollgate_plugins::{Chain, ConsumerIndex, PluginSpec, Plugins};
use tollgate_router::{PathHandling, RouteSpec, Router};

/// An entity row (same type as `tollgate_model::Row`).
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Entity name → rows (every field present, foreign keys as `{"id": …}`).
pub type Dataset = BTreeMap<String, Vec<Row>>;

/// The snapshot the proxy reads, swapped atomically on every change.
pub type SharedSnapshot = Arc<arc_swap::ArcSwap<Snapshot>>;

/// Consumers and credentials, swapped on their own (see [`Snapshot::build_with`]) so a
/// credential write never recompiles the router; read only by routes with plugins.
pub type SharedConsumers = Arc<arc_swap::ArcSwap<ConsumerIndex>>;

static VERSION: AtomicU64 = AtomicU64::new(0);

/// A service as the proxy needs it.
#[derive(Debug)]
pub struct ServiceInfo {
    pub id: String,
    pub name: Option<String>,
    /// `http`, `https`, `grpc`, `grpcs`, …
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    pub enabled: bool,
    /// Client TLS settings for https/grpcs services.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Identifies `tls` in pool keys (verify flag, CA ids, client certificate).
    pub tls_profile: String,
    /// The row, for the log phase (`kong.log.serialize().service`).
    pub row: Arc<Row>,
}

impl ServiceInfo {
    /// Whether the upstream is reached over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.protocol.as_str(), "https" | "grpcs" | "tls")
    }
    /// Whether the upstream speaks gRPC (HTTP/2).
    pub fn is_grpc(&self) -> bool {
        matches!(self.protocol.as_str(), "grpc" | "grpcs")
    }
}

/// A route's proxy-relevant settings.
#[derive(Debug)]
pub struct RouteInfo {
    pub id: String,
    pub name: Option<String>,
    pub service: Option<Arc<ServiceInfo>>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub https_redirect_status_code: u16,
    pub path_handling: PathHandling,
    pub request_buffering: bool,
    pub response_buffering: bool,
    /// The plugins that may run on this route, resolved once per snapshot.
    pub plugins: Chain,
    /// The row, for the log phase (`kong.log.serialize().route`).
    pub row: Arc<Row>,
}

/// Certificates by SNI (`snis` entities), exact and wildcard.
#[derive(Default, Debug)]
pub struct CertStore {
    pub exact: HashMap<String, Arc<CertPair>>,
}

impl CertStore {
    /// Kong's lookup (`kong/runloop/certificate.lua`): the exact name, then
    /// the first label replaced by `*` (`*.example.com`), then the last label
    /// replaced by `*` (`www.example.*`).
    pub fn find(&self, sni: &str) -> Option<&Arc<CertPair>> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&sni) {
            return Some(c);
        }
        if let Some((_, rest)) = sni.split_once('.') {
            if let Some(c) = self.exact.get(&format!("*.{rest}")) {
                return Some(c);
            }
        }
        if let Some((head, _)) = sni.rsplit_once('.') {
            if let Some(c) = self.exact.get(&format!("{head}.*")) {
                return Some(c);
            }
        }
        None
    }
}

/// Everything a request needs, immutable.
pub struct Snapshot {
    version: u64,
    pub router: Router,
    /// Parallel to the router's routes (index = `Match::route_index`).
    pub routes: Vec<RouteInfo>,
    pub services: HashMap<String, Arc<ServiceInfo>>,
    /// Compiled balancers by upstream name (a service host naming one goes through it).
    pub upstreams: HashMap<String, Arc<Balancer>>,
    pub certificates: CertStore,
    /// Certificates by id (for client certificates).
    pub certificates_by_id: HashMap<String, Arc<CertPair>>,
    /// Every enabled plugin configuration, compiled (global rewrite plugins run from here).
    pub plugins: Plugins,
    pub consumers: SharedConsumers,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("routes", &self.routes.len())
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

fn s(row: &Row, k: &str) -> Option<String> {
    row.get(k).and_then(|v| v.as_str()).map(str::to_owned)
}
fn b(row: &Row, k: &str, d: bool) -> bool {
    row.get(k).and_then(|v| v.as_bool()).unwrap_or(d)
}
fn n(row: &Row, k: &str, d: i64) -> i64 {
    row.get(k).and_then(|v| v.as_i64()).unwrap_or(d)
}
fn strs(row: &Row, k: &str) -> Vec<String> {
    row.get(k)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
fn fk(row: &Row, k: &str) -> Option<String> {
    match row.get(k) {
        Some(serde_json::Value::Object(m)) => {
            m.get("id").and_then(|v| v.as_str()).map(str::to_owned)
        }
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}
fn ms(row: &Row, k: &str) -> Duration {
    Duration::from_millis(n(row, k, 60000).max(0) as u64)
}

impl Snapshot {
    /// The health of every target address of upstream `id_or_name` (`None`:
    /// no such upstream), for the Admin API and metrics
    /// (`kong_upstream_target_health`).
    pub fn health_states(&self, id_or_name: &str) -> Option<Vec<crate::balancer::AddressHealth>> {
        self.upstream(id_or_name).map(|b| b.health_states())
    }

    /// An upstream's balancer by id or name.
    pub fn upstream(&self, id_or_name: &str) -> Option<&Arc<Balancer>> {
        self.upstreams
            .get(id_or_name)
            .or_else(|| self.upstreams.values().find(|b| b.id == id_or_name))
    }

    /// A snapshot with nothing configured (every request gets 404).
    pub fn empty() -> Snapshot {
        Snapshot::build(&Dataset::new()).expect("the empty dataset builds")
    }

    /// Monotonic per process; a newer snapshot has a larger version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Compiles a dataset, consumers and credentials included.
    pub fn build(data: &Dataset) -> Result<Snapshot, String> {
        let consumers = Arc::new(arc_swap::ArcSwap::from_pointee(ConsumerIndex::build(data)));
        Snapshot::build_with(data, consumers)
    }

    /// Compiles a dataset, sharing an index of consumers kept up to date separately.
    pub fn build_with(data: &Dataset, consumers: SharedConsumers) -> Result<Snapshot, String> {
        Snapshot::build_with_registry(data, consumers, tollgate_plugins::spec)
    }

    /// [`Snapshot::build_with`] with another plugin registry (tests register their own
    /// plugins next to the bundled ones).
    pub fn build_with_registry(
        data: &Dataset,
        consumers: SharedConsumers,
        registry: impl Fn(&str) -> Option<&'static PluginSpec>,
    ) -> Result<Snapshot, String> {
        let rows = |name: &str| data.get(name).map(Vec::as_slice).unwrap_or(&[]);

        // certificates
        let mut certificates_by_id = HashMap::new();
        for row in rows("certificates") {
            let id = s(row, "id").ok_or("certificate without id")?;
            match certificate(row) {
                Ok(Some(pair)) => {
                    certificates_by_id.insert(id, Arc::new(pair));
                }
                Ok(None) => {}
                // A certificate whose secret is a reference that does not resolve (or
                // resolves to no valid PEM) is not served: its SNIs get the default
                // certificate, as in Kong. Stored PEM was validated on write, so any other
                // failure is an error of the whole configuration.
                Err(e) if has_reference(row) => {
                    tracing::error!(certificate = %id, "certificate not served: {e}");
                }
                Err(e) => return Err(format!("certificate {id}: {e}")),
            }
        }
        let mut certificates = CertStore::default();
        for row in rows("snis") {
            let (Some(name), Some(cid)) = (s(row, "name"), fk(row, "certificate")) else {
                continue;
            };
            if let Some(c) = certificates_by_id.get(&cid) {
                certificates
                    .exact
                    .insert(name.to_ascii_lowercase(), c.clone());
            }
        }
        let mut ca_by_id: HashMap<String, String> = HashMap::new();
        for row in rows("ca_certificates") {
            if let (Some(id), Some(cert)) = (s(row, "id"), s(row, "cert")) {
                ca_by_id.insert(id, cert);
            }
        }

        // An upstream's client certificate serves the services whose host names
        // it when they have none of their own (kong/runloop/upstream_ssl.lua).
        let upstream_cc: HashMap<String, String> = rows("upstreams")
            .iter()
            .filter_map(|r| Some((s(r, "name")?, fk(r, "client_certificate")?)))
            .collect();

        // services
        let mut services = HashMap::new();
        for row in rows("services") {
            let id = s(row, "id").ok_or("service without id")?;
            let protocol = s(row, "protocol").unwrap_or_else(|| "http".into());
            let tls_verify = row.get("tls_verify").and_then(|v| v.as_bool());
            let ca_ids: Vec<String> = row
                .get("ca_certificates")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| {
                            x.as_str()
                                .map(str::to_owned)
                                .or_else(|| x.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let client_cert = fk(row, "client_certificate")
                .or_else(|| s(row, "host").and_then(|h| upstream_cc.get(&h).cloned()));
            let is_tls = matches!(protocol.as_str(), "https" | "grpcs" | "tls");
            let (tls, tls_profile) = if is_tls {
                let cas: Vec<&str> = ca_ids
                    .iter()
                    .filter_map(|i| ca_by_id.get(i).map(String::as_str))
                    .collect();
                let cc = client_cert.as_ref().and_then(|c| certificates_by_id.get(c));
                let alpn: &[u8] = if matches!(protocol.as_str(), "grpcs") {
                    b"h2"
                } else {
                    b"http/1.1"
                };
                let cfg = tls::client_config(
                    tls_verify.unwrap_or(false),
                    &cas,
                    cc.map(|c| &c.primary),
                    alpn,
                )
                .map_err(|e| format!("service {id}: {e}"))?;
                let profile = format!(
                    "v={};ca={};cc={};p={}",
                    tls_verify.unwrap_or(false),
                    ca_ids.join(","),
                    client_cert.clone().unwrap_or_default(),
                    protocol
                );
                (Some(Arc::new(cfg)), profile)
            } else {
                (None, String::new())
            };
            let info = ServiceInfo {
                name: s(row, "name"),
                host: s(row, "host").unwrap_or_default(),
                port: n(row, "port", 80).clamp(0, 65535) as u16,
                path: s(row, "path"),
                retries: n(row, "retries", 5).max(0) as u32,
                connect_timeout: ms(row, "connect_timeout"),
                write_timeout: ms(row, "write_timeout"),
                read_timeout: ms(row, "read_timeout"),
                enabled: b(row, "enabled", true),
                tls,
                tls_profile,
                protocol,
                id: id.clone(),
                row: Arc::new(row.clone()),
            };
            services.insert(id, Arc::new(info));
        }

        // upstreams + targets
        let mut targets: HashMap<String, Vec<&Row>> = HashMap::new();
        for row in rows("targets") {
            if let Some(uid) = fk(row, "upstream") {
                targets.entry(uid).or_default().push(row);
            }
        }
        let mut upstreams = HashMap::new();
        for row in rows("upstreams") {
            let id = s(row, "id").unwrap_or_default();
            let t = targets.remove(&id).unwrap_or_default();
            let b = Arc::new(Balancer::build(row, &t, &certificates_by_id)?);
            crate::balancer::health::ensure_checker(&b);
            upstreams.insert(b.name.clone(), b);
        }
        crate::balancer::state::prune();

        let plugins = Plugins::build_with(data, registry);

        // routes
        let mut specs = Vec::new();
        let mut routes = Vec::new();
        for row in rows("routes") {
            let id = s(row, "id").ok_or("route without id")?;
            let service = match fk(row, "service") {
                Some(sid) => match services.get(&sid) {
                    Some(svc) => Some(svc.clone()),
                    None => return Err(format!("route {id}: service {sid} not found")),
                },
                None => None,
            };
            // Kong leaves routes of disabled services out of the router.
            if service.as_ref().is_some_and(|s| !s.enabled) {
                continue;
            }
            let headers = match row.get("headers") {
                Some(serde_json::Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        let vals = v
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (k.clone(), vals)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            specs.push(RouteSpec {
                id: id.clone(),
                created_at: n(row, "created_at", 0),
                protocols: strs(row, "protocols"),
                methods: strs(row, "methods"),
                hosts: strs(row, "hosts"),
                paths: strs(row, "paths"),
                headers,
                snis: strs(row, "snis"),
                regex_priority: n(row, "regex_priority", 0),
            });
            let chain = plugins.chain(Some(&id), service.as_ref().map(|s| s.id.as_str()));
            routes.push(RouteInfo {
                id,
                name: s(row, "name"),
                service,
                strip_path: b(row, "strip_path", true),
                preserve_host: b(row, "preserve_host", false),
                https_redirect_status_code: n(row, "https_redirect_status_code", 426) as u16,
                path_handling: s(row, "path_handling")
                    .and_then(|p| PathHandling::parse(&p))
                    .unwrap_or_default(),
                request_buffering: b(row, "request_buffering", true),
                response_buffering: b(row, "response_buffering", true),
                plugins: chain,
                row: Arc::new(row.clone()),
            });
        }
        let router = Router::build(&specs).map_err(|e| e.to_string())?;

        Ok(Snapshot {
            version: VERSION.fetch_add(1, Ordering::Relaxed) + 1,
            router,
            routes,
            services,
            upstreams,
            certificates,
            certificates_by_id,
            plugins,
            consumers,
        })
    }
}

/// Whether a row holds a `{vault://…}` reference in any field.
fn has_reference(row: &Row) -> bool {
    row.values().any(vault::contains_reference)
}

/// A certificate row compiled, its references resolved first (in memory only).
fn certificate(row: &Row) -> Result<Option<CertPair>, String> {
    let resolved;
    let refs = has_reference(row);
    let row = if refs {
        let schema = tollgate_model::by_name("certificates").ok_or("no certificates schema")?;
        let mut r = row.clone();
        vault::resolve_record(&schema.fields, &mut r, &vault::resolve)?;
        resolved = r;
        &resolved
    } else {
        row
    };
    // The Admin API checked literal pairs on write; resolved ones are checked here.
    let pair = |c: &str, k: &str| {
        if refs && !tollgate_model::pem::key_matches(c, k).unwrap_or(false) {
            return Err("resolved certificate does not match its key".to_string());
        }
        tls::certified_key(c, k)
    };
    let (Some(cert), Some(key)) = (s(row, "cert"), s(row, "key")) else {
        return Ok(None);
    };
    let primary = pair(&cert, &key)?;
    let alt = match (s(row, "cert_alt"), s(row, "key_alt")) {
        (Some(c), Some(k)) => Some(pair(&c, &k)?),
        _ => None,
    };
    Ok(Some(CertPair { primary, alt }))
}

/// Splits `host:port`, `[v6]:port`, `host` (port `None`).
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        return Some((h.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_owned(), Some(p.parse().ok()?))),
        _ => Some((s.to_owned(), None)),
    }
}
