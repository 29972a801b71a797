//! Kong's DAO error (`kong/db/errors.lua`): a numbered code, a name, a message and the
//! per-field details. The Admin API serialises it as `{code, name, message, fields}`; the
//! code → HTTP status table lives in one place ([`ErrorCode::http_status`]).

use serde_json::{Map, Value};
use std::fmt;

/// Kong's numeric error codes. The numbers are part of the API contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    InvalidPrimaryKey = 1,
    SchemaViolation = 2,
    PrimaryKeyViolation = 3,
    ForeignKeyViolation = 4,
    UniqueViolation = 5,
    NotFound = 6,
    InvalidOffset = 7,
    DatabaseError = 8,
    InvalidSize = 9,
    InvalidUnique = 10,
    InvalidOptions = 11,
    OperationUnsupported = 12,
    ForeignKeysUnresolved = 13,
    DeclarativeConfig = 14,
    TransformationError = 15,
    InvalidForeignKey = 16,
    ReferencedByOthers = 19,
    InvalidSearchQuery = 20,
}

impl ErrorCode {
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidPrimaryKey => "invalid primary key",
            ErrorCode::SchemaViolation => "schema violation",
            ErrorCode::PrimaryKeyViolation => "primary key violation",
            ErrorCode::ForeignKeyViolation => "foreign key violation",
            ErrorCode::UniqueViolation => "unique constraint violation",
            ErrorCode::NotFound => "not found",
            ErrorCode::InvalidOffset => "invalid offset",
            ErrorCode::DatabaseError => "database error",
            ErrorCode::InvalidSize => "invalid size",
            ErrorCode::InvalidUnique => "invalid unique",
            ErrorCode::InvalidOptions => "invalid options",
            ErrorCode::OperationUnsupported => "operation unsupported",
            ErrorCode::ForeignKeysUnresolved => "foreign keys unresolved",
            ErrorCode::DeclarativeConfig => "invalid declarative configuration",
            ErrorCode::TransformationError => "transformation error",
            ErrorCode::InvalidForeignKey => "invalid foreign key",
            ErrorCode::ReferencedByOthers => "referenced by others",
            ErrorCode::InvalidSearchQuery => "invalid search query",
        }
    }

    /// `ERRORS_HTTP_CODES` of `kong/api/endpoints.lua`.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::UniqueViolation => 409,
            ErrorCode::NotFound => 404,
            ErrorCode::DatabaseError | ErrorCode::TransformationError => 500,
            ErrorCode::OperationUnsupported => 405,
            _ => 400,
        }
    }
}

const UNREACHABLE: &str = "database unreachable";
const STORAGE_FULL: &str = "storage full";

/// A Kong-style error. Pointer-sized so `Result<T, Error>` stays small on hot paths.
#[derive(Clone, PartialEq)]
pub struct Error(Box<Inner>);

#[derive(Clone, Debug, PartialEq)]
struct Inner {
    code: ErrorCode,
    name: Option<String>,
    message: String,
    fields: Option<Value>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>, fields: Option<Value>) -> Self {
        Error(Box::new(Inner {
            code,
            name: None,
            message: message.into(),
            fields,
        }))
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
    pub fn message(&self) -> &str {
        &self.0.message
    }
    pub fn fields(&self) -> Option<&Value> {
        self.0.fields.as_ref()
    }
    pub fn name(&self) -> &str {
        self.0.name.as_deref().unwrap_or(self.0.code.name())
    }
    pub fn http_status(&self) -> u16 {
        self.0.code.http_status()
    }

    /// `{code, name, message, fields}` (or `options` for code 11), as Kong's Admin API prints it.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), Value::from(self.0.code as u8));
        m.insert("name".into(), Value::from(self.name()));
        m.insert("message".into(), Value::from(self.0.message.clone()));
        if let Some(f) = &self.0.fields {
            let key = if self.0.code == ErrorCode::InvalidOptions {
                "options"
            } else {
                "fields"
            };
            m.insert(key.into(), f.clone());
        }
        Value::Object(m)
    }

    /// Schema violation from a tree of field errors (Kong's `schema_violation`): the message
    /// lists `@entity` errors first, then fields sorted by name, nested ones as `a.b: msg`.
    pub fn schema_violation(fields: Map<String, Value>) -> Self {
        let mut parts = Vec::new();
        if let Some(Value::Array(ents)) = fields.get("@entity") {
            for e in ents {
                parts.push(value_text(e));
            }
        }
        let mut names: Vec<&String> = fields.keys().filter(|k| *k != "@entity").collect();
        names.sort();
        for name in names {
            flatten_messages(name, &fields[name.as_str()], &mut parts);
        }
        let message = if parts.len() == 1 {
            format!("schema violation ({})", parts[0])
        } else {
            format!("{} schema violations ({})", parts.len(), parts.join("; "))
        };
        Error::new(
            ErrorCode::SchemaViolation,
            message,
            Some(Value::Object(fields)),
        )
    }

    /// A single-field schema violation.
    pub fn field(field: &str, msg: impl Into<String>) -> Self {
        let mut m = Map::new();
        m.insert(field.to_string(), Value::String(msg.into()));
        Error::schema_violation(m)
    }

    pub fn unique_violation(field_values: &[(&str, Value)]) -> Self {
        let mut m = Map::new();
        for (k, v) in field_values {
            m.insert((*k).to_string(), v.clone());
        }
        let message = format!(
            "UNIQUE violation detected on '{}'",
            lua_pretty(&Value::Object(m.clone()))
        );
        Error::new(ErrorCode::UniqueViolation, message, Some(Value::Object(m)))
    }

    pub fn primary_key_violation(id: &str) -> Self {
        let pk = serde_json::json!({ "id": id });
        Error::new(
            ErrorCode::PrimaryKeyViolation,
            format!("primary key violation on key '{}'", lua_pretty(&pk)),
            Some(pk),
        )
    }

    /// The foreign entity a field points to does not exist.
    pub fn foreign_key_violation(field: &str, fk: Value, parent: &str) -> Self {
        let message = format!(
            "the foreign key '{}' does not reference an existing '{}' entity.",
            lua_pretty(&fk),
            parent
        );
        let mut m = Map::new();
        m.insert(field.to_string(), fk);
        Error::new(
            ErrorCode::ForeignKeyViolation,
            message,
            Some(Value::Object(m)),
        )
    }

    /// Foreign references given by a unique field (`"service": {"name": "x"}`) that match
    /// no entity: `unresolved` is (field, unique field, value, referenced entity).
    pub fn foreign_keys_unresolved(unresolved: &[(&str, &str, Value, &str)]) -> Self {
        let mut fields = Map::new();
        let mut parts = Vec::new();
        for (field, sub, value, parent) in unresolved {
            let mut pk = Map::new();
            pk.insert((*sub).to_string(), value.clone());
            let msg = format!(
                "the foreign key cannot be resolved with '{}' for an existing '{parent}' entity",
                lua_pretty(&Value::Object(pk))
            );
            parts.push(format!("{field}.{sub}: {msg}"));
            let entry = fields
                .entry((*field).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert((*sub).to_string(), Value::String(msg));
            }
        }
        let message = match parts.len() {
            1 => format!("foreign key unresolved ({})", parts[0]),
            n => format!("{n} foreign keys unresolved ({})", parts.join("; ")),
        };
        Error::new(
            ErrorCode::ForeignKeysUnresolved,
            message,
            Some(Value::Object(fields)),
        )
    }

    /// Deleting a parent that a child references with `on_delete = restrict`.
    pub fn foreign_key_restricted(parent: &str, child: &str) -> Self {
        Error::new(
            ErrorCode::ForeignKeyViolation,
            format!("an existing '{child}' entity references this '{parent}' entity"),
            Some(serde_json::json!({ "@referenced_by": child })),
        )
    }

    pub fn not_found(pk: Value) -> Self {
        Error::new(
            ErrorCode::NotFound,
            format!(
                "could not find the entity with primary key '{}'",
                lua_pretty(&pk)
            ),
            Some(pk),
        )
    }

    pub fn invalid_primary_key(pk: Value) -> Self {
        Error::new(
            ErrorCode::InvalidPrimaryKey,
            format!("invalid primary key: '{}'", lua_pretty(&pk)),
            Some(pk),
        )
    }

    pub fn invalid_offset(offset: &str, why: &str) -> Self {
        Error::new(
            ErrorCode::InvalidOffset,
            format!("'{offset}' is not a valid offset: {why}"),
            None,
        )
    }

    pub fn invalid_size(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidSize, msg, None)
    }

    pub fn invalid_options(msg: impl Into<String>, options: Option<Value>) -> Self {
        Error::new(ErrorCode::InvalidOptions, msg, options)
    }

    /// A storage failure. The message is logged by the caller; the Admin API prints only
    /// "An unexpected error occurred".
    pub fn database(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::DatabaseError, msg, None)
    }

    /// A database error because the database cannot be reached (down, partitioned, not
    /// answering in time), as opposed to one it reported.
    pub fn database_unreachable(msg: impl Into<String>) -> Self {
        let mut e = Error::new(ErrorCode::DatabaseError, msg, None);
        e.0.name = Some(UNREACHABLE.into());
        e
    }

    /// A write the database refused for lack of disk space (SQLite's SQLITE_FULL,
    /// PostgreSQL's disk_full): reads and proxying go on, writes wait for space.
    pub fn storage_full(msg: impl Into<String>) -> Self {
        let mut e = Error::new(ErrorCode::DatabaseError, msg, None);
        e.0.name = Some(STORAGE_FULL.into());
        e
    }

    pub fn is_storage_full(&self) -> bool {
        self.0.code == ErrorCode::DatabaseError && self.0.name.as_deref() == Some(STORAGE_FULL)
    }

    pub fn is_database_unreachable(&self) -> bool {
        self.0.code == ErrorCode::DatabaseError && self.0.name.as_deref() == Some(UNREACHABLE)
    }

    /// A write refused because this node has no database (`database = off`).
    pub fn operation_unsupported(msg: impl Into<String>) -> Self {
        Error::new(ErrorCode::OperationUnsupported, msg, None)
    }

    pub fn declarative(message: impl Into<String>, fields: Value) -> Self {
        Error::new(ErrorCode::DeclarativeConfig, message, Some(fields))
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => lua_pretty(other),
    }
}

fn flatten_messages(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                let child = &m[k.as_str()];
                if k == "@entity" {
                    if let Value::Array(a) = child {
                        for e in a {
                            out.push(format!("{prefix}: {}", value_text(e)));
                        }
                    }
                } else {
                    flatten_messages(&format!("{prefix}.{k}"), child, out);
                }
            }
        }
        Value::Array(a) => {
            // Array element errors are keyed by 1-based position, as Kong's Lua arrays are.
            for (i, e) in a.iter().enumerate() {
                if !e.is_null() {
                    flatten_messages(&format!("{prefix}.{}", i + 1), e, out);
                }
            }
        }
        other => out.push(format!("{prefix}: {}", value_text(other))),
    }
}

/// Penlight's `pretty.write(t, "")` as Kong uses it in messages: `{name="x"}`, `{id="…"}`.
pub fn lua_pretty(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{s}\""),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(lua_pretty).collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{}={}", k, lua_pretty(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?}: {})", self.0.code, self.0.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_violation_messages_match_kong() {
        let mut m = Map::new();
        m.insert("host".into(), json!("required field missing"));
        let e = Error::schema_violation(m);
        assert_eq!(
            e.message(),
            "schema violation (host: required field missing)"
        );
        assert_eq!(e.to_json()["code"], 2);
        assert_eq!(e.to_json()["name"], "schema violation");

        let mut m = Map::new();
        m.insert("port".into(), json!("expected an integer"));
        m.insert("host".into(), json!("required field missing"));
        m.insert(
            "@entity".into(),
            json!(["at least one of these fields must be non-empty: 'a', 'b'"]),
        );
        m.insert("config".into(), json!({"minute": "expected a number"}));
        let e = Error::schema_violation(m);
        assert_eq!(
            e.message(),
            "4 schema violations (at least one of these fields must be non-empty: 'a', 'b'; \
             config.minute: expected a number; host: required field missing; port: expected an integer)"
        );
    }

    #[test]
    fn unique_and_fk_messages() {
        let e = Error::unique_violation(&[("name", json!("x"))]);
        assert_eq!(e.message(), "UNIQUE violation detected on '{name=\"x\"}'");
        assert_eq!(e.http_status(), 409);
        let e = Error::foreign_key_violation("service", json!({"id": "abc"}), "services");
        assert_eq!(
            e.message(),
            "the foreign key '{id=\"abc\"}' does not reference an existing 'services' entity."
        );
        assert_eq!(e.to_json()["fields"]["service"]["id"], "abc");
    }
}
