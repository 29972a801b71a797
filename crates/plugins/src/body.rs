//! Reading one named argument out of a request body the way `kong.request.get_body()`
//! sees it (form-urlencoded, JSON object, multipart/form-data), and removing it again.

use bytes::Bytes;

/// What a body holds under a name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// Absent, or present but not a string (a number, a bare `name` in a form).
    None,
    One(String),
    /// Kong sees a table: repeated form fields, a JSON array or object.
    Many,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Form,
    Json,
    Multipart,
}

fn kind(content_type: &str) -> Option<Kind> {
    let ct = content_type.to_ascii_lowercase();
    if ct.contains("application/x-www-form-urlencoded") {
        Some(Kind::Form)
    } else if ct.contains("application/json") {
        Some(Kind::Json)
    } else if ct.contains("multipart/form-data") {
        Some(Kind::Multipart)
    } else {
        None
    }
}

/// Looks `name` up in `body`. Unsupported or malformed bodies hold nothing (Kong logs
/// "Cannot process request body" and carries on).
pub(crate) fn get(content_type: &str, body: &[u8], name: &str) -> Arg {
    match kind(content_type) {
        Some(Kind::Form) => {
            let mut found = Arg::None;
            let mut seen = 0;
            for pair in body.split(|&b| b == b'&') {
                let has_eq = pair.contains(&b'=');
                let Some((k, v)) = form_urlencoded::parse(pair).next() else {
                    continue;
                };
                if k != name {
                    continue;
                }
                seen += 1;
                found = if has_eq {
                    Arg::One(v.into_owned())
                } else {
                    Arg::None
                };
            }
            if seen > 1 {
                Arg::Many
            } else {
                found
            }
        }
        Some(Kind::Json) => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(m)) => match m.get(name) {
                Some(serde_json::Value::String(s)) => Arg::One(s.clone()),
                Some(serde_json::Value::Array(_) | serde_json::Value::Object(_)) => Arg::Many,
                _ => Arg::None,
            },
            _ => Arg::None,
        },
        Some(Kind::Multipart) => {
            let Some(b) = boundary(content_type) else {
                return Arg::None;
            };
            multipart_parts(body, &b)
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| Arg::One(String::from_utf8_lossy(&body[p.value]).into_owned()))
                .unwrap_or(Arg::None)
        }
        None => Arg::None,
    }
}

/// The body without `name` (`kong.service.request.set_body` of the edited table), or
/// `None` when there was nothing to change.
pub(crate) fn remove(content_type: &str, body: &[u8], name: &str) -> Option<Bytes> {
    match kind(content_type)? {
        Kind::Form => {
            let kept: Vec<&[u8]> = body
                .split(|&b| b == b'&')
                .filter(|pair| {
                    form_urlencoded::parse(pair)
                        .next()
                        .is_none_or(|(k, _)| k != name)
                })
                .collect();
            Some(Bytes::from(kept.join(&b'&')))
        }
        Kind::Json => {
            let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v.as_object_mut()?.remove(name)?;
            serde_json::to_vec(&v).ok().map(Bytes::from)
        }
        Kind::Multipart => {
            let b = boundary(content_type)?;
            let parts = multipart_parts(body, &b);
            let mut out = Vec::with_capacity(body.len());
            let mut last = 0;
            for p in parts.iter().filter(|p| p.name == name) {
                out.extend_from_slice(&body[last..p.whole.start]);
                last = p.whole.end;
            }
            out.extend_from_slice(&body[last..]);
            Some(Bytes::from(out))
        }
    }
}

/// A multipart/form-data body's fields, in order (`kong.request.get_body()`'s table).
pub(crate) fn multipart_fields(content_type: &str, body: &[u8]) -> Vec<(String, String)> {
    let Some(b) = boundary(content_type) else {
        return Vec::new();
    };
    multipart_parts(body, &b)
        .into_iter()
        .map(|p| (p.name, String::from_utf8_lossy(&body[p.value]).into_owned()))
        .collect()
}

pub(crate) fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

pub(crate) struct Part {
    pub name: String,
    /// The part's header lines, without the blank line after them.
    pub head: std::ops::Range<usize>,
    /// The part's content.
    pub value: std::ops::Range<usize>,
    /// From its `--boundary` line up to the next one.
    whole: std::ops::Range<usize>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

pub(crate) fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut out = Vec::new();
    let Some(mut at) = find(body, delim, 0) else {
        return out;
    };
    loop {
        let start = at;
        let head_start = at + delim.len();
        if body[head_start..].starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(body, b"\r\n\r\n", head_start) else {
            break;
        };
        let content_start = head_end + 4;
        let Some(next) = find(body, delim, content_start) else {
            break;
        };
        let content_end = next.saturating_sub(2).max(content_start);
        let head = String::from_utf8_lossy(&body[head_start..head_end]);
        let name = head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim() == "name").then(|| v.trim().trim_matches('"').to_owned())
            })
        });
        if let Some(name) = name {
            let head_from = if body[head_start..].starts_with(b"\r\n") {
                head_start + 2
            } else {
                head_start
            };
            out.push(Part {
                name,
                head: head_from.min(head_end)..head_end,
                value: content_start..content_end,
                whole: start..next,
            });
        }
        at = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form() {
        let ct = "application/x-www-form-urlencoded";
        assert_eq!(
            get(ct, b"a=1&apikey=k%201", "apikey"),
            Arg::One("k 1".into())
        );
        assert_eq!(get(ct, b"apikey=1&apikey=2", "apikey"), Arg::Many);
        assert_eq!(get(ct, b"apikey", "apikey"), Arg::None);
        assert_eq!(
            remove(ct, b"a=1&apikey=k&b=2", "apikey").unwrap(),
            &b"a=1&b=2"[..]
        );
    }

    #[test]
    fn json() {
        let ct = "application/json; charset=utf-8";
        assert_eq!(
            get(ct, br#"{"apikey":"k"}"#, "apikey"),
            Arg::One("k".into())
        );
        assert_eq!(get(ct, br#"{"apikey":["k"]}"#, "apikey"), Arg::Many);
        assert_eq!(get(ct, br#"{"apikey":1}"#, "apikey"), Arg::None);
        assert_eq!(get(ct, b"{broken", "apikey"), Arg::None);
        assert_eq!(
            remove(ct, br#"{"a":1,"apikey":"k"}"#, "apikey").unwrap(),
            &br#"{"a":1}"#[..]
        );
    }

    #[test]
    fn multipart() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nsecret\r\n--XyZ--\r\n";
        assert_eq!(get(ct, body, "apikey"), Arg::One("secret".into()));
        let out = remove(ct, body, "apikey").unwrap();
        assert_eq!(get(ct, &out, "apikey"), Arg::None);
        assert_eq!(get(ct, &out, "a"), Arg::One("1".into()));
        assert_eq!(get(ct, b"garbage", "apikey"), Arg::None);
    }
}
