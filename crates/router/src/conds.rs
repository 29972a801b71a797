//! A route's conditions compiled once (hosts, SNIs, headers, regex paths) and shared by
//! every router version that keeps the route unchanged.

use regex::Regex;
use regex_syntax::hir::{Hir, HirKind, Look};
use std::sync::OnceLock;

use crate::priority::{header_key_eq, is_regex_path};
use crate::{BuildError, RouteSpec};

// compiled conditions

/// A regex validated (parsed) at build time and compiled on first use:
/// `Regex::new` costs ~40µs for a typical Kong path regex with `\\d`, parsing
/// alone ~2.5µs, which keeps 100k-route builds fast.
#[derive(Debug)]
pub(crate) struct LazyRegex {
    pub(crate) pattern: Box<str>,
    compiled: OnceLock<Option<Regex>>,
    /// literal bytes every match must start with (anchored patterns only)
    pub(crate) literal_prefix: Box<[u8]>,
    /// has capture groups besides group 0
    pub(crate) has_groups: bool,
}

impl LazyRegex {
    pub(crate) fn new(
        pattern: String,
        route_id: &str,
        original: &str,
    ) -> Result<LazyRegex, BuildError> {
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
    pub(crate) fn get(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| Regex::new(&self.pattern).ok())
            .as_ref()
    }

    #[inline]
    pub(crate) fn find_len(&self, hay: &str) -> Option<usize> {
        if !hay.as_bytes().starts_with(&self.literal_prefix) {
            return None;
        }
        self.get()?.find(hay).map(|m| m.len())
    }

    #[inline]
    pub(crate) fn is_match(&self, hay: &str) -> bool {
        self.get().is_some_and(|r| r.is_match(hay))
    }
}

pub(crate) fn starts_anchored(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Look(Look::Start) => true,
        HirKind::Concat(xs) => xs.first().is_some_and(starts_anchored),
        HirKind::Capture(c) => starts_anchored(&c.sub),
        _ => false,
    }
}

/// Appends the literal bytes a match must begin with; returns false once a
/// non-literal element is reached.
pub(crate) fn leading_literal(h: &Hir, out: &mut Vec<u8>) -> bool {
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
pub(crate) enum WildKind {
    Exact,
    /// `*.x` → host ends with `.x`
    Suffix,
    /// `x.*` → host starts with `x.`
    Prefix,
}

#[derive(Debug)]
pub(crate) struct HostPat {
    pub(crate) kind: WildKind,
    /// lower-cased, without the `*` and without the port
    pub(crate) value: std::sync::Arc<str>,
    /// `None` = any port; `Some(n)` with n > 65535 never matches
    pub(crate) port: Option<u32>,
}

impl HostPat {
    pub(crate) fn parse(raw: &str) -> HostPat {
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
            value: value.into(),
            port,
        }
    }

    #[inline]
    pub(crate) fn matches(&self, host_lc: &str, port: u16) -> bool {
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
pub(crate) struct SniPat {
    pub(crate) kind: WildKind,
    pub(crate) value: Box<str>,
}

impl SniPat {
    pub(crate) fn parse(raw: &str) -> SniPat {
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

    pub(crate) fn matches(&self, sni: &str) -> bool {
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
pub(crate) enum HeaderVal {
    /// lower-cased
    Exact(Box<str>),
    Regex(LazyRegex),
}

#[derive(Debug)]
pub(crate) struct HeaderCond {
    /// lower-case, `_` → `-`
    pub(crate) name: Box<str>,
    pub(crate) values: Vec<HeaderVal>,
}

impl HeaderCond {
    #[inline]
    pub(crate) fn matches(&self, v: &str) -> bool {
        self.values.iter().any(|hv| match hv {
            HeaderVal::Exact(e) => v.eq_ignore_ascii_case(e),
            HeaderVal::Regex(r) => r.is_match(v),
        })
    }
}

/// Per-route compiled conditions shared by the route's matchers.
#[derive(Debug, Default)]
pub(crate) struct RouteConds {
    pub(crate) hosts: Vec<HostPat>,
    pub(crate) snis: Vec<SniPat>,
    pub(crate) headers: Vec<HeaderCond>,
    /// compiled regex per path index (None for prefix paths)
    pub(crate) regexes: Vec<Option<LazyRegex>>,
}

pub(crate) fn is_stream_route(r: &RouteSpec) -> bool {
    matches!(
        r.protocols.first().map(String::as_str),
        Some("tcp" | "udp" | "tls" | "tls_passthrough")
    )
}

pub(crate) fn compile_route(r: &RouteSpec) -> Result<RouteConds, BuildError> {
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
