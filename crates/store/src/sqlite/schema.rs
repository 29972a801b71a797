//! SQL derived from the entity schemas: one table per entity holding the JSON row plus
//! the columns its constraints need.

use crate::rules::{self, extra_columns, fk_col, unique_col};
use tollgate_model::{entities, EntitySchema, Row};

pub(crate) fn column_value(schema: &EntitySchema, col: &str, row: &Row) -> rusqlite::types::Value {
    rules::column_text(schema, col, row)
        .map(rusqlite::types::Value::Text)
        .unwrap_or(rusqlite::types::Value::Null)
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
