//! Request bodies and query strings in the three shapes Kong accepts: JSON, form-urlencoded
//! with Kong's nesting (`config.minute=5`, `paths[]=/a`, `paths[1]=/b`) and multipart.

use crate::error::ApiError;
use serde_json::{Map, Value};

/// A decoded body: the object and whether its values are untyped strings to coerce.
pub struct Body {
    pub map: Map<String, Value>,
    pub coerce: bool,
}

pub async fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Body, ApiError> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body {
            map: Map::new(),
            coerce: false,
        });
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(bytes).into_owned().collect();
        return Ok(Body {
            map: nest(pairs)?,
            coerce: true,
        });
    }
    if ct.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&ct)
            .map_err(|_| ApiError::bad_request("Invalid multipart body"))?;
        let data = bytes::Bytes::copy_from_slice(bytes);
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(data) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut pairs = Vec::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let text = field
                .text()
                .await
                .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {e}")))?;
            pairs.push((name, text));
        }
        return Ok(Body {
            map: nest(pairs)?,
            coerce: true,
        });
    }
    // JSON is the default, as with Kong's clients that send no content type.
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Body { map, coerce: false }),
        Ok(_) => Err(ApiError::bad_request("Cannot parse JSON body")),
        Err(_) if !ct.is_empty() && !ct.contains("json") => Err(ApiError::Message(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type".into(),
        )),
        Err(_) => Err(ApiError::bad_request("Cannot parse JSON body")),
    }
}

/// How deep a form field name may nest (`a.b[1][c]` is 4). Kong's deepest schema is far
/// shallower; the bound keeps a hostile `a[][][]…` from recursing off the stack.
const MAX_FORM_DEPTH: usize = 32;

/// Builds nested objects and arrays from flat `key=value` pairs.
pub fn nest(pairs: Vec<(String, String)>) -> Result<Map<String, Value>, ApiError> {
    let mut root = Value::Object(Map::new());
    for (k, v) in pairs {
        let path = split_key(&k);
        if path.is_empty() {
            continue;
        }
        if path.len() > MAX_FORM_DEPTH {
            let shown: String = k.chars().take(40).collect();
            return Err(ApiError::bad_request(format!(
                "Cannot parse form body: field '{shown}…' nests more than {MAX_FORM_DEPTH} levels"
            )));
        }
        insert(&mut root, &path, Value::String(v));
    }
    Ok(match root {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
    Push,
}

/// `a.b[1][]` → [Key(a), Key(b), Index(0), Push]; `a[b]` → [Key(a), Key(b)].
fn split_key(k: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = k.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !cur.is_empty() {
                    out.push(Seg::Key(std::mem::take(&mut cur)));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    out.push(Seg::Key(std::mem::take(&mut cur)));
                }
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    inner.push(c);
                }
                if inner.is_empty() {
                    out.push(Seg::Push);
                } else if let Ok(i) = inner.parse::<usize>() {
                    // Kong's form indexes are 1-based (Lua arrays).
                    out.push(Seg::Index(i.saturating_sub(1)));
                } else {
                    out.push(Seg::Key(inner));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(Seg::Key(cur));
    }
    out
}

fn insert(node: &mut Value, path: &[Seg], v: Value) {
    let (head, rest) = (&path[0], &path[1..]);
    match head {
        Seg::Key(k) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(m) = node else { return };
            if rest.is_empty() {
                // A repeated plain key (`hosts=a&hosts=b`) becomes an array.
                match m.get_mut(k) {
                    Some(Value::Array(a)) => a.push(v),
                    Some(existing) => {
                        let old = std::mem::take(existing);
                        *existing = Value::Array(vec![old, v]);
                    }
                    None => {
                        m.insert(k.clone(), v);
                    }
                }
            } else {
                let child = m.entry(k.clone()).or_insert(Value::Null);
                insert(child, rest, v);
            }
        }
        Seg::Index(i) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let Value::Array(a) = node else { return };
            // Bound the index so a hostile `a[999999999]` cannot allocate gigabytes.
            let i = (*i).min(a.len()).min(10_000);
            if a.len() <= i {
                a.resize(i + 1, Value::Null);
            }
            if rest.is_empty() {
                a[i] = v;
            } else {
                insert(&mut a[i], rest, v);
            }
        }
        Seg::Push => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let Value::Array(a) = node else { return };
            if rest.is_empty() {
                a.push(v);
            } else {
                a.push(Value::Null);
                let last = a.len() - 1;
                insert(&mut a[last], rest, v);
            }
        }
    }
}

/// Deep merge for PATCH: records merge field by field, everything else is replaced.
pub fn merge(base: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(p)) if !is_foreign(b) => merge(b, p),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn is_foreign(m: &Map<String, Value>) -> bool {
    m.len() == 1 && m.contains_key("id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(pairs: &[(&str, &str)]) -> Value {
        Value::Object(
            nest(
                pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn deep_field_names_are_refused_not_recursed() {
        let deep = format!("a{}", "[]".repeat(100_000));
        let e = nest(vec![(deep, "x".into())]).unwrap_err();
        assert!(
            format!("{e:?}").contains("nests more than 32 levels"),
            "{e:?}"
        );
        let ok = format!("a{}", "[b]".repeat(31));
        assert!(nest(vec![(ok, "x".into())]).is_ok());
    }

    #[test]
    fn kong_form_nesting() {
        assert_eq!(
            n(&[("config.minute", "5")]),
            json!({"config": {"minute": "5"}})
        );
        assert_eq!(
            n(&[("paths[]", "/a"), ("paths[]", "/b")]),
            json!({"paths": ["/a", "/b"]})
        );
        assert_eq!(
            n(&[("paths[1]", "/a"), ("paths[2]", "/b")]),
            json!({"paths": ["/a", "/b"]})
        );
        assert_eq!(
            n(&[("hosts", "a"), ("hosts", "b")]),
            json!({"hosts": ["a", "b"]})
        );
        assert_eq!(n(&[("service.id", "x")]), json!({"service": {"id": "x"}}));
        assert_eq!(
            n(&[("config[key_names][]", "k")]),
            json!({"config": {"key_names": ["k"]}})
        );
        assert!(n(&[("a[999999999]", "x")]).to_string().len() < 100);
    }

    #[test]
    fn merge_records() {
        let mut base = json!({"config": {"a": 1, "b": 2}, "tags": ["x"]})
            .as_object()
            .unwrap()
            .clone();
        merge(
            &mut base,
            json!({"config": {"b": 3}, "tags": ["y"]})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            Value::Object(base),
            json!({"config": {"a": 1, "b": 3}, "tags": ["y"]})
        );
    }
}
