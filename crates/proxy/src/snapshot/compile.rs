//! Compiling a snapshot from its rows: everything for a first build, only what a batch of
//! row edits touched afterwards. One code path for both, so an incremental snapshot is
//! the full build of the same rows (pinned by the property test in `tests.rs`).

use super::routes;
use super::source::{Source, Touched};
use super::{b, fk, ms, n, s, CertStore, Row, ServiceInfo, SharedConsumers};
use super::{Snapshot, VERSION};
use crate::balancer::Balancer;
use crate::tls::{self, CertPair};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tollgate_model::vault;
use tollgate_plugins::{PluginSpec, Plugins};
use tollgate_router::persistent::PMap;

/// Certificates, SNIs and CA certificates are few and feed services and balancers: a
/// change to any of them compiles everything again.
const EVERYTHING: &[&str] = &["certificates", "snis", "ca_certificates"];

pub(super) fn compile(
    prev: Option<&Snapshot>,
    source: Arc<Source>,
    touched: &Touched,
    consumers: SharedConsumers,
    registry: &dyn Fn(&str) -> Option<&'static PluginSpec>,
) -> Result<Snapshot, String> {
    let prev = prev.filter(|_| !EVERYTHING.iter().any(|e| touched.has(e)));
    let all_touched;
    let touched = match prev {
        Some(_) => touched,
        None => {
            all_touched = Touched::everything();
            &all_touched
        }
    };

    let (certificates, certificates_by_id) = match prev {
        Some(p) => (p.certificates.clone(), p.certificates_by_id.clone()),
        None => {
            let (store, by_id) = certificates(&source)?;
            (Arc::new(store), Arc::new(by_id))
        }
    };
    let services = services(prev, &source, touched, &certificates_by_id)?;
    let upstreams = upstreams(prev, &source, touched, &certificates_by_id)?;

    let plugins_changed = match prev {
        None => true,
        Some(p) => {
            touched.has("plugins")
                || (p.plugins.reads_router_rows()
                    && (touched.has("routes") || touched.has("services")))
        }
    };
    let plugins = match prev {
        Some(p) if !plugins_changed => p.plugins.clone(),
        _ => {
            let changed = |id: &str| touched.has_id("plugins", id);
            Arc::new(Plugins::compile(
                source.rows("plugins").map(|r| &**r),
                source
                    .rows("routes")
                    .chain(source.rows("services"))
                    .map(|r| &**r),
                registry,
                prev.map(|p| (&*p.plugins, &changed as &dyn Fn(&str) -> bool)),
            ))
        }
    };
    // Which chains a plugin change reaches: its scope's routes, or all of them.
    let chains_everywhere = plugins_changed
        && prev.is_none_or(|p| {
            touched.plugins_everywhere
                || p.plugins.reads_router_rows()
                || plugins.reads_router_rows()
        });
    let (routes, slots, router) = routes::compile(
        prev,
        &source,
        touched,
        &services,
        &plugins,
        (plugins_changed, chains_everywhere),
    )?;

    Ok(Snapshot {
        version: VERSION.fetch_add(1, Ordering::Relaxed) + 1,
        router,
        routes,
        slots,
        services,
        upstreams,
        certificates,
        certificates_by_id,
        plugins,
        consumers,
        source,
    })
}

type Certificates = (CertStore, HashMap<String, Arc<CertPair>>);

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

fn certificates(source: &Source) -> Result<Certificates, String> {
    let mut by_id = HashMap::new();
    for row in source.rows("certificates") {
        let id = s(row, "id").ok_or("certificate without id")?;
        match certificate(row) {
            Ok(Some(pair)) => {
                by_id.insert(id, Arc::new(pair));
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
    let mut store = CertStore::default();
    for row in source.rows("snis") {
        let (Some(name), Some(cid)) = (s(row, "name"), fk(row, "certificate")) else {
            continue;
        };
        if let Some(c) = by_id.get(&cid) {
            store.exact.insert(name.to_ascii_lowercase(), c.clone());
        }
    }
    Ok((store, by_id))
}

/// Services: the written ones compiled again, the others shared. An upstream write may
/// change the client certificate of the services naming it, so it recompiles them all.
fn services(
    prev: Option<&Snapshot>,
    source: &Source,
    touched: &Touched,
    certs: &HashMap<String, Arc<CertPair>>,
) -> Result<Services, String> {
    // read only when a service is compiled
    let cx = std::cell::OnceCell::new();
    let compile = |id: &str, row: &Arc<Row>| -> Result<_, String> {
        let cx = cx.get_or_init(|| ServiceCx::new(source));
        Ok(Arc::new(service_info(id.to_owned(), row, cx, certs)?))
    };
    match prev {
        Some(p) if !touched.has("upstreams") => {
            let mut out = p.services.clone();
            for id in touched.ids("services") {
                match source.row("services", id) {
                    Some(row) => out.insert(id.to_string(), compile(id, row)?),
                    None => out.remove(&**id),
                };
            }
            Ok(out)
        }
        _ => {
            let mut out = Vec::new();
            for row in source.rows("services") {
                let id = s(row, "id").ok_or("service without id")?;
                let svc = compile(&id, row)?;
                out.push((id, svc));
            }
            Ok(out.into_iter().collect())
        }
    }
}

pub(super) type Services = PMap<String, Arc<ServiceInfo>>;

/// What compiling a service reads besides its row.
struct ServiceCx {
    ca_by_id: HashMap<String, String>,
    /// An upstream's client certificate serves the services whose host names it when
    /// they have none of their own (kong/runloop/upstream_ssl.lua).
    upstream_cc: HashMap<String, String>,
}

impl ServiceCx {
    fn new(source: &Source) -> ServiceCx {
        ServiceCx {
            ca_by_id: source
                .rows("ca_certificates")
                .filter_map(|r| Some((s(r, "id")?, s(r, "cert")?)))
                .collect(),
            upstream_cc: source
                .rows("upstreams")
                .filter_map(|r| Some((s(r, "name")?, fk(r, "client_certificate")?)))
                .collect(),
        }
    }
}

fn service_info(
    id: String,
    row: &Arc<Row>,
    cx: &ServiceCx,
    certs: &HashMap<String, Arc<CertPair>>,
) -> Result<ServiceInfo, String> {
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
        .or_else(|| s(row, "host").and_then(|h| cx.upstream_cc.get(&h).cloned()));
    let is_tls = matches!(protocol.as_str(), "https" | "grpcs" | "tls");
    let mut client_cert_missing = false;
    let (tls, tls_profile) = if is_tls {
        let cas: Vec<&str> = ca_ids
            .iter()
            .filter_map(|i| cx.ca_by_id.get(i).map(String::as_str))
            .collect();
        let cc = client_cert.as_ref().and_then(|c| certs.get(c));
        client_cert_missing = client_cert.is_some() && cc.is_none();
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
    let host = s(row, "host").unwrap_or_default();
    let port = n(row, "port", 80).clamp(0, 65535) as u16;
    let host_header = http::HeaderValue::from_str(&super::host_header(&host, port, &protocol)).ok();
    let host_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok();
    Ok(ServiceInfo {
        name: s(row, "name"),
        host,
        port,
        host_header,
        host_ip,
        path: s(row, "path"),
        retries: n(row, "retries", 5).max(0) as u32,
        connect_timeout: ms(row, "connect_timeout"),
        write_timeout: ms(row, "write_timeout"),
        read_timeout: ms(row, "read_timeout"),
        enabled: b(row, "enabled", true),
        tls,
        tls_profile,
        client_cert_missing,
        protocol,
        id,
        row: row.clone(),
        resolved: Default::default(),
    })
}

/// Balancers by upstream name: those whose upstream or targets changed compiled again,
/// the others shared (their health state lives outside the snapshot either way).
fn upstreams(
    prev: Option<&Snapshot>,
    source: &Source,
    touched: &Touched,
    certs: &HashMap<String, Arc<CertPair>>,
) -> Result<Arc<HashMap<String, Arc<Balancer>>>, String> {
    if let Some(p) = prev.filter(|_| touched.upstreams.is_empty() && !touched.has("upstreams")) {
        return Ok(p.upstreams.clone());
    }
    let earlier: HashMap<&str, &Arc<Balancer>> = prev
        .map(|p| p.upstreams.values().map(|b| (b.id.as_str(), b)).collect())
        .unwrap_or_default();
    let rebuild =
        |id: &str| prev.is_none() || touched.upstreams.contains(id) || !earlier.contains_key(id);
    // The targets of the upstreams compiled again, in id order.
    let wanted: HashSet<String> = source
        .rows("upstreams")
        .filter_map(|r| s(r, "id"))
        .filter(|id| rebuild(id))
        .collect();
    let mut targets: HashMap<String, Vec<&Row>> = HashMap::new();
    if !wanted.is_empty() {
        for row in source.rows("targets") {
            if let Some(uid) = fk(row, "upstream").filter(|u| wanted.contains(u)) {
                targets.entry(uid).or_default().push(row);
            }
        }
    }
    let mut out = HashMap::new();
    let mut rebuilt = false;
    for row in source.rows("upstreams") {
        let id = s(row, "id").unwrap_or_default();
        let b = match earlier.get(id.as_str()).filter(|_| !wanted.contains(&id)) {
            Some(b) => Arc::clone(b),
            None => {
                let t = targets.remove(&id).unwrap_or_default();
                let b = Arc::new(Balancer::build(row, &t, certs)?);
                crate::balancer::health::ensure_checker(&b);
                rebuilt = true;
                b
            }
        };
        out.insert(b.name.clone(), b);
    }
    if rebuilt || out.len() != earlier.len() {
        crate::balancer::state::prune();
    }
    Ok(Arc::new(out))
}
