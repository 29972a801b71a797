//! A snapshot's routes: where each routed route sits (its route index in the router and
//! in `Snapshot::routes`) and which routes a batch of edits reaches, so that a route write
//! visits that route alone and a service write its own routes, never all of them.

use super::compile::Services;
use super::source::{Source, Touched};
use super::{b, fk, n, s, strs, RouteInfo, Row, ServiceInfo, Snapshot};
use std::collections::BTreeSet;
use std::sync::Arc;
use tollgate_plugins::Plugins;
use tollgate_router::persistent::{PMap, POrdMap, Slots};
use tollgate_router::{PathHandling, RouteSpec, Router};

/// Which route index each routed route holds, and the routes of each service (so a
/// service write reaches its routes without a scan of them all).
#[derive(Clone, Default)]
pub(super) struct RouteSlots {
    by_id: PMap<Arc<str>, u32>,
    /// Indexes given up by routes that left, taken again first.
    free: Vec<u32>,
    end: u32,
    /// (service id, route id) of every route row naming a service, routed or not.
    by_service: POrdMap<(Arc<str>, Arc<str>), ()>,
}

impl RouteSlots {
    fn take(&mut self, id: &Arc<str>) -> usize {
        let i = self.free.pop().unwrap_or_else(|| {
            self.end += 1;
            self.end - 1
        });
        self.by_id.insert(id.clone(), i);
        i as usize
    }

    fn release(&mut self, id: &str, i: usize) {
        self.by_id.remove(id);
        self.free.push(i as u32);
    }

    /// Keeps `by_service` current with the route edits.
    fn follow(&mut self, prev: Option<&Snapshot>, source: &Source, touched: &Touched) {
        if prev.is_none() {
            for row in source.rows("routes") {
                if let (Some(id), Some(svc)) = (s(row, "id"), fk(row, "service")) {
                    self.by_service.insert((svc.into(), id.into()), ());
                }
            }
            return;
        }
        for (id, was, is) in &touched.route_moves {
            if let Some(svc) = was {
                self.by_service.remove(&(svc.as_str().into(), id.clone()));
            }
            if let Some(svc) = is {
                self.by_service
                    .insert((svc.as_str().into(), id.clone()), ());
            }
        }
    }

    fn of_service<'a>(&'a self, svc: &'a str) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        let from = (Arc::<str>::from(svc), Arc::<str>::from(""));
        self.by_service
            .iter_from(&from)
            .take_while(move |((s, _), _)| &**s == svc)
            .map(|((_, r), _)| r)
    }
}

type Compiled = (Slots<Arc<RouteInfo>>, RouteSlots, Arc<Router>);

/// The routes and the router after `touched`: the routes it reaches are compiled again
/// (their row, service or plugin chain changed) and the router updated with those whose
/// row changed or which entered or left it; everything else is shared with `prev`.
/// `chains`: whether the plugins changed, and whether that reaches every route's chain.
pub(super) fn compile(
    prev: Option<&Snapshot>,
    source: &Source,
    touched: &Touched,
    services: &Services,
    plugins: &Plugins,
    (plugins_changed, chains_everywhere): (bool, bool),
) -> Result<Compiled, String> {
    let chain_touched = |route: &str, service: Option<&str>| {
        plugins_changed
            && (chains_everywhere
                || touched.plugin_routes.contains(route)
                || service.is_some_and(|s| touched.plugin_services.contains(s)))
    };

    // An upstream write compiles every service again (see `compile::services`).
    let all_routes = prev.is_none() || chains_everywhere || touched.has("upstreams");
    let mut slots: RouteSlots = prev.map(|p| p.slots.clone()).unwrap_or_default();
    let mut routes = prev.map(|p| p.routes.clone()).unwrap_or_default();
    slots.follow(prev, source, touched);
    let mut dirty: BTreeSet<Arc<str>> = touched.ids("routes").cloned().collect();
    if all_routes {
        dirty.extend(source.ids("routes").cloned());
    } else {
        let plugin_services = touched.plugin_services.iter().filter(|_| plugins_changed);
        for svc in touched
            .ids("services")
            .map(|s| &**s)
            .chain(plugin_services.map(|s| s.as_str()))
        {
            dirty.extend(slots.of_service(svc).cloned());
        }
        if plugins_changed {
            dirty.extend(touched.plugin_routes.iter().map(|r| r.as_str().into()));
        }
    }
    let mut router_changes = Vec::new();
    for id in dirty {
        let at = slots.by_id.get(&*id).map(|&s| s as usize);
        let written = touched.has_id("routes", &id);
        let was = at.filter(|_| !written).and_then(|i| routes.get(i));
        let info = match source.row("routes", &id) {
            Some(row) => routed(&id, row, services, plugins, was, |svc| {
                chain_touched(&id, svc)
            })?,
            None => None,
        };
        match (at, info) {
            (None, None) => {}
            (Some(i), None) => {
                routes.set(i, None);
                slots.release(&id, i);
                router_changes.push((i, None));
            }
            (at, Some(info)) => {
                let i = at.unwrap_or_else(|| slots.take(&id));
                if written || at.is_none() {
                    router_changes.push((i, Some(route_spec(&id, &info.row))));
                }
                if !routes.get(i).is_some_and(|r| Arc::ptr_eq(r, &info)) {
                    routes.set(i, Some(info));
                }
            }
        }
    }

    // The router: only the routes whose row changed or which entered or left it are
    // compiled again; the others are shared with the previous router.
    let router = match prev {
        Some(p) if router_changes.is_empty() => p.router.clone(),
        _ => {
            let base = match prev {
                Some(p) => p.router.clone(),
                None => Arc::new(Router::build(&[]).map_err(|e| e.to_string())?),
            };
            Arc::new(base.update(router_changes).map_err(|e| e.to_string())?)
        }
    };

    Ok((routes, slots, router))
}

/// A route row as the proxy serves it (`None`: its service is disabled, and Kong leaves
/// such routes out of the router); `was` is kept when its service and chain are the same.
fn routed(
    id: &str,
    row: &Arc<Row>,
    services: &Services,
    plugins: &Plugins,
    was: Option<&Arc<RouteInfo>>,
    chain_touched: impl Fn(Option<&str>) -> bool,
) -> Result<Option<Arc<RouteInfo>>, String> {
    let service = match fk(row, "service") {
        Some(sid) => match services.get(&sid) {
            Some(svc) => Some(svc.clone()),
            None => return Err(format!("route {id}: service {sid} not found")),
        },
        None => None,
    };
    if service.as_ref().is_some_and(|s| !s.enabled) {
        return Ok(None);
    }
    let service_id = service.as_ref().map(|s| s.id.as_str());
    let same_service = |was: &RouteInfo| match (&was.service, &service) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    if let Some(was) = was.filter(|w| same_service(w) && !chain_touched(service_id)) {
        return Ok(Some(was.clone()));
    }
    let chain = plugins.chain(Some(id), service_id);
    Ok(Some(Arc::new(route_info(
        id.to_owned(),
        row,
        service,
        chain,
    ))))
}

fn route_spec(id: &str, row: &Row) -> RouteSpec {
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
    RouteSpec {
        id: id.to_owned(),
        created_at: n(row, "created_at", 0),
        protocols: strs(row, "protocols"),
        methods: strs(row, "methods"),
        hosts: strs(row, "hosts"),
        paths: strs(row, "paths"),
        headers,
        snis: strs(row, "snis"),
        regex_priority: n(row, "regex_priority", 0),
    }
}

fn route_info(
    id: String,
    row: &Arc<Row>,
    service: Option<Arc<ServiceInfo>>,
    plugins: tollgate_plugins::Chain,
) -> RouteInfo {
    RouteInfo {
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
        plugins,
        row: row.clone(),
    }
}
