//! Upstream URI construction (`kong/router/utils.lua` `get_upstream_uri_v0`,
//! `sanitize_uri_postfix`, and the v1 branch of `kong/router/traditional.lua`).

use std::borrow::Cow;

/// Route `path_handling`.
///
/// Note: Kong's `traditional_compatible` and `expressions` flavors always use the
/// v0 rules (`kong/router/atc.lua` `set_upstream_uri` calls
/// `get_upstream_uri_v0` unconditionally, and the routes schema warns that
/// `path_handling='v1'` "will not work under 'expressions' or
/// 'traditional_compatible'"). V1 is implemented for the `traditional` flavor
/// semantics; a proxy emulating `traditional_compatible` should pass `V0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathHandling {
    #[default]
    V0,
    V1,
}

impl PathHandling {
    /// Parses Kong's `"v0"` / `"v1"` (anything else → `None`).
    pub fn parse(s: &str) -> Option<PathHandling> {
        match s {
            "v0" => Some(PathHandling::V0),
            "v1" => Some(PathHandling::V1),
            _ => None,
        }
    }
}

/// Kong's `sanitize_uri_postfix`: `.`/`..` become empty, a leading `./` or
/// `../` is dropped.
pub fn sanitize_uri_postfix(p: &str) -> &str {
    if p.is_empty() {
        return p;
    }
    if p == "." || p == ".." {
        return "";
    }
    if let Some(r) = p.strip_prefix("./") {
        return r;
    }
    if let Some(r) = p.strip_prefix("../") {
        return r;
    }
    p
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Builds the upstream request path.
///
/// * `service_path`: the service's `path` (`None` → `/`).
/// * `request_path`: the normalized request path (as given to the router).
/// * `prefix_len`: [`crate::Match::prefix_len`]; `0` means "no path matched"
///   (host/method/header-only route), which Kong treats like a prefix of `/`.
/// * `strip_path`: the route's `strip_path`. When false the prefix is `/`, i.e.
///   the whole request path is appended.
///
/// The postfix (request path after the stripped prefix) is sanitized like Kong
/// (`./x` → `x`, `../x` → `x`, `.`/`..` → empty) for both V0 and V1.
///
/// The request path itself, borrowed, when that is the answer (no service
/// path, nothing stripped: the common case), else a new string.
pub fn upstream_path<'a>(
    service_path: Option<&str>,
    request_path: &'a str,
    prefix_len: usize,
    strip_path: bool,
    path_handling: PathHandling,
) -> Cow<'a, str> {
    let base = match service_path {
        Some(p) if !p.is_empty() => p,
        _ => "/",
    };
    let req = request_path;
    let cut = if strip_path { prefix_len.max(1) } else { 1 };
    let cut = floor_char_boundary(req, cut);
    let postfix = sanitize_uri_postfix(&req[cut..]);
    // Base `/` and the whole path after its first `/` kept as it is: both
    // flavors give back the request path (the cases below, spelled out).
    let whole = !strip_path || (cut == 1 && postfix.len() == req.len() - 1);
    if base == "/" && req.starts_with('/') && whole && !(strip_path && postfix.starts_with('/')) {
        return Cow::Borrowed(req);
    }
    Cow::Owned(built(base, req, strip_path, postfix, path_handling))
}

fn built(
    base: &str,
    req: &str,
    strip_path: bool,
    postfix: &str,
    path_handling: PathHandling,
) -> String {
    match path_handling {
        PathHandling::V0 => upstream_v0(strip_path, postfix, req, base),
        PathHandling::V1 => {
            if strip_path {
                if base.ends_with('/') && postfix.starts_with('/') {
                    concat(&base[..base.len() - 1], postfix)
                } else {
                    concat(base, postfix)
                }
            } else {
                concat(base, req.get(1..).unwrap_or(""))
            }
        }
    }
}

fn concat(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len() + 1);
    s.push_str(a);
    s.push_str(b);
    s
}

fn upstream_v0(strip_path: bool, postfix: &str, req: &str, base: &str) -> String {
    if let Some(base_no_slash) = base.strip_suffix('/') {
        if strip_path {
            if postfix.is_empty() {
                if base == "/" {
                    return "/".to_owned();
                }
                if req.ends_with('/') {
                    return base.to_owned();
                }
                return base_no_slash.to_owned();
            }
            if postfix.starts_with('/') {
                return concat(base_no_slash, postfix);
            }
            return concat(base, postfix);
        }
        return concat(base, req.get(1..).unwrap_or(""));
    }
    if strip_path {
        if postfix.is_empty() {
            if req.len() > 1 && req.ends_with('/') {
                return concat(base, "/");
            }
            return base.to_owned();
        }
        if postfix.starts_with('/') {
            return concat(base, postfix);
        }
        let mut s = String::with_capacity(base.len() + postfix.len() + 1);
        s.push_str(base);
        s.push('/');
        s.push_str(postfix);
        return s;
    }
    if req == "/" {
        return base.to_owned();
    }
    concat(base, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed answer is the one the rules build, for every mix of
    /// inputs that could take it.
    #[test]
    fn borrowed_path_is_the_built_one() {
        let reqs = [
            "/", "//", "//x", "/x", "/x/", "/./x", "/../x", "/.", "/..", "/x//y", "", "x", "/é",
            "/é/ü", ".", "./x",
        ];
        let mut borrowed = 0;
        for req in reqs {
            for prefix_len in 0..4 {
                for strip in [false, true] {
                    for ph in [PathHandling::V0, PathHandling::V1] {
                        for service in [None, Some(""), Some("/"), Some("/s"), Some("/s/")] {
                            let got = upstream_path(service, req, prefix_len, strip, ph);
                            let base = service.filter(|p| !p.is_empty()).unwrap_or("/");
                            let cut =
                                floor_char_boundary(req, if strip { prefix_len.max(1) } else { 1 });
                            let want =
                                built(base, req, strip, sanitize_uri_postfix(&req[cut..]), ph);
                            assert_eq!(
                                got, want,
                                "{service:?} {req:?} {prefix_len} {strip} {ph:?}"
                            );
                            borrowed += usize::from(matches!(got, Cow::Borrowed(_)));
                        }
                    }
                }
            }
        }
        assert!(borrowed > 100, "{borrowed}");
    }
}
