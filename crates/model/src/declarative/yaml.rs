//! YAML text straight into a JSON value, event by event.
//!
//! serde_yaml buffers every event of the document before building anything, which for a
//! large declarative file (10,000 services, 100,000 consumers) costs more memory than the
//! configuration itself. yaml-rust2's parser hands events over one at a time, so the only
//! thing built is the value. Scalars resolve with YAML 1.2's core schema (as serde_yaml
//! does): `yes`/`no` stay strings, quoted scalars are always strings.

use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

enum Frame {
    Seq(Vec<Value>, usize),
    /// Entries gathered first: the map is built at its exact size at the end.
    Map(Vec<(String, Value)>, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    root: Option<Value>,
    error: Option<String>,
}

/// Parses the first YAML document of `text`; an empty document is `null`.
pub(crate) fn to_json(text: &str) -> Result<Value, String> {
    let mut b = Builder::default();
    Parser::new_from_str(text)
        .load(&mut b, false)
        .map_err(|e| e.to_string())?;
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.root.unwrap_or(Value::Null))
}

impl Builder {
    fn add(&mut self, v: Value, anchor: usize, mark: Marker) {
        if anchor != 0 {
            self.anchors.insert(anchor, v.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(v);
                }
            }
            Some(Frame::Seq(items, _)) => items.push(v),
            Some(Frame::Map(m, key, _)) => match key.take() {
                Some(k) => m.push((k, v)),
                None => match v {
                    Value::String(s) => *key = Some(s),
                    Value::Number(n) => *key = Some(n.to_string()),
                    Value::Bool(b) => *key = Some(b.to_string()),
                    Value::Null => *key = Some(String::new()),
                    _ => {
                        self.error.get_or_insert_with(|| {
                            format!(
                                "a mapping key must be a scalar at line {} column {}",
                                mark.line(),
                                mark.col() + 1
                            )
                        });
                        // Keep the structure balanced; the value is discarded.
                        *key = Some(String::new());
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let v = scalar(s, style, tag.as_ref());
                self.add(v, anchor, mark);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(Vec::new(), None, anchor)),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                // Growth leaves up to half of each container unused; the document is
                // held whole, so give it back.
                Some(Frame::Seq(mut items, anchor)) => {
                    items.shrink_to_fit();
                    self.add(Value::Array(items), anchor, mark)
                }
                Some(Frame::Map(entries, _, anchor)) => {
                    let mut m = Map::with_capacity(entries.len());
                    for (k, v) in entries {
                        // a repeated key: the last value wins, as in serde_yaml
                        m.insert(k, v);
                    }
                    self.add(Value::Object(m), anchor, mark)
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(v) => {
                    let v = v.clone();
                    self.add(v, 0, mark);
                }
                None => {
                    self.error.get_or_insert_with(|| {
                        format!(
                            "unknown anchor at line {} column {}",
                            mark.line(),
                            mark.col() + 1
                        )
                    });
                }
            },
            _ => {}
        }
    }
}

fn scalar(s: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(t) = tag {
        if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" {
            return match t.suffix.as_str() {
                "str" => Value::String(s),
                "null" => Value::Null,
                "bool" => resolve_plain(&s)
                    .filter(Value::is_boolean)
                    .unwrap_or(Value::String(s)),
                "int" | "float" => resolve_plain(&s)
                    .filter(Value::is_number)
                    .unwrap_or(Value::String(s)),
                _ => Value::String(s),
            };
        }
        return Value::String(s);
    }
    if style != TScalarStyle::Plain {
        return Value::String(s);
    }
    resolve_plain(&s).unwrap_or(Value::String(s))
}

/// YAML 1.2 core schema resolution of a plain scalar; `None` means "a string".
fn resolve_plain(s: &str) -> Option<Value> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return None, // JSON has no infinities or NaN: keep the text.
        _ => {}
    }
    let b = s.as_bytes();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if let Some(hex) = s.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(Value::from);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned) {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Value::from(i));
        }
        if let Ok(u) = s.parse::<u64>() {
            return Some(Value::from(u));
        }
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let looks_float = !b.is_empty()
        && unsigned
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == b'.')
        && unsigned
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
        && unsigned.bytes().any(|c| c.is_ascii_digit());
    if looks_float {
        if let Ok(f) = s.parse::<f64>() {
            return Number::from_f64(f).map(Value::Number);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_follow_the_core_schema() {
        let v = to_json(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: yes\ng: '1'\nh: \"true\"\ni: 0x1F\nj: /path\nk: 3.0\nl: 1e3\nm: .inf\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "yes", "g": "1", "h": "true",
                   "i": 31, "j": "/path", "k": 3.0, "l": 1000.0, "m": ".inf"})
        );
    }

    #[test]
    fn structures_anchors_and_errors() {
        let v = to_json("base: &b {x: 1, y: [a, b]}\ncopy: *b\nlist:\n- 1\n- {k: v}\n").unwrap();
        assert_eq!(v["copy"], json!({"x": 1, "y": ["a", "b"]}));
        assert_eq!(v["list"], json!([1, {"k": "v"}]));
        assert_eq!(to_json("").unwrap(), Value::Null);
        assert!(to_json("a: [1, 2\n").is_err());
        assert!(to_json("? [a]\n: 1\n").unwrap_err().contains("mapping key"));
        assert!(to_json("a: *nope\n").is_err());
        assert_eq!(to_json("a: !!str 12\n").unwrap(), json!({"a": "12"}));
    }
}
