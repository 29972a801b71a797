//! The `cluster` rate-limiting counters (rate-limiting and response-ratelimiting) in one
//! Cassandra counter table, `counters`, incremented with `value = value + ?` as Kong 2.8's
//! `ratelimiting_metrics` was. Counter tables cannot carry a TTL (Kong never expired its
//! Cassandra rows), so expiry is a purge, and the layout is made for it:
//!
//! `PRIMARY KEY ((shard), expires, tbl, identifier, period, period_date, service_id, route_id)`
//!
//! - `shard`: a stable hash of the counter's key over [`SHARDS`] partitions, spreading
//!   the load over the ring while keeping a purge to [`SHARDS`] statements.
//! - `expires` first among the clustering columns: a purge is one range delete per shard
//!   (`expires < now`), whatever the number of rows. A window's expiry is fixed by the
//!   window, so it never splits a counter. Cassandra does not reset a deleted counter (a
//!   later increment, even of 0, brings its old total back), so only ended windows are
//!   purged: a later window has a later expiry and so another row.
//! - `tbl`: which plugin's table (Kong's table name), so both share one table: one
//!   schema change less on every bootstrap.
//!
//! Increments are not transactions: each row is its own counter write, answered by a
//! read of its total. A counter write that times out may or may not have counted (the
//! driver does not retry it); the plugin then resends it, erring towards limiting.

use super::conn::{decode, Conn, Kind};
use crate::{CounterIncrement, CounterTable};
use futures_util::future::try_join_all;
use scylla::value::Counter;
use tollgate_model::Result;

/// Partitions of the counter table.
pub(crate) const SHARDS: i32 = 32;

/// The partition of a counter: FNV-1a over its key (stable across nodes and releases,
/// unlike the standard library's hasher).
fn shard(table: CounterTable, r: &CounterIncrement) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    let date = r.period_date.to_be_bytes();
    let parts: [&[u8]; 6] = [
        table.name().as_bytes(),
        r.identifier.as_bytes(),
        r.period.as_bytes(),
        &date,
        r.service_id.as_bytes(),
        r.route_id.as_bytes(),
    ];
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    }
    (h % SHARDS as u32) as i32
}

const KEY: &str = "shard = ? AND expires = ? AND tbl = ? AND identifier = ? AND period = ? AND period_date = ? AND service_id = ? AND route_id = ?";

/// Adds each increment and answers the totals after them, in order.
pub(crate) async fn increment(
    conn: &Conn,
    table: CounterTable,
    rows: &[CounterIncrement],
) -> Result<Vec<i64>> {
    let t = conn.ks.t("counters");
    let key = |r: &CounterIncrement| {
        (
            shard(table, r),
            r.expires_at,
            table.name(),
            r.identifier.clone(),
            r.period.clone(),
            r.period_date,
            r.service_id.clone(),
            r.route_id.clone(),
        )
    };
    let update = format!("UPDATE {t} SET value = value + ? WHERE {KEY}");
    try_join_all(rows.iter().map(|r| {
        let (s, e, tb, i, p, d, sv, rt) = key(r);
        conn.run(
            &update,
            Kind::Write,
            (Counter(r.value), s, e, tb, i, p, d, sv, rt),
        )
    }))
    .await?;
    let select = format!("SELECT value FROM {t} WHERE {KEY}");
    try_join_all(rows.iter().map(|r| {
        let select = &select;
        async move {
            let got = conn.rows(select, Kind::Read, key(r)).await?;
            Ok(decode::<(Option<Counter>,)>(&got)?
                .into_iter()
                .next()
                .and_then(|(c,)| c)
                .map_or(0, |c| c.0))
        }
    }))
    .await
}

/// Deletes the counters whose window ended before `now` (Unix seconds).
pub(crate) async fn purge(conn: &Conn, now: i64) -> Result<()> {
    let cql = format!(
        "DELETE FROM {} WHERE shard = ? AND expires < ?",
        conn.ks.t("counters")
    );
    try_join_all((0..SHARDS).map(|s| conn.run(&cql, Kind::Write, (s, now)))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let r = |id: &str| CounterIncrement {
            identifier: id.into(),
            period: "second".into(),
            period_date: 1_700_000_000,
            service_id: "s".into(),
            route_id: "r".into(),
            value: 1,
            expires_at: 1_700_000_001,
        };
        let t = CounterTable::RateLimiting;
        assert_eq!(shard(t, &r("10.0.0.1")), shard(t, &r("10.0.0.1")));
        let used: std::collections::HashSet<i32> = (0..200)
            .map(|i| shard(t, &r(&format!("10.0.0.{i}"))))
            .collect();
        assert!(used.len() > SHARDS as usize / 2, "{used:?}");
        assert!(used.iter().all(|s| (0..SHARDS).contains(s)));
    }
}
