//! Compiled router: each route compiled once into an `Arc` shared by every router version
//! that keeps it, and candidate indexes that a route change edits in place.

use std::borrow::Cow;
use std::sync::Arc;

use regex::Regex;

use crate::conds::{compile_route, is_stream_route, RouteConds};
use crate::index::{Cand, CandList, Edits, Index, PathIndex};
use crate::persistent::Slots;
use crate::priority::{group_paths, is_regex_path, priority_of};
use crate::{BuildError, Captures, Match, RequestInfo, RouteSpec};

/// Namespace Kong uses for the uuid v5 ids of split routes
/// (`transform.lua`, `uuid.factory_v5`).
const SPLIT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7f145bf9_0dce_4f91_98eb_debbce4b9f6b);

/// How matchers of equal priority are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TieBreak {
    /// Kong `traditional_compatible` (ATC): greater uuid first (split matchers
    /// use their uuid v5); ids that are not UUIDs sort below UUIDs, by string,
    /// descending.
    #[default]
    KongAtc,
    /// Older `created_at` first, then id ascending, then path-group order.
    CreatedAt,
}

/// Options for [`Router::build_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    pub tie_break: TieBreak,
}

#[derive(Debug)]
pub(crate) enum PathGroup {
    None,
    /// indices into route.paths; all the same length
    Prefix(Vec<u32>),
    /// indices into route.paths; all regex
    Regex(Vec<u32>),
}

/// One of a route's matchers (a path group, Kong PR #10615).
#[derive(Debug)]
pub(crate) struct Group {
    priority: u64,
    uuid: Option<u128>,
    pub(crate) paths: PathGroup,
}

/// A route compiled: its spec, conditions and matchers.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) spec: RouteSpec,
    pub(crate) conds: RouteConds,
    /// empty for stream routes (not matched by this HTTP router)
    pub(crate) groups: Vec<Group>,
}

impl Compiled {
    fn new(spec: RouteSpec) -> Result<Compiled, BuildError> {
        let conds = compile_route(&spec)?;
        let mut groups = Vec::new();
        let r = &spec;
        if is_stream_route(r) {
        } else if r.paths.is_empty() {
            groups.push(Group {
                priority: priority_of(r, &[]),
                uuid: uuid_key(&r.id),
                paths: PathGroup::None,
            });
        } else {
            let split = group_paths(&r.paths);
            let many = split.len() > 1;
            for (gi, g) in split.into_iter().enumerate() {
                let ps: Vec<&str> = g.iter().map(|&i| r.paths[i].as_str()).collect();
                let idx: Vec<u32> = g.iter().map(|&i| i as u32).collect();
                let uuid = if many {
                    let name = format!("{}#{}", r.id, gi + 1);
                    Some(uuid::Uuid::new_v5(&SPLIT_NAMESPACE, name.as_bytes()).as_u128())
                } else {
                    uuid_key(&r.id)
                };
                groups.push(Group {
                    priority: priority_of(r, &ps),
                    uuid,
                    paths: if is_regex_path(ps[0]) {
                        PathGroup::Regex(idx)
                    } else {
                        PathGroup::Prefix(idx)
                    },
                });
            }
        }
        Ok(Compiled {
            spec,
            conds,
            groups,
        })
    }
}

/// Compiled, immutable router (`Send + Sync`). [`Router::update`] makes the next
/// version from this one at a cost proportional to the routes it changes.
#[derive(Debug, Clone)]
pub struct Router {
    /// by route index (the slot a route was given)
    routes: Slots<Arc<Compiled>>,
    matchers: usize,
    tie_break: TieBreak,
    index: Index,
}

struct Hit {
    priority: u64,
    slot: u32,
    group: u32,
    host: Option<u32>,
    method: Option<u32>,
    /// (path index, consumed length)
    path: Option<(u32, usize)>,
}

/// A route's matchers as index entries.
fn cands(tie_break: TieBreak, slot: usize, r: &Arc<Compiled>) -> impl Iterator<Item = Cand> {
    let r = r.clone();
    (0..r.groups.len()).map(move |gi| {
        let g = &r.groups[gi];
        let tie = match tie_break {
            TieBreak::KongAtc => g.uuid,
            // older first
            TieBreak::CreatedAt => Some((i64::MAX as i128 - r.spec.created_at as i128) as u128),
        };
        Cand {
            priority: g.priority,
            tie,
            slot: slot as u32,
            group: gi as u32,
            route: r.clone(),
        }
    })
}

fn uuid_key(id: &str) -> Option<u128> {
    uuid::Uuid::parse_str(id).ok().map(|u| u.as_u128())
}

impl Router {
    /// Builds a router with Kong `traditional_compatible` ordering.
    pub fn build(routes: &[RouteSpec]) -> Result<Router, BuildError> {
        Router::build_with(routes, &BuildOptions::default())
    }

    /// Builds a router with explicit options. A route's index in `routes` is its
    /// [`Match::route_index`].
    pub fn build_with(routes: &[RouteSpec], opts: &BuildOptions) -> Result<Router, BuildError> {
        let empty = Router {
            routes: Slots::default(),
            matchers: 0,
            tie_break: opts.tie_break,
            index: Index::default(),
        };
        empty.update(
            routes
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, r)| (i, Some(r))),
        )
    }

    /// The next router: each `(slot, spec)` puts `spec` at route index `slot` (`None`
    /// empties it), replacing what was there. Everything else is shared with `self`,
    /// and the result routes exactly as [`Router::build`] of the same routes (in slot
    /// order, empty slots left out, indexes mapped back to the slots) would.
    pub fn update(
        &self,
        changes: impl IntoIterator<Item = (usize, Option<RouteSpec>)>,
    ) -> Result<Router, BuildError> {
        let mut next = self.clone();
        let mut edits = Edits::default();
        for (slot, spec) in changes {
            let compiled = spec.map(Compiled::new).transpose()?.map(Arc::new);
            if let Some(old) = next.routes.set(slot, compiled.clone()) {
                for c in cands(next.tie_break, slot, &old) {
                    next.index.remove(&c, &mut edits);
                }
                next.matchers -= old.groups.len();
            }
            if let Some(new) = compiled {
                for c in cands(next.tie_break, slot, &new) {
                    next.index.add(&c, &mut edits);
                }
                next.matchers += new.groups.len();
            }
        }
        next.index.finish(edits, next.tie_break);
        Ok(next)
    }

    /// Number of routes (not matchers).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when built from no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Number of ATC-style matchers (routes split by path group; stream routes
    /// excluded).
    pub fn matcher_count(&self) -> usize {
        self.matchers
    }

    /// The routes with their route index, in index order.
    pub fn routes(&self) -> impl Iterator<Item = (usize, &RouteSpec)> + '_ {
        self.routes.iter().map(|(i, r)| (i, &r.spec))
    }

    /// The route at a route index.
    pub fn route(&self, index: usize) -> Option<&RouteSpec> {
        self.routes.get(index).map(|r| &r.spec)
    }

    /// Every matcher in evaluation order (computed on each call: for tests and tools).
    fn ordered(&self) -> Vec<Cand> {
        let mut all: Vec<Cand> = self
            .routes
            .iter()
            .flat_map(|(slot, r)| cands(self.tie_break, slot, r))
            .collect();
        all.sort_by(|a, b| a.cmp(b, self.tie_break));
        all
    }

    /// Matcher priorities in evaluation order, as `(route_index, priority)`.
    pub fn priorities(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.ordered()
            .into_iter()
            .map(|c| (c.slot as usize, c.priority))
    }

    /// Finds the highest-priority route matching `req`.
    pub fn find<'a>(&'a self, req: &RequestInfo<'_>) -> Option<Match<'a>> {
        let host_lc: Cow<'_, str> = if req.host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(req.host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(req.host)
        };
        let host: &str = &host_lc;
        let mut best: Option<(&Cand, Hit)> = None;
        let index = &self.index;

        if !index.exact.is_empty() {
            if let Some(pi) = index.exact.get(host) {
                self.scan(pi, req, host, &mut best);
            }
        }
        if !index.suffix.is_empty() {
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(pi) = index.suffix.get(&host[i..]) {
                        self.scan(pi, req, host, &mut best);
                    }
                }
            }
        }
        if !index.prefix.is_empty() {
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(pi) = index.prefix.get(&host[..=i]) {
                        self.scan(pi, req, host, &mut best);
                    }
                }
            }
        }
        self.scan(&index.any, req, host, &mut best);

        let (_, hit) = best?;
        Some(self.build_match(hit, req))
    }

    /// Reference implementation: evaluates every matcher in priority order,
    /// bypassing the indexes. For tests and debugging.
    #[doc(hidden)]
    pub fn find_linear<'a>(&'a self, req: &RequestInfo<'_>) -> Option<Match<'a>> {
        let host = req.host.to_ascii_lowercase();
        self.ordered()
            .iter()
            .find_map(|c| self.eval(c, req, &host))
            .map(|hit| self.build_match(hit, req))
    }

    #[inline]
    fn scan<'a>(
        &self,
        pi: &'a PathIndex,
        req: &RequestInfo<'_>,
        host: &str,
        best: &mut Option<(&'a Cand, Hit)>,
    ) {
        let path = req.path.as_bytes();
        for &(len, _, top) in &pi.lens {
            if len > path.len() {
                continue;
            }
            // (no candidate of this length outranks the one found: no look-up;
            // a path's length is in the low bits of its priority, so a match
            // of a longer prefix found first rules out the shorter ones)
            if best.as_ref().is_some_and(|(b, _)| top < b.priority) {
                continue;
            }
            if let Some(list) = pi.prefix.get(&path[..len]) {
                self.scan_list(list, req, host, best);
            }
        }
        self.scan_list(&pi.other, req, host, best);
    }

    #[inline]
    fn scan_list<'a>(
        &self,
        list: &'a CandList,
        req: &RequestInfo<'_>,
        host: &str,
        best: &mut Option<(&'a Cand, Hit)>,
    ) {
        let mut set_matches: Option<Option<regex::SetMatches>> = None;
        for (k, cand) in list.cands.iter().enumerate() {
            if let Some((b, _)) = best {
                if cand.cmp(b, self.tie_break).is_ge() {
                    return;
                }
            }
            if let Some(gs) = &list.set {
                let (a, b) = gs.slots[k];
                if a != b {
                    let sm =
                        set_matches.get_or_insert_with(|| gs.get().map(|s| s.matches(req.path)));
                    if let Some(sm) = sm {
                        if !(a..b).any(|p| sm.matched(p as usize)) {
                            continue;
                        }
                    }
                }
            }
            if let Some(hit) = self.eval(cand, req, host) {
                *best = Some((cand, hit));
                return;
            }
        }
    }

    fn eval(&self, cand: &Cand, req: &RequestInfo<'_>, host: &str) -> Option<Hit> {
        let route = &*cand.route;
        let (r, c) = (&route.spec, &route.conds);
        let paths = &route.groups[cand.group as usize].paths;

        // cheap path prefix first
        let mut path_hit = None;
        if let PathGroup::Prefix(idx) = paths {
            for &i in idx {
                let p = &r.paths[i as usize];
                if req.path.starts_with(p.as_str()) {
                    path_hit = Some((i, p.len()));
                    break;
                }
            }
            path_hit?;
        }

        let method = if r.methods.is_empty() {
            None
        } else {
            Some(r.methods.iter().position(|x| x == req.method)? as u32)
        };

        let host_hit = if c.hosts.is_empty() {
            None
        } else {
            Some(c.hosts.iter().position(|h| h.matches(host, req.port))? as u32)
        };

        if !c.snis.is_empty() && req.scheme == "https" {
            let sni = req.sni?;
            if !c.snis.iter().any(|s| s.matches(sni)) {
                return None;
            }
        }

        for h in &c.headers {
            let v = (req.headers)(&h.name)?;
            if !h.matches(v) {
                return None;
            }
        }

        if let PathGroup::Regex(idx) = paths {
            for &i in idx {
                if let Some(rx) = &c.regexes[i as usize] {
                    if let Some(len) = rx.find_len(req.path) {
                        path_hit = Some((i, len));
                        break;
                    }
                }
            }
            path_hit?;
        }

        Some(Hit {
            priority: cand.priority,
            slot: cand.slot,
            group: cand.group,
            host: host_hit,
            method,
            path: path_hit,
        })
    }

    fn build_match<'a>(&'a self, hit: Hit, req: &RequestInfo<'_>) -> Match<'a> {
        let route = self.routes.get(hit.slot as usize).expect("a matched route");
        let (r, c) = (&route.spec, &route.conds);
        debug_assert!((hit.group as usize) < route.groups.len());
        let mut captures = Captures::default();
        let (matched_path, prefix_len) = match hit.path {
            Some((i, len)) => {
                if let Some(rx) = &c.regexes[i as usize] {
                    if rx.has_groups {
                        if let Some(rx) = rx.get() {
                            captures = collect_captures(rx, req.path);
                        }
                    }
                }
                (Some(r.paths[i as usize].as_str()), len)
            }
            None => (None, 0),
        };
        Match {
            route_index: hit.slot as usize,
            route_id: &r.id,
            matched_path,
            prefix_len,
            captures,
            matched_host: hit.host.map(|i| r.hosts[i as usize].as_str()),
            matched_method: hit.method.map(|i| r.methods[i as usize].as_str()),
            protocols: &r.protocols,
            priority: hit.priority,
        }
    }
}

fn collect_captures(rx: &Regex, path: &str) -> Captures {
    let Some(caps) = rx.captures(path) else {
        return Captures::default();
    };
    let unnamed: Vec<Option<String>> = caps
        .iter()
        .map(|m| m.map(|m| m.as_str().to_owned()))
        .collect();
    let named: Vec<(String, String)> = rx
        .capture_names()
        .flatten()
        .filter_map(|n| caps.name(n).map(|v| (n.to_owned(), v.as_str().to_owned())))
        .collect();
    let participating = unnamed.iter().filter(|v| v.is_some()).count();
    if participating <= 1 && named.is_empty() {
        return Captures::default();
    }
    Captures { unnamed, named }
}
