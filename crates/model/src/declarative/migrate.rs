//! The on-the-fly migration of `_format_version` 1.1 and 2.1 files
//! (`kong/db/declarative/migrations/route_path.lua` with `migrate_path_280_300.lua`):
//! route paths that look like regexes get the `~` prefix 3.0 requires; plain paths are
//! normalised. Only top-level routes and routes nested in top-level services are migrated,
//! as in Kong.

use serde_json::Value;

/// Migrates `root` in place when its `_format_version` is "1.1" or "2.1" and sets it to "3.0".
pub(crate) fn migrate(root: &mut Value) {
    let version = root.get("_format_version").and_then(Value::as_str);
    if !matches!(version, Some("1.1") | Some("2.1")) {
        return;
    }
    if let Some(Value::Array(routes)) = root.get_mut("routes") {
        migrate_routes(routes);
    }
    if let Some(Value::Array(services)) = root.get_mut("services") {
        for s in services {
            if let Some(Value::Array(routes)) = s.get_mut("routes") {
                migrate_routes(routes);
            }
        }
    }
    root["_format_version"] = Value::from("3.0");
}

fn migrate_routes(routes: &mut [Value]) {
    for r in routes {
        if let Some(Value::Array(paths)) = r.get_mut("paths") {
            for p in paths {
                if let Value::String(s) = p {
                    *s = migrate_path(s);
                }
            }
        }
    }
}

/// Kong's `migrate_path`: a path made only of `[a-zA-Z0-9.\-_~/%]` is a plain path and is
/// normalised; anything else is a regex and gets `~` (with percent-escapes decoded).
pub(crate) fn migrate_path(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/' | b'%'));
    if plain {
        normalize(path, true)
    } else {
        format!("~{}", normalize_regex(path))
    }
}

const RESERVED: &[u8] = b"!*'();:@&=+$,/?%#[]";

/// Replaces each `%XX` triplet (case-insensitive hex) using `f(byte, original_triplet)`.
fn percent_decode_with(s: &str, f: impl Fn(u8, &str) -> Vec<u8>) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let n = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(0);
            out.extend(f(n, &s[i..i + 3]));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `migrate_path_280_300.lua`'s `normalize_regex`: reserved characters stay encoded (hex
/// upper-cased); regex metacharacters are decoded escaped; others are decoded.
fn normalize_regex(regex: &str) -> String {
    percent_decode_with(regex, |n, orig| {
        if [
            b'!', b'#', b'$', b'%', b'&', b'\'', b'(', b')', b'*', b'+', b',', b'/', b':', b';',
            b'=', b'?', b'@', b'[', b']',
        ]
        .contains(&n)
        {
            return orig.to_uppercase().into_bytes();
        }
        match n {
            b'.' | b'^' | b'-' | b'{' | b'}' | b'\\' | b'|' => vec![b'\\', n],
            _ => vec![n],
        }
    })
}

/// `kong.tools.uri.normalize(uri, merge_slashes)`: decodes unreserved percent-escapes,
/// removes dot segments and (optionally) merges slashes.
pub(crate) fn normalize(uri: &str, merge_slashes: bool) -> String {
    if uri.is_empty() || uri == "/" {
        return uri.to_string();
    }
    let mut uri = percent_decode_with(uri, |n, orig| {
        if RESERVED.contains(&n) {
            orig.to_uppercase().into_bytes()
        } else {
            vec![n]
        }
    });
    if !uri.contains('.') && (!merge_slashes || !uri.contains("//")) {
        return uri;
    }
    let mut out: Vec<String> = Vec::new();
    while !uri.is_empty() {
        let b = uri.as_bytes();
        let at = |i: usize| b.get(i).copied();
        if uri == "/." {
            uri = "/".into();
        } else if uri == "/.." {
            uri = "/".into();
            out.pop();
        } else if uri == "." || uri == ".." {
            uri.clear();
        } else if at(0) == Some(b'.') && at(1) == Some(b'.') && at(2) == Some(b'/') {
            uri = uri[3..].to_string();
        } else if (at(0) == Some(b'.') && at(1) == Some(b'/'))
            || (at(0) == Some(b'/') && at(1) == Some(b'.') && at(2) == Some(b'/'))
        {
            // `./` and `/./`
            uri = uri[2..].to_string();
        } else if at(0) == Some(b'/')
            && at(1) == Some(b'.')
            && at(2) == Some(b'.')
            && at(3) == Some(b'/')
        {
            uri = uri[3..].to_string();
            out.pop();
        } else if merge_slashes && at(0) == Some(b'/') && at(1) == Some(b'/') {
            uri = uri[1..].to_string();
        } else {
            let first = uri.chars().next().map_or(1, char::len_utf8);
            match uri[first..].find('/') {
                Some(i) => {
                    out.push(uri[..i + first].to_string());
                    uri = uri[i + first..].to_string();
                }
                None => {
                    out.push(std::mem::take(&mut uri));
                }
            }
        }
    }
    out.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_migrate_as_kong_does() {
        assert_eq!(migrate_path("/foo/bar"), "/foo/bar");
        assert_eq!(migrate_path("/foo/../bar"), "/bar");
        assert_eq!(migrate_path("/foo//bar"), "/foo/bar");
        assert_eq!(migrate_path("/foo%7Ebar"), "/foo~bar");
        assert_eq!(migrate_path("/users/\\d+"), "~/users/\\d+");
        assert_eq!(migrate_path("/api$"), "~/api$");
        assert_eq!(migrate_path("/a%2Eb(x)"), "~/a\\.b(x)");
        assert_eq!(migrate_path("/a%2fb(x)"), "~/a%2Fb(x)");
    }
}
