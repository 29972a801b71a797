//! The stored form of one commit's row changes, as `cluster_events` carries it (the
//! PostgreSQL and Cassandra stores write and replay the same text).

use crate::{ChangeEvent, ChangeOp, RawRow, RowChange};
use serde_json::{json, Value};
use tollgate_model::{entities, Error, Result};

/// The stored form of a commit that created or revoked an Admin API token: it moves the
/// [`crate::ADMIN_TOKENS`] counter on every node, which then rereads the token table.
pub(crate) const ADMIN_TOKENS_EVENT: &str = r#"{"admin_tokens":true}"#;

/// The stored form of one commit (the `data` column).
pub(crate) fn encode(rows: &[RowChange], reset: bool) -> String {
    if reset {
        return json!({ "reset": true }).to_string();
    }
    let raw = |r: &Option<RawRow>| {
        r.as_ref()
            .map(|r| json!({ "text": &*r.text, "expires_at": r.expires_at }))
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "entity": r.entity,
                "id": &*r.id,
                "op": if r.op == ChangeOp::Delete { "delete" } else { "upsert" },
                "new": raw(&r.new),
                "old": raw(&r.old),
            })
        })
        .collect();
    json!({ "rows": rows }).to_string()
}

pub(crate) fn decode(data: &str) -> Result<ChangeEvent> {
    let bad = |what: &str| Error::database(format!("unreadable cluster event: {what}"));
    let v: Value = serde_json::from_str(data).map_err(|e| bad(&e.to_string()))?;
    if v.get("reset").and_then(Value::as_bool) == Some(true) {
        return Ok(ChangeEvent::Reset);
    }
    let raw = |v: &Value, id: &str| -> Option<RawRow> {
        let text = v.get("text")?.as_str()?;
        Some(RawRow {
            id: id.into(),
            text: text.into(),
            expires_at: v.get("expires_at").and_then(Value::as_i64),
        })
    };
    let mut out = Vec::new();
    for r in v
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no rows"))?
    {
        let name = r.get("entity").and_then(Value::as_str).unwrap_or_default();
        let entity = entities::by_name(name).ok_or_else(|| bad(name))?.name;
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no id"))?;
        out.push(RowChange {
            entity,
            id: id.into(),
            op: if r.get("op").and_then(Value::as_str) == Some("delete") {
                ChangeOp::Delete
            } else {
                ChangeOp::Upsert
            },
            new: r.get("new").and_then(|v| raw(v, id)),
            old: r.get("old").and_then(|v| raw(v, id)),
        });
    }
    Ok(ChangeEvent::Rows(out))
}

/// Hands one commit's changes to this node's subscribers and moves the counters.
pub(crate) fn deliver(
    events: &tokio::sync::broadcast::Sender<std::sync::Arc<ChangeEvent>>,
    version: &tokio::sync::watch::Sender<crate::Changes>,
    e: ChangeEvent,
) {
    let touched: Vec<&'static str> = match &e {
        // Whatever was missed may include Admin API token changes too.
        ChangeEvent::Reset => entities::ALL
            .iter()
            .map(|s| s.name)
            .chain([crate::ADMIN_TOKENS])
            .collect(),
        ChangeEvent::Rows(rows) => rows.iter().map(|r| r.entity).collect(),
    };
    let _ = events.send(std::sync::Arc::new(e));
    version.send_modify(|c| c.bump(&touched));
}
