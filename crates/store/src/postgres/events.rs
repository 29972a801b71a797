//! Propagation between nodes: every write transaction appends one row to
//! `cluster_events` and `NOTIFY`s `tollgate_events` before it commits; every node replays
//! the rows it has not seen yet as the same [`ChangeEvent`]s the embedded store emits.
//!
//! Consistency: writes are serialised cluster-wide by an advisory lock
//! ([`super::schema::WRITE_LOCK`]), so event ids grow in commit order and a node that has
//! replayed id N has replayed every earlier write (each node applies all writes in one
//! global order, no gaps). The notification carries the event's id and, when it fits in a
//! payload, its text: a node that has replayed the id before it applies the event without
//! a query (the common case: one write, one notification); any other notification (a gap
//! in the ids, an event too large to ride along) reads the table, one round trip. When a
//! notification is lost (LISTEN connection dropped, partition) the poll every
//! `db_update_frequency` reads the same rows, so a change is late, never lost. Events
//! older than [`RETENTION`] are purged; a node that fell further behind than that (its
//! last id is below the purge floor) reloads everything instead (`ChangeEvent::Reset`),
//! as it does when the database comes back after it could not be read.
//!
//! Broadcasts to node-local caches ([`crate::Hub`]) ride the same rows and order; a
//! node that may have missed some tells its subscribers to drop everything.

use super::options::PgOptions;
use crate::{ChangeEvent, Changes};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tollgate_model::Result;

/// The notification channel.
pub(crate) const CHANNEL: &str = "tollgate_events";
/// How long replayable events are kept.
pub(crate) const RETENTION: Duration = Duration::from_secs(3600);
/// Rows read per poll query.
const BATCH: i64 = 512;
/// The largest event text a notification carries (PostgreSQL's payload limit is 8000
/// bytes, the id and a space included); larger events are read from the table.
pub(crate) const PAYLOAD_MAX: usize = 7900;
/// Notifications kept for the feed; beyond this the oldest are dropped, which the feed
/// sees as a gap and reads from the table instead.
const QUEUE_MAX: usize = 256;

/// Notifications received and not yet replayed: (event id, the event text if it fitted).
pub(crate) type Notified = Arc<std::sync::Mutex<VecDeque<(i64, Option<String>)>>>;

pub(crate) use crate::codec::{decode, encode, ADMIN_TOKENS_EVENT};

/// Where this node's replay stands and where it delivers.
pub(crate) struct Feed {
    pub pool: deadpool_postgres::Pool,
    pub events: broadcast::Sender<Arc<ChangeEvent>>,
    pub version: Arc<watch::Sender<Changes>>,
    pub wake: Arc<Notify>,
    pub notified: Notified,
    pub frequency: Duration,
    /// The last replayed id; `None` until the table could be read once. Shared with the
    /// store, which sets it right after migrating an empty database.
    pub last: Arc<std::sync::Mutex<Option<i64>>>,
    /// Where other nodes' broadcasts are delivered.
    pub hub: Arc<crate::Hub>,
}

impl Feed {
    fn last(&self) -> Option<i64> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the position unless something else set it first; says whether it did.
    fn set_last_if_unset(&self, id: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some() {
            return false;
        }
        *last = Some(id);
        true
    }

    fn set_last(&self, id: i64) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }

    fn deliver(&self, e: ChangeEvent) {
        crate::codec::deliver(&self.events, &self.version, e);
    }

    /// After events may have been missed: everything reloads, node-local caches empty.
    fn resync(&self) {
        self.deliver(ChangeEvent::Reset);
        self.hub.missed();
    }

    /// The newest event id (where a node that just loaded everything starts).
    pub async fn head(pool: &deadpool_postgres::Pool) -> Result<i64> {
        let c = pool.get().await.map_err(super::pool_err)?;
        let r = c
            .query_one(
                "SELECT GREATEST(COALESCE(MAX(id), 0), (SELECT purged FROM cluster_events_floor)) FROM cluster_events",
                &[],
            )
            .await
            .map_err(super::db_err)?;
        Ok(r.get(0))
    }

    /// Replays everything after `last`.
    async fn catch_up(&self) -> Result<()> {
        let Some(mut last) = self.last() else {
            // Never read before (the database was down when this node connected): what it
            // serves may be older than anything, reload it all. (Migrating sets the
            // position, so a node that bootstraps an empty database does not get here.)
            let head = Self::head(&self.pool).await?;
            // Migrating may have set the position while `head` was read; its position is
            // older, and replaying from it delivers the writes since one by one.
            if self.set_last_if_unset(head) {
                self.resync();
                return Ok(());
            }
            return Box::pin(self.catch_up()).await;
        };
        let c = self.pool.get().await.map_err(super::pool_err)?;
        // The purge floor and the rows after `last` in one round trip (the floor row is
        // always there, the events may not be).
        let query = c
            .prepare_cached(
                "SELECT f.purged, e.id, e.data FROM cluster_events_floor f LEFT JOIN LATERAL \
                 (SELECT id, data FROM cluster_events WHERE id > $1 ORDER BY id LIMIT $2) e ON true \
                 ORDER BY e.id",
            )
            .await
            .map_err(super::db_err)?;
        loop {
            let rows = c
                .query(&query, &[&last, &BATCH])
                .await
                .map_err(super::db_err)?;
            let floor: i64 = rows.first().map_or(0, |r| r.get(0));
            if floor > last {
                tracing::warn!(
                    last,
                    floor,
                    "missed events were purged; reloading everything"
                );
                let head = Self::head(&self.pool).await?;
                self.set_last(head);
                self.resync();
                return Ok(());
            }
            let mut read = 0;
            for r in &rows {
                let (Some(id), Some(data)) =
                    (r.get::<_, Option<i64>>(1), r.get::<_, Option<&str>>(2))
                else {
                    continue;
                };
                self.replay(id, data);
                last = id;
                read += 1;
            }
            if read < BATCH {
                return Ok(());
            }
        }
    }

    /// Delivers the event stored as `id` and moves the position past it.
    fn replay(&self, id: i64, data: &str) {
        if data == ADMIN_TOKENS_EVENT {
            self.version.send_modify(|c| c.bump(&[crate::ADMIN_TOKENS]));
        } else if self.hub.receive(data) {
            // a broadcast to node-local caches, delivered by the hub
        } else {
            match decode(data) {
                Ok(e) => self.deliver(e),
                Err(e) => {
                    tracing::error!(id, error = %e, "reloading everything");
                    self.deliver(ChangeEvent::Reset);
                }
            }
        }
        self.set_last(id);
    }

    /// Replays the events the notifications carried; `false` when that is not enough
    /// (nothing was notified, an id was skipped, an event did not fit in its
    /// notification) and the table must be read.
    fn replay_notified(&self) -> bool {
        let pending = std::mem::take(&mut *self.notified.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(mut last) = self.last() else {
            return false;
        };
        if pending.is_empty() {
            return false;
        }
        for (id, data) in pending {
            if id <= last {
                continue; // already read from the table
            }
            match data {
                Some(data) if id == last + 1 => {
                    self.replay(id, &data);
                    last = id;
                }
                _ => return false,
            }
        }
        true
    }

    /// Drops events older than [`RETENTION`], raising the floor past them.
    async fn purge(&self) -> Result<()> {
        let mut c = self.pool.get().await.map_err(super::pool_err)?;
        let tx = c.transaction().await.map_err(super::db_err)?;
        tx.execute(
            "WITH gone AS (DELETE FROM cluster_events WHERE at < now() - make_interval(secs => $1) RETURNING id) \
             UPDATE cluster_events_floor SET purged = GREATEST(purged, (SELECT COALESCE(MAX(id), 0) FROM gone))",
            &[&(RETENTION.as_secs_f64())],
        )
        .await
        .map_err(super::db_err)?;
        tx.commit().await.map_err(super::db_err)
    }

    /// Replays on every notification and every `frequency`; after a failure, reloads
    /// everything once the database answers again.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failing = false;
        let mut last_purge = tokio::time::Instant::now();
        loop {
            let notified = tokio::select! {
                _ = self.wake.notified() => true,
                _ = tokio::time::sleep(self.frequency) => false,
                _ = stop.changed() => return,
            };
            // The poll always reads the table: it is what heals lost notifications.
            let done = notified && !failing && self.replay_notified();
            match if done { Ok(()) } else { self.catch_up().await } {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("database reachable again; reloading the configuration");
                    self.resync();
                }
                Ok(()) => {}
                // Before the first successful read there is nothing to resync (the first
                // read decides whether to reload), e.g. while the schema is being created.
                Err(_) if self.last().is_none() => {}
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot read cluster events; serving the last configuration");
                    }
                    failing = true;
                }
            }
            if !failing && last_purge.elapsed() > Duration::from_secs(60) {
                last_purge = tokio::time::Instant::now();
                if let Err(e) = self.purge().await {
                    tracing::warn!(error = %e, "cannot purge old cluster events");
                }
            }
        }
    }
}

/// Keeps one connection LISTENing and wakes the feed on each notification, reconnecting
/// (and catching up) after it drops.
pub(crate) async fn listen(
    opts: PgOptions,
    (wake, notified): (Arc<Notify>, Notified),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let to = (wake.clone(), notified.clone());
        let connected = match opts.tls() {
            Ok(Some(tls)) => listen_once(&opts, tls, to).await,
            Ok(None) => listen_once(&opts, tokio_postgres::NoTls, to).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok((client, ended)) => {
                tracing::debug!("listening for cluster events");
                // Whatever was written while not listening.
                wake.notify_one();
                tokio::select! {
                    _ = ended => tracing::warn!("the cluster-events LISTEN connection was lost; polling until it is back"),
                    _ = stop.changed() => return,
                }
                drop(client);
            }
            Err(e) => tracing::debug!(error = %e, "cannot LISTEN for cluster events"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn listen_once<T>(
    opts: &PgOptions,
    tls: T,
    (wake, notified): (Arc<Notify>, Notified),
) -> Result<(tokio_postgres::Client, tokio::sync::oneshot::Receiver<()>)>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut conn) = opts
        .pg_config("tollgate-listen")
        .connect(tls)
        .await
        .map_err(super::db_err)?;
    let (done, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    queue(&notified, n.payload());
                    wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN connection ended");
                    break;
                }
            }
        }
        let _ = done.send(());
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(super::db_err)?;
    Ok((client, ended))
}

/// Queues a notification's `id[ text]` payload for the feed (one that does not parse
/// still wakes it, and the feed then reads the table).
fn queue(notified: &Notified, payload: &str) {
    let (id, data) = match payload.split_once(' ') {
        Some((id, data)) => (id, Some(data.to_owned())),
        None => (payload, None),
    };
    let Ok(id) = id.parse::<i64>() else {
        return;
    };
    let mut q = notified.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() >= QUEUE_MAX {
        q.pop_front();
    }
    q.push_back((id, data));
}
