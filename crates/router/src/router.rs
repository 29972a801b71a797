//! Compiled router: matchers in Kong priority order plus candidate indexes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use std::sync::OnceLock;

use regex::Regex;
use regex_syntax::hir::{Hir, HirKind, Look};

use crate::priority::{group_paths, header_key_eq, is_regex_path, priority_of};
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

// ---------------------------------------------------------------------------
// small fast hasher for the index maps (keys are short strings)

#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

// ---------------------------------------------------------------------------
// compiled conditions

/// A regex validated (parsed) at build time and compiled on first use:
/// `Regex::new` costs ~40µs for a typical Kong path regex with `\\d`, parsing
/// alone ~2.5µs, which keeps 100k-route builds fast.
#[derive(Debug)]
struct LazyRegex {
    pattern: Box<str>,
    compiled: OnceLock<Option<Regex>>,
    /// literal bytes every match must start with (anchored patterns only)
    literal_prefix: Box<[u8]>,
    /// has capture groups besides group 0
    has_groups: bool,
}

impl LazyRegex {
    fn new(pattern: String, route_id: &str, original: &str) -> Result<LazyRegex, BuildError> {
        let hir =
            regex_syntax::Parser::new()
                .parse(&pattern)
                .map_err(|e| BuildError::InvalidRegex {
                    route_id: route_id.to_owned(),
                    regex: original.to_owned(),
                    message: e.to_string(),
                })?;
        let mut lit = Vec::new();
        if starts_anchored(&hir) {
            leading_literal(&hir, &mut lit);
        }
        let has_groups = hir.properties().explicit_captures_len() > 0;
        Ok(LazyRegex {
            pattern: pattern.into_boxed_str(),
            compiled: OnceLock::new(),
            literal_prefix: lit.into_boxed_slice(),
            has_groups,
        })
    }

    /// `None` if the pattern parsed but failed to compile (e.g. size limit):
    /// such a regex never matches.
    #[inline]
    fn get(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| Regex::new(&self.pattern).ok())
            .as_ref()
    }

    #[inline]
    fn find_len(&self, hay: &str) -> Option<usize> {
        if !hay.as_bytes().starts_with(&self.literal_prefix) {
            return None;
        }
        self.get()?.find(hay).map(|m| m.len())
    }

    #[inline]
    fn is_match(&self, hay: &str) -> bool {
        self.get().is_some_and(|r| r.is_match(hay))
    }
}

fn starts_anchored(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Look(Look::Start) => true,
        HirKind::Concat(xs) => xs.first().is_some_and(starts_anchored),
        HirKind::Capture(c) => starts_anchored(&c.sub),
        _ => false,
    }
}

/// Appends the literal bytes a match must begin with; returns false once a
/// non-literal element is reached.
fn leading_literal(h: &Hir, out: &mut Vec<u8>) -> bool {
    match h.kind() {
        HirKind::Empty | HirKind::Look(Look::Start) => true,
        HirKind::Literal(l) => {
            out.extend_from_slice(&l.0);
            true
        }
        HirKind::Capture(c) => leading_literal(&c.sub, out),
        HirKind::Concat(xs) => {
            for x in xs {
                if !leading_literal(x, out) {
                    return false;
                }
            }
            true
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WildKind {
    Exact,
    /// `*.x` → host ends with `.x`
    Suffix,
    /// `x.*` → host starts with `x.`
    Prefix,
}

#[derive(Debug)]
struct HostPat {
    kind: WildKind,
    /// lower-cased, without the `*` and without the port
    value: Box<str>,
    /// `None` = any port; `Some(n)` with n > 65535 never matches
    port: Option<u32>,
}

impl HostPat {
    fn parse(raw: &str) -> HostPat {
        // transform.lua split_host_port: split at the first ':' if the rest is a number
        let (host, port) = match raw.find(':') {
            Some(p) => match raw[p + 1..].parse::<u32>() {
                Ok(n) => (&raw[..p], Some(n)),
                Err(_) => (raw, None),
            },
            None => (raw, None),
        };
        let host = host.to_ascii_lowercase();
        let (kind, value) = if let Some(rest) = host.strip_prefix('*') {
            (WildKind::Suffix, rest.to_owned())
        } else if let Some(rest) = host.strip_suffix('*') {
            (WildKind::Prefix, rest.to_owned())
        } else {
            (WildKind::Exact, host)
        };
        HostPat {
            kind,
            value: value.into_boxed_str(),
            port,
        }
    }

    #[inline]
    fn matches(&self, host_lc: &str, port: u16) -> bool {
        if let Some(p) = self.port {
            if p != port as u32 {
                return false;
            }
        }
        match self.kind {
            WildKind::Exact => host_lc == &*self.value,
            WildKind::Suffix => host_lc.ends_with(&*self.value),
            WildKind::Prefix => host_lc.starts_with(&*self.value),
        }
    }
}

#[derive(Debug)]
struct SniPat {
    kind: WildKind,
    value: Box<str>,
}

impl SniPat {
    fn parse(raw: &str) -> SniPat {
        // transform.lua sni_op_transform / sni_val_transform
        let raw = raw.to_ascii_lowercase();
        if raw.starts_with('*') {
            let mut v: &str = &raw;
            if v.len() > 1 && v.ends_with('.') {
                v = &v[..v.len() - 1];
            }
            SniPat {
                kind: WildKind::Suffix,
                value: v[1..].into(),
            }
        } else if raw.ends_with('*') {
            SniPat {
                kind: WildKind::Prefix,
                value: raw[..raw.len() - 1].into(),
            }
        } else {
            let mut v: &str = &raw;
            if v.len() > 1 && v.ends_with('.') {
                v = &v[..v.len() - 1];
            }
            SniPat {
                kind: WildKind::Exact,
                value: v.into(),
            }
        }
    }

    fn matches(&self, sni: &str) -> bool {
        match self.kind {
            WildKind::Exact => sni.eq_ignore_ascii_case(&self.value),
            WildKind::Suffix => {
                sni.len() >= self.value.len()
                    && sni.as_bytes()[sni.len() - self.value.len()..]
                        .eq_ignore_ascii_case(self.value.as_bytes())
            }
            WildKind::Prefix => {
                sni.len() >= self.value.len()
                    && sni.as_bytes()[..self.value.len()]
                        .eq_ignore_ascii_case(self.value.as_bytes())
            }
        }
    }
}

#[derive(Debug)]
enum HeaderVal {
    /// lower-cased
    Exact(Box<str>),
    Regex(LazyRegex),
}

#[derive(Debug)]
struct HeaderCond {
    /// lower-case, `_` → `-`
    name: Box<str>,
    values: Vec<HeaderVal>,
}

impl HeaderCond {
    #[inline]
    fn matches(&self, v: &str) -> bool {
        self.values.iter().any(|hv| match hv {
            HeaderVal::Exact(e) => v.eq_ignore_ascii_case(e),
            HeaderVal::Regex(r) => r.is_match(v),
        })
    }
}

/// Per-route compiled conditions shared by the route's matchers.
#[derive(Debug, Default)]
struct RouteConds {
    hosts: Vec<HostPat>,
    snis: Vec<SniPat>,
    headers: Vec<HeaderCond>,
    /// compiled regex per path index (None for prefix paths)
    regexes: Vec<Option<LazyRegex>>,
}

#[derive(Debug)]
enum PathGroup {
    None,
    /// indices into route.paths; all the same length
    Prefix(Vec<u32>),
    /// indices into route.paths; all regex
    Regex(Vec<u32>),
}

#[derive(Debug)]
struct Matcher {
    route: u32,
    priority: u64,
    paths: PathGroup,
}

// ---------------------------------------------------------------------------
// index

/// Minimum number of regex matchers in one candidate list before a
/// `RegexSet` pre-filter is used for it.
const REGEX_SET_MIN: usize = 8;

/// One `RegexSet` over the regex paths of a candidate list: a single pass tells
/// which regex matchers can match, instead of running each regex.
#[derive(Debug)]
struct RegexGroupSet {
    /// per position in `CandList::ranks`: pattern index range (empty for
    /// non-regex matchers)
    slots: Vec<(u32, u32)>,
    patterns: Vec<Box<str>>,
    set: OnceLock<Option<regex::RegexSet>>,
}

impl RegexGroupSet {
    fn get(&self) -> Option<&regex::RegexSet> {
        self.set
            .get_or_init(|| regex::RegexSet::new(self.patterns.iter().map(|p| &**p)).ok())
            .as_ref()
    }
}

/// Candidate matcher ranks (ascending).
#[derive(Debug, Default)]
struct CandList {
    ranks: Vec<u32>,
    set: Option<Box<RegexGroupSet>>,
}

impl CandList {
    fn finish(&mut self, patterns_of: &dyn Fn(u32) -> Option<Vec<Box<str>>>) {
        self.ranks.sort_unstable();
        self.ranks.dedup();
        self.ranks.shrink_to_fit();
        let n_regex = self
            .ranks
            .iter()
            .filter(|&&r| patterns_of(r).is_some())
            .count();
        if n_regex < REGEX_SET_MIN {
            return;
        }
        let mut slots = Vec::with_capacity(self.ranks.len());
        let mut patterns = Vec::new();
        for &r in &self.ranks {
            let a = patterns.len() as u32;
            if let Some(ps) = patterns_of(r) {
                patterns.extend(ps);
            }
            slots.push((a, patterns.len() as u32));
        }
        self.set = Some(Box::new(RegexGroupSet {
            slots,
            patterns,
            set: OnceLock::new(),
        }));
    }
}

/// Candidates selected by path.
#[derive(Debug, Default)]
struct PathIndex {
    /// prefix path (or regex literal prefix) → candidates
    prefix: FxMap<Box<[u8]>, CandList>,
    /// distinct prefix lengths, descending
    lens: Vec<usize>,
    /// regex (without literal prefix) or path-less matchers
    other: CandList,
}

impl PathIndex {
    fn add_prefix(&mut self, p: &[u8], rank: u32) {
        self.prefix.entry(p.into()).or_default().ranks.push(rank);
    }

    fn finish(&mut self, patterns_of: &dyn Fn(u32) -> Option<Vec<Box<str>>>) {
        let mut lens: Vec<usize> = self.prefix.keys().map(|k| k.len()).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        self.lens = lens;
        for v in self.prefix.values_mut() {
            v.finish(patterns_of);
        }
        self.other.finish(patterns_of);
    }
}

#[derive(Debug, Default)]
struct Index {
    exact: FxMap<Box<str>, PathIndex>,
    /// `*.x`: key `.x`
    suffix: FxMap<Box<str>, PathIndex>,
    /// `x.*`: key `x.`
    prefix: FxMap<Box<str>, PathIndex>,
    /// host-less matchers and unusual wildcards
    any: PathIndex,
}

// ---------------------------------------------------------------------------

/// Compiled, immutable router (`Send + Sync`).
#[derive(Debug)]
pub struct Router {
    routes: Vec<RouteSpec>,
    conds: Vec<RouteConds>,
    /// in priority order (rank = position)
    matchers: Vec<Matcher>,
    index: Index,
}

struct Hit {
    rank: u32,
    host: Option<u32>,
    method: Option<u32>,
    /// (path index, consumed length)
    path: Option<(u32, usize)>,
}

fn is_stream_route(r: &RouteSpec) -> bool {
    matches!(
        r.protocols.first().map(String::as_str),
        Some("tcp" | "udp" | "tls" | "tls_passthrough")
    )
}

fn compile_route(r: &RouteSpec) -> Result<RouteConds, BuildError> {
    let hosts = r.hosts.iter().map(|h| HostPat::parse(h)).collect();
    let snis = r.snis.iter().map(|s| SniPat::parse(s)).collect();

    let mut headers: Vec<HeaderCond> = Vec::new();
    for (name, values) in &r.headers {
        if values.is_empty() {
            continue;
        }
        let mut vals = Vec::with_capacity(values.len());
        for v in values {
            if let Some(re) = v.strip_prefix("~*") {
                // Kong lower-cases the pattern and the header value.
                let pat = format!("(?i){}", re.to_lowercase());
                vals.push(HeaderVal::Regex(LazyRegex::new(pat, &r.id, v)?));
            } else {
                vals.push(HeaderVal::Exact(v.to_lowercase().into_boxed_str()));
            }
        }
        if let Some(existing) = headers.iter_mut().find(|h| header_key_eq(&h.name, name)) {
            existing.values.extend(vals);
        } else {
            let lname: String = name
                .bytes()
                .map(|b| {
                    if b == b'_' {
                        '-'
                    } else {
                        b.to_ascii_lowercase() as char
                    }
                })
                .collect();
            // non-ASCII names: fall back to a plain lower-case
            let lname = if name.is_ascii() {
                lname
            } else {
                name.to_lowercase()
            };
            headers.push(HeaderCond {
                name: lname.into_boxed_str(),
                values: vals,
            });
        }
    }

    let mut regexes = Vec::with_capacity(r.paths.len());
    for p in &r.paths {
        if is_regex_path(p) {
            // transform.lua path_val_transform: strip '~', prefix '^', (?< → (?P<
            let pat = format!("^{}", p[1..].replace("?<", "?P<"));
            regexes.push(Some(LazyRegex::new(pat, &r.id, p)?));
        } else {
            regexes.push(None);
        }
    }

    Ok(RouteConds {
        hosts,
        snis,
        headers,
        regexes,
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

    /// Builds a router with explicit options.
    pub fn build_with(routes: &[RouteSpec], opts: &BuildOptions) -> Result<Router, BuildError> {
        let mut conds = Vec::with_capacity(routes.len());
        // (matcher, tie key (uuid), group index)
        struct Pending {
            m: Matcher,
            uuid: Option<u128>,
            group: u32,
        }
        let mut pending: Vec<Pending> = Vec::with_capacity(routes.len());
        for (ri, r) in routes.iter().enumerate() {
            let c = compile_route(r)?;
            conds.push(c);
            if is_stream_route(r) {
                continue;
            }
            let ri = ri as u32;
            if r.paths.is_empty() {
                pending.push(Pending {
                    m: Matcher {
                        route: ri,
                        priority: priority_of(r, &[]),
                        paths: PathGroup::None,
                    },
                    uuid: uuid_key(&r.id),
                    group: 0,
                });
                continue;
            }
            let groups = group_paths(&r.paths);
            let split = groups.len() > 1;
            for (gi, g) in groups.into_iter().enumerate() {
                let ps: Vec<&str> = g.iter().map(|&i| r.paths[i].as_str()).collect();
                let priority = priority_of(r, &ps);
                let regex = is_regex_path(ps[0]);
                let idx: Vec<u32> = g.iter().map(|&i| i as u32).collect();
                let uuid = if split {
                    let name = format!("{}#{}", r.id, gi + 1);
                    Some(uuid::Uuid::new_v5(&SPLIT_NAMESPACE, name.as_bytes()).as_u128())
                } else {
                    uuid_key(&r.id)
                };
                pending.push(Pending {
                    m: Matcher {
                        route: ri,
                        priority,
                        paths: if regex {
                            PathGroup::Regex(idx)
                        } else {
                            PathGroup::Prefix(idx)
                        },
                    },
                    uuid,
                    group: gi as u32,
                });
            }
        }

        match opts.tie_break {
            TieBreak::KongAtc => pending.sort_by(|a, b| {
                b.m.priority
                    .cmp(&a.m.priority)
                    .then_with(|| b.uuid.cmp(&a.uuid))
                    .then_with(|| {
                        routes[b.m.route as usize]
                            .id
                            .cmp(&routes[a.m.route as usize].id)
                    })
                    .then_with(|| a.group.cmp(&b.group))
            }),
            TieBreak::CreatedAt => pending.sort_by(|a, b| {
                let ra = &routes[a.m.route as usize];
                let rb = &routes[b.m.route as usize];
                b.m.priority
                    .cmp(&a.m.priority)
                    .then_with(|| ra.created_at.cmp(&rb.created_at))
                    .then_with(|| ra.id.cmp(&rb.id))
                    .then_with(|| a.m.route.cmp(&b.m.route))
                    .then_with(|| a.group.cmp(&b.group))
            }),
        }
        let matchers: Vec<Matcher> = pending.into_iter().map(|p| p.m).collect();

        // index
        let mut index = Index::default();
        for (rank, m) in matchers.iter().enumerate() {
            let rank = rank as u32;
            let r = &routes[m.route as usize];
            let c = &conds[m.route as usize];
            let add = |pi: &mut PathIndex| match &m.paths {
                PathGroup::Prefix(idx) => {
                    for &i in idx {
                        pi.add_prefix(r.paths[i as usize].as_bytes(), rank);
                    }
                }
                PathGroup::Regex(idx) => {
                    for &i in idx {
                        match &c.regexes[i as usize] {
                            Some(rx) if !rx.literal_prefix.is_empty() => {
                                pi.add_prefix(&rx.literal_prefix, rank)
                            }
                            _ => pi.other.ranks.push(rank),
                        }
                    }
                }
                PathGroup::None => pi.other.ranks.push(rank),
            };
            if c.hosts.is_empty() {
                add(&mut index.any);
                continue;
            }
            for h in &c.hosts {
                match h.kind {
                    WildKind::Exact => add(index.exact.entry(h.value.clone()).or_default()),
                    WildKind::Suffix if h.value.starts_with('.') => {
                        add(index.suffix.entry(h.value.clone()).or_default())
                    }
                    WildKind::Prefix if h.value.ends_with('.') => {
                        add(index.prefix.entry(h.value.clone()).or_default())
                    }
                    _ => add(&mut index.any),
                }
            }
        }
        let patterns_of = |rank: u32| -> Option<Vec<Box<str>>> {
            let m = &matchers[rank as usize];
            let PathGroup::Regex(idx) = &m.paths else {
                return None;
            };
            let c = &conds[m.route as usize];
            Some(
                idx.iter()
                    .filter_map(|&i| c.regexes[i as usize].as_ref().map(|r| r.pattern.clone()))
                    .collect(),
            )
        };
        index.any.finish(&patterns_of);
        for pi in index
            .exact
            .values_mut()
            .chain(index.suffix.values_mut())
            .chain(index.prefix.values_mut())
        {
            pi.finish(&patterns_of);
        }

        Ok(Router {
            routes: routes.to_vec(),
            conds,
            matchers,
            index,
        })
    }

    /// Number of routes given to `build` (not matchers).
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
        self.matchers.len()
    }

    /// The routes, as given to `build`.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Matcher priorities in evaluation order, as `(route_index, priority)`.
    pub fn priorities(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.matchers.iter().map(|m| (m.route as usize, m.priority))
    }

    /// Finds the highest-priority route matching `req`.
    pub fn find<'a>(&'a self, req: &RequestInfo<'_>) -> Option<Match<'a>> {
        let host_lc: Cow<'_, str> = if req.host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(req.host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(req.host)
        };
        let host: &str = &host_lc;
        let mut best: Option<Hit> = None;

        if !self.index.exact.is_empty() {
            if let Some(pi) = self.index.exact.get(host) {
                self.scan(pi, req, host, &mut best);
            }
        }
        if !self.index.suffix.is_empty() {
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(pi) = self.index.suffix.get(&host[i..]) {
                        self.scan(pi, req, host, &mut best);
                    }
                }
            }
        }
        if !self.index.prefix.is_empty() {
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(pi) = self.index.prefix.get(&host[..=i]) {
                        self.scan(pi, req, host, &mut best);
                    }
                }
            }
        }
        self.scan(&self.index.any, req, host, &mut best);

        let hit = best?;
        Some(self.build_match(hit, req))
    }

    /// Reference implementation: evaluates every matcher in priority order,
    /// bypassing the indexes. For tests and debugging.
    #[doc(hidden)]
    pub fn find_linear<'a>(&'a self, req: &RequestInfo<'_>) -> Option<Match<'a>> {
        let host = req.host.to_ascii_lowercase();
        (0..self.matchers.len() as u32)
            .find_map(|rank| self.eval(rank, req, &host))
            .map(|hit| self.build_match(hit, req))
    }

    #[inline]
    fn scan(&self, pi: &PathIndex, req: &RequestInfo<'_>, host: &str, best: &mut Option<Hit>) {
        let path = req.path.as_bytes();
        for &len in &pi.lens {
            if len > path.len() {
                continue;
            }
            if let Some(list) = pi.prefix.get(&path[..len]) {
                self.scan_list(list, req, host, best);
            }
        }
        self.scan_list(&pi.other, req, host, best);
    }

    #[inline]
    fn scan_list(
        &self,
        list: &CandList,
        req: &RequestInfo<'_>,
        host: &str,
        best: &mut Option<Hit>,
    ) {
        let limit = best.as_ref().map_or(u32::MAX, |h| h.rank);
        let mut set_matches: Option<Option<regex::SetMatches>> = None;
        for (k, &rank) in list.ranks.iter().enumerate() {
            if rank >= limit {
                return;
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
            if let Some(hit) = self.eval(rank, req, host) {
                *best = Some(hit);
                return;
            }
        }
    }

    fn eval(&self, rank: u32, req: &RequestInfo<'_>, host: &str) -> Option<Hit> {
        let m = &self.matchers[rank as usize];
        let r = &self.routes[m.route as usize];
        let c = &self.conds[m.route as usize];

        // cheap path prefix first
        let mut path_hit = None;
        if let PathGroup::Prefix(idx) = &m.paths {
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

        if let PathGroup::Regex(idx) = &m.paths {
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
            rank,
            host: host_hit,
            method,
            path: path_hit,
        })
    }

    fn build_match<'a>(&'a self, hit: Hit, req: &RequestInfo<'_>) -> Match<'a> {
        let m = &self.matchers[hit.rank as usize];
        let r = &self.routes[m.route as usize];
        let c = &self.conds[m.route as usize];
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
            route_index: m.route as usize,
            route_id: &r.id,
            matched_path,
            prefix_len,
            captures,
            matched_host: hit.host.map(|i| r.hosts[i as usize].as_str()),
            matched_method: hit.method.map(|i| r.methods[i as usize].as_str()),
            protocols: &r.protocols,
            priority: m.priority,
        }
    }
}

/// Kong/ATC capture table: `0..n` for participating groups, plus names; reported
/// only when there is something besides the whole match.
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
