//! response-transformer (`kong/plugins/response-transformer/{schema,handler,
//! header_transformer,body_transformer}.lua`): edits the response headers (remove,
//! rename, replace, add, append, in that order) and the members of a JSON body, with
//! `json_types` to add numbers and booleans.
//!
//! As in Kong, the header checks look at the headers the upstream sent (not at the ones
//! an earlier step changed), and a body that is not a JSON object (not JSON at all,
//! compressed, an array) goes out unchanged.
//!
//! Unlike Kong, a header name or value that could never be sent is refused when the
//! configuration is validated, rather than failing the response.

use crate::api::{BodyCx, BodyMode, Phases, Plugin, PluginError, PluginSpec, ResponseCx};
use crate::transformer::{
    append_json, array, check_colon_header, check_header_name, colon, elem, split, truthy,
};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "response-transformer";
pub const PRIORITY: i32 = 800;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases {
        header_filter: true,
        body_filter: true,
        ..Phases::NONE
    },
    schema,
    compile,
};

/// A header entry: a valid name and, when present, a value that can be sent.
fn check_header(entry: &str) -> Result<(), String> {
    check_header_name(entry)?;
    let value = split(entry).1;
    HeaderValue::from_str(value)
        .map(|_| ())
        .map_err(|_| format!("'{value}' is not a valid header value"))
}

fn record(name: &'static str) -> Field {
    let headers = match name {
        "remove" => elem().custom(check_header),
        "rename" => elem().check(colon()).custom(check_colon_header),
        _ => elem().check(colon()).custom(check_header),
    };
    let json = match name {
        "remove" => elem(),
        _ => elem().check(colon()),
    };
    let mut fields = vec![array("json", json)];
    if !matches!(name, "remove" | "rename") {
        fields.push(
            array(
                "json_types",
                elem().one_of(&["boolean", "number", "string"]),
            )
            .describe("List of JSON type names. Specify the types of the JSON values returned when appending\nJSON properties. Each string element can be one of: boolean, number, or string."),
        );
    }
    fields.push(array("headers", headers));
    Field::new(name, Type::Record(fields, Vec::new()))
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: ["remove", "rename", "replace", "add", "append"]
            .into_iter()
            .map(record)
            .collect(),
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Lists {
    json: Vec<String>,
    json_types: Vec<String>,
    headers: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    remove: Lists,
    rename: Lists,
    replace: Lists,
    add: Lists,
    append: Lists,
}

/// A header entry; `value` is `None` for `name:` (Kong's nil).
struct HeaderOp {
    name: HeaderName,
    value: Option<HeaderValue>,
}

/// A JSON entry with its value already as Kong's `json_value` makes it; `None` when
/// that is nil (a number that does not parse).
struct JsonOp {
    name: String,
    value: Option<Value>,
}

#[derive(Default)]
struct Ops<T> {
    remove: Vec<T>,
    rename: Vec<T>,
    replace: Vec<T>,
    add: Vec<T>,
    append: Vec<T>,
}

/// response-transformer compiled.
pub struct ResponseTransformer {
    headers: Ops<HeaderOp>,
    json: Ops<JsonOp>,
    /// Kong's `is_body_transform_set`.
    transforms_body: bool,
}

fn header_ops(list: &[String]) -> Result<Vec<HeaderOp>, String> {
    list.iter()
        .map(|e| {
            let (name, value) = split(e);
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("'{name}' is not a valid header"))?;
            let value = match value {
                "" => None,
                v => Some(
                    HeaderValue::from_str(v)
                        .map_err(|_| format!("'{v}' is not a valid header value"))?,
                ),
            };
            Ok(HeaderOp { name, value })
        })
        .collect()
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Kong's `json_value`: the value as cjson encodes it, outer quotes and the escapes of
/// `"` and `/` undone (other escapes stay), then cast to the entry's `json_types`.
fn json_value(value: &str, missing: bool, kind: Option<&str>) -> Option<Value> {
    let v = if missing {
        // cjson.encode(nil)
        "null".to_owned()
    } else {
        let enc = Value::String(value.to_owned()).to_string();
        enc[1..enc.len() - 1].replace("\\\"", "\"")
    };
    match kind {
        Some("number") => crate::lua::tonumber(&v).map(number),
        Some("boolean") => Some(Value::Bool(v == "true")),
        _ => Some(Value::String(v)),
    }
}

fn json_ops(l: &Lists, typed: bool) -> Vec<JsonOp> {
    l.json
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (name, value) = split(e);
            let kind = if typed {
                l.json_types.get(i).map(String::as_str)
            } else {
                None
            };
            JsonOp {
                name: name.to_owned(),
                value: json_value(value, value.is_empty(), kind),
            }
        })
        .collect()
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    Ok(Box::new(build(config)?))
}

fn build(config: &Value) -> Result<ResponseTransformer, String> {
    let c: Config = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let headers = Ops {
        remove: header_ops(&c.remove.headers)?,
        rename: header_ops(&c.rename.headers)?,
        replace: header_ops(&c.replace.headers)?,
        add: header_ops(&c.add.headers)?,
        append: header_ops(&c.append.headers)?,
    };
    // rename's value is the new name.
    let rename_json = c
        .rename
        .json
        .iter()
        .map(|e| {
            let (name, new) = split(e);
            JsonOp {
                name: name.to_owned(),
                value: (!new.is_empty()).then(|| Value::String(new.to_owned())),
            }
        })
        .collect();
    let json = Ops {
        remove: c
            .remove
            .json
            .iter()
            .map(|n| JsonOp {
                name: split(n).0.to_owned(),
                value: None,
            })
            .collect(),
        rename: rename_json,
        replace: json_ops(&c.replace, true),
        add: json_ops(&c.add, true),
        append: json_ops(&c.append, true),
    };
    let transforms_body = [&c.remove, &c.rename, &c.replace, &c.add, &c.append]
        .iter()
        .any(|l| !l.json.is_empty());
    Ok(ResponseTransformer {
        headers,
        json,
        transforms_body,
    })
}

impl ResponseTransformer {
    /// Kong's `transform_headers` over `h`; `sent` is the head as the upstream sent it.
    fn transform_headers(&self, h: &mut HeaderMap, sent: &HeaderMap) -> Result<(), PluginError> {
        let ops = &self.headers;
        for op in &ops.remove {
            h.remove(&op.name);
        }
        for op in &ops.rename {
            let Some(new) = op.value.as_ref().and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if !sent.contains_key(&op.name) {
                continue;
            }
            let new = HeaderName::from_bytes(new.to_ascii_lowercase().as_bytes())
                .map_err(|_| PluginError::new(format!("'{new}' is not a valid header")))?;
            // set_header(new, value), then clear_header(old): a rename onto the same
            // name clears it, as in Kong.
            h.remove(&new);
            for v in sent.get_all(&op.name) {
                h.append(new.clone(), v.clone());
            }
            h.remove(&op.name);
        }
        for op in &ops.replace {
            if let (true, Some(v)) = (sent.contains_key(&op.name), &op.value) {
                h.insert(op.name.clone(), v.clone());
            }
        }
        for op in &ops.add {
            if let (false, Some(v)) = (sent.contains_key(&op.name), &op.value) {
                h.insert(op.name.clone(), v.clone());
            }
        }
        for op in &ops.append {
            let Some(v) = &op.value else {
                // kong.response.add_header(name, nil)
                return Err(PluginError::new(format!(
                    "invalid header value for \"{}\": got nil, expected string, number or boolean",
                    op.name
                )));
            };
            h.append(op.name.clone(), v.clone());
        }
        Ok(())
    }

    /// Kong's `transform_json_body`; `None` leaves the body as it was.
    fn transform_json(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut o: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(Value::Object(o)) => o,
            _ => return None,
        };
        let ops = &self.json;
        for op in &ops.remove {
            o.remove(&op.name);
        }
        for op in &ops.rename {
            if let (Some(Value::String(new)), Some(v)) = (&op.value, o.get(&op.name)) {
                let v = v.clone();
                o.insert(new.clone(), v);
                o.remove(&op.name);
            }
        }
        for op in &ops.replace {
            if let (true, Some(v)) = (truthy(o.get(&op.name)), &op.value) {
                o.insert(op.name.clone(), v.clone());
            }
        }
        for op in &ops.add {
            if let (false, Some(v)) = (truthy(o.get(&op.name)), &op.value) {
                o.insert(op.name.clone(), v.clone());
            }
        }
        for op in &ops.append {
            if let Some(v) = &op.value {
                let old = o.remove(&op.name);
                o.insert(op.name.clone(), append_json(old, v.clone()));
            }
        }
        serde_json::to_vec(&o).ok()
    }

    fn is_json(h: &HeaderMap) -> bool {
        h.get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(crate::mime::is_json)
    }
}

impl Plugin for ResponseTransformer {
    fn header_filter(&self, cx: &mut ResponseCx<'_>) -> Result<(), PluginError> {
        let h = &mut cx.resp.headers;
        let o = &self.headers;
        if o.remove.is_empty()
            && o.rename.is_empty()
            && o.replace.is_empty()
            && o.add.is_empty()
            && o.append.is_empty()
        {
            return Ok(());
        }
        // The checks read `kong.response.get_headers()` as taken before the first edit.
        let sent = h.clone();
        self.transform_headers(h, &sent)
    }

    fn body_mode(&self, cx: &ResponseCx<'_>) -> BodyMode {
        if self.transforms_body && Self::is_json(&cx.resp.headers) {
            BodyMode::Change
        } else {
            BodyMode::Skip
        }
    }

    fn body_filter(&self, cx: &mut BodyCx<'_>) -> Result<(), PluginError> {
        if let Some(body) = cx.raw_body() {
            if let Some(out) = self.transform_json(&body) {
                cx.set_raw_body(out.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
