//! request-transformer (`kong/plugins/request-transformer/{schema,access}.lua`): edits the
//! request before it is proxied — method, headers, body (JSON, form-urlencoded,
//! multipart) and query string, in Kong's order, with `$(…)` value templates.
//!
//! Refused by the schema (with the reason), because the proxy does not let a plugin
//! choose them yet: `replace.uri` (the upstream path) and a replaced or appended `host`
//! header (the upstream `Host`).

use crate::api::{header_value, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use crate::template::{decode_args, encode_args, Arg, Env, Template};
use crate::transformer::{
    append_json, array, check_colon_header, check_header_name, colon, elem, split, truthy,
};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_model::schema::{Check, EntityCheck, Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "request-transformer";
pub const PRIORITY: i32 = 801;

pub const ERR_URI: &str = "replace.uri is not supported by this gateway yet (the proxy does not let a plugin set the upstream path)";
pub const ERR_HOST: &str = "setting the 'host' header is not supported by this gateway yet (the upstream Host comes from the service or preserve_host)";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: false,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

/// Kong's `check_for_value` (body and query string entries): a value is required and
/// must be a template that compiles.
fn check_for_value(entry: &str) -> Result<(), String> {
    let (name, value) = split(entry);
    if name.is_empty() || value.is_empty() {
        return Err(format!("key '{name}' has no value"));
    }
    Template::parse(value).map(|_| ())
}

/// Kong's `validate_headers` (the name only) plus our template check of the value.
fn check_header(entry: &str) -> Result<(), String> {
    check_header_name(entry)?;
    Template::parse(split(entry).1).map(|_| ())
}

/// A header entry of `replace` / `append`, which could set the upstream Host.
fn check_settable_header(entry: &str) -> Result<(), String> {
    check_header(entry)?;
    if split(entry).0.eq_ignore_ascii_case("host") {
        return Err(ERR_HOST.into());
    }
    Ok(())
}

/// `remove`: plain names (headers as header names).
fn strings_record(name: &'static str) -> Field {
    Field::new(
        name,
        Type::Record(
            vec![
                array("body", elem()),
                array("headers", elem().custom(check_header)),
                array("querystring", elem()),
            ],
            Vec::new(),
        ),
    )
    .required()
}

/// `add` / `append` / `replace` (with `uri`) / `rename` (headers on both sides).
fn colon_record(name: &'static str) -> Field {
    let headers = match name {
        "rename" => elem().check(colon()).custom(check_colon_header),
        "add" => elem().check(colon()).custom(check_header),
        _ => elem().check(colon()).custom(check_settable_header),
    };
    let mut fields = vec![
        array("body", elem().custom(check_for_value)),
        array("headers", headers),
        array("querystring", elem().custom(check_for_value)),
    ];
    if name == "replace" {
        fields.push(Field::new("uri", Type::String));
    }
    Field::new(name, Type::Record(fields, Vec::new())).required()
}

/// `replace.uri` is refused until the proxy lets a plugin set the upstream path.
fn refuse_uri(rec: &Map<String, Value>) -> Result<(), (Option<&'static str>, String)> {
    let uri = rec
        .get("config")
        .and_then(|c| c.get("replace"))
        .and_then(|r| r.get("uri"));
    match uri {
        Some(Value::String(_)) => Err((Some("config"), ERR_URI.into())),
        _ => Ok(()),
    }
}

fn schema() -> PluginDef {
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            Field::new("http_method", Type::String)
                .check(Check::Match(regex::Regex::new("^[A-Z]+$").expect("static regex")))
                .describe("A string representing an HTTP method, such as GET, POST, PUT, or DELETE. The string must contain only uppercase letters."),
            strings_record("remove"),
            colon_record("rename"),
            colon_record("replace"),
            colon_record("add"),
            colon_record("append"),
        ],
        config_checks: Vec::new(),
        checks: vec![EntityCheck::Custom(refuse_uri)],
        no_consumer: false,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Lists {
    body: Vec<String>,
    headers: Vec<String>,
    querystring: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Config {
    http_method: Option<String>,
    remove: Lists,
    rename: Lists,
    replace: Lists,
    add: Lists,
    append: Lists,
}

/// One `name:value` entry; `None` for an entry without a value (Kong's `iter` yields
/// a nil value for it).
struct Entry {
    name: String,
    value: Option<Template>,
}

#[derive(Default)]
struct Ops {
    remove: Vec<Entry>,
    rename: Vec<Entry>,
    replace: Vec<Entry>,
    add: Vec<Entry>,
    append: Vec<Entry>,
}

impl Ops {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

/// request-transformer compiled.
pub struct RequestTransformer {
    method: Option<http::Method>,
    headers: Ops,
    body: Ops,
    query: Ops,
    /// Whether a template reads `headers` (the request's are then kept for rendering).
    reads_headers: bool,
}

fn entries(list: &[String]) -> Result<Vec<Entry>, String> {
    list.iter()
        .map(|e| {
            let (name, value) = split(e);
            Ok(Entry {
                name: name.to_owned(),
                value: match value {
                    "" => None,
                    v => Some(Template::parse(v)?),
                },
            })
        })
        .collect()
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: Config = serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let ops = |pick: fn(&Lists) -> &Vec<String>| -> Result<Ops, String> {
        Ok(Ops {
            remove: entries(pick(&c.remove))?,
            rename: entries(pick(&c.rename))?,
            replace: entries(pick(&c.replace))?,
            add: entries(pick(&c.add))?,
            append: entries(pick(&c.append))?,
        })
    };
    let method = match &c.http_method {
        Some(m) => Some(http::Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?),
        None => None,
    };
    let all = [&c.remove, &c.rename, &c.replace, &c.add, &c.append];
    let reads_headers = all.iter().any(|l| {
        l.body
            .iter()
            .chain(&l.headers)
            .chain(&l.querystring)
            .any(|e| e.contains("headers"))
    });
    Ok(Box::new(RequestTransformer {
        method,
        headers: ops(|l| &l.headers)?,
        body: ops(|l| &l.body)?,
        query: ops(|l| &l.querystring)?,
        reads_headers,
    }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Multipart,
    Form,
}

/// Kong's `get_content_type`.
fn kind(ct: &str) -> Option<Kind> {
    let ct = ct.to_ascii_lowercase();
    if ct.contains("application/json") {
        Some(Kind::Json)
    } else if ct.contains("multipart/form-data") {
        Some(Kind::Multipart)
    } else if ct.contains("application/x-www-form-urlencoded") {
        Some(Kind::Form)
    } else {
        None
    }
}

fn render(e: &Entry, env: &Env<'_>) -> Option<String> {
    e.value.as_ref().map(|t| t.render(env))
}

type Args = Vec<(String, Vec<Arg>)>;

fn position(args: &Args, name: &str) -> Option<usize> {
    args.iter().position(|(k, _)| k == name)
}

/// Kong's `rename(tbl, old, new)` on an argument list.
fn rename_arg(args: &mut Args, old: &str, new: &str) -> bool {
    if old == new {
        return false;
    }
    let Some(i) = position(args, old) else {
        return false;
    };
    let (_, v) = args.remove(i);
    match position(args, new) {
        Some(j) => args[j].1 = v,
        None => args.push((new.to_owned(), v)),
    }
    true
}

/// Kong's remove / rename / replace / add / append over a decoded argument table
/// (query string, form body). `existing` gates what Kong only does to a non-empty body.
fn transform_args(ops: &Ops, args: &mut Args, env: &Env<'_>, existing: bool) -> bool {
    let mut changed = false;
    if existing {
        for e in &ops.remove {
            if let Some(i) = position(args, &e.name) {
                args.remove(i);
            }
            changed = true;
        }
        for e in &ops.rename {
            let new = render(e, env).unwrap_or_default();
            changed |= rename_arg(args, &e.name, &new);
        }
        for e in &ops.replace {
            if let Some(i) = position(args, &e.name) {
                match render(e, env) {
                    Some(v) => args[i].1 = vec![Arg::Str(v)],
                    None => {
                        args.remove(i);
                    }
                }
                changed = true;
            }
        }
    }
    for e in &ops.add {
        if position(args, &e.name).is_none() {
            if let Some(v) = render(e, env) {
                args.push((e.name.clone(), vec![Arg::Str(v)]));
            }
            changed = true;
        }
    }
    for e in &ops.append {
        let v = render(e, env);
        match position(args, &e.name) {
            Some(i) => {
                // Kong's `append_value`: a string becomes `{old, new}`, a table grows,
                // anything else (`true`) is replaced by `{new}`.
                let vals = &mut args[i].1;
                if matches!(vals.as_slice(), [Arg::True]) {
                    vals.clear();
                }
                vals.extend(v.map(Arg::Str));
            }
            None => args.push((e.name.clone(), v.map(Arg::Str).into_iter().collect())),
        }
        changed = true;
    }
    changed
}

impl RequestTransformer {
    fn transform_method(&self, cx: &mut RequestCx<'_>) {
        let Some(m) = &self.method else { return };
        cx.req.method = m.clone();
        if !matches!(m.as_str(), "GET" | "HEAD" | "TRACE") || content_kind(cx) != Some(Kind::Form) {
            return;
        }
        // The form body's arguments join the query string.
        let params = decode_args(&String::from_utf8_lossy(
            cx.body().map(|b| &b[..]).unwrap_or_default(),
        ));
        if params.is_empty() {
            return;
        }
        let mut q = decode_args(cx.query().unwrap_or_default());
        for (k, vals) in params {
            match position(&q, &k) {
                Some(i) => q[i].1.extend(vals),
                None => q.push((k, vals)),
            }
        }
        set_query(cx, &encode_args(&q));
    }

    fn transform_headers(&self, cx: &mut RequestCx<'_>, env: &Env<'_>) -> Result<(), PluginError> {
        let ops = &self.headers;
        let h = &mut cx.req.headers;
        let name = |n: &str| {
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| PluginError::new(format!("invalid header name '{n}'")))
        };
        let is_host = |n: &HeaderName| n == http::header::HOST;
        for e in &ops.remove {
            let n = name(&e.name)?;
            if !is_host(&n) {
                h.remove(&n);
            }
        }
        for e in &ops.rename {
            let (old, new) = (name(&e.name)?, name(&render(e, env).unwrap_or_default())?);
            // A change of case only is no change to HTTP/1.1 and HTTP/2 headers.
            if old == new || is_host(&old) {
                continue;
            }
            let vals: Vec<HeaderValue> = h.get_all(&old).iter().cloned().collect();
            if vals.is_empty() {
                continue;
            }
            h.remove(&old);
            h.remove(&new);
            for v in vals {
                h.append(new.clone(), v);
            }
        }
        // `header_value` neutralises the CR/LF a client-fed template
        // (`$(query_params.q)`) may render: never an injected header line.
        for e in &ops.replace {
            let n = name(&e.name)?;
            if let (true, Some(v)) = (h.contains_key(&n), render(e, env)) {
                h.insert(n, header_value(&v));
            }
        }
        for e in &ops.add {
            let n = name(&e.name)?;
            if let (false, false, Some(v)) = (h.contains_key(&n), is_host(&n), render(e, env)) {
                h.insert(n, header_value(&v));
            }
        }
        for e in &ops.append {
            let n = name(&e.name)?;
            if let Some(v) = render(e, env) {
                h.append(n, header_value(&v));
            }
        }
        Ok(())
    }

    fn transform_body(&self, cx: &mut RequestCx<'_>, env: &Env<'_>) {
        if self.body.is_empty() {
            return;
        }
        let ct = cx
            .req
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(kind) = kind(&ct) else { return };
        let body = cx.body().cloned().unwrap_or_default();
        let out = match kind {
            Kind::Json => self.json_body(&body, env),
            Kind::Form => {
                let mut args = decode_args(&String::from_utf8_lossy(&body));
                transform_args(&self.body, &mut args, env, !body.is_empty())
                    .then(|| Bytes::from(encode_args(&args)))
            }
            Kind::Multipart => self.multipart_body(&ct, &body, env),
        };
        if let Some(out) = out {
            cx.req
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
            cx.set_body(out);
        }
    }

    fn json_body(&self, body: &[u8], env: &Env<'_>) -> Option<Bytes> {
        let ops = &self.body;
        let existing = !body.is_empty();
        let mut params: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            // Kong indexes whatever cjson decoded; only an object has members.
            Ok(_) | Err(_) if existing => return None,
            _ => Map::new(),
        };
        let mut changed = false;
        if existing {
            for e in &ops.remove {
                params.remove(&e.name);
                changed = true;
            }
            for e in &ops.rename {
                let new = render(e, env).unwrap_or_default();
                if e.name != new && truthy(params.get(&e.name)) {
                    let v = params.remove(&e.name).unwrap_or_default();
                    params.insert(new, v);
                    changed = true;
                }
            }
            for e in &ops.replace {
                if truthy(params.get(&e.name)) {
                    match render(e, env) {
                        Some(v) => params.insert(e.name.clone(), Value::String(v)),
                        None => params.remove(&e.name),
                    };
                    changed = true;
                }
            }
        }
        for e in &ops.add {
            if !truthy(params.get(&e.name)) {
                if let Some(v) = render(e, env) {
                    params.insert(e.name.clone(), Value::String(v));
                }
                changed = true;
            }
        }
        for e in &ops.append {
            if let Some(v) = render(e, env) {
                let old = params.remove(&e.name);
                params.insert(e.name.clone(), append_json(old, Value::String(v)));
            }
            changed = true;
        }
        changed.then(|| Bytes::from(Value::Object(params).to_string()))
    }

    /// lua-multipart's edit: rename, remove, replace, add (no append), then its
    /// `tostring` with the same boundary, parts kept with their own headers.
    fn multipart_body(&self, ct: &str, body: &[u8], env: &Env<'_>) -> Option<Bytes> {
        let ops = &self.body;
        let boundary = crate::body::boundary(ct)?;
        // (name, header lines, value)
        let mut parts: Vec<(String, Vec<u8>, Vec<u8>)> =
            crate::body::multipart_parts(body, &boundary)
                .into_iter()
                .map(|p| (p.name, body[p.head].to_vec(), body[p.value].to_vec()))
                .collect();
        let simple = |name: &str, value: String| {
            let head = format!("Content-Disposition: form-data; name=\"{name}\"");
            (name.to_owned(), head.into_bytes(), value.into_bytes())
        };
        let has = |parts: &Vec<(String, Vec<u8>, Vec<u8>)>, n: &str| parts.iter().any(|p| p.0 == n);
        let mut changed = false;
        if !body.is_empty() {
            for e in &ops.rename {
                let new = render(e, env).unwrap_or_default();
                if let Some(i) = parts.iter().position(|p| p.0 == e.name) {
                    if e.name != new {
                        let value = String::from_utf8_lossy(&parts[i].2).into_owned();
                        parts.retain(|p| p.0 != new && p.0 != e.name);
                        parts.push(simple(&new, value));
                        changed = true;
                    }
                }
            }
            for e in &ops.remove {
                parts.retain(|p| p.0 != e.name);
                changed = true;
            }
            for e in &ops.replace {
                if has(&parts, &e.name) {
                    parts.retain(|p| p.0 != e.name);
                    parts.push(simple(&e.name, render(e, env).unwrap_or_default()));
                    changed = true;
                }
            }
        }
        for e in &ops.add {
            if !has(&parts, &e.name) {
                parts.push(simple(&e.name, render(e, env).unwrap_or_default()));
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 128);
        for (_, head, value) in &parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(head);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--").as_bytes());
        Some(Bytes::from(out))
    }

    fn transform_query(&self, cx: &mut RequestCx<'_>, env: &Env<'_>) {
        if self.query.is_empty() {
            return;
        }
        let mut args = decode_args(cx.query().unwrap_or_default());
        transform_args(&self.query, &mut args, env, true);
        set_query(cx, &encode_args(&args));
    }
}

fn content_kind(cx: &RequestCx<'_>) -> Option<Kind> {
    kind(cx.header("content-type").unwrap_or_default())
}

/// Replaces the upstream query string (`ngx.req.set_uri_args`).
fn set_query(cx: &mut RequestCx<'_>, q: &str) {
    let pq = if q.is_empty() {
        cx.req.uri.path().to_owned()
    } else {
        format!("{}?{q}", cx.req.uri.path())
    };
    let mut parts = std::mem::take(&mut cx.req.uri).into_parts();
    parts.path_and_query = pq.parse().ok();
    cx.req.uri = http::Uri::from_parts(parts).unwrap_or_default();
}

impl Plugin for RequestTransformer {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        // Templates read the request as the client sent it.
        let headers = if self.reads_headers {
            cx.req.headers.clone()
        } else {
            http::HeaderMap::new()
        };
        let query = decode_args(cx.query().unwrap_or_default());
        let captures = cx.uri_captures();
        let env = Env {
            headers: &headers,
            query: &query,
            captures,
        };
        self.transform_method(cx);
        self.transform_headers(cx, &env)?;
        self.transform_body(cx, &env);
        self.transform_query(cx, &env);
        Ok(Flow::Continue)
    }

    fn reads_body(&self) -> bool {
        !self.body.is_empty()
            || self
                .method
                .as_ref()
                .is_some_and(|m| matches!(m.as_str(), "GET" | "HEAD" | "TRACE"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access, run_access_body};
    use serde_json::json;

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    #[test]
    fn query_follows_kongs_table_rules() {
        let ix = fixture();
        let p = plugin(json!({
            "rename": {"querystring": ["a:b"]},
            "replace": {"querystring": ["missing:x"]},
            "add": {"querystring": ["flag:nope", "c:3"]},
            "append": {"querystring": ["flag:1", "d:x y"]},
        }));
        // `flag` is a bare argument (Lua `true`): add leaves it, append replaces it.
        let (_, _, uri) = run_access(&*p, &ix, parts("GET", "/p?a=1&b=0&flag", &[]), None);
        assert_eq!(uri, "/p?b=1&c=3&d=x%20y&flag=1");
        // Nothing configured for the query: untouched, order kept.
        let p = plugin(json!({"add": {"headers": ["x-a:1"]}}));
        let (_, h, uri) = run_access(&*p, &ix, parts("GET", "/p?z=1&a=2", &[]), None);
        assert_eq!(uri, "/p?z=1&a=2");
        assert_eq!(h["x-a"], "1");
    }

    #[test]
    fn json_body_uses_lua_truthiness() {
        let ix = fixture();
        let p = plugin(json!({
            "add": {"body": ["f:added", "n:added"]},
            "replace": {"body": ["f:replaced", "z:replaced"]},
            "append": {"body": ["num:x", "obj:x"]},
        }));
        let ct = [("content-type", "application/json")];
        let (_, h, b) = run_access_body(
            &*p,
            &ix,
            parts("POST", "/", &ct),
            br#"{"f":false,"z":0,"num":1,"obj":{"k":1}}"#,
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        // false is "absent" to `if not parameters[name]`, 0 is not.
        assert_eq!(v["f"], "added");
        assert_eq!(v["z"], "replaced");
        assert_eq!(v["n"], "added");
        assert_eq!(v["num"], json!(["x"]));
        assert_eq!(v["obj"], json!({"k": 1, "1": "x"}));
        assert_eq!(h["content-length"], b.len().to_string().as_str());
        // A body that is not JSON is left alone; an empty one starts from {}.
        let (_, _, b) = run_access_body(&*p, &ix, parts("POST", "/", &ct), b"{broken");
        assert_eq!(&b[..], b"{broken");
        let (_, _, b) = run_access_body(&*p, &ix, parts("POST", "/", &ct), b"");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["f"], "added");
    }

    #[test]
    fn headers_rename_replace_and_host() {
        let ix = fixture();
        let p = plugin(json!({
            "remove": {"headers": ["host"]},
            "rename": {"headers": ["x-a:x-b", "X-Case:x-case"]},
            "add": {"headers": ["host:evil", "x-empty:$(headers.none)"]},
        }));
        let (_, h, _) = run_access(
            &*p,
            &ix,
            parts(
                "GET",
                "/",
                &[
                    ("host", "h"),
                    ("x-a", "1"),
                    ("x-a", "2"),
                    ("x-b", "old"),
                    ("x-case", "c"),
                ],
            ),
            None,
        );
        assert_eq!(h["host"], "h", "host is not the plugin's");
        let b: Vec<_> = h.get_all("x-b").iter().collect();
        assert_eq!(b, ["1", "2"]);
        assert!(!h.contains_key("x-a"));
        assert_eq!(h["x-case"], "c");
        assert_eq!(h["x-empty"], "", "nil renders as ''");
    }
}
