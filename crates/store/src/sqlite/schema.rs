//! SQL derived from the entity schemas: one table per entity holding the JSON row plus
//! the columns its constraints need.

use serde_json::Value;
use tollgate_model::{entities, EntitySchema, Row};

pub(crate) fn unique_col(field: &str) -> String {
    format!("\"u_{field}\"")
}

pub(crate) fn fk_col(field: &str) -> String {
    format!("\"fk_{field}\"")
}

/// The text a unique column holds for a value (`None` for null: SQLite allows many).
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

/// The extra columns of a table, in a fixed order.
fn extra_columns(schema: &EntitySchema) -> Vec<String> {
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

pub(crate) fn column_value(schema: &EntitySchema, col: &str, row: &Row) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    let text = |s: Option<String>| s.map(V::Text).unwrap_or(V::Null);
    if col == "cache_key" {
        return text(cache_key_of(schema, row));
    }
    let name = col.trim_matches('"');
    if let Some(f) = name.strip_prefix("u_") {
        return text(unique_text(row.get(f)));
    }
    if let Some(f) = name.strip_prefix("fk_") {
        return text(
            row.get(f)
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string),
        );
    }
    V::Null
}

/// `INSERT … ON CONFLICT(id) DO UPDATE` for a schema, and its extra columns in order.
pub(crate) fn upsert_sql(schema: &EntitySchema) -> (String, Vec<String>) {
    let extra = extra_columns(schema);
    let mut cols = vec!["id".to_string(), "data".to_string(), "ttl".to_string()];
    cols.extend(extra.iter().cloned());
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let sets: Vec<String> = cols[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    (
        format!(
            "INSERT INTO \"{}\" ({}) VALUES ({}) ON CONFLICT(id) DO UPDATE SET {}",
            schema.name,
            cols.join(", "),
            marks.join(", "),
            sets.join(", ")
        ),
        extra,
    )
}

fn create_table(schema: &EntitySchema) -> String {
    let mut cols = vec![
        "id TEXT PRIMARY KEY NOT NULL".to_string(),
        "data TEXT NOT NULL".to_string(),
        "ttl INTEGER".to_string(),
    ];
    if schema.cache_key.is_some() {
        cols.push("cache_key TEXT UNIQUE".into());
    }
    for f in schema.unique_fields() {
        cols.push(format!("{} TEXT UNIQUE", unique_col(f.name)));
    }
    for f in schema.foreign_fields() {
        cols.push(format!("{} TEXT", fk_col(f.name)));
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

/// The DDL of one named migration.
pub(crate) fn migration_sql(name: &str) -> String {
    match name {
        "000_base" => {
            let mut sql = String::new();
            for s in entities::ALL.iter() {
                sql.push_str(&create_table(s));
            }
            sql.push_str(
                "CREATE TABLE IF NOT EXISTS tags (entity_name TEXT NOT NULL, entity_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (entity_name, entity_id, tag)) WITHOUT ROWID;\n",
            );
            sql
        }
        "001_tags_index" => {
            "CREATE INDEX IF NOT EXISTS tags_tag ON tags (tag, entity_name);".into()
        }
        other => unreachable_migration(other),
    }
}

fn unreachable_migration(name: &str) -> String {
    // MIGRATIONS and this match are kept together; an unknown name is a build mistake
    // that the migration tests catch. Emit a statement that fails loudly.
    format!("SELECT RAISE(ABORT, 'unknown migration {name}');")
}
