//! SQL derived from the entity schemas: one table per entity holding the JSON row plus
//! the columns its constraints need.

use crate::rules::{self, Dialect};
use tollgate_model::{entities, EntitySchema, Row};

pub(crate) fn column_value(schema: &EntitySchema, col: &str, row: &Row) -> rusqlite::types::Value {
    rules::column_text(schema, col, row)
        .map(rusqlite::types::Value::Text)
        .unwrap_or(rusqlite::types::Value::Null)
}

pub(crate) const DIALECT: Dialect = Dialect {
    placeholder: "?",
    key_collation: "",
    integer: "INTEGER",
};

pub(crate) fn upsert_sql(schema: &EntitySchema) -> (String, Vec<String>) {
    rules::upsert_sql(schema, &DIALECT)
}

fn create_table(schema: &EntitySchema) -> String {
    rules::create_table(schema, &DIALECT)
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
        "002_admin_tokens" => rules::admin_tokens_table(&DIALECT),
        "003_counters" => rules::create_counter_tables(&DIALECT),
        other => unreachable_migration(other),
    }
}

fn unreachable_migration(name: &str) -> String {
    // MIGRATIONS and this match are kept together; an unknown name is a build mistake
    // that the migration tests catch. Emit a statement that fails loudly.
    format!("SELECT RAISE(ABORT, 'unknown migration {name}');")
}
