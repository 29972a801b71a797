//! [`CassandraStore`]: the [`Store`] operations as CQL statements (see the module docs
//! of [`super`] for the tables).
//!
//! Writes are not transactions: a write claims its unique values (LWT), checks its
//! foreign keys, writes the row and its references, releases values it no longer uses,
//! then records its event. A crash midway leaves at worst a claim nobody uses, which the
//! next claimant takes over once it is older than any write in progress and its owner row
//! does not hold the value (deleted, renamed or expired).

use super::conn::{decode, Conn, Kind};
use super::events::{self, Feed};
use super::options::CassandraSettings;
use super::{admin_tokens, counters, schema, unique};
use crate::codec;
use crate::paging::{decode_offset, decode_tag_offset, encode_offset, encode_tag_offset};
use crate::rules::{self, now, parse_row, take_ttl, with_ttl};
use crate::{
    AdminToken, ChangeEvent, ChangeEvents, ChangeOp, Changes, CounterIncrement, CounterTable,
    Dataset, EntitySet, MigrationStatus, Page, PageQuery, RawRow, RowChange, ScanPage, Store,
    TagPage,
};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tollgate_model::{entities, EntitySchema, Error, Result, Row};

/// Rows read per query when scanning a partition.
const SCAN_BATCH: usize = 1000;

pub struct CassandraStore {
    conn: Arc<Conn>,
    version: Arc<watch::Sender<Changes>>,
    events: broadcast::Sender<Arc<ChangeEvent>>,
    stop: watch::Sender<bool>,
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

enum Write {
    Insert,
    Upsert,
    Update,
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
        let feed = Feed {
            conn: conn.clone(),
            events: events.clone(),
            version: version.clone(),
            frequency,
            cursor,
            seen: HashMap::new(),
        };
        tokio::spawn(feed.run(stop.subscribe()));
        Ok(CassandraStore {
            conn,
            version,
            events,
            stop,
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

    async fn set_ref(
        &self,
        entity: &str,
        field: &str,
        parent: &str,
        id: &str,
        ttl: i32,
    ) -> Result<()> {
        self.conn
            .run(
                &format!(
                    "INSERT INTO {} (entity, field, parent, id) VALUES (?, ?, ?, ?) USING TTL ?",
                    self.t("refs")
                ),
                Kind::Write,
                (entity, field, parent, id, ttl),
            )
            .await
            .map(drop)
    }

    async fn unset_ref(&self, entity: &str, field: &str, parent: &str, id: &str) -> Result<()> {
        self.conn
            .run(
                &format!(
                    "DELETE FROM {} WHERE entity = ? AND field = ? AND parent = ? AND id = ?",
                    self.t("refs")
                ),
                Kind::Write,
                (entity, field, parent, id),
            )
            .await
            .map(drop)
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
    /// keys), claiming the unique values it does not hold yet (`held`). On failure the
    /// claims made here are released.
    async fn check_and_claim(
        &self,
        schema: &'static EntitySchema,
        row: &Row,
        held: &HashSet<String>,
    ) -> Result<()> {
        let id = rules::row_id(row);
        let mut claimed: Vec<String> = Vec::new();
        let result = async {
            for c in rules::checks(schema, row) {
                if c.must_exist {
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
            for k in &claimed {
                let _ = unique::release(&self.conn, k, &id).await;
            }
        }
        result
    }

    /// Writes the row (and its references) as stored; `old` is the version it replaces.
    async fn write_row(
        &self,
        schema: &'static EntitySchema,
        row: &Row,
        expires: Option<i64>,
        old: Option<&Row>,
    ) -> Result<RawRow> {
        let id = rules::row_id(row);
        let text = serde_json::to_string(row).map_err(|e| Error::database(e.to_string()))?;
        let ttl = cql_ttl(expires);
        self.conn
            .run(
                &format!(
                    "INSERT INTO {} (entity, id, data, expires) VALUES (?, ?, ?, ?) USING TTL ?",
                    self.t("entities")
                ),
                Kind::Write,
                (schema.name, &id, &text, expires, ttl),
            )
            .await?;
        for f in fk_fields(schema) {
            let new = rules::fk_id(row, f);
            let prev = old.and_then(|o| rules::fk_id(o, f));
            if let Some(p) = prev.filter(|p| Some(*p) != new) {
                self.unset_ref(schema.name, f, p, &id).await?;
            }
            if let Some(n) = new {
                self.set_ref(schema.name, f, n, &id, ttl).await?;
            }
        }
        Ok(RawRow {
            id: id.into(),
            text: text.into_boxed_str(),
            expires_at: expires,
        })
    }

    /// Records one commit's changes for the other nodes and delivers it here.
    async fn commit(&self, e: ChangeEvent) -> Result<()> {
        let data = match &e {
            ChangeEvent::Reset => codec::encode(&[], true),
            ChangeEvent::Rows(rows) => codec::encode(rows, false),
        };
        codec::deliver(&self.events, &self.version, e);
        self.conn
            .run(
                &format!(
                    "INSERT INTO {} (channel, at, node_id, data) VALUES (?, now(), ?, ?) USING TTL {}",
                    self.t("cluster_events"),
                    schema::EVENTS_TTL
                ),
                Kind::Write,
                (events::CHANNEL, &self.conn.settings.node_id, data),
            )
            .await
            .map(drop)
    }

    async fn put(&self, schema: &'static EntitySchema, mut row: Row, how: Write) -> Result<Row> {
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
                if let Some(o) = old.as_ref().filter(|o| live(o.expires_at)) {
                    if let Some(c) = parse_row(&o.text)?.get("created_at") {
                        row.insert("created_at".into(), c.clone());
                    }
                }
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
        self.check_and_claim(schema, &row, &old_keys).await?;
        let new = self.write_row(schema, &row, exp, old_row.as_ref()).await?;
        let new_keys: HashSet<String> = claims(schema, &row).into_iter().map(|(k, _)| k).collect();
        for k in old_keys.difference(&new_keys) {
            unique::release(&self.conn, k, &id).await?;
        }
        // An expired row replaced by a new one is gone, not "old", for the subscribers.
        let old = old.filter(|o| live(o.expires_at) || matches!(how, Write::Update));
        self.commit(ChangeEvent::Rows(vec![RowChange {
            entity: schema.name,
            id: new.id.clone(),
            op: ChangeOp::Upsert,
            new: Some(new),
            old,
        }]))
        .await?;
        Ok(with_ttl(schema, row, exp))
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

    async fn remove(&self, schema: &'static EntitySchema, old: &RawRow) -> Result<()> {
        let row = parse_row(&old.text)?;
        self.conn
            .run(
                &format!(
                    "DELETE FROM {} WHERE entity = ? AND id = ?",
                    self.t("entities")
                ),
                Kind::Write,
                (schema.name, &*old.id),
            )
            .await?;
        for f in fk_fields(schema) {
            if let Some(p) = rules::fk_id(&row, f) {
                self.unset_ref(schema.name, f, p, &old.id).await?;
            }
        }
        for (k, _) in claims(schema, &row) {
            unique::release(&self.conn, &k, &old.id).await?;
        }
        Ok(())
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

    /// Candidate rows of a listing after `after`: the entity's partition, or the
    /// children of one parent through `refs`.
    async fn candidates(
        &self,
        schema: &'static EntitySchema,
        q: &PageQuery,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<RawRow>, bool)> {
        match &q.foreign {
            None => {
                let rows = self.rows_after(schema.name, after, false, limit).await?;
                let more = rows.len() == limit;
                Ok((rows, more))
            }
            Some((field, parent)) => {
                let ids = self
                    .ref_ids(schema.name, field, parent, after, Some(limit))
                    .await?;
                let more = ids.len() == limit;
                let mut rows = Vec::with_capacity(ids.len());
                for id in ids {
                    // A reference whose child moved to another parent is skipped.
                    if let Some(r) = self.select_raw(schema, &id, true).await? {
                        if rules::fk_id(&parse_row(&r.text)?, field) == Some(parent.as_str()) {
                            rows.push(r);
                        }
                    }
                }
                Ok((rows, more))
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
            self.write_row(schema, row, *exp, old_row.as_ref()).await?;
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
        let Some(old) = self.select_raw(schema, id, true).await? else {
            return Ok(());
        };
        let mut plan = Vec::new();
        self.plan_delete(schema, id.to_string(), old, &mut plan)
            .await?;
        let mut changes = Vec::with_capacity(plan.len());
        for (s, old) in plan {
            self.remove(s, &old).await?;
            changes.push(RowChange {
                entity: s.name,
                id: old.id.clone(),
                op: ChangeOp::Delete,
                new: None,
                old: Some(old),
            });
        }
        self.commit(ChangeEvent::Rows(changes)).await
    }

    async fn page(&self, schema: &'static EntitySchema, q: &PageQuery) -> Result<Page> {
        let mut after = match &q.offset {
            Some(off) => decode_offset(off)?,
            None => String::new(),
        };
        let want = q.size + 1;
        // Filtered listings read ahead in bigger batches (most candidates may not match).
        let batch = if q.tags.is_some() {
            want.max(200)
        } else {
            want
        };
        let mut out: Vec<Row> = Vec::with_capacity(want);
        loop {
            let (rows, more) = self.candidates(schema, q, &after, batch).await?;
            if let Some(last) = rows.last() {
                after = last.id.to_string();
            }
            for r in rows {
                if !live(r.expires_at) {
                    continue;
                }
                let row = with_ttl(schema, parse_row(&r.text)?, r.expires_at);
                if q.tags.as_ref().is_none_or(|t| t.matches(&row)) {
                    out.push(row);
                    if out.len() == want {
                        break;
                    }
                }
            }
            if out.len() == want || !more {
                break;
            }
        }
        // One row read ahead: a next page exists only if it has a row.
        let next_offset = if out.len() > q.size {
            out.truncate(q.size);
            out.last()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(encode_offset)
        } else {
            None
        };
        Ok(Page {
            rows: out,
            next_offset,
        })
    }

    async fn replace_all(&self, data: EntitySet) -> Result<()> {
        for t in ["entities", "refs", "uniques"] {
            self.conn
                .run(&format!("TRUNCATE {}", self.t(t)), Kind::Write, ())
                .await?;
        }
        let done = self.import_rows(&data).await;
        self.commit(ChangeEvent::Reset).await?;
        done
    }

    async fn import(&self, data: EntitySet) -> Result<()> {
        self.import_rows(&data).await?;
        self.commit(ChangeEvent::Reset).await
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
        events::record(&self.conn, codec::ADMIN_TOKENS_EVENT.to_string()).await
    }
}
