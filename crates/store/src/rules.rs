//! What every SQL backend derives from the entity schemas, independent of the SQL dialect:
//! the constraint columns and their values, the ordered constraint checks with Kong's
//! error for each, the delete cascade plan and the `ttl` bookkeeping. The SQLite and
//! PostgreSQL stores only run the queries these describe, so both give the same errors
//! in the same order.

use serde_json::{json, Value};
use tollgate_model::counters::{CounterIncrement, CounterTable};
use tollgate_model::{entities, EntitySchema, Error, Result, Row};

pub(crate) fn unique_col(field: &str) -> String {
    format!("\"u_{field}\"")
}

pub(crate) fn fk_col(field: &str) -> String {
    format!("\"fk_{field}\"")
}

/// The text a unique column holds for a value (`None` for null: many rows may lack it).
pub(crate) fn unique_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Kong's cache key: the key fields' values (foreign keys by id) joined with `:`.
pub(crate) fn cache_key_of(schema: &EntitySchema, row: &Row) -> Option<String> {
    let ck = schema.cache_key.as_ref()?;
    let parts: Vec<String> = ck
        .fields
        .iter()
        .map(|f| match row.get(*f) {
            Some(Value::Object(m)) => m
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        })
        .collect();
    Some(parts.join(":"))
}

/// The id a foreign-key field of `row` points to.
pub(crate) fn fk_id<'a>(row: &'a Row, field: &str) -> Option<&'a str> {
    row.get(field)
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
}

/// The extra columns of a table, in a fixed order.
pub(crate) fn extra_columns(schema: &EntitySchema) -> Vec<String> {
    let mut cols = Vec::new();
    if schema.cache_key.is_some() {
        cols.push("cache_key".to_string());
    }
    for f in schema.unique_fields() {
        cols.push(unique_col(f.name));
    }
    for f in schema.foreign_fields() {
        cols.push(fk_col(f.name));
    }
    cols
}

/// What differs between the SQL stores' DDL and statements; the table shape is one.
pub(crate) struct Dialect {
    /// The prefix of a numbered placeholder (`?` for SQLite, `$` for PostgreSQL).
    pub placeholder: &'static str,
    /// Appended to the id and foreign-key columns so they sort bytewise (PostgreSQL's
    /// locale would otherwise change the order of pages).
    pub key_collation: &'static str,
    pub integer: &'static str,
}

/// `INSERT … ON CONFLICT (id) DO UPDATE` for a schema, and its extra columns in order.
pub(crate) fn upsert_sql(schema: &EntitySchema, d: &Dialect) -> (String, Vec<String>) {
    let extra = extra_columns(schema);
    let mut cols = vec!["id".to_string(), "data".to_string(), "ttl".to_string()];
    cols.extend(extra.iter().cloned());
    let marks: Vec<String> = (1..=cols.len())
        .map(|i| format!("{}{i}", d.placeholder))
        .collect();
    let sets: Vec<String> = cols[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    (
        format!(
            "INSERT INTO \"{}\" ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}",
            schema.name,
            cols.join(", "),
            marks.join(", "),
            sets.join(", ")
        ),
        extra,
    )
}

/// The live row whose unique `field` equals the first parameter (the second: now, for
/// the ttl), or the error naming a field that is not unique.
pub(crate) fn select_by_field_sql(
    schema: &EntitySchema,
    field: &str,
    d: &Dialect,
) -> Result<String> {
    let Some(f) = schema.field(field).filter(|f| f.unique) else {
        return Err(Error::database(format!(
            "'{field}' is not a unique field of {}",
            schema.name
        )));
    };
    let p = d.placeholder;
    Ok(format!(
        "SELECT data, ttl FROM \"{}\" WHERE {} = {p}1 AND (ttl IS NULL OR ttl > {p}2)",
        schema.name,
        unique_col(f.name)
    ))
}

/// One entity's table: id, the row as JSON text, its expiry, and the extra columns the
/// uniqueness and foreign-key checks use, with an index per foreign key.
pub(crate) fn create_table(schema: &EntitySchema, d: &Dialect) -> String {
    let mut cols = vec![
        format!("id TEXT{} PRIMARY KEY NOT NULL", d.key_collation),
        "data TEXT NOT NULL".to_string(),
        format!("ttl {}", d.integer),
    ];
    if schema.cache_key.is_some() {
        cols.push("cache_key TEXT UNIQUE".into());
    }
    for f in schema.unique_fields() {
        cols.push(format!("{} TEXT UNIQUE", unique_col(f.name)));
    }
    for f in schema.foreign_fields() {
        cols.push(format!("{} TEXT{}", fk_col(f.name), d.key_collation));
    }
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS \"{}\" ({});\n",
        schema.name,
        cols.join(", ")
    );
    for f in schema.foreign_fields() {
        sql.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS \"{0}_fk_{1}\" ON \"{0}\" ({2});\n",
            schema.name,
            f.name,
            fk_col(f.name)
        ));
    }
    sql
}

/// The Admin API tokens' table (migration `002_admin_tokens`): outside the entity tables,
/// so nothing that lists, exports or replicates entities ever reads it.
pub(crate) fn admin_tokens_table(d: &Dialect) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS admin_tokens (name TEXT{c} PRIMARY KEY NOT NULL, hash TEXT NOT NULL UNIQUE, read_only {i} NOT NULL, created_at {i} NOT NULL);",
        c = d.key_collation,
        i = d.integer
    )
}

/// Kong's unique-violation error for a token name that is taken.
pub(crate) fn admin_token_taken(name: &str) -> Error {
    Error::unique_violation(&[("name", json!(name))])
}

/// The value of one extra column for `row` (`None`: SQL NULL).
pub(crate) fn column_text(schema: &EntitySchema, col: &str, row: &Row) -> Option<String> {
    if col == "cache_key" {
        return cache_key_of(schema, row);
    }
    let name = col.trim_matches('"');
    if let Some(f) = name.strip_prefix("u_") {
        return unique_text(row.get(f));
    }
    if let Some(f) = name.strip_prefix("fk_") {
        return fk_id(row, f).map(str::to_string);
    }
    None
}

/// One constraint to verify before a write: look for `value` in `column` of `table`.
pub(crate) struct Check {
    pub table: &'static str,
    /// The quoted column (`id` for foreign keys: the parent's primary key).
    pub column: String,
    pub value: String,
    /// Unique checks ignore the written row itself (`… AND id <> exclude`).
    pub exclude: Option<String>,
    /// Foreign keys need a hit; unique fields and cache keys need none.
    pub must_exist: bool,
    pub error: Error,
}

impl Check {
    /// Kong's error when the lookup's outcome (`found`) violates the constraint.
    pub fn outcome(self, found: bool) -> Result<()> {
        if found == self.must_exist {
            Ok(())
        } else {
            Err(self.error)
        }
    }
}

/// The checks of `row`, in Kong's order: unique fields, the cache key, foreign keys.
pub(crate) fn checks(schema: &'static EntitySchema, row: &Row) -> Vec<Check> {
    let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut out = Vec::new();
    for f in schema.unique_fields() {
        let Some(text) = unique_text(row.get(f.name)) else {
            continue;
        };
        out.push(Check {
            table: schema.name,
            column: unique_col(f.name),
            value: text,
            exclude: Some(id.to_string()),
            must_exist: false,
            error: Error::unique_violation(&[(f.name, row[f.name].clone())]),
        });
    }
    if let (Some(ck), Some(key)) = (&schema.cache_key, cache_key_of(schema, row)) {
        let fields: Vec<(&str, Value)> = ck
            .fields
            .iter()
            .map(|f| (*f, row.get(*f).cloned().unwrap_or(Value::Null)))
            .collect();
        out.push(Check {
            table: schema.name,
            column: "cache_key".into(),
            value: key,
            exclude: Some(id.to_string()),
            must_exist: false,
            error: Error::unique_violation(&fields),
        });
    }
    for f in schema.foreign_fields() {
        let (Some(parent), Some(fk)) = (f.foreign_entity(), fk_id(row, f.name)) else {
            continue;
        };
        let parent = entities::by_name(parent).map_or("", |s| s.name);
        out.push(Check {
            table: parent,
            column: "id".into(),
            value: fk.to_string(),
            exclude: None,
            must_exist: true,
            error: Error::foreign_key_violation(f.name, json!({ "id": fk }), parent),
        });
    }
    out
}

/// A child relation of an entity: rows of `child` pointing to it through `column`.
pub(crate) struct ChildRef {
    pub child: &'static EntitySchema,
    pub column: String,
    /// Kong cascades the delete; otherwise a remaining child refuses it.
    pub cascade: bool,
}

/// Every relation pointing to `schema`, in schema order.
pub(crate) fn children_of(schema: &EntitySchema) -> Vec<ChildRef> {
    let mut out = Vec::new();
    for child in entities::ALL.iter() {
        for f in child.foreign_fields() {
            if f.foreign_entity() == Some(schema.name) {
                out.push(ChildRef {
                    child,
                    column: fk_col(f.name),
                    cascade: f.on_delete_cascade,
                });
            }
        }
    }
    out
}

/// The refusal when a child still references the row being deleted.
pub(crate) fn restricted(parent: &EntitySchema, child: &EntitySchema) -> Error {
    Error::foreign_key_restricted(parent.name, child.name)
}

/// Services list their CA certificates by id in an array; Kong refuses to delete a CA
/// certificate that is still in use.
pub(crate) fn ca_certificate_in_use() -> Error {
    Error::foreign_key_restricted("ca_certificates", "services")
}

pub(crate) fn now() -> i64 {
    tollgate_model::schema::now_secs() as i64
}

pub(crate) fn parse_row(text: &str) -> Result<Row> {
    serde_json::from_str(text).map_err(|e| Error::database(format!("corrupt row: {e}")))
}

/// Applies `ttl` bookkeeping: a stored expiry becomes the remaining seconds in `ttl`.
pub(crate) fn with_ttl(schema: &EntitySchema, mut row: Row, expires: Option<i64>) -> Row {
    if schema.ttl {
        if let Some(exp) = expires {
            row.insert("ttl".into(), json!((exp - now()).max(0)));
        }
    }
    row
}

/// Takes `ttl` (seconds) off the row and turns it into an absolute expiry.
pub(crate) fn take_ttl(schema: &EntitySchema, row: &mut Row) -> Option<i64> {
    if !schema.ttl {
        return None;
    }
    match row.remove("ttl") {
        Some(Value::Number(n)) => n.as_i64().filter(|t| *t > 0).map(|t| now() + t),
        _ => None,
    }
}

/// The id of a processed row.
pub(crate) fn row_id(row: &Row) -> String {
    row.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A full replacement (PUT) keeps the `created_at` of the row it replaces, if that row
/// is live (an expired one is gone).
pub(crate) fn keep_created_at(row: &mut Row, old: Option<&crate::RawRow>) -> Result<()> {
    if let Some(o) = old.filter(|o| o.expires_at.is_none_or(|t| t > now())) {
        if let Some(c) = parse_row(&o.text)?.get("created_at") {
            row.insert("created_at".into(), c.clone());
        }
    }
    Ok(())
}

/// The entity schemas in the order a whole configuration is written (parents first).
pub(crate) fn import_order() -> Vec<&'static EntitySchema> {
    let mut order: Vec<&'static EntitySchema> = entities::ALL.iter().collect();
    order.sort_by_key(|s| s.import_order);
    order
}

/// Looks the named entities up.
pub(crate) fn schemas(names: &[&str]) -> Result<Vec<&'static EntitySchema>> {
    names
        .iter()
        .map(|n| entities::by_name(n).ok_or_else(|| Error::database(format!("unknown entity {n}"))))
        .collect()
}

/// The counter tables of the `cluster` rate-limiting policy: Kong's columns and primary
/// key, with the window start and expiry as integer seconds (the same in both SQL stores).
pub(crate) fn create_counter_tables(d: &Dialect) -> String {
    let mut sql = String::new();
    for t in CounterTable::ALL {
        let name = t.name();
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {name} (identifier TEXT NOT NULL, period TEXT NOT NULL, period_date {int} NOT NULL, service_id TEXT NOT NULL, route_id TEXT NOT NULL, value {int} NOT NULL, ttl {int}, PRIMARY KEY (identifier, period, period_date, service_id, route_id));\n\
             CREATE INDEX IF NOT EXISTS {name}_ttl ON {name} (ttl);\n",
            int = d.integer
        ));
    }
    sql
}

/// Kong's atomic increment (`INSERT … ON CONFLICT DO UPDATE SET value = value + excluded`),
/// answering the counter's total after it.
pub(crate) fn increment_counter_sql(t: CounterTable, d: &Dialect) -> String {
    let p = d.placeholder;
    let name = t.name();
    format!(
        "INSERT INTO {name} (identifier, period, period_date, service_id, route_id, value, ttl) \
         VALUES ({p}1, {p}2, {p}3, {p}4, {p}5, {p}6, {p}7) \
         ON CONFLICT (identifier, period, period_date, service_id, route_id) \
         DO UPDATE SET value = {name}.value + excluded.value RETURNING value"
    )
}

/// Deletes the counters of windows that ended (Kong's `batch_delete_expired_rows`).
pub(crate) fn purge_counters_sql(t: CounterTable, d: &Dialect) -> String {
    format!("DELETE FROM {} WHERE ttl < {}1", t.name(), d.placeholder)
}

/// The order increments are applied in, so two nodes' transactions over the same rows
/// never wait on each other in a cycle (PostgreSQL would abort one as a deadlock).
pub(crate) fn increment_order(rows: &[CounterIncrement]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|a, b| rows[*a].cmp(&rows[*b]));
    order
}
