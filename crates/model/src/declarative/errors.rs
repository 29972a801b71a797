//! The declarative error tree (Kong's `err_t`, a Lua table keyed by positions and names),
//! its JSON and Penlight renderings, and Kong's `flatten_errors` (`kong/db/errors.lua`).

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A Lua table key: array positions (1-based) sort before names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Int(usize),
    Str(String),
}

impl Key {
    pub(crate) fn s(s: &str) -> Key {
        Key::Str(s.to_string())
    }
}

/// One node of the error tree: a message or a table of nodes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Msg(String),
    Tab(BTreeMap<Key, Node>),
}

impl Node {
    pub(crate) fn tab() -> Node {
        Node::Tab(BTreeMap::new())
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Node::Tab(t) if t.is_empty())
    }

    /// The table under `path`, created on the way. A message found where a table is needed
    /// becomes the table's `@entity` error.
    pub(crate) fn at(&mut self, path: &[Key]) -> &mut BTreeMap<Key, Node> {
        let mut cur = self;
        for k in path {
            let t = cur.as_tab();
            cur = t.entry(k.clone()).or_insert_with(Node::tab);
        }
        cur.as_tab()
    }

    fn as_tab(&mut self) -> &mut BTreeMap<Key, Node> {
        if let Node::Msg(m) = self {
            let msg = std::mem::take(m);
            let mut t = BTreeMap::new();
            t.insert(
                Key::s("@entity"),
                Node::Tab(BTreeMap::from([(Key::Int(1), Node::Msg(msg))])),
            );
            *self = Node::Tab(t);
        }
        match self {
            Node::Tab(t) => t,
            Node::Msg(_) => unreachable!("converted above"),
        }
    }

    /// Sets a message at `path` (the last key names the slot).
    pub(crate) fn set_msg(&mut self, path: &[Key], msg: String) {
        let (last, parent) = path.split_last().expect("non-empty path");
        let t = self.at(parent);
        match t.get_mut(last) {
            Some(Node::Tab(existing)) => {
                let list = existing
                    .entry(Key::s("@entity"))
                    .or_insert_with(Node::tab)
                    .as_tab();
                let n = list.len() + 1;
                list.insert(Key::Int(n), Node::Msg(msg));
            }
            _ => {
                t.insert(last.clone(), Node::Msg(msg));
            }
        }
    }

    /// Appends a message to the list at `path`.
    pub(crate) fn push_msg(&mut self, path: &[Key], msg: String) {
        let t = self.at(path);
        let n = t.len() + 1;
        t.insert(Key::Int(n), Node::Msg(msg));
    }

    /// Merges a schema-violation `fields` object into the table at `path`.
    pub(crate) fn merge_value(&mut self, path: &[Key], v: &Value) {
        let t = self.at(path);
        if let Value::Object(m) = v {
            for (k, v) in m {
                t.entry(Key::s(k)).or_insert_with(|| Node::from_value(v));
            }
        }
    }

    /// Kong's field errors as a Lua table: arrays keep their positions, nulls are holes.
    pub(crate) fn from_value(v: &Value) -> Node {
        match v {
            Value::String(s) => Node::Msg(s.clone()),
            Value::Object(m) => Node::Tab(
                m.iter()
                    .map(|(k, v)| (Key::s(k), Node::from_value(v)))
                    .collect(),
            ),
            Value::Array(a) => Node::Tab(
                a.iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(i, v)| (Key::Int(i + 1), Node::from_value(v)))
                    .collect(),
            ),
            other => Node::Msg(other.to_string()),
        }
    }

    /// cjson's encoding: tables keyed only by positions are arrays (holes as null); any
    /// other table is an object; an empty table is `{}`.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Node::Msg(s) => Value::String(s.clone()),
            Node::Tab(t) => {
                let all_int = !t.is_empty() && t.keys().all(|k| matches!(k, Key::Int(i) if *i > 0));
                if all_int {
                    let max = t
                        .keys()
                        .map(|k| match k {
                            Key::Int(i) => *i,
                            Key::Str(_) => 0,
                        })
                        .max()
                        .unwrap_or(0);
                    let mut a = vec![Value::Null; max];
                    for (k, v) in t {
                        if let Key::Int(i) = k {
                            a[i - 1] = v.to_json();
                        }
                    }
                    Value::Array(a)
                } else {
                    let mut m = Map::new();
                    for (k, v) in t {
                        let key = match k {
                            Key::Int(i) => i.to_string(),
                            Key::Str(s) => s.clone(),
                        };
                        m.insert(key, v.to_json());
                    }
                    Value::Object(m)
                }
            }
        }
    }

    /// Penlight's `pretty.write(t, "")`, the text Kong puts in the error message.
    pub(crate) fn lua_pretty(&self) -> String {
        let mut out = String::new();
        self.write_pretty(&mut out);
        out
    }

    fn write_pretty(&self, out: &mut String) {
        match self {
            Node::Msg(s) => out.push_str(&quote_string(s)),
            Node::Tab(t) => {
                out.push('{');
                let mut first = true;
                let mut sep = |out: &mut String| {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                };
                // The array part (`ipairs`): consecutive positions from 1.
                let mut next = 1;
                while let Some(v) = t.get(&Key::Int(next)) {
                    sep(out);
                    v.write_pretty(out);
                    next += 1;
                }
                for (k, v) in t {
                    match k {
                        Key::Int(i) if *i < next && *i > 0 => continue,
                        Key::Int(i) => {
                            sep(out);
                            out.push_str(&format!("[{i}]="));
                        }
                        Key::Str(s) => {
                            sep(out);
                            if is_identifier(s) {
                                out.push_str(s);
                            } else {
                                let q = quote_string(s);
                                if q.starts_with('[') {
                                    out.push_str(&format!("[ {q} ]"));
                                } else {
                                    out.push_str(&format!("[{q}]"));
                                }
                            }
                            out.push('=');
                        }
                    }
                    v.write_pretty(out);
                }
                out.push('}');
            }
        }
    }
}

const LUA_KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !LUA_KEYWORDS.contains(&s)
}

/// Penlight's `stringx.quote_string`: long brackets for multi-line text, else `%q`.
fn quote_string(s: &str) -> String {
    let has_lquote = s.contains("[[") || s.contains("]]") || s.contains("[=") || s.contains("]=");
    if (s.contains('\n') || has_lquote) && !s.contains('\r') {
        let mut level = 0;
        while s.contains(&format!("]{}]", "=".repeat(level)))
            || s.contains(&format!("[{}[", "=".repeat(level)))
        {
            level += 1;
        }
        let eq = "=".repeat(level);
        let body = if s.starts_with('\n') {
            format!("\n{s}")
        } else {
            s.to_string()
        };
        return format!("[{eq}[{body}]{eq}]");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// cjson's compact encoding (it escapes `/`).
pub(crate) fn cjson_encode(v: &Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .replace('/', "\\/")
}

// ---------------------------------------------------------------------------------------
// flatten_errors

/// The foreign-key relationships Kong's flattener walks, per entity: `(field, entity, reference)`.
fn relationships(entity: &str) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out = Vec::new();
    for s in super::known_entities() {
        for f in s.foreign_fields() {
            let reference = f.foreign_entity().unwrap_or_default();
            if s.name == entity || reference == entity {
                out.push((f.name, s.name, reference));
            }
        }
    }
    out
}

fn singular(noun: &str) -> &str {
    noun.strip_suffix('s').unwrap_or(noun)
}

fn make_pk(entity: &Value) -> Option<Value> {
    match entity.get("id") {
        Some(Value::String(s)) if crate::schema::is_uuid(s) => Some(serde_json::json!({ "id": s })),
        _ => None,
    }
}

fn join(ns: &str, field: &str) -> String {
    if ns.is_empty() {
        field.to_string()
    } else {
        format!("{ns}.{field}")
    }
}

fn key_text(k: &Key) -> String {
    match k {
        Key::Int(i) => i.to_string(),
        Key::Str(s) => s.clone(),
    }
}

fn add_entity_error(err: &Node, out: &mut Vec<Value>) {
    match err {
        Node::Msg(m) => out.push(serde_json::json!({ "type": "entity", "message": m })),
        Node::Tab(t) => {
            for v in t.values() {
                add_entity_error(v, out);
            }
        }
    }
}

fn add_field_error(field: &str, err: &Node, out: &mut Vec<Value>) {
    match err {
        Node::Msg(m) => {
            out.push(serde_json::json!({ "type": "field", "field": field, "message": m }))
        }
        Node::Tab(t) => {
            for v in t.values() {
                add_field_error(field, v, out);
            }
        }
    }
}

fn categorize(errs: &BTreeMap<Key, Node>, ns: &str, out: &mut Vec<Value>) {
    for (k, v) in errs {
        let field = key_text(k);
        if field == "@entity" {
            add_entity_error(v, out);
        } else {
            match v {
                Node::Msg(_) => add_field_error(&join(ns, &field), v, out),
                Node::Tab(t) => categorize(t, &join(ns, &field), out),
            }
        }
    }
}

fn add_entity_errors(entity_type: &str, entity: &mut Value, err: Node, out: &mut Vec<Value>) {
    let mut err_t = match err {
        Node::Msg(m) => BTreeMap::from([(Key::s("@entity"), Node::Msg(m))]),
        Node::Tab(t) if !t.is_empty() => t,
        Node::Tab(_) => return,
    };
    if !entity.is_object() {
        return;
    }
    let entity_pk = make_pk(entity);
    for (field, owner, reference) in relationships(entity_type) {
        if owner == entity_type {
            // An owned one-to-one relationship given inline.
            let obj = entity.as_object_mut().expect("checked");
            if matches!(
                obj.get(field),
                Some(Value::Object(_)) | Some(Value::Array(_))
            ) {
                let mut value = obj.remove(field).unwrap_or(Value::Null);
                if let Some(pk) = make_pk(&value) {
                    obj.insert(field.to_string(), pk);
                }
                if let Some(e) = err_t.remove(&Key::s(field)) {
                    add_entity_errors(reference, &mut value, e, out);
                }
            }
        } else {
            // Children nested under this entity.
            let obj = entity.as_object_mut().expect("checked");
            let child_list = owner;
            if matches!(
                obj.get(child_list),
                Some(Value::Object(_)) | Some(Value::Array(_))
            ) {
                let mut children = obj.remove(child_list).unwrap_or(Value::Null);
                if let Some(Node::Tab(child_errs)) = err_t.remove(&Key::s(child_list)) {
                    if let Value::Array(items) = &mut children {
                        for (i, item) in items.iter_mut().enumerate() {
                            if let (Some(o), Some(pk)) = (item.as_object_mut(), &entity_pk) {
                                if !o.contains_key(field) {
                                    o.insert(field.to_string(), pk.clone());
                                }
                            }
                            if let Some(e) = child_errs.get(&Key::Int(i + 1)) {
                                add_entity_errors(child_list, item, e.clone(), out);
                            }
                        }
                    }
                }
            }
        }
    }
    if err_t.is_empty() {
        return;
    }
    let mut errors = Vec::new();
    categorize(&err_t, "", &mut errors);
    if errors.is_empty() {
        return;
    }
    let mut rec = Map::new();
    if let Some(Value::String(n)) = entity.get("name") {
        if !n.is_empty() {
            rec.insert("entity_name".into(), Value::String(n.clone()));
        }
    }
    if let Some(Value::String(id)) = entity.get("id") {
        if crate::schema::is_uuid(id) {
            rec.insert("entity_id".into(), Value::String(id.clone()));
        }
    }
    if let Some(Value::Array(tags)) = entity.get("tags") {
        if tags.iter().all(Value::is_string) {
            rec.insert("entity_tags".into(), Value::Array(tags.clone()));
        }
    }
    rec.insert(
        "entity_type".into(),
        Value::String(singular(entity_type).to_string()),
    );
    rec.insert("entity".into(), entity.clone());
    rec.insert("errors".into(), Value::Array(errors));
    out.push(Value::Object(rec));
}

/// Kong's `flatten_errors(input, err_t)`: moves every error it can tie to an input entity
/// into the returned list and leaves the rest in `err`.
pub(crate) fn flatten(input: &mut Value, err: &mut Node) -> Vec<Value> {
    let mut out = Vec::new();
    let Node::Tab(sections) = err else {
        return out;
    };
    let names: Vec<Key> = sections.keys().cloned().collect();
    for name in names {
        let Key::Str(entity_type) = &name else {
            continue;
        };
        let Some(Node::Tab(section)) = sections.get_mut(&name) else {
            continue;
        };
        let Some(Value::Array(entities)) = input.get_mut(entity_type.as_str()) else {
            continue;
        };
        let idxs: Vec<Key> = section.keys().cloned().collect();
        for k in idxs {
            let Key::Int(i) = k else { continue };
            let Some(entity) = entities.get_mut(i.wrapping_sub(1)) else {
                continue;
            };
            if !entity.is_object() {
                continue;
            }
            let e = section.remove(&k).expect("listed");
            add_entity_errors(entity_type, entity, e, &mut out);
        }
        if section.is_empty() {
            sections.remove(&name);
        }
    }
    out
}
