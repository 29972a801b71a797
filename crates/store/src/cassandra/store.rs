//! [`CassandraStore`]: the [`Store`] operations as CQL statements (see the module docs
//! of [`super`] for the tables).
//!
//! What is atomic (Cassandra has no transactions across partitions):
//! - A write's plain rows — the entity row, its `refs` rows, and the `cluster_events`
//!   row that tells the other nodes — go in one LOGGED BATCH: all of them land or none,
//!   even if this process dies once it is sent (Cassandra's batchlog finishes it). A
//!   delete's whole cascade is one batch too. Only a batch above Cassandra's
//!   `batch_size_fail_threshold` (50 KiB by default: huge rows) is written statement by
//!   statement, ordered so that a failure leaves at worst stale `refs` rows (readers
//!   check them against the child row and skip them) or a change without its event.
//! - Unique values are claimed first, each with its own LWT (a batch cannot hold LWTs on
//!   other partitions). When the batch then surely failed, the claims are given back;
//!   when it may have landed (a timeout), or the process died in between, a claim stays
//!   behind, and the next claimant takes it over once it is older than any write in
//!   progress and its owner row does not hold the value (deleted, renamed or expired).
//!   Values a rename or delete gives up are released after the batch, the same way.
//! - Not atomic: imports (`import`, `replace_all`), which write row by row.

use super::conn::{decode, Conn, Failed, Kind, Writes};
use super::events::{self, Feed};
use super::options::CassandraSettings;
use super::paging::{self, Listing};
use super::{admin_tokens, counters, schema, unique};
use crate::codec;
use crate::paging::{decode_tag_offset, encode_tag_offset};
use crate::rules::{self, now, parse_row, take_ttl, with_ttl};
use crate::WriteMode as Write;
use crate::{
    AdminToken, ChangeEvent, ChangeEvents, ChangeOp, Changes, CounterIncrement, CounterTable,
    Dataset, EntitySet, MigrationStatus, Page, PageQuery, RawRow, RowChange, ScanPage, Store,
    TagFilter, TagPage,
};
use async_trait::async_trait;
use scylla::value::CqlValue;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tollgate_model::{entities, EntitySchema, Error, Result, Row};

/// A row checked, claimed and added to a batch, waiting for the batch.
struct Prepared {
    id: String,
    /// Unique values claimed for it.
    claimed: Vec<String>,
    /// Unique values its old version held and it gave up.
    gone: Vec<String>,
    change: RowChange,
    row: Row,
}

/// Rows a write deletes: their change events, and the unique values to release after.
#[derive(Default)]
struct Removed {
    changes: Vec<RowChange>,
    freed: Vec<(String, Vec<String>)>,
}

/// Rows read per query when scanning a partition.
const SCAN_BATCH: usize = 1000;

pub struct CassandraStore {
    conn: Arc<Conn>,
    version: Arc<watch::Sender<Changes>>,
    events: broadcast::Sender<Arc<ChangeEvent>>,
    stop: watch::Sender<bool>,
    hub: Arc<crate::Hub>,
}

impl Drop for CassandraStore {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The key of a unique value in `uniques`.
fn ukey(entity: &str, column: &str, value: &str) -> String {
    format!("{entity}\u{1f}{}\u{1f}{value}", column.trim_matches('"'))
}

/// The unique values (and cache key) `row` must own, with Kong's error for each.
fn claims(schema: &'static EntitySchema, row: &Row) -> Vec<(String, Error)> {
    rules::checks(schema, row)
        .into_iter()
        .filter(|c| !c.must_exist)
        .map(|c| (ukey(c.table, &c.column, &c.value), c.error))
        .collect()
}

/// A text value of a batched statement.
fn text(s: &str) -> Option<CqlValue> {
    Some(CqlValue::Text(s.to_string()))
}

/// A row's seconds to live in Cassandra (0: forever), a minute past its expiry.
fn cql_ttl(expires: Option<i64>) -> i32 {
    expires.map_or(0, |e| ((e - now()).max(0) + 60).min(i32::MAX as i64) as i32)
}

fn live(expires: Option<i64>) -> bool {
    expires.is_none_or(|t| t > now())
}

/// The foreign-key field names of a schema.
fn fk_fields(schema: &EntitySchema) -> Vec<&'static str> {
    schema.foreign_fields().map(|f| f.name).collect()
}

/// The live rows of a listing that pass its tag filter.
struct Shown<'a> {
    schema: &'static EntitySchema,
    tags: Option<&'a TagFilter>,
}

impl Shown<'_> {
    fn show(&self, r: RawRow) -> Result<Option<Row>> {
        if !live(r.expires_at) {
            return Ok(None);
        }
        let row = with_ttl(self.schema, parse_row(&r.text)?, r.expires_at);
        Ok(self.tags.is_none_or(|t| t.matches(&row)).then_some(row))
    }
}

impl paging::Keep<(String, String, Option<i64>)> for Shown<'_> {
    type Out = Row;
    async fn keep(
        &self,
        (id, text, expires_at): (String, String, Option<i64>),
    ) -> Result<Option<Row>> {
        self.show(RawRow {
            id: id.into_boxed_str(),
            text: text.into_boxed_str(),
            expires_at,
        })
    }
}

/// The children of one parent, listed from `refs`.
struct Children<'a> {
    store: &'a CassandraStore,
    field: &'a str,
    parent: &'a str,
    shown: Shown<'a>,
}

impl paging::Keep<(String,)> for Children<'_> {
    type Out = Row;
    async fn keep(&self, (id,): (String,)) -> Result<Option<Row>> {
        match self.store.select_raw(self.shown.schema, &id, true).await? {
            // A reference whose child moved to another parent is skipped.
            Some(r) if rules::fk_id(&parse_row(&r.text)?, self.field) == Some(self.parent) => {
                self.shown.show(r)
            }
            _ => Ok(None),
        }
    }
}

impl CassandraStore {
    /// Starts following `cluster_events`. Does not need Cassandra to be up or the keyspace
    /// to exist: the session is made on first use. Needs a Tokio runtime.
    pub async fn connect(settings: CassandraSettings) -> Result<Self> {
        let frequency = settings
            .update_frequency
            .max(std::time::Duration::from_millis(10));
        let conn = Arc::new(Conn::new(settings));
        let (version, _) = watch::channel(Changes::default());
        let version = Arc::new(version);
        let events = crate::event_channel();
        let (stop, _) = watch::channel(false);
        // Where replay starts: anything written from now on reaches the subscribers.
        let cursor = events::server_now(&conn).await.ok();
        let hub = Arc::new(crate::Hub::default());
        let feed = Feed {
            conn: conn.clone(),
            events: events.clone(),
            version: version.clone(),
            frequency,
            cursor,
            seen: HashMap::new(),
            hub: hub.clone(),
        };
        tokio::spawn(feed.run(stop.subscribe()));
        Ok(CassandraStore {
            conn,
            version,
            events,
            stop,
            hub,
        })
    }

    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    pub fn settings(&self) -> &CassandraSettings {
        &self.conn.settings
    }

    fn t(&self, table: &str) -> String {
        self.conn.ks.t(table)
    }

    /// The stored row `id` (an expired one too with `expired`).
    async fn select_raw(
        &self,
        schema: &EntitySchema,
        id: &str,
        expired: bool,
    ) -> Result<Option<RawRow>> {
        let r = self
            .conn
            .rows(
                &format!(
                    "SELECT data, expires FROM {} WHERE entity = ? AND id = ?",
                    self.t("entities")
                ),
                Kind::Read,
                (schema.name, id),
            )
            .await?;
        Ok(decode::<(String, Option<i64>)>(&r)?
            .into_iter()
            .next()
            .filter(|(_, exp)| expired || live(*exp))
            .map(|(text, expires_at)| RawRow {
                id: id.into(),
                text: text.into_boxed_str(),
                expires_at,
            }))
    }

    /// Up to `limit` rows of `entity` after id `after` (`>=` with `inclusive`), in id order.
    async fn rows_after(
        &self,
        entity: &str,
        after: &str,
        inclusive: bool,
        limit: usize,
    ) -> Result<Vec<RawRow>> {
        let op = if inclusive { ">=" } else { ">" };
        let r = self
            .conn
            .rows(
                &format!(
                    "SELECT id, data, expires FROM {} WHERE entity = ? AND id {op} ? LIMIT ?",
                    self.t("entities")
                ),
                Kind::Read,
                (entity, after, limit as i32),
            )
            .await?;
        Ok(decode::<(String, String, Option<i64>)>(&r)?
            .into_iter()
            .map(|(id, text, expires_at)| RawRow {
                id: id.into_boxed_str(),
                text: text.into_boxed_str(),
                expires_at,
            })
            .collect())
    }

    /// The ids of `entity` rows whose `field` references `parent`, after `after`.
    async fn ref_ids(
        &self,
        entity: &str,
        field: &str,
        parent: &str,
        after: &str,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        let cql = format!(
            "SELECT id FROM {} WHERE entity = ? AND field = ? AND parent = ? AND id > ?",
            self.t("refs")
        );
        let r = match limit {
            Some(n) => {
                self.conn
                    .rows(
                        &format!("{cql} LIMIT ?"),
                        Kind::Read,
                        (entity, field, parent, after, n as i32),
                    )
                    .await?
            }
            None => {
                self.conn
                    .rows(&cql, Kind::Read, (entity, field, parent, after))
                    .await?
            }
        };
        Ok(decode::<(String,)>(&r)?
            .into_iter()
            .map(|(id,)| id)
            .collect())
    }

    fn set_ref(&self, w: &mut Writes, entity: &str, field: &str, parent: &str, id: &str, ttl: i32) {
        w.push(
            format!(
                "INSERT INTO {} (entity, field, parent, id) VALUES (?, ?, ?, ?) USING TTL ?",
                self.t("refs")
            ),
            vec![
                text(entity),
                text(field),
                text(parent),
                text(id),
                Some(CqlValue::Int(ttl)),
            ],
        );
    }

    fn unset_ref(&self, w: &mut Writes, entity: &str, field: &str, parent: &str, id: &str) {
        w.push(
            format!(
                "DELETE FROM {} WHERE entity = ? AND field = ? AND parent = ? AND id = ?",
                self.t("refs")
            ),
            vec![text(entity), text(field), text(parent), text(id)],
        );
    }

    /// The row that claimed the unique value `key`, if any (a plain read: callers check
    /// that row before trusting it).
    async fn claim_owner(&self, key: &str) -> Result<Option<String>> {
        let r = self
            .conn
            .rows(
                &format!("SELECT id FROM {} WHERE k = ?", self.t("uniques")),
                Kind::Read,
                (key,),
            )
            .await?;
        Ok(decode::<(Option<String>,)>(&r)?
            .into_iter()
            .next()
            .and_then(|(id,)| id))
    }

    /// Whether row `owner` of `schema` still uses the unique value `key` (else its claim
    /// is stale: the row was deleted, renamed or expired without releasing it).
    async fn still_uses(
        &self,
        schema: &'static EntitySchema,
        owner: &str,
        key: &str,
    ) -> Result<bool> {
        let Some(raw) = self.select_raw(schema, owner, false).await? else {
            return Ok(false);
        };
        let row = parse_row(&raw.text)?;
        Ok(claims(schema, &row).iter().any(|(k, _)| k == key))
    }

    /// How old a claim must be before a row that does not use it counts as gone: longer
    /// than a write between claiming and writing its row can take.
    fn claim_grace(&self) -> std::time::Duration {
        self.conn.settings.timeout * 4 + std::time::Duration::from_secs(10)
    }

    /// Claims `key` for `id`, taking over stale claims; Kong's error when a live row
    /// holds it.
    async fn claim(
        &self,
        schema: &'static EntitySchema,
        key: &str,
        id: &str,
        error: Error,
    ) -> Result<()> {
        let mut stale: Option<String> = None;
        loop {
            match unique::claim(&self.conn, key, id, stale.as_deref()).await? {
                unique::Claim::Ours => return Ok(()),
                unique::Claim::HeldBy(other) => {
                    // A claim whose row does not use it is stale only once it is older
                    // than any write in progress: a fresh one may belong to a create or
                    // rename that has claimed but not yet written its row.
                    if self.still_uses(schema, &other, key).await?
                        || !unique::older_than(&self.conn, key, self.claim_grace()).await?
                    {
                        return Err(error);
                    }
                    if stale.as_deref() == Some(other.as_str()) {
                        return Err(Error::database(format!(
                            "cassandra: could not take over the unique value {key:?}"
                        )));
                    }
                    stale = Some(other);
                }
            }
        }
    }

    /// Verifies `row`'s constraints in Kong's order (unique fields, cache key, foreign
    /// keys), claiming the unique values it does not hold yet (`held`): the keys claimed.
    /// On failure the claims made here are released.
    async fn check_and_claim(
        &self,
        schema: &'static EntitySchema,
        row: &Row,
        held: &HashSet<String>,
        pending: &[(&str, &str)],
    ) -> Result<Vec<String>> {
        let id = rules::row_id(row);
        let mut claimed: Vec<String> = Vec::new();
        let result = async {
            for c in rules::checks(schema, row) {
                if c.must_exist {
                    if pending.contains(&(c.table, c.value.as_str())) {
                        continue;
                    }
                    let parent = entities::by_name(c.table)
                        .ok_or_else(|| Error::database(format!("unknown entity {}", c.table)))?;
                    if self.select_raw(parent, &c.value, false).await?.is_none() {
                        return Err(c.error);
                    }
                    continue;
                }
                let key = ukey(c.table, &c.column, &c.value);
                if held.contains(&key) {
                    continue;
                }
                self.claim(schema, &key, &id, c.error).await?;
                claimed.push(key);
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            self.release(&claimed, &id).await;
        }
        result.map(|()| claimed)
    }

    /// Gives up claims this write no longer needs. A claim left behind (Cassandra
    /// unreachable) only delays reusing its value: it is taken over once stale.
    async fn release(&self, keys: &[String], id: &str) {
        for k in keys {
            if let Err(e) = unique::release(&self.conn, k, id).await {
                tracing::warn!(
                    "cassandra: claim {k:?} of {id} left behind: {}",
                    e.message()
                );
            }
        }
    }

    /// The writes that store the row and its references; `old` is the version it
    /// replaces. New references come first and stale ones go last, so that even written
    /// one by one (a batch too large) a failure leaves at worst a stale reference, which
    /// readers check against the child row and skip, never a row its parent cannot find.
    fn row_writes(
        &self,
        w: &mut Writes,
        schema: &'static EntitySchema,
        row: &Row,
        expires: Option<i64>,
        old: Option<&Row>,
    ) -> Result<RawRow> {
        let id = rules::row_id(row);
        let text_row = serde_json::to_string(row).map_err(|e| Error::database(e.to_string()))?;
        let ttl = cql_ttl(expires);
        let fks = fk_fields(schema);
        for f in &fks {
            if let Some(n) = rules::fk_id(row, f) {
                self.set_ref(w, schema.name, f, n, &id, ttl);
            }
        }
        w.push(
            format!(
                "INSERT INTO {} (entity, id, data, expires) VALUES (?, ?, ?, ?) USING TTL ?",
                self.t("entities")
            ),
            vec![
                text(schema.name),
                text(&id),
                text(&text_row),
                expires.map(CqlValue::BigInt),
                Some(CqlValue::Int(ttl)),
            ],
        );
        for f in &fks {
            let new = rules::fk_id(row, f);
            if let Some(p) = old
                .and_then(|o| rules::fk_id(o, f))
                .filter(|p| Some(*p) != new)
            {
                self.unset_ref(w, schema.name, f, p, &id);
            }
        }
        Ok(RawRow {
            id: id.into(),
            text: text_row.into_boxed_str(),
            expires_at: expires,
        })
    }

    /// Applies `w` with the event recording its changes for the other nodes, in one
    /// logged batch (the change and its event land together or not at all), then
    /// delivers the event here.
    async fn commit(&self, mut w: Writes, e: ChangeEvent) -> std::result::Result<(), Failed> {
        let data = match &e {
            ChangeEvent::Reset => codec::encode(&[], true),
            ChangeEvent::Rows(rows) => codec::encode(rows, false),
        };
        w.push(
            events::insert_cql(&self.conn),
            vec![
                text(events::CHANNEL),
                text(&self.conn.settings.node_id),
                Some(CqlValue::Text(data)),
            ],
        );
        self.conn.apply(&w).await?;
        codec::deliver(&self.events, &self.version, e);
        Ok(())
    }

    /// Checks and claims what writing `row` needs, and adds its writes to `w`: the row
    /// ready to commit. `pending` rows are written in the same batch and count as
    /// existing for foreign keys (a certificate for its SNIs).
    async fn prepare(
        &self,
        w: &mut Writes,
        schema: &'static EntitySchema,
        mut row: Row,
        how: Write,
        pending: &[(&str, &str)],
    ) -> Result<Prepared> {
        let id = rules::row_id(&row);
        let old = match how {
            Write::Insert => {
                if self.select_raw(schema, &id, false).await?.is_some() {
                    return Err(Error::primary_key_violation(&id));
                }
                self.select_raw(schema, &id, true).await?
            }
            Write::Upsert => {
                let old = self.select_raw(schema, &id, true).await?;
                rules::keep_created_at(&mut row, old.as_ref())?;
                old
            }
            Write::Update => match self.select_raw(schema, &id, false).await? {
                Some(o) => Some(o),
                None => return Err(Error::not_found(json!({ "id": id }))),
            },
        };
        let old_row = old.as_ref().map(|o| parse_row(&o.text)).transpose()?;
        let old_keys: HashSet<String> = old_row
            .as_ref()
            .map(|o| claims(schema, o).into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default();
        let exp = take_ttl(schema, &mut row);
        let claimed = self
            .check_and_claim(schema, &row, &old_keys, pending)
            .await?;
        let new = match self.row_writes(w, schema, &row, exp, old_row.as_ref()) {
            Ok(new) => new,
            Err(e) => {
                self.release(&claimed, &id).await;
                return Err(e);
            }
        };
        // Values a rename gives up, once the row no longer uses them.
        let new_keys: HashSet<String> = claims(schema, &row).into_iter().map(|(k, _)| k).collect();
        let gone = old_keys.difference(&new_keys).cloned().collect();
        // An expired row replaced by a new one is gone, not "old", for the subscribers.
        let old = old.filter(|o| live(o.expires_at) || matches!(how, Write::Update));
        Ok(Prepared {
            change: RowChange {
                entity: schema.name,
                id: new.id.clone(),
                op: ChangeOp::Upsert,
                new: Some(new),
                old,
            },
            row: with_ttl(schema, row, exp),
            id,
            claimed,
            gone,
        })
    }

    /// Commits removals and prepared rows as one batch with their event. Claims of rows
    /// that surely were not written are given back at once; when they may have been (or
    /// may still be), they stay until found stale. Values the removed rows held and the
    /// written rows gave up are released once the batch landed.
    async fn commit_prepared(
        &self,
        w: Writes,
        removed: Removed,
        rows: Vec<Prepared>,
    ) -> Result<Vec<Row>> {
        let mut changes = removed.changes;
        changes.extend(rows.iter().map(|p| p.change.clone()));
        if let Err(f) = self.commit(w, ChangeEvent::Rows(changes)).await {
            if !f.maybe_applied {
                self.release_all(&rows).await;
            }
            return Err(f.error);
        }
        for (id, keys) in removed.freed {
            self.release(&keys, &id).await;
        }
        let mut out = Vec::with_capacity(rows.len());
        for p in rows {
            self.release(&p.gone, &p.id).await;
            out.push(p.row);
        }
        Ok(out)
    }

    /// Adds deleting `id` (and its cascade, children first) to `w`; nothing when there
    /// is no such row.
    async fn removal(
        &self,
        w: &mut Writes,
        removed: &mut Removed,
        schema: &'static EntitySchema,
        id: &str,
    ) -> Result<()> {
        let Some(old) = self.select_raw(schema, id, true).await? else {
            return Ok(());
        };
        let mut plan = Vec::new();
        self.plan_delete(schema, id.to_string(), old, &mut plan)
            .await?;
        for (s, old) in plan {
            let row = parse_row(&old.text)?;
            self.remove_writes(w, s, &old, &row);
            let keys = claims(s, &row).into_iter().map(|(k, _)| k).collect();
            removed.freed.push((old.id.to_string(), keys));
            removed.changes.push(RowChange {
                entity: s.name,
                id: old.id.clone(),
                op: ChangeOp::Delete,
                new: None,
                old: Some(old),
            });
        }
        Ok(())
    }

    async fn release_all(&self, rows: &[Prepared]) {
        for p in rows {
            self.release(&p.claimed, &p.id).await;
        }
    }

    async fn put(&self, schema: &'static EntitySchema, row: Row, how: Write) -> Result<Row> {
        let mut w = Writes::default();
        let p = self.prepare(&mut w, schema, row, how, &[]).await?;
        let mut rows = self.commit_prepared(w, Removed::default(), vec![p]).await?;
        Ok(rows.remove(0))
    }

    /// Everything deleting `id` removes, children first, or Kong's error when a child
    /// that does not cascade still references it.
    fn plan_delete<'a>(
        &'a self,
        schema: &'static EntitySchema,
        id: String,
        old: RawRow,
        plan: &'a mut Vec<(&'static EntitySchema, RawRow)>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for rel in rules::children_of(schema) {
                let field = rel.column.trim_matches('"').trim_start_matches("fk_");
                for cid in self.ref_ids(rel.child.name, field, &id, "", None).await? {
                    // References are checked against the child itself (a stale one
                    // left by a crash must not block the delete).
                    let Some(child) = self.select_raw(rel.child, &cid, true).await? else {
                        continue;
                    };
                    if rules::fk_id(&parse_row(&child.text)?, field) != Some(id.as_str()) {
                        continue;
                    }
                    if !rel.cascade {
                        return Err(rules::restricted(schema, rel.child));
                    }
                    if plan
                        .iter()
                        .any(|(s, r)| s.name == rel.child.name && r.id == child.id)
                    {
                        continue;
                    }
                    self.plan_delete(rel.child, cid, child, plan).await?;
                }
            }
            if schema.name == "ca_certificates" {
                let services = entities::by_name("services")
                    .ok_or_else(|| Error::database("unknown entity services"))?;
                for row in self.load_entity(services).await? {
                    let uses = row
                        .get("ca_certificates")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(id.as_str())));
                    if uses {
                        return Err(rules::ca_certificate_in_use());
                    }
                }
            }
            plan.push((schema, old));
            Ok(())
        })
    }

    /// The writes that remove a stored row and then its references (a stale reference
    /// is harmless: readers check it against the child row).
    fn remove_writes(
        &self,
        w: &mut Writes,
        schema: &'static EntitySchema,
        old: &RawRow,
        row: &Row,
    ) {
        w.push(
            format!(
                "DELETE FROM {} WHERE entity = ? AND id = ?",
                self.t("entities")
            ),
            vec![text(schema.name), text(&old.id)],
        );
        for f in fk_fields(schema) {
            if let Some(p) = rules::fk_id(row, f) {
                self.unset_ref(w, schema.name, f, p, &old.id);
            }
        }
    }

    /// Every live row of one entity, in id order.
    async fn load_entity(&self, schema: &'static EntitySchema) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let batch = self
                .rows_after(schema.name, &after, false, SCAN_BATCH)
                .await?;
            for r in &batch {
                if live(r.expires_at) {
                    out.push(with_ttl(schema, parse_row(&r.text)?, r.expires_at));
                }
            }
            match batch.last() {
                Some(last) if batch.len() == SCAN_BATCH => after = last.id.to_string(),
                _ => return Ok(out),
            }
        }
    }

    /// Writes every row of a whole configuration after checking it: unique values free
    /// (or held by the same id) and unique within it, foreign keys present in it or in
    /// the database. Nothing is written when a check fails.
    async fn import_rows(&self, data: &EntitySet) -> Result<()> {
        let mut keys: HashMap<String, String> = HashMap::new();
        let mut ids: HashSet<(&'static str, String)> = HashSet::new();
        let mut rows: Vec<(&'static EntitySchema, Row, Option<i64>)> = Vec::new();
        for schema in rules::import_order() {
            for text in data.rows(schema.name) {
                let mut row = text.to_row();
                let exp = take_ttl(schema, &mut row);
                ids.insert((schema.name, rules::row_id(&row)));
                rows.push((schema, row, exp));
            }
        }
        for (schema, row, _) in &rows {
            let id = rules::row_id(row);
            for c in rules::checks(schema, row) {
                if c.must_exist {
                    let in_set = ids.contains(&(c.table, c.value.clone()));
                    if !in_set {
                        let parent = entities::by_name(c.table).ok_or_else(|| {
                            Error::database(format!("unknown entity {}", c.table))
                        })?;
                        if self.select_raw(parent, &c.value, false).await?.is_none() {
                            return Err(c.error);
                        }
                    }
                    continue;
                }
                let key = ukey(c.table, &c.column, &c.value);
                if keys
                    .insert(key.clone(), id.clone())
                    .is_some_and(|other| other != id)
                {
                    return Err(c.error);
                }
                if let Some(owner) = self.claim_owner(&key).await? {
                    if owner != id && self.still_uses(schema, &owner, &key).await? {
                        return Err(c.error);
                    }
                }
            }
        }
        for (schema, row, exp) in &rows {
            let id = rules::row_id(row);
            let old = self.select_raw(schema, &id, true).await?;
            let old_row = old.as_ref().map(|o| parse_row(&o.text)).transpose()?;
            for (key, error) in claims(schema, row) {
                self.claim(schema, &key, &id, error).await?;
            }
            // Each row with its references at once; the import as a whole is not atomic.
            let mut w = Writes::default();
            self.row_writes(&mut w, schema, row, *exp, old_row.as_ref())?;
            self.conn.apply(&w).await.map_err(|f| f.error)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for CassandraStore {
    fn kind(&self) -> &'static str {
        "cassandra"
    }

    async fn insert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.put(schema, row, Write::Insert).await
    }

    /// The parent, its removed and its added children in one logged batch with one
    /// event: a crash or a refused child never leaves a certificate without its SNIs.
    async fn write_family(
        &self,
        schema: &'static EntitySchema,
        row: Row,
        mode: Write,
        add: Vec<(&'static EntitySchema, Row)>,
        remove: Vec<(&'static EntitySchema, String)>,
    ) -> Result<Row> {
        let parent_id = rules::row_id(&row);
        let pending = [(schema.name, parent_id.as_str())];
        let mut w = Writes::default();
        let mut removed = Removed::default();
        for (s, id) in remove {
            self.removal(&mut w, &mut removed, s, &id).await?;
        }
        let mut rows = Vec::with_capacity(add.len() + 1);
        let all = std::iter::once((schema, row, mode))
            .chain(add.into_iter().map(|(s, r)| (s, r, Write::Insert)));
        for (s, r, m) in all {
            match self.prepare(&mut w, s, r, m, &pending).await {
                Ok(p) => rows.push(p),
                Err(e) => {
                    self.release_all(&rows).await;
                    return Err(e);
                }
            }
        }
        let mut out = self.commit_prepared(w, removed, rows).await?;
        Ok(out.remove(0))
    }

    async fn upsert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.put(schema, row, Write::Upsert).await
    }

    async fn update(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.put(schema, row, Write::Update).await
    }

    async fn select(&self, schema: &'static EntitySchema, id: &str) -> Result<Option<Row>> {
        self.select_raw(schema, id, false)
            .await?
            .map(|r| parse_row(&r.text).map(|row| with_ttl(schema, row, r.expires_at)))
            .transpose()
    }

    async fn select_by_field(
        &self,
        schema: &'static EntitySchema,
        field: &str,
        value: &str,
    ) -> Result<Option<Row>> {
        let Some(f) = schema.field(field).filter(|f| f.unique) else {
            return Err(Error::database(format!(
                "'{field}' is not a unique field of {}",
                schema.name
            )));
        };
        let key = ukey(schema.name, &rules::unique_col(f.name), value);
        let Some(owner) = self.claim_owner(&key).await? else {
            return Ok(None);
        };
        let Some(raw) = self.select_raw(schema, &owner, false).await? else {
            return Ok(None);
        };
        let row = parse_row(&raw.text)?;
        // A stale claim (its row renamed) must not answer for the old value.
        if rules::unique_text(row.get(f.name)).as_deref() != Some(value) {
            return Ok(None);
        }
        Ok(Some(with_ttl(schema, row, raw.expires_at)))
    }

    async fn delete(&self, schema: &'static EntitySchema, id: &str) -> Result<()> {
        let mut w = Writes::default();
        let mut removed = Removed::default();
        self.removal(&mut w, &mut removed, schema, id).await?;
        if removed.changes.is_empty() {
            return Ok(());
        }
        self.commit_prepared(w, removed, Vec::new()).await?;
        Ok(())
    }

    async fn page(&self, schema: &'static EntitySchema, q: &PageQuery) -> Result<Page> {
        let shown = Shown {
            schema,
            tags: q.tags.as_ref(),
        };
        let filtered = q.tags.is_some();
        let (rows, next_offset) = match &q.foreign {
            None => {
                let l = Listing {
                    cql: format!(
                        "SELECT id, data, expires FROM {} WHERE entity = ?",
                        self.t("entities")
                    ),
                    values: (schema.name,),
                    scope: schema.name.to_string(),
                    filtered,
                };
                paging::page(&self.conn, &l, q.offset.as_deref(), q.size, &shown).await?
            }
            Some((field, parent)) => {
                let l = Listing {
                    cql: format!(
                        "SELECT id FROM {} WHERE entity = ? AND field = ? AND parent = ?",
                        self.t("refs")
                    ),
                    values: (schema.name, *field, parent.as_str()),
                    scope: format!("{}\u{1f}{field}\u{1f}{parent}", schema.name),
                    filtered,
                };
                let children = Children {
                    store: self,
                    field,
                    parent,
                    shown,
                };
                paging::page(&self.conn, &l, q.offset.as_deref(), q.size, &children).await?
            }
        };
        Ok(Page { rows, next_offset })
    }

    async fn replace_all(&self, data: EntitySet) -> Result<()> {
        for t in ["entities", "refs", "uniques"] {
            self.conn
                .run(&format!("TRUNCATE {}", self.t(t)), Kind::Write, ())
                .await?;
        }
        let done = self.import_rows(&data).await;
        self.commit(Writes::default(), ChangeEvent::Reset)
            .await
            .map_err(|f| f.error)?;
        done
    }

    async fn import(&self, data: EntitySet) -> Result<()> {
        self.import_rows(&data).await?;
        self.commit(Writes::default(), ChangeEvent::Reset)
            .await
            .map_err(|f| f.error)
    }

    async fn tags_page(
        &self,
        tag: Option<&str>,
        size: usize,
        offset: Option<&str>,
    ) -> Result<TagPage> {
        let after = offset.map(decode_tag_offset).transpose()?;
        let mut names: Vec<&'static EntitySchema> = entities::ALL
            .iter()
            .filter(|s| s.field("tags").is_some())
            .collect();
        names.sort_by_key(|s| s.name);
        let mut out: Vec<(String, String, String)> = Vec::new();
        'entities: for s in names {
            let mut from = String::new();
            let mut inclusive = false;
            if let Some((e, id, _)) = &after {
                if s.name < e.as_str() {
                    continue;
                }
                if s.name == e.as_str() {
                    from = id.clone();
                    inclusive = true;
                }
            }
            loop {
                let batch = self
                    .rows_after(s.name, &from, inclusive, SCAN_BATCH)
                    .await?;
                inclusive = false;
                for r in &batch {
                    if !live(r.expires_at) {
                        continue;
                    }
                    let row = parse_row(&r.text)?;
                    let tags: BTreeSet<&str> = row
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    for t in tags {
                        if tag.is_some_and(|want| want != t) {
                            continue;
                        }
                        let triple = (s.name.to_string(), r.id.to_string(), t.to_string());
                        if after.as_ref().is_some_and(|a| &triple <= a) {
                            continue;
                        }
                        out.push(triple);
                        if out.len() > size {
                            break 'entities;
                        }
                    }
                }
                match batch.last() {
                    Some(last) if batch.len() == SCAN_BATCH => from = last.id.to_string(),
                    _ => break,
                }
            }
        }
        let next_offset = if out.len() > size {
            out.truncate(size);
            out.last().map(encode_tag_offset)
        } else {
            None
        };
        Ok(TagPage {
            rows: out,
            next_offset,
        })
    }

    async fn load(&self, names: &[&str]) -> Result<Dataset> {
        let mut out = Dataset::new();
        for s in rules::schemas(names)? {
            out.insert(s.name.to_string(), self.load_entity(s).await?);
        }
        Ok(out)
    }

    async fn scan(&self, entity: &str, after: Option<&str>, limit: usize) -> Result<ScanPage> {
        let schema = entities::by_name(entity)
            .ok_or_else(|| Error::database(format!("unknown entity {entity}")))?;
        let rows = self
            .rows_after(schema.name, after.unwrap_or(""), false, limit.max(1))
            .await?;
        let next = if rows.len() < limit {
            None
        } else {
            rows.last().map(|r| r.id.to_string())
        };
        Ok(ScanPage {
            rows: rows.into_iter().filter(|r| live(r.expires_at)).collect(),
            next,
        })
    }

    fn events(&self) -> ChangeEvents {
        self.events.subscribe()
    }

    fn changes(&self) -> watch::Receiver<Changes> {
        self.version.subscribe()
    }

    fn hub(&self) -> &crate::Hub {
        &self.hub
    }

    async fn broadcast(&self, channel: &str, purge: crate::Purge) -> Result<()> {
        events::broadcast(&self.conn, &self.hub, channel, purge).await
    }

    async fn ping(&self) -> Result<()> {
        self.conn
            .rows("SELECT release_version FROM system.local", Kind::Read, ())
            .await
            .map(drop)
    }

    async fn migrations_status(&self) -> Result<MigrationStatus> {
        Ok(MigrationStatus::from_executed(
            schema::executed(&self.conn).await?,
        ))
    }

    async fn migrations_bootstrap(&self) -> Result<Vec<String>> {
        self.migrations_up().await
    }

    async fn migrations_up(&self) -> Result<Vec<String>> {
        let me = format!("{}/{}", self.conn.settings.node_id, uuid::Uuid::new_v4());
        schema::migrate(&self.conn, &me).await
    }

    async fn migrations_reset(&self) -> Result<()> {
        schema::reset(&self.conn).await
    }

    async fn increment_counters(
        &self,
        table: CounterTable,
        rows: Vec<CounterIncrement>,
    ) -> Result<Vec<i64>> {
        if rows.is_empty() {
            self.ping().await?;
            return Ok(Vec::new());
        }
        counters::increment(&self.conn, table, &rows).await
    }

    async fn purge_counters(&self, now: i64) -> Result<()> {
        counters::purge(&self.conn, now).await
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        admin_tokens::list(&self.conn).await
    }

    async fn admin_token_create(&self, token: AdminToken) -> Result<()> {
        admin_tokens::create(&self.conn, &token).await?;
        self.admin_tokens_changed().await
    }

    async fn admin_token_revoke(&self, name: &str) -> Result<bool> {
        let gone = admin_tokens::revoke(&self.conn, name).await?;
        self.admin_tokens_changed().await?;
        Ok(gone)
    }
}

impl CassandraStore {
    /// Moves the Admin API tokens' counter here at once and, through `cluster_events`,
    /// on every other node.
    async fn admin_tokens_changed(&self) -> Result<()> {
        self.version.send_modify(|c| c.bump(&[crate::ADMIN_TOKENS]));
        events::append(&self.conn, codec::ADMIN_TOKENS_EVENT.to_string()).await
    }
}
