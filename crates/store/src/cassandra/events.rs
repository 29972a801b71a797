//! Propagation between nodes: every write appends its row changes to `cluster_events`
//! (`PRIMARY KEY ((channel), at)`, `at` a server-made timeuuid, rows expiring after
//! [`super::schema::EVENTS_TTL`]); every node polls it each `db_update_frequency`
//! (fractions of a second allowed) and replays other nodes' events as the same
//! [`ChangeEvent`]s the SQL stores emit. A node delivers its own writes at once.
//!
//! Cassandra has no commit order across coordinators, so each poll reads from
//! [`LOOKBACK`] before the previous poll's server time (writes still in flight then, or
//! stamped by a coordinator whose clock is behind) and drops the events it already saw
//! (by timeuuid). Server time comes from Cassandra, not this node's clock. After the
//! database was unreachable, the node reloads everything (`ChangeEvent::Reset`).
//!
//! Broadcasts to node-local caches ([`crate::Hub`]) ride the same channel, tagged; after
//! the database was unreachable the node's subscribers drop everything.

use super::conn::{decode, Conn, Kind};
use super::schema::EVENTS_TTL;
use crate::codec;
use crate::{ChangeEvent, Changes};
use scylla::value::{CqlTimestamp, CqlTimeuuid};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tollgate_model::Result;

/// How far back each poll reads past the previous one (ms).
const LOOKBACK: i64 = 3000;
/// Rows per poll query.
const BATCH: i32 = 500;
/// The one channel: every entity's changes.
pub(crate) const CHANNEL: &str = "events";

pub(crate) struct Feed {
    pub conn: Arc<Conn>,
    pub events: broadcast::Sender<Arc<ChangeEvent>>,
    pub version: Arc<watch::Sender<Changes>>,
    pub frequency: Duration,
    /// Server time (ms) of the previous successful poll; `None` until one succeeded.
    pub cursor: Option<i64>,
    /// Events already replayed, with their time (ms), within the look-back window.
    pub seen: HashMap<CqlTimeuuid, i64>,
    /// Where other nodes' broadcasts are delivered.
    pub hub: Arc<crate::Hub>,
}

/// The statement that records one event: (channel, node_id, data).
pub(crate) fn insert_cql(conn: &Conn) -> String {
    format!(
        "INSERT INTO {} (channel, at, node_id, data) VALUES (?, now(), ?, ?) USING TTL {EVENTS_TTL}",
        conn.ks.t("cluster_events"),
    )
}

/// Records one event (its stored form) for the other nodes.
pub(crate) async fn append(conn: &Conn, data: String) -> Result<()> {
    conn.run(
        &insert_cql(conn),
        Kind::Write,
        (CHANNEL, &conn.settings.node_id, data),
    )
    .await
    .map(drop)
}

/// [`crate::Store::broadcast`]: recorded for the other nodes, then delivered here (an
/// error told nobody).
pub(crate) async fn broadcast(
    conn: &Conn,
    hub: &crate::Hub,
    channel: &str,
    purge: crate::Purge,
) -> Result<()> {
    append(conn, hub.encode(channel, &purge)).await?;
    hub.deliver(channel, &purge);
    Ok(())
}

/// Cassandra's clock, in Unix milliseconds.
pub(crate) async fn server_now(conn: &Conn) -> Result<i64> {
    let r = conn
        .rows(
            "SELECT toUnixTimestamp(now()) FROM system.local",
            Kind::Read,
            (),
        )
        .await?;
    Ok(decode::<(i64,)>(&r)?
        .first()
        .map(|(t,)| *t)
        .unwrap_or_default())
}

impl Feed {
    fn deliver(&self, e: ChangeEvent) {
        codec::deliver(&self.events, &self.version, e);
    }

    /// Applies one other node's stored event.
    fn apply(&self, data: &str) {
        if self.hub.receive(data) {
            return;
        }
        if data == codec::ADMIN_TOKENS_EVENT {
            self.version.send_modify(|c| c.bump(&[crate::ADMIN_TOKENS]));
            return;
        }
        match codec::decode(data) {
            Ok(e) => self.deliver(e),
            Err(e) => {
                tracing::error!(error = %e, "reloading everything");
                self.deliver(ChangeEvent::Reset);
            }
        }
    }

    /// Reads and applies the events after `cursor` (less the look-back) that this node
    /// has not seen; `fresh` holds those it marked seen, and is drained as they apply.
    /// Every poll looks back over the last seconds, where nearly every row was seen
    /// already: only the keys are read there, then the bodies of the rows that are new.
    async fn read(&mut self, table: &str, cursor: i64, fresh: &mut Vec<CqlTimeuuid>) -> Result<()> {
        let me = self.conn.settings.node_id.clone();
        let mut after: Option<CqlTimeuuid> = None;
        loop {
            let r = match after {
                None => {
                    self.conn
                        .rows(
                            &format!("SELECT at, toUnixTimestamp(at), node_id FROM {table} WHERE channel = ? AND at > minTimeuuid(?) LIMIT {BATCH}"),
                            Kind::Read,
                            (CHANNEL, CqlTimestamp(cursor - LOOKBACK)),
                        )
                        .await?
                }
                Some(at) => {
                    self.conn
                        .rows(
                            &format!("SELECT at, toUnixTimestamp(at), node_id FROM {table} WHERE channel = ? AND at > ? LIMIT {BATCH}"),
                            Kind::Read,
                            (CHANNEL, at),
                        )
                        .await?
                }
            };
            let rows = decode::<(CqlTimeuuid, i64, String)>(&r)?;
            for (at, ts, node) in &rows {
                after = Some(*at);
                if self.seen.insert(*at, *ts).is_none() && *node != me {
                    fresh.push(*at);
                }
            }
            if (rows.len() as i32) < BATCH {
                break;
            }
        }
        while !fresh.is_empty() {
            let n = fresh.len().min(BATCH as usize);
            let r = self
                .conn
                .rows(
                    &format!("SELECT data FROM {table} WHERE channel = ? AND at IN ?"),
                    Kind::Read,
                    (CHANNEL, &fresh[..n]),
                )
                .await?;
            // IN on the clustering key answers in clustering (time) order.
            for (data,) in decode::<(String,)>(&r)? {
                self.apply(&data);
            }
            fresh.drain(..n);
        }
        Ok(())
    }

    async fn poll(&mut self) -> Result<()> {
        let now = server_now(&self.conn).await?;
        let Some(cursor) = self.cursor else {
            // Never read before (the database was down when this node connected): what
            // it serves may be older than anything, reload it all.
            self.cursor = Some(now);
            self.deliver(ChangeEvent::Reset);
            return Ok(());
        };
        let table = self.conn.ks.t("cluster_events");
        let mut fresh: Vec<CqlTimeuuid> = Vec::new();
        let read = self.read(&table, cursor, &mut fresh).await;
        if let Err(e) = read {
            // Seen but not applied: forget them so the next poll reads them again.
            for at in &fresh {
                self.seen.remove(at);
            }
            return Err(e);
        }
        self.cursor = Some(now);
        self.seen.retain(|_, t| *t >= now - 2 * LOOKBACK);
        Ok(())
    }

    /// Polls every `frequency`; after a failure, reloads everything once the database
    /// answers again.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failing = false;
        let mut ever_read = false;
        // Polls start every `frequency` (a poll's own time does not stretch the period);
        // a poll slower than that is followed by the next at once, never by a burst.
        let mut tick = tokio::time::interval(self.frequency);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            match self.poll().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("database reachable again; reloading the configuration");
                    self.deliver(ChangeEvent::Reset);
                    self.hub.missed();
                }
                Ok(()) => ever_read = true,
                // Before the first successful read (the schema is being created) there is
                // nothing to resync.
                Err(e) if !ever_read => {
                    tracing::debug!(error = %e, "cluster events not readable yet")
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot read cluster events; serving the last configuration");
                    }
                    failing = true;
                }
            }
        }
    }
}
