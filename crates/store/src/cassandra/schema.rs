//! The keyspace, its tables and the migrations, safe when several nodes bootstrap at once
//! on an absent keyspace (the failure that made Kong say "deploy one node first").
//!
//! - `CREATE KEYSPACE/TABLE IF NOT EXISTS` on every node, each followed by a wait for
//!   schema agreement. Tables carry a fixed id (`WITH ID`, a UUID derived from the
//!   keyspace and table names), so two coordinators creating one table concurrently
//!   create the same table instead of two that conflict.
//! - Only `meta` (which holds the lock) is created outside the lock; the migrations run
//!   under an LWT lock in `meta` (`IF NOT EXISTS USING TTL 60`, released `IF owner = me`),
//!   waiters poll until it is released or expires, then find nothing left to do.

use super::conn::{decode, Conn, Kind};
use super::{cas_unknown, cerr};
use crate::MIGRATIONS;
use std::time::Duration;
use tollgate_model::{Error, Result};

/// How long the migrations lock lives unless released (a crashed holder frees it).
const LOCK_TTL: i32 = 60;
/// Kept in `cluster_events`: ample for nodes that poll every few seconds.
pub(crate) const EVENTS_TTL: i32 = 3600;

/// A table id derived from its names: every node creates the same table.
fn table_id(ks: &str, table: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("tollgate/{ks}/{table}").as_bytes(),
    )
}

fn create(conn: &Conn, table: &str, body: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({body}) WITH ID = {}{extra}",
        conn.ks.t(table),
        table_id(&conn.ks.name, table)
    )
}

/// The DDL of one migration ([`crate::MIGRATIONS`]).
fn migration(conn: &Conn, name: &str) -> Option<Vec<String>> {
    match name {
        "000_base" => Some(vec![
            create(
                conn,
                "entities",
                "entity text, id text, data text, expires bigint, PRIMARY KEY ((entity), id)",
                "",
            ),
            create(
                conn,
                "refs",
                "entity text, field text, parent text, id text, PRIMARY KEY ((entity, field, parent), id)",
                "",
            ),
            create(conn, "uniques", "k text PRIMARY KEY, id text", ""),
            create(
                conn,
                "cluster_events",
                "channel text, at timeuuid, node_id text, data text, PRIMARY KEY ((channel), at)",
                &format!(" AND default_time_to_live = {EVENTS_TTL}"),
            ),
        ]),
        // Tags are read from the rows themselves: nothing to index.
        "001_tags_index" => Some(Vec::new()),
        // Admin API tokens are rows of `meta` ([`super::admin_tokens`]).
        "002_admin_tokens" => Some(Vec::new()),
        // Both rate-limiting plugins' `cluster` counters ([`super::counters`]).
        "003_counters" => Some(vec![create(
            conn,
            "counters",
            "shard int, expires bigint, tbl text, identifier text, period text, period_date bigint, \
             service_id text, route_id text, value counter, \
             PRIMARY KEY ((shard), expires, tbl, identifier, period, period_date, service_id, route_id)",
            "",
        )]),
        _ => None,
    }
}

/// Whether `table` exists in the keyspace.
async fn table_exists(conn: &Conn, table: &str) -> Result<bool> {
    let r = conn
        .rows(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
            Kind::Read,
            (&conn.ks.name, table),
        )
        .await?;
    Ok(r.rows_num() > 0)
}

/// Executed migrations (none when the keyspace or `meta` does not exist yet).
pub(crate) async fn executed(conn: &Conn) -> Result<Vec<String>> {
    if !table_exists(conn, "meta").await? {
        return Ok(Vec::new());
    }
    // Another node's `CREATE TABLE meta` is visible in system_schema a moment before the
    // table serves requests (as in `lock`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        match conn
            .rows(
                &format!("SELECT key FROM {}", conn.ks.t("meta")),
                Kind::Read,
                (),
            )
            .await
        {
            Err(e)
                if e.message().contains("does not exist")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            r => break r?,
        }
    };
    let mut out: Vec<String> = decode::<(String,)>(&r)?
        .into_iter()
        .filter_map(|(k,)| k.strip_prefix("migration:").map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

/// The keyspace and `meta`, idempotently (every node may run this at once).
async fn ensure_base(conn: &Conn) -> Result<()> {
    conn.ddl(&format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {}",
        conn.ks.quoted,
        conn.settings.replication_cql()
    ))
    .await?;
    conn.ddl(&create(
        conn,
        "meta",
        "key text PRIMARY KEY, value text, owner text",
        "",
    ))
    .await
}

/// The migrations lock: taken, or the wait for it timed out.
async fn lock(conn: &Conn, me: &str, wait: Duration) -> Result<()> {
    let meta = conn.ks.t("meta");
    let deadline = tokio::time::Instant::now() + wait;
    let mut step = Duration::from_millis(100);
    loop {
        let r = match conn
            .exec(
                &format!(
                    "INSERT INTO {meta} (key, owner) VALUES ('lock', ?) IF NOT EXISTS USING TTL {LOCK_TTL}"
                ),
                Kind::Lwt,
                (me,),
            )
            .await
        {
            // Another node's `CREATE TABLE meta` is visible in system_schema a moment
            // before the table serves requests.
            Err(e) if e.message().contains("does not exist") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(step).await;
                continue;
            }
            r => r?,
        };
        let holder = match r {
            Ok(r) => {
                let specs = r.column_specs();
                let applied = specs.iter().position(|c| c.name() == "[applied]");
                let owner = specs.iter().position(|c| c.name() == "owner");
                let row: scylla::value::Row = r
                    .single_row()
                    .map_err(|e| Error::database(format!("cassandra: lock: {e}")))?;
                let get = |i: Option<usize>| i.and_then(|i| row.columns.get(i).cloned().flatten());
                if get(applied).and_then(|v| v.as_boolean()) == Some(true) {
                    return Ok(());
                }
                get(owner).and_then(|v| v.into_string())
            }
            Err(e) if cas_unknown(&e) => {
                let r = conn
                    .rows(
                        &format!("SELECT owner FROM {meta} WHERE key = 'lock'"),
                        Kind::Serial,
                        (),
                    )
                    .await?;
                decode::<(Option<String>,)>(&r)?
                    .into_iter()
                    .next()
                    .and_then(|(o,)| o)
            }
            Err(e) => return Err(cerr(e)),
        };
        if holder.as_deref() == Some(me) {
            return Ok(());
        }
        if tokio::time::Instant::now() + step > deadline {
            return Err(Error::database(format!(
                "cassandra: another node ({}) is performing database changes and did not finish within {} s",
                holder.unwrap_or_default(),
                wait.as_secs()
            )));
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_secs(2));
    }
}

async fn unlock(conn: &Conn, me: &str) -> Result<()> {
    let r = conn
        .exec(
            &format!(
                "DELETE FROM {} WHERE key = 'lock' IF owner = ?",
                conn.ks.t("meta")
            ),
            Kind::Lwt,
            (me,),
        )
        .await?;
    match r {
        Ok(_) => Ok(()),
        // The TTL frees it anyway.
        Err(e) if cas_unknown(&e) => Ok(()),
        Err(e) => Err(cerr(e)),
    }
}

/// Runs the pending migrations under the lock; the names it ran (none when another node
/// had already run them).
pub(crate) async fn migrate(conn: &Conn, me: &str) -> Result<Vec<String>> {
    ensure_base(conn).await?;
    lock(conn, me, Duration::from_secs(LOCK_TTL as u64 + 30)).await?;
    let ran = run_pending(conn).await;
    let released = unlock(conn, me).await;
    let ran = ran?;
    released?;
    Ok(ran)
}

async fn run_pending(conn: &Conn) -> Result<Vec<String>> {
    let done = executed(conn).await?;
    let mut ran = Vec::new();
    for m in MIGRATIONS {
        if done.iter().any(|d| d == m) {
            continue;
        }
        let ddl = migration(conn, m)
            .ok_or_else(|| Error::database(format!("no Cassandra DDL for migration {m}")))?;
        for stmt in ddl {
            conn.ddl(&stmt).await?;
        }
        conn.run(
            &format!(
                "INSERT INTO {} (key, value) VALUES (?, ?)",
                conn.ks.t("meta")
            ),
            Kind::Write,
            (format!("migration:{m}"), crate::rules::now().to_string()),
        )
        .await?;
        ran.push((*m).to_string());
    }
    Ok(ran)
}

/// `migrations reset`: the whole keyspace goes.
pub(crate) async fn reset(conn: &Conn) -> Result<()> {
    conn.ddl(&format!("DROP KEYSPACE IF EXISTS {}", conn.ks.quoted))
        .await
}
