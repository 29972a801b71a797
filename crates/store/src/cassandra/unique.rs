//! Unique values claimed with lightweight transactions: `uniques (k text PRIMARY KEY, id)`
//! holds which row owns each unique value (`entity\x1fcolumn\x1fvalue`). A claim is
//! `INSERT … IF NOT EXISTS`, so of two nodes creating the same name at the same moment
//! exactly one wins — where Kong 2.8 read, then wrote, and both could succeed. When
//! Cassandra cannot tell whether a Paxos round was applied ("CAS operation result is
//! unknown", a timeout), the claim is read back at SERIAL and retried.

use super::conn::{Conn, Kind};
use super::{cas_unknown, cerr};
use scylla::response::query_result::QueryRowsResult;
use scylla::value::{CqlValue, Row as CqlRow};
use tollgate_model::{Error, Result};

/// Attempts before giving up on a contended or unknown LWT.
const ATTEMPTS: usize = 8;

/// Who holds a unique value after a claim.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This row (now, or already before).
    Ours,
    /// Another row id: a conflict if that row still uses the value, else stale.
    HeldBy(String),
}

/// The `[applied]` flag of an LWT and, when not applied, the `id` it found.
fn outcome(r: &QueryRowsResult) -> Result<(bool, Option<String>)> {
    let specs = r.column_specs();
    let find = |name: &str| specs.iter().position(|c| c.name() == name);
    let row: CqlRow = r
        .single_row()
        .map_err(|e| Error::database(format!("cassandra: unexpected LWT result: {e}")))?;
    let applied = find("[applied]")
        .and_then(|i| row.columns.get(i).cloned().flatten())
        .and_then(|v| v.as_boolean())
        .unwrap_or(false);
    let id = find("id")
        .and_then(|i| row.columns.get(i).cloned().flatten())
        .and_then(|v| match v {
            CqlValue::Text(s) | CqlValue::Ascii(s) => Some(s),
            _ => None,
        });
    Ok((applied, id))
}

/// A read at SERIAL of `k`'s row. A SERIAL read is a Paxos round itself: under
/// contention it times out like an LWT, so it is retried the same way.
async fn serial_read(conn: &Conn, cql: &str, k: &str) -> Result<QueryRowsResult> {
    let mut last = None;
    for attempt in 0..ATTEMPTS as u64 {
        match conn.exec(cql, Kind::Serial, (k,)).await? {
            Ok(r) => return Ok(r),
            Err(e) if cas_unknown(&e) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt + 1))).await;
            }
            Err(e) => return Err(cerr(e)),
        }
    }
    Err(last
        .map(cerr)
        .unwrap_or_else(|| Error::database("cassandra: serial read")))
}

/// The current owner of `k`, read at SERIAL (sees every accepted Paxos proposal).
async fn owner(conn: &Conn, k: &str) -> Result<Option<String>> {
    let r = serial_read(
        conn,
        &format!("SELECT id FROM {} WHERE k = ?", conn.ks.t("uniques")),
        k,
    )
    .await?;
    Ok(super::conn::decode::<(Option<String>,)>(&r)?
        .into_iter()
        .next()
        .and_then(|(id,)| id))
}

/// Claims `k` for `id`; `stale` names a previous owner known to be gone, whose claim is
/// taken over instead (`UPDATE … IF id = stale`).
pub(crate) async fn claim(conn: &Conn, k: &str, id: &str, stale: Option<&str>) -> Result<Claim> {
    let uniques = conn.ks.t("uniques");
    for _ in 0..ATTEMPTS {
        let done = match stale {
            None => {
                conn.exec(
                    &format!("INSERT INTO {uniques} (k, id) VALUES (?, ?) IF NOT EXISTS"),
                    Kind::Lwt,
                    (k, id),
                )
                .await?
            }
            Some(old) => {
                conn.exec(
                    &format!("UPDATE {uniques} SET id = ? WHERE k = ? IF id = ?"),
                    Kind::Lwt,
                    (id, k, old),
                )
                .await?
            }
        };
        match done {
            Ok(r) => {
                let (applied, found) = outcome(&r)?;
                return Ok(match (applied, found) {
                    (true, _) => Claim::Ours,
                    (false, Some(f)) if f == id => Claim::Ours,
                    (false, Some(f)) => Claim::HeldBy(f),
                    // A takeover whose row vanished meanwhile: claim it afresh.
                    (false, None) => return Box::pin(claim(conn, k, id, None)).await,
                });
            }
            Err(e) if cas_unknown(&e) => match owner(conn, k).await? {
                Some(o) if o == id => return Ok(Claim::Ours),
                Some(o) if Some(o.as_str()) != stale => return Ok(Claim::HeldBy(o)),
                // Not applied (yet): try again.
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            },
            Err(e) => return Err(cerr(e)),
        }
    }
    Err(Error::database(format!(
        "cassandra: could not settle the unique value {k:?} (contention)"
    )))
}

/// Gives up `k` if `id` still holds it.
pub(crate) async fn release(conn: &Conn, k: &str, id: &str) -> Result<()> {
    let uniques = conn.ks.t("uniques");
    for _ in 0..ATTEMPTS {
        match conn
            .exec(
                &format!("DELETE FROM {uniques} WHERE k = ? IF id = ?"),
                Kind::Lwt,
                (k, id),
            )
            .await?
        {
            Ok(_) => return Ok(()),
            Err(e) if cas_unknown(&e) => {
                if owner(conn, k).await?.as_deref() != Some(id) {
                    return Ok(());
                }
            }
            Err(e) => return Err(cerr(e)),
        }
    }
    Err(Error::database(format!(
        "cassandra: could not release the unique value {k:?} (contention)"
    )))
}

/// Whether the claim on `k` was written more than `age` ago (by Cassandra's clock; read at
/// SERIAL so an accepted proposal counts). A claim that is gone counts as old.
pub(crate) async fn older_than(conn: &Conn, k: &str, age: std::time::Duration) -> Result<bool> {
    let r = serial_read(
        conn,
        &format!(
            "SELECT WRITETIME(id) FROM {} WHERE k = ?",
            conn.ks.t("uniques")
        ),
        k,
    )
    .await?;
    let Some((Some(written),)) = super::conn::decode::<(Option<i64>,)>(&r)?
        .into_iter()
        .next()
    else {
        return Ok(true);
    };
    let now_ms = super::events::server_now(conn).await?;
    Ok(now_ms - written / 1000 > age.as_millis() as i64)
}
