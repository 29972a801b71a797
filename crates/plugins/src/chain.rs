//! Which configuration of each plugin runs for a request, as Kong's
//! `kong/runloop/plugins_iterator.lua` decides it, resolved once per snapshot.
//!
//! For each plugin name only the most specific enabled configuration runs:
//! Route+Service+Consumer > Route+Consumer > Service+Consumer > Route+Service > Consumer >
//! Route > Service > Global. A disabled configuration does not exist for this purpose
//! (it never shadows a less specific one). A plugin's `no_route`/`no_service`/
//! `no_consumer` drops that dimension from the lookup.
//!
//! What can be known before the request is: per route, the configuration without a
//! consumer ([`Slot::base`]). The consumer part is looked up during the access phase, in
//! priority order, with the consumer authenticated *so far* — as Kong does, so plugins
//! below the auth plugins see the consumer and those above do not.

use crate::api::{
    CertificateChoice, CertificateCx, Exit, Flow, Phases, Plugin, PluginSpec, PluginState,
    RequestCx,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// An entity row, as the store loads it.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Protocols served by the HTTP subsystem: Kong skips a plugin none of whose protocols
/// belong to it, and does no other per-request protocol check.
const HTTP_SUBSYSTEM: &[&str] = &["http", "https", "grpc", "grpcs", "ws", "wss"];

/// One `plugins` row, compiled.
pub struct Instance {
    pub spec: &'static PluginSpec,
    pub id: Box<str>,
    pub instance_name: Option<Box<str>>,
    pub route: Option<Box<str>>,
    pub service: Option<Box<str>>,
    pub consumer: Option<Box<str>>,
    pub plugin: Box<dyn Plugin>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.spec.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A plugin whose configuration did not compile: it fails every request rather than
/// letting it through unchecked.
struct Broken(String);

impl Plugin for Broken {
    fn certificate(&self, _: &mut crate::api::CertificateCx<'_>) -> Result<(), crate::PluginError> {
        Err(crate::PluginError::new(self.0.clone()))
    }
    fn rewrite(&self, _: &mut RequestCx<'_>) -> Result<Flow, crate::PluginError> {
        Err(crate::PluginError::new(self.0.clone()))
    }
    fn access(&self, _: &mut RequestCx<'_>) -> Result<Flow, crate::PluginError> {
        Err(crate::PluginError::new(self.0.clone()))
    }
}

/// Consumer-scoped configurations of one plugin name, by consumer id.
#[derive(Default)]
struct ConsumerCombos {
    by_consumer: HashMap<Box<str>, Vec<Arc<Instance>>>,
}

impl ConsumerCombos {
    /// Route+Service+Consumer (rank 0) > Route+Consumer (1) > Service+Consumer (2) >
    /// Consumer (3).
    fn lookup(
        &self,
        route: Option<&str>,
        service: Option<&str>,
        consumer: &str,
    ) -> Option<(u8, &Arc<Instance>)> {
        let list = self.by_consumer.get(consumer)?;
        let mut best: Option<(u8, &Arc<Instance>)> = None;
        for i in list {
            let rank = match (i.route.as_deref(), i.service.as_deref()) {
                (Some(r), Some(s)) if Some(r) == route && Some(s) == service => 0,
                (Some(r), None) if Some(r) == route => 1,
                (None, Some(s)) if Some(s) == service => 2,
                (None, None) => 3,
                _ => continue,
            };
            if best.is_none_or(|(b, _)| rank < b) {
                best = Some((rank, i));
            }
        }
        best
    }
}

/// Picks between the best consumer-scoped configuration and the one without a consumer:
/// Consumer alone ranks below Route+Service but above Route, Service and Global.
fn pick<'i>(
    scoped: Option<(u8, &'i Arc<Instance>)>,
    base: Option<&'i Arc<Instance>>,
    base_is_route_service: bool,
) -> Option<&'i Arc<Instance>> {
    match scoped {
        Some((rank, i)) if rank < 3 || !base_is_route_service || base.is_none() => Some(i),
        _ => base,
    }
}

/// A (route, service) scope; `None` = any.
type Scope = (Option<Box<str>>, Option<Box<str>>);

/// All configurations of one plugin name.
struct Combos {
    spec: &'static PluginSpec,
    /// (route, service) → instance, for configurations without a consumer.
    plain: HashMap<Scope, Arc<Instance>>,
    consumer: Option<Arc<ConsumerCombos>>,
}

impl Combos {
    fn get(&self, route: Option<&str>, service: Option<&str>) -> Option<&Arc<Instance>> {
        // The key holds owned strings; build it only for the combinations that exist.
        self.plain
            .get(&(route.map(Into::into), service.map(Into::into)))
    }

    /// Kong's `lookup_cfg` without a consumer: Route+Service > Route > Service > Global.
    /// The flag tells whether the Route+Service configuration was the one found.
    fn base(&self, route: Option<&str>, service: Option<&str>) -> (Option<&Arc<Instance>>, bool) {
        let route = route.filter(|_| !self.spec.no_route);
        let service = service.filter(|_| !self.spec.no_service);
        if route.is_some() && service.is_some() {
            if let Some(i) = self.get(route, service) {
                return (Some(i), true);
            }
        }
        (self.base_below_route_service(route, service), false)
    }

    fn base_below_route_service(
        &self,
        route: Option<&str>,
        service: Option<&str>,
    ) -> Option<&Arc<Instance>> {
        if route.is_some() {
            if let Some(i) = self.get(route, None) {
                return Some(i);
            }
        }
        if service.is_some() {
            if let Some(i) = self.get(None, service) {
                return Some(i);
            }
        }
        self.get(None, None)
    }

    /// Kong's full `lookup_cfg`.
    fn lookup(
        &self,
        route: Option<&str>,
        service: Option<&str>,
        consumer: Option<&str>,
    ) -> Option<&Arc<Instance>> {
        let (base, is_rs) = self.base(route, service);
        let consumer = consumer.filter(|_| !self.spec.no_consumer);
        let scoped = match (consumer, &self.consumer) {
            (Some(c), Some(cc)) => {
                let r = route.filter(|_| !self.spec.no_route);
                let s = service.filter(|_| !self.spec.no_service);
                cc.lookup(r, s, c)
            }
            _ => None,
        };
        pick(scoped, base, is_rs)
    }
}

/// One plugin name in a route's chain.
pub struct Slot {
    pub spec: &'static PluginSpec,
    /// The configuration that applies when no consumer-scoped one does.
    pub base: Option<Arc<Instance>>,
    /// `base` is the Route+Service configuration (which outranks Consumer alone).
    base_is_route_service: bool,
    consumer: Option<Arc<ConsumerCombos>>,
}

/// The plugins that may run on one route, highest priority first. Empty (and free) when
/// none can.
#[derive(Default)]
pub struct Chain {
    slots: Box<[Slot]>,
    reads_body: bool,
    /// The route's and service's rows (`kong.router.get_route()` / `get_service()`).
    route_row: Option<Arc<Row>>,
    service_row: Option<Arc<Row>>,
}

impl Chain {
    /// A deterministic description of the chain (instance ids per slot, the rows it
    /// holds), for tests that compare two builds of the same configuration.
    #[doc(hidden)]
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        for s in self.slots.iter() {
            let mut cons: Vec<String> = s
                .consumer
                .iter()
                .flat_map(|cc| cc.by_consumer.iter())
                .map(|(k, v)| format!("{k}={:?}", v.iter().map(|i| &i.id).collect::<Vec<_>>()))
                .collect();
            cons.sort();
            out.push_str(&format!(
                "{}:{:?}:{}:{cons:?};",
                s.spec.name,
                s.base.as_ref().map(|i| &i.id),
                s.base_is_route_service
            ));
        }
        out.push_str(&format!(
            "b{} {:?} {:?}",
            self.reads_body, self.route_row, self.service_row
        ));
        out
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| s.spec.name))
            .finish()
    }
}

/// What the access phase collected for the later phases: the instances whose response
/// phases run (the `Vec` it derefs to), and the headers plugins set for the response.
#[derive(Default)]
pub struct Collected<'s> {
    instances: Vec<&'s Arc<Instance>>,
    /// `kong.response.set_header` calls made during access, applied to the response head.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Plugins' `kong.ctx.plugin`, by index in the instances (few: most plugins keep none).
    states: Vec<(usize, PluginState)>,
}

impl<'s> Collected<'s> {
    pub fn new() -> Self {
        Collected::default()
    }
    /// What runs when the access phase did not (no route matched, a redirect, a rewrite
    /// exit): the global instances (Kong's `get_collected_iterator` falling back to the
    /// global iterator).
    pub fn globals(plugins: &'s Plugins) -> Self {
        Collected {
            instances: plugins.global_downstream.iter().collect(),
            response_headers: Vec::new(),
            states: Vec::new(),
        }
    }
    /// Takes the state the instance at `index` kept during access.
    pub fn take_state(&mut self, index: usize) -> Option<PluginState> {
        let at = self.states.iter().position(|(i, _)| *i == index)?;
        Some(self.states.swap_remove(at).1)
    }
    /// Gives a state back (after a phase that may keep it).
    pub fn put_state(&mut self, index: usize, state: PluginState) {
        self.states.push((index, state));
    }
    /// Whether an instance has this phase.
    pub fn any(&self, phase: impl Fn(&Phases) -> bool) -> bool {
        self.instances.iter().any(|i| phase(&i.spec.phases))
    }
}

impl<'s> std::ops::Deref for Collected<'s> {
    type Target = Vec<&'s Arc<Instance>>;
    fn deref(&self) -> &Self::Target {
        &self.instances
    }
}

impl std::ops::DerefMut for Collected<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.instances
    }
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
    /// Whether the request body must be read before the access phase.
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }

    /// Runs the access phase: each plugin resolved with the consumer authenticated so far,
    /// in priority order. After an exit the remaining plugins are still collected for the
    /// response phases, but their access does not run (Kong's `delayed_response`).
    pub async fn access<'s: 'c, 'c>(
        &'s self,
        cx: &mut RequestCx<'c>,
        collected: &mut Collected<'s>,
    ) -> Flow {
        cx.set_rows(self.route_row.as_deref(), self.service_row.as_deref());
        let mut exit: Option<Exit> = None;
        for slot in self.slots.iter() {
            let inst = match (&slot.consumer, cx.consumer(), slot.spec.no_consumer) {
                (Some(cc), Some(c), false) => {
                    let r = cx.route_id.filter(|_| !slot.spec.no_route);
                    let s = cx.service_id.filter(|_| !slot.spec.no_service);
                    pick(
                        cc.lookup(r, s, &c.id),
                        slot.base.as_ref(),
                        slot.base_is_route_service,
                    )
                }
                _ => slot.base.as_ref(),
            };
            let Some(inst) = inst else { continue };
            if inst.spec.phases.downstream() {
                collected.push(inst);
            }
            if exit.is_some() || !inst.spec.phases.access {
                continue;
            }
            let mut flow = run(inst, "access", || inst.plugin.access(cx));
            if let Flow::Await(d) = flow {
                let resume = d.0.await;
                flow = run(inst, "access", || resume(cx));
            }
            match flow {
                Flow::Continue => {}
                Flow::Exit(e) => exit = Some(e),
                Flow::Await(_) => exit = Some(not_twice(inst, "access")),
            }
            if let Some(state) = cx.take_plugin_state() {
                // Only a plugin with a response phase reads it back.
                if inst.spec.phases.downstream() {
                    collected
                        .states
                        .push((collected.instances.len() - 1, state));
                }
            }
        }
        let mut headers = cx.take_response_headers();
        if collected.response_headers.is_empty() {
            collected.response_headers = headers;
        } else {
            collected.response_headers.append(&mut headers);
        }
        match exit {
            Some(e) => Flow::Exit(e),
            None => Flow::Continue,
        }
    }
}

/// A plugin that waited where it may not (a second time, or in rewrite): a bug, 500.
fn not_twice(inst: &Instance, phase: &'static str) -> Exit {
    tracing::error!(plugin = inst.spec.name, id = %inst.id, phase, "plugin waited where it may not");
    Exit::unexpected()
}

/// Runs one phase function; a returned error or a panic fails the request with 500.
pub(crate) fn run(
    inst: &Instance,
    phase: &'static str,
    f: impl FnOnce() -> Result<Flow, crate::PluginError>,
) -> Flow {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(flow)) => flow,
        Ok(Err(e)) => {
            tracing::error!(plugin = inst.spec.name, id = %inst.id, phase, "plugin failed: {e}");
            Flow::Exit(Exit::unexpected())
        }
        Err(_) => {
            tracing::error!(plugin = inst.spec.name, id = %inst.id, phase, "plugin panicked");
            Flow::Exit(Exit::unexpected())
        }
    }
}

/// Every enabled plugin configuration of a snapshot, grouped by plugin name.
#[derive(Default)]
pub struct Plugins {
    /// By plugin name, highest priority first.
    combos: Vec<Combos>,
    /// Global instances with a rewrite phase, highest priority first.
    global_rewrite: Box<[Arc<Instance>]>,
    /// Global instances with a header_filter, body_filter or log phase.
    global_downstream: Box<[Arc<Instance>]>,
    /// Global instances with a certificate phase.
    global_certificate: Box<[Arc<Instance>]>,
    /// Route and service rows by id (without their nulls, as Kong's DAO returns them),
    /// shared by the chains; kept only when some plugin reads them.
    rows: HashMap<Box<str>, Arc<Row>>,
    /// Some instance reads `rows`.
    reads_rows: bool,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.combos.iter().map(|c| c.spec.name))
            .finish()
    }
}

fn fk(row: &Row, k: &str) -> Option<Box<str>> {
    match row.get(k)? {
        serde_json::Value::Object(m) => m.get("id").and_then(|v| v.as_str()).map(Into::into),
        serde_json::Value::String(s) => Some(s.as_str().into()),
        _ => None,
    }
}

/// The previous build and which plugin ids changed since (see [`Plugins::compile`]).
pub type Reuse<'a> = (&'a Plugins, &'a dyn Fn(&str) -> bool);

/// One `plugins` row compiled. An unknown plugin or a config that does not compile
/// becomes an instance that fails its requests (logged here).
fn compile_instance(
    row: &Row,
    registry: &impl Fn(&str) -> Option<&'static PluginSpec>,
) -> Instance {
    let name = row.get("name").and_then(|v| v.as_str()).unwrap_or_default();
    let id: Box<str> = row
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .into();
    let (spec, plugin) = match registry(name) {
        Some(spec) => {
            let config = row.get("config").cloned().unwrap_or_default();
            match resolve_references(spec, config).and_then(|c| (spec.compile)(&c)) {
                Ok(mut p) => {
                    p.bind(&crate::api::InstanceScope {
                        id: &id,
                        route: fk(row, "route").as_deref(),
                        service: fk(row, "service").as_deref(),
                        consumer: fk(row, "consumer").as_deref(),
                    });
                    (spec, p)
                }
                Err(e) => {
                    tracing::error!(plugin = name, %id, "plugin config does not compile: {e}");
                    (broken(spec), Box::new(Broken(e)) as Box<dyn Plugin>)
                }
            }
        }
        None => {
            tracing::error!(plugin = name, %id, "plugin is in use but not installed");
            let msg = format!("{name} plugin is in use but not installed");
            (broken_spec(), Box::new(Broken(msg)) as Box<dyn Plugin>)
        }
    };
    Instance {
        spec,
        id,
        instance_name: row
            .get("instance_name")
            .and_then(|v| v.as_str())
            .map(Into::into),
        route: fk(row, "route"),
        service: fk(row, "service"),
        consumer: fk(row, "consumer"),
        plugin,
    }
}

impl Plugins {
    /// Compiles the `plugins` rows of a dataset. A row whose plugin is unknown or whose
    /// config does not compile becomes an instance that fails its requests (logged here).
    pub fn build(data: &BTreeMap<String, Vec<Row>>) -> Plugins {
        Plugins::build_with(data, crate::spec)
    }

    /// [`Plugins::build`] with another registry (tests register their own plugins).
    pub fn build_with(
        data: &BTreeMap<String, Vec<Row>>,
        registry: impl Fn(&str) -> Option<&'static PluginSpec>,
    ) -> Plugins {
        let rows = |e: &str| data.get(e).map(Vec::as_slice).unwrap_or(&[]);
        Plugins::compile(
            rows("plugins"),
            rows("routes").iter().chain(rows("services")),
            registry,
            None,
        )
    }

    /// Compiles `plugins` rows; `router_rows` (routes and services) are read only when some
    /// plugin reads them. With `reuse`, a row whose id it does not name as changed takes
    /// the previous snapshot's compiled instance instead of compiling its config again.
    pub fn compile<'a>(
        rows: impl IntoIterator<Item = &'a Row>,
        router_rows: impl IntoIterator<Item = &'a Row>,
        registry: impl Fn(&str) -> Option<&'static PluginSpec>,
        reuse: Option<Reuse<'_>>,
    ) -> Plugins {
        let previous: HashMap<&str, &Arc<Instance>> = match reuse {
            Some((prev, changed)) => prev
                .instances()
                .filter(|i| !changed(&i.id))
                .map(|i| (&*i.id, i))
                .collect(),
            None => HashMap::new(),
        };
        let mut by_name: BTreeMap<&str, Combos> = BTreeMap::new();
        for row in rows {
            if !row.get("enabled").and_then(|v| v.as_bool()).unwrap_or(true) {
                continue;
            }
            if let Some(ps) = row.get("protocols").and_then(|v| v.as_array()) {
                if !ps
                    .iter()
                    .any(|p| p.as_str().is_some_and(|p| HTTP_SUBSYSTEM.contains(&p)))
                {
                    continue;
                }
            }
            let id = row.get("id").and_then(|v| v.as_str()).unwrap_or_default();
            let inst = match previous.get(id) {
                Some(i) => Arc::clone(i),
                None => Arc::new(compile_instance(row, &registry)),
            };
            let spec = inst.spec;
            let combos = by_name.entry(spec.name).or_insert_with(|| Combos {
                spec,
                plain: HashMap::new(),
                consumer: None,
            });
            match inst.consumer.clone() {
                Some(c) => {
                    let cc = Arc::get_mut(combos.consumer.get_or_insert_with(Default::default))
                        .expect("not shared while building");
                    cc.by_consumer.entry(c).or_default().push(inst);
                }
                None => {
                    combos
                        .plain
                        .insert((inst.route.clone(), inst.service.clone()), inst);
                }
            }
        }
        let mut combos: Vec<Combos> = by_name.into_values().collect();
        // Kong sorts by priority, highest first; ties keep a stable (name) order.
        combos.sort_by_key(|c| std::cmp::Reverse(c.spec.priority));
        let globals = |phase: fn(&Phases) -> bool| -> Box<[Arc<Instance>]> {
            combos
                .iter()
                .filter(|c| phase(&c.spec.phases))
                .filter_map(|c| c.get(None, None).cloned())
                .collect()
        };
        let global_rewrite = globals(|p| p.rewrite);
        let global_downstream = globals(Phases::downstream);
        let global_certificate = globals(|p| p.certificate);
        let mut rows = HashMap::new();
        let reads_rows = combos.iter().any(|c| {
            c.plain.values().any(|i| i.plugin.reads_router_rows())
                || c.consumer.as_ref().is_some_and(|cc| {
                    cc.by_consumer
                        .values()
                        .flatten()
                        .any(|i| i.plugin.reads_router_rows())
                })
        });
        if reads_rows {
            for row in router_rows {
                if let Some(id) = row.get("id").and_then(|v| v.as_str()) {
                    let r: Row = row
                        .iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    rows.insert(id.into(), Arc::new(r));
                }
            }
        }
        Plugins {
            combos,
            global_rewrite,
            global_downstream,
            global_certificate,
            rows,
            reads_rows,
        }
    }

    /// Every compiled instance.
    fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.combos.iter().flat_map(|c| {
            c.plain.values().chain(
                c.consumer
                    .iter()
                    .flat_map(|cc| cc.by_consumer.values().flatten()),
            )
        })
    }

    /// Whether some plugin reads the route and service rows: the chains then hold those
    /// rows, so a route or service write recompiles them.
    pub fn reads_router_rows(&self) -> bool {
        self.reads_rows
    }

    /// A deterministic description of everything compiled (instance ids per scope, in
    /// order), for tests that compare two builds of the same configuration.
    #[doc(hidden)]
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        for c in &self.combos {
            let mut plain: Vec<String> = c
                .plain
                .iter()
                .map(|(k, i)| format!("{k:?}={}", i.id))
                .collect();
            plain.sort();
            let mut cons: Vec<String> = c
                .consumer
                .iter()
                .flat_map(|cc| cc.by_consumer.iter())
                .map(|(k, v)| format!("{k}={:?}", v.iter().map(|i| &i.id).collect::<Vec<_>>()))
                .collect();
            cons.sort();
            out.push_str(&format!("{}:{plain:?}{cons:?};", c.spec.name));
        }
        let ids = |l: &[Arc<Instance>]| l.iter().map(|i| i.id.to_string()).collect::<Vec<_>>();
        let mut rows: Vec<&Box<str>> = self.rows.keys().collect();
        rows.sort();
        out.push_str(&format!(
            "g{:?}{:?}{:?}r{rows:?}",
            ids(&self.global_rewrite),
            ids(&self.global_downstream),
            ids(&self.global_certificate)
        ));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.combos.is_empty()
    }

    /// The chain for a route (and its service). Consumer-scoped configurations are
    /// included only when some plugin without a consumer applies: a consumer can only be
    /// authenticated by a plugin, so a route with none stays empty and free.
    pub fn chain(&self, route: Option<&str>, service: Option<&str>) -> Chain {
        let mut slots = Vec::new();
        for c in &self.combos {
            let (base, base_is_route_service) = c.base(route, service);
            let consumer = c.consumer.clone().filter(|_| !c.spec.no_consumer);
            if base.is_some() || consumer.is_some() {
                slots.push(Slot {
                    spec: c.spec,
                    base: base.cloned(),
                    base_is_route_service,
                    consumer,
                });
            }
        }
        if slots.iter().all(|s| s.base.is_none()) {
            return Chain::default();
        }
        let reads_body = slots.iter().any(|s| {
            s.base.as_ref().is_some_and(|i| i.plugin.reads_body())
                || s.consumer.as_ref().is_some_and(|cc| {
                    cc.by_consumer
                        .values()
                        .flatten()
                        .any(|i| i.plugin.reads_body())
                })
        });
        let row = |id: Option<&str>| id.and_then(|id| self.rows.get(id)).cloned();
        Chain {
            slots: slots.into_boxed_slice(),
            reads_body,
            route_row: row(route),
            service_row: row(service),
        }
    }

    /// The configuration of `name` that applies to a (route, service, consumer)
    /// combination (Kong's `lookup_cfg`).
    pub fn resolve(
        &self,
        name: &str,
        route: Option<&str>,
        service: Option<&str>,
        consumer: Option<&str>,
    ) -> Option<&Instance> {
        self.combos
            .iter()
            .find(|c| c.spec.name == name)?
            .lookup(route, service, consumer)
            .map(|i| &**i)
    }

    /// Whether any enabled configuration of `name` exists (Kong's `configure` phase is
    /// handed none otherwise).
    pub fn has(&self, name: &str) -> bool {
        self.combos.iter().any(|c| c.spec.name == name)
    }

    /// Runs the rewrite phase of global plugins (before routing).
    pub fn rewrite(&self, cx: &mut RequestCx<'_>) -> Flow {
        for inst in self.global_rewrite.iter() {
            match run(inst, "rewrite", || inst.plugin.rewrite(cx)) {
                Flow::Continue => {}
                Flow::Exit(e) => return Flow::Exit(e),
                // The rewrite phase runs before routing, synchronously.
                Flow::Await(_) => return Flow::Exit(not_twice(inst, "rewrite")),
            }
        }
        Flow::Continue
    }

    /// Whether any global plugin has a rewrite phase.
    pub fn has_rewrite(&self) -> bool {
        !self.global_rewrite.is_empty()
    }

    /// Whether any global plugin has a header_filter, body_filter or log phase.
    pub fn has_global_downstream(&self) -> bool {
        !self.global_downstream.is_empty()
    }

    /// Whether any global plugin has a certificate phase.
    pub fn has_certificate(&self) -> bool {
        !self.global_certificate.is_empty()
    }

    /// Runs the certificate phase of global plugins, highest priority first; a failing
    /// plugin aborts the handshake (it cannot answer with an error page).
    pub fn certificate(&self, cx: &mut CertificateCx<'_>) {
        for inst in self.global_certificate.iter() {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inst.plugin.certificate(cx)
            }));
            let err = match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("plugin panicked".to_owned()),
            };
            if let Some(e) = err {
                tracing::error!(plugin = inst.spec.name, id = %inst.id, "certificate phase failed: {e}");
                cx.abort();
            }
            if *cx.choice() == CertificateChoice::Abort {
                return;
            }
        }
    }
}

/// `config` with the references in its referenceable fields resolved (in memory only:
/// the row keeps them). The schema is walked only when a reference is present.
fn resolve_references(
    spec: &PluginSpec,
    mut config: serde_json::Value,
) -> Result<serde_json::Value, String> {
    if !tollgate_model::vault::contains_reference(&config) {
        return Ok(config);
    }
    if let serde_json::Value::Object(m) = &mut config {
        let def = (spec.schema)();
        tollgate_model::vault::resolve_record(&def.config, m, &tollgate_model::vault::resolve)?;
    }
    Ok(config)
}

/// `spec` with an access phase, for an instance that cannot run: a log-only plugin whose
/// configuration does not compile still fails its requests rather than silently doing
/// nothing. One leaked copy per plugin name, so rebuilding snapshots does not grow memory.
fn broken(spec: &'static PluginSpec) -> &'static PluginSpec {
    use std::sync::Mutex;
    static BROKEN: Mutex<Vec<&'static PluginSpec>> = Mutex::new(Vec::new());
    if spec.phases.access {
        return spec;
    }
    let mut all = BROKEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.iter().find(|s| s.name == spec.name) {
        return s;
    }
    let s: &'static PluginSpec = Box::leak(Box::new(PluginSpec {
        phases: Phases {
            access: true,
            ..spec.phases
        },
        ..*spec
    }));
    all.push(s);
    s
}

/// The spec given to rows naming a plugin this build does not have.
fn broken_spec() -> &'static PluginSpec {
    static SPEC: PluginSpec = PluginSpec {
        name: "(not installed)",
        priority: i32::MAX,
        no_consumer: true,
        no_route: false,
        no_service: false,
        phases: Phases::ACCESS,
        schema: || unreachable!("never in the catalog"),
        compile: |_| Err("not installed".into()),
    };
    &SPEC
}

#[cfg(test)]
mod tests;
