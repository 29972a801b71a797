//! PostgreSQL DDL derived from the entity schemas (the same tables and columns as the
//! SQLite store), and the migrations run under a database-wide lock.

use crate::rules::{self, Dialect};
use tollgate_model::{entities, EntitySchema};

/// `pg_advisory_xact_lock` key of the migrations ("tollgate" in ASCII, truncated).
pub(crate) const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;
/// `pg_advisory_xact_lock` key every write transaction takes: writes commit one at a time
/// across the cluster, so `cluster_events` ids grow in commit order (a poller that has seen
/// id N has seen every event before it) and constraint checks see every earlier commit.
pub(crate) const WRITE_LOCK: i64 = 0x746f_6c6c_6777_7274;

/// Text keys compare bytewise (`COLLATE "C"`) so ids, pages and tags sort exactly as in
/// SQLite whatever the database's locale.
pub(crate) const DIALECT: Dialect = Dialect {
    placeholder: "$",
    key_collation: " COLLATE \"C\"",
    integer: "BIGINT",
};

pub(crate) fn upsert_sql(schema: &EntitySchema) -> (String, Vec<String>) {
    rules::upsert_sql(schema, &DIALECT)
}

fn create_table(schema: &EntitySchema) -> String {
    rules::create_table(schema, &DIALECT)
}

/// The DDL of one named migration ([`crate::MIGRATIONS`]).
pub(crate) fn migration_sql(name: &str) -> Option<String> {
    match name {
        "000_base" => {
            let mut sql = String::new();
            for s in entities::ALL.iter() {
                sql.push_str(&create_table(s));
            }
            sql.push_str(
                "CREATE TABLE IF NOT EXISTS tags (entity_name TEXT COLLATE \"C\" NOT NULL, entity_id TEXT COLLATE \"C\" NOT NULL, tag TEXT COLLATE \"C\" NOT NULL, PRIMARY KEY (entity_name, entity_id, tag));\n",
            );
            // One row per committed write: what the other nodes replay (see events.rs).
            sql.push_str(
                "CREATE TABLE IF NOT EXISTS cluster_events (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now(), node_id TEXT NOT NULL, data TEXT NOT NULL);\n\
                 CREATE INDEX IF NOT EXISTS cluster_events_at ON cluster_events (at);\n\
                 CREATE TABLE IF NOT EXISTS cluster_events_floor (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), purged BIGINT NOT NULL);\n\
                 INSERT INTO cluster_events_floor (purged) VALUES (0) ON CONFLICT DO NOTHING;\n",
            );
            Some(sql)
        }
        "001_tags_index" => {
            Some("CREATE INDEX IF NOT EXISTS tags_tag ON tags (tag, entity_name);".into())
        }
        "002_admin_tokens" => Some(rules::admin_tokens_table(&DIALECT)),
        "003_counters" => Some(rules::create_counter_tables(&DIALECT)),
        _ => None,
    }
}

/// What `migrations reset` drops.
pub(crate) fn drop_all() -> String {
    let mut sql = String::new();
    for s in entities::ALL.iter() {
        sql.push_str(&format!("DROP TABLE IF EXISTS \"{}\" CASCADE;\n", s.name));
    }
    sql.push_str(
        "DROP TABLE IF EXISTS tags, admin_tokens, cluster_events, cluster_events_floor, schema_meta, ratelimiting_metrics, response_ratelimiting_metrics CASCADE;\n",
    );
    sql
}
