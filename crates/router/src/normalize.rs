//! Kong's request path normalization (`kong/tools/uri.lua` `normalize(uri, true)`,
//! as called by `kong/router/utils.lua` `strip_uri_args` before matching).

use std::borrow::Cow;

/// Reserved characters (RFC 3986 gen-delims/sub-delims plus `%`) that Kong keeps
/// percent-encoded (it only upper-cases the hex digits of their escapes).
const RESERVED: &[u8] = b"!*'();:@&=+$,/?%#[]";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding step. Returns `None` when nothing changes.
///
/// Kong: `ngx.re.gsub(uri, "%([\\dA-F]{2})", normalize_decode, "joi")`: every
/// `%XX` triplet (hex digits in either case) is decoded unless the decoded byte
/// is a reserved character, in which case the triplet is kept and upper-cased.
/// A single left-to-right pass, so `%2541` stays `%2541`.
///
/// `keep_non_ascii`: keep escapes of bytes >= 0x80 encoded (upper-cased); used
/// as a fallback when full decoding would produce invalid UTF-8 (which a Rust
/// `str` cannot hold; Kong would pass the raw bytes through).
fn decode(uri: &str, keep_non_ascii: bool) -> Option<Vec<u8>> {
    let b = uri.as_bytes();
    if !b.contains(&b'%') {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                let v = h * 16 + l;
                if RESERVED.contains(&v) || (keep_non_ascii && v >= 0x80) {
                    let up = [
                        b'%',
                        b[i + 1].to_ascii_uppercase(),
                        b[i + 2].to_ascii_uppercase(),
                    ];
                    if up[1] != b[i + 1] || up[2] != b[i + 2] {
                        changed = true;
                    }
                    out.extend_from_slice(&up);
                } else {
                    out.push(v);
                    changed = true;
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// Dot-segment removal (and `//` merging), byte-for-byte Kong's loop.
fn remove_dots(uri: &[u8]) -> Vec<u8> {
    // Output is a stack of segments; each segment is a range into `uri`
    // or a synthetic "/" (when `/.` / `/..` is rewritten to `/`).
    #[derive(Clone, Copy)]
    enum Seg {
        Range(usize, usize),
        Slash,
    }
    let mut segs: Vec<Seg> = Vec::new();
    // `rest` is the remaining input: either a suffix of `uri` or the synthetic "/".
    let mut pos = 0usize; // start of remaining input in `uri`
    let mut synthetic_slash = false; // remaining input is exactly "/"
    loop {
        let rest: &[u8] = if synthetic_slash { b"/" } else { &uri[pos..] };
        if rest.is_empty() {
            break;
        }
        let at = |k: usize| rest.get(k).copied();
        if rest == b"/." {
            synthetic_slash = true;
        } else if rest == b"/.." {
            synthetic_slash = true;
            segs.pop();
        } else if rest == b"." || rest == b".." {
            pos = uri.len();
            synthetic_slash = false;
        } else if at(0) == Some(b'.') && at(1) == Some(b'.') && at(2) == Some(b'/') {
            pos += 3;
        } else if (at(0) == Some(b'.') && at(1) == Some(b'/'))
            || (at(0) == Some(b'/') && at(1) == Some(b'.') && at(2) == Some(b'/'))
        {
            // "./" is dropped; "/./" becomes "/"
            pos += 2;
        } else if at(0) == Some(b'/')
            && at(1) == Some(b'.')
            && at(2) == Some(b'.')
            && at(3) == Some(b'/')
        {
            pos += 3;
            segs.pop();
        } else if at(0) == Some(b'/') && at(1) == Some(b'/') {
            pos += 1;
        } else if synthetic_slash {
            segs.push(Seg::Slash);
            synthetic_slash = false;
            pos = uri.len();
        } else {
            // segment up to (not including) the next '/' searched from index 1
            let end = rest[1..]
                .iter()
                .position(|&c| c == b'/')
                .map(|p| pos + 1 + p)
                .unwrap_or(uri.len());
            segs.push(Seg::Range(pos, end));
            pos = end;
        }
    }
    let mut out = Vec::with_capacity(uri.len());
    for s in segs {
        match s {
            Seg::Range(a, b) => out.extend_from_slice(&uri[a..b]),
            Seg::Slash => out.push(b'/'),
        }
    }
    out
}

/// Kong's router path normalization (`kong.tools.uri.normalize(uri, true)`):
///
/// 1. `%XX` escapes of unreserved and "other" characters are decoded; escapes of
///    reserved characters (`!*'();:@&=+$,/?%#[]`) are kept with upper-cased hex.
/// 2. If the result contains a `.` or `//`, dot segments (`/./`, `/../`, leading
///    `./`, `../`, trailing `/.`, `/..`) are resolved and duplicate slashes merged,
///    following Kong's exact loop (e.g. `/..` above the root is dropped, `.` alone
///    normalizes to the empty string).
///
/// Returns `Cow::Borrowed` when the input is already normal. The input must not
/// contain the query string. If decoding would produce invalid UTF-8, escapes of
/// non-ASCII bytes are kept encoded (upper-cased) instead.
pub fn normalize_path(raw: &str) -> Cow<'_, str> {
    if raw.is_empty() || raw == "/" {
        return Cow::Borrowed(raw);
    }
    let decoded: Option<String> = match decode(raw, false) {
        None => None,
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(_) => {
                decode(raw, true).map(|b| String::from_utf8(b).unwrap_or_else(|_| raw.to_owned()))
            }
        },
    };
    let cur: &str = decoded.as_deref().unwrap_or(raw);
    let needs_dots = cur.contains('.') || cur.contains("//");
    if !needs_dots {
        return match decoded {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(raw),
        };
    }
    let out = remove_dots(cur.as_bytes());
    if out == cur.as_bytes() {
        return match decoded {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(raw),
        };
    }
    // Segments are split at ASCII '/', so UTF-8 validity is preserved.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}
