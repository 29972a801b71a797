//! Kong's `traditional_compatible` priority (`kong/router/transform.lua`
//! `get_priority`).

use crate::RouteSpec;

/// Match weight (number of non-empty fields), 3 bits at 61..=63.
pub const MATCH_WEIGHT_SHIFT: u32 = 61;
/// Set when the route has hosts and none of them contains `*`.
pub const PLAIN_HOST_ONLY_BIT: u64 = 1 << 60;
/// Number of distinct header names (capped at 255), 8 bits at 52..=59.
pub const HEADER_COUNT_SHIFT: u32 = 52;
/// Set for the regex path group.
pub const REGEX_URL_BIT: u64 = 1 << 51;
/// Regex priority, 32 bits at 19..=50 (regex groups only).
pub const REGEX_PRIORITY_SHIFT: u32 = 19;
/// Prefix length mask, 19 bits at 0..=18.
const MAX_LENGTH_MASK: u64 = 0x7FFFF;
const MAX_HEADER_COUNT: u64 = 255;

pub(crate) fn is_regex_path(p: &str) -> bool {
    p.as_bytes().first() == Some(&b'~')
}

/// Computes the 64-bit priority of `route` restricted to the path group
/// `paths` (all regex, or all prefixes of the same length; empty = no paths).
///
/// Layout (big endian), as documented in `transform.lua`:
///
/// ```text
/// 63..61  match weight: number of non-empty among methods, hosts, headers,
///         snis, paths (sources/destinations are not modelled here)
/// 60      PLAIN_HOST_ONLY: hosts non-empty and no host contains '*'
/// 59..52  header count (distinct names, capped at 255)
/// 51      REGEX_URL: this group is the regex-path group
/// 50..19  regex_priority (only for the regex group, else 0)
/// 18..0   prefix length (`len & 0x7FFFF`; 0 for regex groups)
/// ```
///
/// Deviations, on purpose:
/// * `regex_priority` is stored as `regex_priority + 2^31` (clamped to the i32
///   range) so a negative value ranks *below* 0 within the field, as in the
///   traditional router. Kong shifts the raw value, which only has a defined
///   meaning for non-negative values.
/// * Kong (LuaJIT) actually computes the match weight, header count and regex
///   priority shifts with 32-bit `bit.lshift` because `lshift_uint64` rebinds its
///   cached `uint64_t` cdata to the plain Lua number it is given (since commit
///   a3d523b4 "perf(router/atc) reuse FFI uint64 cdata objects"); the documented
///   64-bit layout above is what is implemented here.
/// * An explicitly empty `hosts` list in Kong (a Lua table, not null) sets
///   PLAIN_HOST_ONLY; here an empty list never does.
pub fn priority_of(route: &RouteSpec, paths: &[&str]) -> u64 {
    let mut match_weight: u64 = 0;
    if !route.methods.is_empty() {
        match_weight += 1;
    }
    if !route.hosts.is_empty() {
        match_weight += 1;
    }
    let header_count = distinct_header_names(route);
    if header_count > 0 {
        match_weight += 1;
    }
    if !route.snis.is_empty() {
        match_weight += 1;
    }
    let plain_host_only = !route.hosts.is_empty() && route.hosts.iter().all(|h| !h.contains('*'));

    let mut uri_length: u64 = 0;
    let mut regex_url = false;
    if let Some(first) = paths.first() {
        match_weight += 1;
        if is_regex_path(first) {
            regex_url = true;
        } else {
            uri_length = first.len() as u64;
        }
    }

    let regex_priority = if regex_url {
        let rp = route.regex_priority.clamp(i32::MIN as i64, i32::MAX as i64);
        (rp + (1i64 << 31)) as u64
    } else {
        0
    };

    (match_weight.min(7) << MATCH_WEIGHT_SHIFT)
        | if plain_host_only {
            PLAIN_HOST_ONLY_BIT
        } else {
            0
        }
        | (header_count.min(MAX_HEADER_COUNT) << HEADER_COUNT_SHIFT)
        | if regex_url { REGEX_URL_BIT } else { 0 }
        | (regex_priority << REGEX_PRIORITY_SHIFT)
        | (uri_length & MAX_LENGTH_MASK)
}

pub(crate) fn distinct_header_names(route: &RouteSpec) -> u64 {
    let mut n = 0u64;
    for (i, (name, values)) in route.headers.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let dup = route.headers[..i]
            .iter()
            .any(|(other, v)| !v.is_empty() && header_key_eq(other, name));
        if !dup {
            n += 1;
        }
    }
    n
}

/// Header names compare case-insensitively with `_` ≡ `-`.
pub(crate) fn header_key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let x = if x == b'_' {
                b'-'
            } else {
                x.to_ascii_lowercase()
            };
            let y = if y == b'_' {
                b'-'
            } else {
                y.to_ascii_lowercase()
            };
            x == y
        })
}

/// Kong's `group_by_regex_or_length`: one group for all regex paths, one group
/// per prefix length, in order of first appearance. Returns indices into
/// `paths`.
pub(crate) fn group_paths(paths: &[String]) -> Vec<Vec<usize>> {
    let mut keys: Vec<Option<usize>> = Vec::new(); // None = regex group
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let k = if is_regex_path(p) {
            None
        } else {
            Some(p.len())
        };
        match keys.iter().position(|x| *x == k) {
            Some(g) => groups[g].push(i),
            None => {
                keys.push(k);
                groups.push(vec![i]);
            }
        }
    }
    groups
}
