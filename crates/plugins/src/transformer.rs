//! What request-transformer and response-transformer share: the `name:value` entries
//! of their config lists, their header checks, and Kong's `append_value` and Lua
//! truthiness over decoded JSON.

use crate::auth::validate_header_name;
use serde_json::{json, Value};
use tollgate_model::schema::{Check, Field, Type};

/// Kong's `entry:match("^([^:]+):*(.-)$")`: the name, then the value after the colons.
pub(crate) fn split(entry: &str) -> (&str, &str) {
    match entry.find(':') {
        Some(i) => (&entry[..i], entry[i..].trim_start_matches(':')),
        None => (entry, ""),
    }
}

/// Kong's `validate_headers` without the value: the entry's name is a header name.
pub(crate) fn check_header_name(entry: &str) -> Result<(), String> {
    let (name, _) = split(entry);
    validate_header_name(name).map_err(|_| format!("'{name}' is not a valid header"))
}

/// Kong's `validate_colon_headers` (rename): both sides are header names.
pub(crate) fn check_colon_header(entry: &str) -> Result<(), String> {
    let (name, value) = split(entry);
    for n in [name, value] {
        if validate_header_name(n).is_err() {
            return Err(format!("'{n}' is not a valid header"));
        }
    }
    Ok(())
}

/// `^[^:]+:.*$`: a `name:value` entry.
pub(crate) fn colon() -> Check {
    Check::Match(regex::Regex::new("^[^:]+:.*$").expect("static regex"))
}

/// A required array defaulting to `[]`.
pub(crate) fn array(name: &'static str, element: Field) -> Field {
    Field::new(name, Type::Array(Box::new(element)))
        .required()
        .default(json!([]))
}

pub(crate) fn elem() -> Field {
    Field::new("element", Type::String)
}

/// Kong's `append_value` for a JSON value: a string becomes `[old, new]`, an array
/// grows, anything else is replaced by `[new]`.
pub(crate) fn append_json(old: Option<Value>, v: Value) -> Value {
    match old {
        Some(Value::String(s)) => json!([s, v]),
        Some(Value::Array(mut a)) => {
            a.push(v);
            Value::Array(a)
        }
        // `table.insert` on a Lua table without array part sets key 1.
        Some(Value::Object(mut o)) => {
            o.insert("1".into(), v);
            Value::Object(o)
        }
        _ => json!([v]),
    }
}

/// Lua truthiness of a decoded JSON member (`if body[name]`): only absent and `false`
/// are false (cjson's `null` is a userdata, hence true).
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Bool(false)))
}
