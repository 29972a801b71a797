//! Candidate indexes: matchers by host bucket, then by path prefix. Every list is kept in
//! evaluation order by each matcher's [`Cand`] key (not by a position in one global list),
//! so adding or removing a route changes only the lists it sits in.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use crate::conds::WildKind;
use crate::persistent::PMap;
use crate::router::{Compiled, PathGroup};
use crate::TieBreak;

/// Minimum number of regex matchers in one candidate list before a
/// `RegexSet` pre-filter is used for it.
const REGEX_SET_MIN: usize = 8;

/// One matcher (a route's path group) in a candidate list, with its sort key.
#[derive(Debug, Clone)]
pub(crate) struct Cand {
    pub(crate) priority: u64,
    /// The tie-break after the priority, greater first ([`TieBreak`]).
    pub(crate) tie: Option<u128>,
    pub(crate) slot: u32,
    pub(crate) group: u32,
    pub(crate) route: Arc<Compiled>,
}

impl Cand {
    /// Evaluation order: `Less` is tried first. Priority, then the tie key, then Kong's
    /// fallbacks on the id; the slot and group last (the order of a stable sort of the
    /// routes as given to `build`).
    #[inline]
    pub(crate) fn cmp(&self, o: &Cand, tie_break: TieBreak) -> Ordering {
        o.priority
            .cmp(&self.priority)
            .then_with(|| o.tie.cmp(&self.tie))
            .then_with(|| self.cmp_slow(o, tie_break))
    }

    #[cold]
    fn cmp_slow(&self, o: &Cand, tie_break: TieBreak) -> Ordering {
        let (a, b) = (&self.route.spec.id, &o.route.spec.id);
        match tie_break {
            TieBreak::KongAtc => b
                .cmp(a)
                .then_with(|| self.group.cmp(&o.group))
                .then_with(|| self.slot.cmp(&o.slot)),
            TieBreak::CreatedAt => a
                .cmp(b)
                .then_with(|| self.slot.cmp(&o.slot))
                .then_with(|| self.group.cmp(&o.group)),
        }
    }

    /// The regex patterns of a regex path group.
    fn patterns(&self) -> Option<Vec<Box<str>>> {
        let PathGroup::Regex(idx) = &self.route.groups[self.group as usize].paths else {
            return None;
        };
        let c = &self.route.conds;
        Some(
            idx.iter()
                .filter_map(|&i| c.regexes[i as usize].as_ref().map(|r| r.pattern.clone()))
                .collect(),
        )
    }
}

/// One `RegexSet` over the regex paths of a candidate list: a single pass tells
/// which regex matchers can match, instead of running each regex.
#[derive(Debug)]
pub(crate) struct RegexGroupSet {
    /// per position in `CandList::cands`: pattern index range (empty for
    /// non-regex matchers)
    pub(crate) slots: Vec<(u32, u32)>,
    patterns: Vec<Box<str>>,
    set: OnceLock<Option<regex::RegexSet>>,
}

impl RegexGroupSet {
    pub(crate) fn get(&self) -> Option<&regex::RegexSet> {
        self.set
            .get_or_init(|| regex::RegexSet::new(self.patterns.iter().map(|p| &**p)).ok())
            .as_ref()
    }
}

/// Candidate matchers in evaluation order.
#[derive(Debug, Default, Clone)]
pub(crate) struct CandList {
    pub(crate) cands: Vec<Cand>,
    pub(crate) set: Option<Arc<RegexGroupSet>>,
}

impl CandList {
    fn finish(&mut self, tie_break: TieBreak) {
        self.cands.sort_by(|a, b| a.cmp(b, tie_break));
        // A matcher lands in one list twice through two hosts or two regex
        // prefixes of the same bucket.
        self.cands
            .dedup_by(|a, b| a.slot == b.slot && a.group == b.group);
        self.cands.shrink_to_fit();
        self.set = None;
        let n_regex = self
            .cands
            .iter()
            .filter(|c| matches!(c.route.groups[c.group as usize].paths, PathGroup::Regex(_)))
            .count();
        if n_regex < REGEX_SET_MIN {
            return;
        }
        let mut slots = Vec::with_capacity(self.cands.len());
        let mut patterns = Vec::new();
        for c in &self.cands {
            let a = patterns.len() as u32;
            if let Some(ps) = c.patterns() {
                patterns.extend(ps);
            }
            slots.push((a, patterns.len() as u32));
        }
        self.set = Some(Arc::new(RegexGroupSet {
            slots,
            patterns,
            set: OnceLock::new(),
        }));
    }
}

/// Candidates selected by path.
#[derive(Debug, Default, Clone)]
pub(crate) struct PathIndex {
    /// prefix path (or regex literal prefix) → candidates
    pub(crate) prefix: PMap<Arc<[u8]>, Arc<CandList>>,
    /// distinct prefix lengths, descending, with how many keys have each and a
    /// bound on their candidates' priority: none of them has a higher one (it
    /// is raised as candidates come and kept as they go, so it may be above the
    /// best left, never below)
    pub(crate) lens: Vec<(usize, u32, u64)>,
    /// regex (without literal prefix) or path-less matchers
    pub(crate) other: Arc<CandList>,
}

impl PathIndex {
    fn is_empty(&self) -> bool {
        self.prefix.is_empty() && self.other.cands.is_empty()
    }

    fn list(&mut self, key: Option<&[u8]>) -> &mut CandList {
        let Some(k) = key else {
            return Arc::make_mut(&mut self.other);
        };
        if !self.prefix.contains_key(k) {
            self.prefix.insert(k.into(), Arc::default());
            match self.len_at(k.len()) {
                Ok(i) => self.lens[i].1 += 1,
                Err(i) => self.lens.insert(i, (k.len(), 1, 0)),
            }
        }
        Arc::make_mut(self.prefix.get_mut(k).expect("inserted"))
    }

    /// Where `len` is (or would go) in `lens`, which is sorted longest first.
    fn len_at(&self, len: usize) -> Result<usize, usize> {
        self.lens.binary_search_by(|(l, ..)| len.cmp(l))
    }

    /// Raises the priority bound of the keys of `len` bytes to `priority`.
    fn bound(&mut self, len: usize, priority: u64) {
        if let Ok(i) = self.len_at(len) {
            self.lens[i].2 = self.lens[i].2.max(priority);
        }
    }

    /// After a removal: drops a prefix list left empty.
    fn prune(&mut self, key: &[u8]) {
        if self.prefix.get(key).is_some_and(|l| l.cands.is_empty()) {
            self.prefix.remove(key);
            if let Ok(i) = self.len_at(key.len()) {
                self.lens[i].1 -= 1;
                if self.lens[i].1 == 0 {
                    self.lens.remove(i);
                }
            }
        }
    }
}

/// Where a matcher sits: a host bucket and a path key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Place {
    /// 0 any, 1 exact, 2 suffix (`.x`), 3 prefix (`x.`)
    bucket: u8,
    host: Arc<str>,
    /// `None`: the `other` list
    path: Option<Arc<[u8]>>,
}

fn places(c: &Cand, mut f: impl FnMut(u8, &Arc<str>, Option<&[u8]>)) {
    let r = &c.route;
    let mut paths: Vec<Option<&[u8]>> = Vec::new();
    match &r.groups[c.group as usize].paths {
        PathGroup::Prefix(idx) => paths.extend(
            idx.iter()
                .map(|&i| Some(r.spec.paths[i as usize].as_bytes())),
        ),
        PathGroup::Regex(idx) => {
            paths.extend(idx.iter().map(|&i| match &r.conds.regexes[i as usize] {
                Some(rx) if !rx.literal_prefix.is_empty() => Some(&*rx.literal_prefix),
                _ => None,
            }))
        }
        PathGroup::None => paths.push(None),
    }
    let none: Arc<str> = Arc::from("");
    let mut each = |bucket: u8, host: &Arc<str>| {
        for p in &paths {
            f(bucket, host, *p);
        }
    };
    if r.conds.hosts.is_empty() {
        each(0, &none);
        return;
    }
    for h in &r.conds.hosts {
        match h.kind {
            WildKind::Exact => each(1, &h.value),
            WildKind::Suffix if h.value.starts_with('.') => each(2, &h.value),
            WildKind::Prefix if h.value.ends_with('.') => each(3, &h.value),
            _ => each(0, &none),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Index {
    pub(crate) exact: PMap<Arc<str>, Arc<PathIndex>>,
    /// `*.x`: key `.x`
    pub(crate) suffix: PMap<Arc<str>, Arc<PathIndex>>,
    /// `x.*`: key `x.`
    pub(crate) prefix: PMap<Arc<str>, Arc<PathIndex>>,
    /// host-less matchers and unusual wildcards
    pub(crate) any: Arc<PathIndex>,
}

/// Index edits in progress: lists changed are sorted again once, at the end.
#[derive(Default)]
pub(crate) struct Edits {
    touched: HashSet<Place>,
}

impl Index {
    fn bucket(&mut self, bucket: u8, host: &Arc<str>, create: bool) -> Option<&mut PathIndex> {
        let map = match bucket {
            0 => return Some(Arc::make_mut(&mut self.any)),
            1 => &mut self.exact,
            2 => &mut self.suffix,
            _ => &mut self.prefix,
        };
        if create && !map.contains_key(&**host) {
            map.insert(host.clone(), Arc::default());
        }
        map.get_mut(&**host).map(Arc::make_mut)
    }

    pub(crate) fn add(&mut self, c: &Cand, edits: &mut Edits) {
        places(c, |bucket, host, path| {
            let pi = self.bucket(bucket, host, true).expect("created");
            pi.list(path).cands.push(c.clone());
            if let Some(k) = path {
                pi.bound(k.len(), c.priority);
            }
            edits.touched.insert(Place {
                bucket,
                host: host.clone(),
                path: path.map(Arc::from),
            });
        });
    }

    pub(crate) fn remove(&mut self, c: &Cand, edits: &mut Edits) {
        places(c, |bucket, host, path| {
            let Some(pi) = self.bucket(bucket, host, false) else {
                return;
            };
            pi.list(path).cands.retain(|x| x.slot != c.slot);
            edits.touched.insert(Place {
                bucket,
                host: host.clone(),
                path: path.map(Arc::from),
            });
        });
    }

    /// Sorts the lists the edits changed and drops those left empty.
    pub(crate) fn finish(&mut self, edits: Edits, tie_break: TieBreak) {
        for p in edits.touched {
            let Some(pi) = self.bucket(p.bucket, &p.host, false) else {
                continue;
            };
            match &p.path {
                Some(k) => {
                    if let Some(l) = pi.prefix.get_mut(&**k) {
                        Arc::make_mut(l).finish(tie_break);
                    }
                    pi.prune(k);
                }
                None => Arc::make_mut(&mut pi.other).finish(tie_break),
            }
            let empty = pi.is_empty();
            let map = match p.bucket {
                1 => &mut self.exact,
                2 => &mut self.suffix,
                3 => &mut self.prefix,
                _ => continue,
            };
            if empty {
                map.remove(&*p.host);
            }
        }
    }
}
