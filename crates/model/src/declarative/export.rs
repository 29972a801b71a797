//! Kong's `db_export` shape (`kong/db/declarative/export.lua`), as `GET /config` and
//! `kong config db_export` print it.
//!
//! Like Kong's (which reads rows with `nulls = true`), the export keeps every field,
//! null ones and `created_at`/`updated_at` included; foreign keys become the referenced
//! id; transient fields (certificates' `snis`) are not stored and so not exported. Entities
//! come in Kong's topological order, only those with rows.

use super::{known_entities, EntitySet};
use crate::{Row, RowText};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `{"_format_version": "3.0", "_transform": false, "<entity>": [rows…], …}`.
pub fn export(set: &EntitySet) -> Value {
    export_rows(|e| set.rows(e).iter().map(RowText::to_row).collect())
}

/// [`export`] of rows loaded from a store (entity name → rows).
pub fn export_dataset(data: &BTreeMap<String, Vec<Row>>) -> Value {
    export_rows(|e| data.get(e).cloned().unwrap_or_default())
}

fn export_rows(rows_of: impl Fn(&str) -> Vec<Row>) -> Value {
    let mut out = Map::new();
    out.insert("_format_version".into(), Value::from("3.0"));
    out.insert("_transform".into(), Value::Bool(false));
    for schema in known_entities() {
        let rows = rows_of(schema.name);
        if rows.is_empty() {
            continue;
        }
        let mut list = Vec::with_capacity(rows.len());
        for mut r in rows {
            for f in schema.foreign_fields() {
                if let Some(Value::Object(fk)) = r.get(f.name) {
                    if let Some(id) = fk.get("id").cloned() {
                        r.insert(f.name.into(), id);
                    }
                }
            }
            for t in &schema.transient {
                r.remove(*t);
            }
            list.push(Value::Object(r));
        }
        out.insert(schema.name.into(), Value::Array(list));
    }
    Value::Object(out)
}

/// The YAML text of a value (Kong's `to_yaml_string`, without the document markers).
pub fn to_yaml(v: &Value) -> String {
    let s = serde_yaml::to_string(v).unwrap_or_default();
    s.strip_prefix("---\n").map(str::to_string).unwrap_or(s)
}
