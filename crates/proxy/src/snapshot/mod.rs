//! The immutable per-version view of the configuration the request path reads.

use crate::balancer::Balancer;
use crate::tls::CertPair;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tollgate_plugins::{Chain, ConsumerIndex, PluginSpec, Plugins};
use tollgate_router::persistent::{PMap, Slots};
use tollgate_router::{PathHandling, Router};

mod compile;
mod routes;
mod source;
#[cfg(test)]
mod tests;

use routes::RouteSlots;
use source::Touched;
pub use source::{Edit, Source, ENTITIES};

/// An entity row (same type as `tollgate_model::Row`).
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Entity name → rows (every field present, foreign keys as `{"id": …}`).
pub type Dataset = BTreeMap<String, Vec<Row>>;

/// The snapshot the proxy reads, swapped atomically on every change.
pub type SharedSnapshot = Arc<arc_swap::ArcSwap<Snapshot>>;

/// Consumers and credentials, swapped on their own (see [`Snapshot::build_with`]) so a
/// credential write never recompiles the router; read only by routes with plugins.
pub type SharedConsumers = Arc<arc_swap::ArcSwap<ConsumerIndex>>;

pub(crate) static VERSION: AtomicU64 = AtomicU64::new(0);

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
    /// A client certificate is configured but could not be loaded (a `{vault://…}`
    /// reference that does not resolve): the service answers 500 rather than connect
    /// without it (never fail open).
    pub client_cert_missing: bool,
    /// The row, for the log phase (`kong.log.serialize().service`).
    pub row: Arc<Row>,
    /// `host`'s latest DNS answer, when it is a name.
    pub resolved: arc_swap::ArcSwapOption<crate::balancer::dns::Resolved>,
    /// The `Host` of a request to `host` and `port` ([`host_header`]), built once.
    pub host_header: Option<http::HeaderValue>,
    /// `host` as an address, when it is one (IPv6 with or without brackets).
    pub host_ip: Option<std::net::IpAddr>,
}

/// The `Host` sent to an upstream `name` on `port`: the port left out when it is
/// the protocol's default, an IPv6 address in brackets.
pub fn host_header<'a>(name: &'a str, port: u16, protocol: &str) -> std::borrow::Cow<'a, str> {
    let default_port = (port == 80 && matches!(protocol, "http" | "grpc"))
        || (port == 443 && matches!(protocol, "https" | "grpcs"));
    if default_port {
        return std::borrow::Cow::Borrowed(name);
    }
    // (built by hand: `format!` costs more than the rest of this)
    let v6 = name.contains(':');
    let mut s = String::with_capacity(name.len() + 8);
    if v6 {
        s.push('[');
    }
    s.push_str(name);
    if v6 {
        s.push(']');
    }
    s.push(':');
    let mut digits = [0u8; 20];
    s.push_str(
        std::str::from_utf8(crate::headers::decimal(port.into(), &mut digits)).unwrap_or_default(),
    );
    std::borrow::Cow::Owned(s)
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
    pub router: Arc<Router>,
    /// The routed routes by the router's route index (`Match::route_index`).
    pub routes: Slots<Arc<RouteInfo>>,
    /// Where each route sits in `routes` and the router.
    slots: RouteSlots,
    pub services: PMap<String, Arc<ServiceInfo>>,
    /// Compiled balancers by upstream name (a service host naming one goes through it).
    pub upstreams: Arc<HashMap<String, Arc<Balancer>>>,
    pub certificates: Arc<CertStore>,
    /// Certificates by id (for client certificates).
    pub certificates_by_id: Arc<HashMap<String, Arc<CertPair>>>,
    /// Every enabled plugin configuration, compiled (global rewrite plugins run from here).
    pub plugins: Arc<Plugins>,
    pub consumers: SharedConsumers,
    /// The rows all of the above was compiled from (see [`Snapshot::apply`]).
    source: Arc<Source>,
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
        Snapshot::from_source(Source::from_dataset(data.clone()), consumers, registry)
    }

    /// Compiles everything from a full load's rows.
    pub fn from_source(
        source: Source,
        consumers: SharedConsumers,
        registry: impl Fn(&str) -> Option<&'static PluginSpec>,
    ) -> Result<Snapshot, String> {
        compile::compile(
            None,
            Arc::new(source),
            &Touched::everything(),
            consumers,
            &registry,
        )
    }

    /// The next snapshot after row edits: the edits patch this snapshot's rows and only
    /// what they touch is compiled again (a route write that route alone, updated in the
    /// router in place; a service write its own routes; a target write its upstream's
    /// balancer; a plugin write the chains of the routes in its scope); everything else
    /// is shared with this snapshot, so the cost does not grow with the number of routes.
    /// The result routes as a full build of the patched rows (route indexes may differ).
    /// `None`: nothing the snapshot is built from changed.
    pub fn apply(&self, edits: Vec<Edit>) -> Result<Option<Snapshot>, String> {
        self.apply_with_registry(edits, tollgate_plugins::spec)
    }

    /// [`Snapshot::apply`] with another plugin registry.
    pub fn apply_with_registry(
        &self,
        edits: Vec<Edit>,
        registry: impl Fn(&str) -> Option<&'static PluginSpec>,
    ) -> Result<Option<Snapshot>, String> {
        let mut source = (*self.source).clone();
        let touched = source.edit(edits);
        if touched.is_empty() {
            return Ok(None);
        }
        compile::compile(
            Some(self),
            Arc::new(source),
            &touched,
            self.consumers.clone(),
            &registry,
        )
        .map(Some)
    }

    /// The rows this snapshot was compiled from.
    pub fn source(&self) -> &Source {
        &self.source
    }
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
