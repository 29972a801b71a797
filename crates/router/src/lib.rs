//! tollgate-router: Kong-compatible HTTP route matching (the
//! `traditional_compatible` router flavor, Kong's default since 3.0).
//!
//! Pure: no I/O, no async, no dependency on other Tollgate crates.
//!
//! # Semantics (verified against Kong's source)
//!
//! Kong's `traditional_compatible` flavor (`kong/router/compat.lua`) turns every
//! route into an ATC expression (`kong/router/transform.lua` `get_expression`)
//! and a 64-bit priority (`get_priority`), and hands both to the ATC router
//! (`Kong/atc-router`, `src/router.rs`), which tries matchers from the highest
//! `(priority, uuid)` key down and returns the first whose expression holds.
//!
//! * All configured fields must match (AND); values inside a field are OR'd.
//! * **protocols are not part of the match.** For http/https/grpc/grpcs routes
//!   `get_expression` emits no `net.protocol` predicate at all (the only use of
//!   `net.protocol` is the SNI clause below). So an `https`-only route *is*
//!   matched by a plain-http request, and a `grpc` route by a non-gRPC request;
//!   Kong's proxy (`kong/runloop/handler.lua`, access phase) then answers
//!   426 / `https_redirect_status_code` (301/302/307/308 to `https://`), or 415
//!   "Non-gRPC request matched gRPC route", or 426 "Please use HTTP2 protocol",
//!   or a gRPC error for a grpc request on a grpcs-only route. [`Match::protocols`]
//!   exposes the route's protocols and [`check_protocols`] implements that
//!   decision. Routes whose first protocol is a stream protocol
//!   (`tcp`, `udp`, `tls`, `tls_passthrough`) are ignored by this HTTP router.
//! * **snis** are `(net.protocol != "https" || tls.sni == …)`: ignored unless the
//!   request scheme is `https`; then the SNI must match (exact, `*.x` suffix,
//!   `x.*` prefix; a trailing dot in the route SNI is dropped).
//! * **methods**: exact, case-sensitive (`http.method == "GET"`).
//! * **hosts**: exact (compared case-insensitively here), `*.example.com`
//!   (`http.host =^ ".example.com"`, i.e. any number of labels), `example.*`
//!   (`http.host ^= "example."`), optionally `:port`, which must equal the
//!   destination port (`net.dst.port`). Kong takes `net.dst.port` from the Host
//!   header's port when present, else the listener port: pass that as
//!   [`RequestInfo::port`].
//! * **paths**: plain = byte prefix (`^=`, case-sensitive); `~regex` is compiled
//!   as `"^" + regex` (textual prepend, so `~/a|/b` anchors only `/a`, exactly as
//!   Kong), with `(?<` rewritten to `(?P<`, matched (unanchored at the end)
//!   against the normalized path. Captures are exposed like Kong's
//!   `uri_captures` (empty when the regex produced no group besides the whole
//!   match).
//! * **headers**: `any(lower(http.headers.<name>)) == lower(value)`; `~*value` is a
//!   regex on the lower-cased header value with a lower-cased pattern (Kong
//!   lower-cases the pattern text too), unanchored. Header names are looked up
//!   lower-cased with `_` replaced by `-` (nginx's `get_headers()` lookup).
//! * **priority**: see [`priority_of`]; routes with several paths are split into
//!   one matcher per path group (all regex paths in one group, prefix paths
//!   grouped by length; Kong PR #10615,
//!   `transform.lua` `split_routes_and_services_by_path`).
//! * **ties** (equal priority): the ATC router keys matchers by
//!   `(priority, uuid)` in a `BTreeMap` and iterates in reverse, so the matcher
//!   with the *greater* UUID wins; split matchers use uuid v5
//!   (namespace `7f145bf9-0dce-4f91-98eb-debbce4b9f6b`, name `"<route id>#<group
//!   index, 1-based>"`). `created_at` plays no role in `traditional_compatible`
//!   (it did in the old `traditional` router); [`TieBreak::CreatedAt`] is
//!   available if you want that instead.

mod conds;
mod index;
mod normalize;
pub mod persistent;
mod priority;
mod protocols;
mod router;
mod upstream;

pub use normalize::normalize_path;
pub use priority::{
    priority_of, HEADER_COUNT_SHIFT, MATCH_WEIGHT_SHIFT, PLAIN_HOST_ONLY_BIT, REGEX_PRIORITY_SHIFT,
    REGEX_URL_BIT,
};
pub use protocols::{check_protocols, ProtocolVerdict};
pub use router::{BuildOptions, Router, TieBreak};
pub use upstream::{sanitize_uri_postfix, upstream_path, PathHandling};

use std::fmt;

/// Plain input, one per Kong route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSpec {
    /// Route uuid as a string.
    pub id: String,
    /// Seconds. Only used with [`TieBreak::CreatedAt`].
    pub created_at: i64,
    /// e.g. `["http","https"]`, `["grpc","grpcs"]`, `["https"]`.
    pub protocols: Vec<String>,
    pub methods: Vec<String>,
    /// Exact, `*.example.com`, `example.*`, optionally `:port`.
    pub hosts: Vec<String>,
    /// Prefix paths, or regex paths starting with `~`.
    pub paths: Vec<String>,
    /// Header name → values. Values are matched case-insensitively; a value
    /// starting with `~*` is a regex.
    pub headers: Vec<(String, Vec<String>)>,
    pub snis: Vec<String>,
    pub regex_priority: i64,
}

/// Header accessor: given a lower-cased header name (dashes, e.g. `user-agent`),
/// return its value. For a repeated header return any one value (the first);
/// Kong matches if *any* value matches, which this accessor shape cannot express.
pub type HeaderLookup<'r> = dyn Fn(&str) -> Option<&'r str> + 'r;

/// A header accessor that knows no headers: `headers: &no_headers`.
///
/// Generic over the lifetime because `RequestInfo<'r>` is invariant in `'r`
/// (it appears in the accessor's return type).
pub fn no_headers<'r>(_name: &str) -> Option<&'r str> {
    None
}

/// The request attributes the router looks at. Nothing here allocates.
#[derive(Clone, Copy)]
pub struct RequestInfo<'r> {
    /// `"http"` | `"https"` (the listener's; gRPC requests still say http/https).
    pub scheme: &'r str,
    pub method: &'r str,
    /// Host header value without port. Lower-cased by the caller ideally; if
    /// not, the router lower-cases it (one allocation).
    pub host: &'r str,
    /// Destination port: Kong uses the Host header's port when present, else the
    /// listener port. Only consulted for route hosts with `:port`.
    pub port: u16,
    /// Already normalized ([`normalize_path`]) path, without query string.
    pub path: &'r str,
    pub sni: Option<&'r str>,
    /// See [`HeaderLookup`]. Called only for routes that have header conditions.
    pub headers: &'r HeaderLookup<'r>,
}

impl fmt::Debug for RequestInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestInfo")
            .field("scheme", &self.scheme)
            .field("method", &self.method)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// Regex path captures, like Kong's `uri_captures`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// index → value; index 0 is the whole match; `None` for groups that did not
    /// participate. Empty when there is nothing but the whole match.
    pub unnamed: Vec<Option<String>>,
    /// Named groups that participated, in pattern order.
    pub named: Vec<(String, String)>,
}

impl Captures {
    /// True when Kong would report no `uri_captures`.
    pub fn is_empty(&self) -> bool {
        self.unnamed.is_empty() && self.named.is_empty()
    }
    /// Unnamed capture `i` (0 = whole match).
    pub fn get(&self, i: usize) -> Option<&str> {
        self.unnamed.get(i).and_then(|v| v.as_deref())
    }
    /// Named capture.
    pub fn name(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'a> {
    /// The route's index: its position in the slice given to [`Router::build`], or
    /// the slot [`Router::update`] put it in.
    pub route_index: usize,
    pub route_id: &'a str,
    /// The route path that matched, as configured (regex paths keep their `~`).
    pub matched_path: Option<&'a str>,
    /// Bytes of the request path the match consumed (for `strip_path`): the
    /// prefix length for prefix paths, the length of the whole regex match for
    /// regex paths (Kong strips that many bytes from the start); 0 when the route
    /// has no paths.
    pub prefix_len: usize,
    /// Regex path captures; empty for prefix paths.
    pub captures: Captures,
    /// The route host that matched, as configured (e.g. `*.example.com:8443`).
    pub matched_host: Option<&'a str>,
    /// The route method that matched.
    pub matched_method: Option<&'a str>,
    /// The route's protocols, for [`check_protocols`].
    pub protocols: &'a [String],
    /// The Kong priority of the matcher that matched (see [`priority_of`]).
    pub priority: u64,
}

/// Error building a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A regex path (`~…`) or header regex (`~*…`) did not compile.
    InvalidRegex {
        route_id: String,
        regex: String,
        message: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidRegex {
                route_id,
                regex,
                message,
            } => write!(f, "route {route_id}: invalid regex {regex:?}: {message}"),
        }
    }
}

impl std::error::Error for BuildError {}
