//! Secret references: Kong's `{vault://env/NAME}` and `{vault://env/NAME/key}` in the
//! fields a schema marks `referenceable` (kong/pdk/vault.lua, kong/vaults/env).
//!
//! Rows keep the reference: the Admin API, exports and the prefix show it. The proxy
//! resolves it when it compiles a snapshot and holds the value in memory only. Only the
//! bundled `env` vault exists here (Tollgate has no `vaults` entity), so a reference to
//! any other vault is refused when it is written rather than failing later.

use crate::schema::{Field, Type};
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The only vault Tollgate resolves.
pub const ENV_VAULT: &str = "env";

/// Kong's `is_reference`: the shape only, `{vault://` … `}`.
pub fn is_reference(s: &str) -> bool {
    s.len() >= 10 && s.starts_with("{vault://") && s.ends_with('}')
}

/// A parsed reference (Kong's `parse_reference`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The vault: `env`.
    pub name: String,
    /// What the vault looks up (for `env`: the variable, before the prefix and case rules).
    pub resource: String,
    /// The last path segment when there are several: a key of the JSON object the
    /// resource holds.
    pub key: Option<String>,
    /// `?prefix=…`, overriding `vault_env_prefix`.
    pub prefix: Option<String>,
    /// `#2` reads the `_PREVIOUS` variable (the env vault's only versioning).
    pub version: Option<u32>,
}

impl Reference {
    /// Parses `{vault://name/resource[/key][?query][#version]}`.
    pub fn parse(reference: &str) -> Result<Reference, String> {
        if !is_reference(reference) {
            return Err(format!("not a reference [{reference}]"));
        }
        let url = &reference[9..reference.len() - 1];
        let (url, version) = match url.split_once('#') {
            Some((u, v)) => {
                let version = (!v.is_empty()
                    && v.len() <= 9
                    && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u32>().ok())
                .flatten()
                .ok_or_else(|| format!("reference url has invalid version [{reference}]"))?;
                (u, Some(version))
            }
            None => (url, None),
        };
        let (url, query) = match url.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (url, None),
        };
        let (name, path) = url.split_once('/').unwrap_or((url, ""));
        if name.is_empty() {
            return Err(format!("reference url is missing host [{reference}]"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "reference url has an invalid vault name [{reference}]"
            ));
        }
        // Kong's `parse_path`: empty segments are dropped; a trailing slash makes the whole
        // path the resource (no key).
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let decode = |s: &str| {
            unescape(s).ok_or_else(|| format!("reference url has invalid path [{reference}]"))
        };
        let (resource, key) = match parts.len() {
            0 => return Err(format!("reference url has empty path [{reference}]")),
            1 => (decode(parts[0])?, None),
            n if path.ends_with('/') => (decode(&parts[..n].join("/"))?, None),
            n => (
                decode(&parts[..n - 1].join("/"))?,
                Some(decode(parts[n - 1])?),
            ),
        };
        let mut prefix = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if decode_arg(k).as_deref() == Some("prefix") {
                let v = decode_arg(v)
                    .ok_or_else(|| format!("reference url has invalid query [{reference}]"))?;
                if !valid_prefix(&v) {
                    return Err(format!("reference url has an invalid prefix [{reference}]"));
                }
                prefix = Some(v);
            }
        }
        Ok(Reference {
            name: name.to_owned(),
            resource,
            key,
            prefix,
            version,
        })
    }

    /// The environment variable the env vault reads: prefix and resource upper-cased,
    /// `-` as `_`, `_PREVIOUS` for version 2.
    pub fn env_var(&self, default_prefix: Option<&str>) -> String {
        let prefix = self.prefix.as_deref().or(default_prefix).unwrap_or("");
        let mut var = format!("{prefix}{}", self.resource)
            .replace('-', "_")
            .to_ascii_uppercase();
        if self.version == Some(2) {
            var.push_str("_PREVIOUS");
        }
        var
    }
}

/// The env vault's `prefix` (`^[%a_-][%a%d_-]*$`).
fn valid_prefix(p: &str) -> bool {
    let mut b = p.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b'-')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Percent-decoding (`ngx.unescape_uri`); `None` when the bytes are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h)? * 16 + hex(l)?) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A query argument (`ngx.decode_args`: `+` is a space).
fn decode_arg(s: &str) -> Option<String> {
    unescape(&s.replace('+', " "))
}

/// What the Admin API accepts in a referenceable field: a reference that parses and names
/// the env vault. Kong checks only the shape and fails at resolution; refusing here is the
/// clear error for a vault this build cannot resolve.
pub fn validate(reference: &str) -> Result<(), String> {
    parse_env(reference).map(|_| ())
}

fn parse_env(reference: &str) -> Result<Reference, String> {
    let r = Reference::parse(reference)?;
    if r.name != ENV_VAULT {
        return Err(format!(
            "vault '{}' is not supported: only env vault references ({{vault://env/NAME}}) resolve [{reference}]",
            r.name
        ));
    }
    Ok(r)
}

/// Resolves a reference with `lookup` as the environment. Errors name the reference and
/// the variable, never a value.
pub fn resolve_with(
    reference: &str,
    lookup: impl Fn(&str) -> Option<String>,
    default_prefix: Option<&str>,
) -> Result<String, String> {
    let r = parse_env(reference)?;
    let var = r.env_var(default_prefix);
    let value = lookup(&var).ok_or_else(|| {
        format!("could not resolve {reference}: environment variable {var} is not set")
    })?;
    let Some(key) = &r.key else {
        return Ok(value);
    };
    // Kong's `extract_key_from_json_string`: a flat JSON object, a string at `key`.
    match serde_json::from_str::<Value>(&value) {
        Ok(Value::Object(mut m)) => match m.remove(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!(
                "could not resolve {reference}: subfield {key} of {var} is not a string"
            )),
            None => Err(format!(
                "could not resolve {reference}: subfield {key} not found in {var}"
            )),
        },
        _ => Err(format!(
            "could not resolve {reference}: {var} does not hold a JSON object"
        )),
    }
}

static ENV_PREFIX: OnceLock<Option<String>> = OnceLock::new();

/// kong.conf's `vault_env_prefix`, the default `prefix` of env references; set once at
/// start (later calls are ignored).
pub fn set_env_prefix(prefix: Option<String>) {
    let _ = ENV_PREFIX.set(prefix.filter(|p| !p.is_empty()));
}

/// Resolves a reference from this process's environment.
pub fn resolve(reference: &str) -> Result<String, String> {
    let prefix = ENV_PREFIX.get().and_then(Option::as_deref);
    resolve_with(reference, |v| std::env::var(v).ok(), prefix)
}

/// Whether a JSON value holds a reference anywhere (a cheap test before walking a schema).
pub fn contains_reference(v: &Value) -> bool {
    match v {
        Value::String(s) => is_reference(s),
        Value::Array(a) => a.iter().any(contains_reference),
        Value::Object(m) => m.values().any(contains_reference),
        _ => false,
    }
}

/// Resolves every reference in the referenceable fields of `record` (strings, and the
/// elements of arrays, sets and map values), as Kong's `process_auto_fields` does when it
/// reads an entity. A reference in a field that is not referenceable stays as written.
pub fn resolve_record(
    fields: &[Field],
    record: &mut Map<String, Value>,
    resolve: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(), String> {
    for f in fields {
        if let Some(v) = record.get_mut(f.name) {
            resolve_value(f, v, resolve)?;
        }
    }
    Ok(())
}

fn resolve_value(
    f: &Field,
    v: &mut Value,
    resolve: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(), String> {
    match (&f.ty, v) {
        (Type::String, Value::String(s)) if f.referenceable && is_reference(s) => {
            *s = resolve(s)?;
        }
        (Type::Array(el) | Type::Set(el), Value::Array(a)) => {
            for x in a {
                resolve_value(el, x, resolve)?;
            }
        }
        (Type::Map { values, .. }, Value::Object(m)) => {
            for x in m.values_mut() {
                resolve_value(values, x, resolve)?;
            }
        }
        (Type::Record(fields, _), Value::Object(m)) => resolve_record(fields, m, resolve)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
