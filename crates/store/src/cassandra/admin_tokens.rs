//! Admin API tokens (`admin_auth = token`) in the `meta` table, one row per token
//! (`key = 'admin_token:<name>'`, `value` its JSON): a handful of rarely written rows need
//! no table of their own (each table is one more schema change on every bootstrap).
//!
//! A name is claimed with `INSERT … IF NOT EXISTS`, so the same name created through two
//! nodes at once has one winner; "CAS result unknown" is settled by reading back at
//! SERIAL. Every change is recorded in `cluster_events`, which moves the
//! [`crate::ADMIN_TOKENS`] counter on every node (they then reread the tokens).

use super::conn::{decode, Conn, Kind};
use super::{cas_unknown, cerr};
use crate::rules;
use crate::AdminToken;
use serde_json::{json, Value};
use tollgate_model::{Error, Result};

const PREFIX: &str = "admin_token:";
/// Attempts before giving up on an LWT whose outcome stays unknown.
const ATTEMPTS: usize = 8;

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn encode(t: &AdminToken) -> String {
    json!({"hash": t.hash, "read_only": t.read_only, "created_at": t.created_at}).to_string()
}

fn parse(name: &str, value: &str) -> Result<AdminToken> {
    let v: Value = serde_json::from_str(value).map_err(|e| {
        Error::database(format!(
            "cassandra: unreadable Admin API token {name:?}: {e}"
        ))
    })?;
    Ok(AdminToken {
        name: name.to_string(),
        hash: v["hash"].as_str().unwrap_or_default().to_string(),
        read_only: v["read_only"].as_bool().unwrap_or(false),
        created_at: v["created_at"].as_i64().unwrap_or_default(),
    })
}

/// Every token, by name.
pub(crate) async fn list(conn: &Conn) -> Result<Vec<AdminToken>> {
    let r = conn
        .rows(
            &format!("SELECT key, value FROM {}", conn.ks.t("meta")),
            Kind::Read,
            (),
        )
        .await?;
    let mut out = Vec::new();
    for (k, v) in decode::<(String, Option<String>)>(&r)? {
        if let (Some(name), Some(v)) = (k.strip_prefix(PREFIX), v) {
            out.push(parse(name, &v)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The stored value of token `name`, read at SERIAL (sees every accepted proposal).
async fn read_serial(conn: &Conn, name: &str) -> Result<Option<String>> {
    let cql = format!("SELECT value FROM {} WHERE key = ?", conn.ks.t("meta"));
    match conn.exec(&cql, Kind::Serial, (key(name),)).await? {
        Ok(r) => Ok(decode::<(Option<String>,)>(&r)?
            .into_iter()
            .next()
            .and_then(|(v,)| v)),
        Err(e) => Err(cerr(e)),
    }
}

/// The `[applied]` flag of an LWT's answer.
fn applied(r: &scylla::response::query_result::QueryRowsResult) -> Result<bool> {
    let i = r
        .column_specs()
        .iter()
        .position(|c| c.name() == "[applied]");
    let row: scylla::value::Row = r
        .single_row()
        .map_err(|e| Error::database(format!("cassandra: unexpected LWT result: {e}")))?;
    Ok(i.and_then(|i| row.columns.get(i).cloned().flatten())
        .and_then(|v| v.as_boolean())
        .unwrap_or(false))
}

/// Adds `t`; a taken name is Kong's unique violation.
pub(crate) async fn create(conn: &Conn, t: &AdminToken) -> Result<()> {
    let value = encode(t);
    let cql = format!(
        "INSERT INTO {} (key, value) VALUES (?, ?) IF NOT EXISTS",
        conn.ks.t("meta")
    );
    for _ in 0..ATTEMPTS {
        match conn.exec(&cql, Kind::Lwt, (key(&t.name), &value)).await? {
            Ok(r) if applied(&r)? => return Ok(()),
            Ok(_) => return Err(rules::admin_token_taken(&t.name)),
            Err(e) if cas_unknown(&e) => match read_serial(conn, &t.name).await? {
                Some(v) if v == value => return Ok(()),
                Some(_) => return Err(rules::admin_token_taken(&t.name)),
                None => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            },
            Err(e) => return Err(cerr(e)),
        }
    }
    Err(Error::database(format!(
        "cassandra: could not settle the Admin API token {:?} (contention)",
        t.name
    )))
}

/// Removes token `name`; `false` when there was none.
pub(crate) async fn revoke(conn: &Conn, name: &str) -> Result<bool> {
    let cql = format!("DELETE FROM {} WHERE key = ? IF EXISTS", conn.ks.t("meta"));
    for _ in 0..ATTEMPTS {
        match conn.exec(&cql, Kind::Lwt, (key(name),)).await? {
            Ok(r) => return applied(&r),
            // Gone now: this attempt (or a concurrent revoke) removed it.
            Err(e) if cas_unknown(&e) => {
                if read_serial(conn, name).await?.is_none() {
                    return Ok(true);
                }
            }
            Err(e) => return Err(cerr(e)),
        }
    }
    Err(Error::database(format!(
        "cassandra: could not settle the revocation of the Admin API token {name:?} (contention)"
    )))
}
