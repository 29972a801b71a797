//! [`PostgresStore`]: the [`Store`] operations as PostgreSQL transactions.

use super::events::{self, Feed};
use super::options::{quote_ident, PgSettings};
use super::schema::{self, MIGRATION_LOCK, WRITE_LOCK};
use super::{db_err, pool_err};
use crate::paging::{decode_offset, encode_offset};
use crate::rules::{self, fk_col, now, parse_row, take_ttl, with_ttl};
use crate::WriteMode as Write;
use crate::{
    AdminToken, ChangeEvent, ChangeEvents, ChangeOp, Changes, CounterIncrement, CounterTable,
    Dataset, EntitySet, MigrationStatus, Page, PageQuery, RawRow, RowChange, ScanPage, Store,
    TagFilter, TagPage, MIGRATIONS,
};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{broadcast, watch, Notify};
use tokio_postgres::types::ToSql;
use tollgate_model::{entities, EntitySchema, Error, Result, Row};

type Param<'a> = &'a (dyn ToSql + Sync);

/// How long a whole-configuration write (db_import, `POST /config`) may take.
const WHOLE_CONFIGURATION: std::time::Duration = std::time::Duration::from_secs(3600);
/// Rows of an import in flight at once on its connection (pipelined: PostgreSQL runs them
/// in order, the client does not wait for each answer before sending the next).
const IMPORT_PIPELINE: usize = 64;

pub struct PostgresStore {
    pool: Pool,
    /// Bulk reads of the snapshot builder (`pg_ro_*`); the primary when unset.
    ro: Pool,
    settings: PgSettings,
    version: Arc<watch::Sender<Changes>>,
    events: broadcast::Sender<Arc<ChangeEvent>>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    /// The feed's replay position (see [`Feed::last`]).
    last: Arc<std::sync::Mutex<Option<i64>>>,
    hub: Arc<crate::Hub>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What a write transaction touched.
#[derive(Default)]
struct Touched {
    rows: Vec<RowChange>,
    reset: bool,
    /// The Admin API tokens changed (an event of its own: no rows, no reload).
    admin_tokens: bool,
    /// A broadcast's stored form (an event of its own, for node-local caches).
    broadcast: Option<String>,
}

impl PostgresStore {
    /// Builds the pools and starts following `cluster_events` (LISTEN plus polling). Does
    /// not need the database to be up or migrated: connections are made on use.
    /// Needs a Tokio runtime.
    pub async fn connect(settings: PgSettings) -> Result<Self> {
        let pool = settings.primary.pool("tollgate")?;
        let ro = match &settings.read_only {
            Some(o) => o.pool("tollgate-ro")?,
            None => pool.clone(),
        };
        let (version, _) = watch::channel(Changes::default());
        let version = Arc::new(version);
        let events = crate::event_channel();
        let wake = Arc::new(Notify::new());
        let notified = events::Notified::default();
        let (stop, _) = watch::channel(false);
        let hub = Arc::new(crate::Hub::default());
        // Where replay starts: anything committed from now on reaches the subscribers.
        // Unknown while the database is down or not migrated; the feed then reloads
        // everything once it can read the table.
        let last = Arc::new(std::sync::Mutex::new(Feed::head(&pool).await.ok()));
        let feed = Feed {
            pool: pool.clone(),
            events: events.clone(),
            version: version.clone(),
            wake: wake.clone(),
            notified: notified.clone(),
            frequency: settings
                .update_frequency
                .max(std::time::Duration::from_millis(10)),
            last: last.clone(),
            hub: hub.clone(),
        };
        tokio::spawn(feed.run(stop.subscribe()));
        tokio::spawn(events::listen(
            settings.primary.clone(),
            (wake.clone(), notified),
            stop.subscribe(),
        ));
        Ok(PostgresStore {
            pool,
            ro,
            settings,
            version,
            events,
            wake,
            stop,
            last,
            hub,
        })
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// Bounds every operation by `pg_timeout` so an unresponsive database fails a call
    /// instead of hanging it.
    async fn timed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        self.timed_for(self.settings.primary.timeout, f).await
    }

    /// Bulk reads (a whole entity for the snapshot, an export) legitimately take longer
    /// than one query: ten times `pg_timeout`, at least a minute.
    fn bulk_timeout(&self) -> std::time::Duration {
        (self.settings.primary.timeout * 10).max(std::time::Duration::from_secs(60))
    }

    async fn timed_for<T>(
        &self,
        t: std::time::Duration,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(t, f).await {
            Ok(r) => r,
            Err(_) => Err(Error::database_unreachable(format!(
                "postgres: no answer from {} within {} ms",
                self.settings.primary.describe(),
                t.as_millis()
            ))),
        }
    }

    async fn conn(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| super::pool_error(e, &self.settings.primary.describe()))
    }

    /// Runs one write transaction: `f` does the work and records what it touched; the
    /// commit carries its `cluster_events` row and notification.
    async fn write<T>(
        &self,
        f: impl for<'t> FnOnce(
            &'t Transaction<'t>,
            &'t mut Touched,
        ) -> futures_util::future::BoxFuture<'t, Result<T>>,
    ) -> Result<T> {
        self.write_within(self.settings.primary.timeout, f).await
    }

    /// [`Self::write`] with its own deadline (whole-configuration writes take longer).
    async fn write_within<T>(
        &self,
        deadline: std::time::Duration,
        f: impl for<'t> FnOnce(
            &'t Transaction<'t>,
            &'t mut Touched,
        ) -> futures_util::future::BoxFuture<'t, Result<T>>,
    ) -> Result<T> {
        self.timed_for(deadline, async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]).await?;
            let mut touched = Touched::default();
            let out = f(&tx, &mut touched).await?;
            if touched.reset
                || touched.admin_tokens
                || touched.broadcast.is_some()
                || !touched.rows.is_empty()
            {
                let data = if let Some(b) = touched.broadcast.take() {
                    b
                } else if touched.admin_tokens {
                    events::ADMIN_TOKENS_EVENT.to_string()
                } else {
                    events::encode(&touched.rows, touched.reset)
                };
                let node = &self.settings.node_id;
                exec(
                    &tx,
                    // The event rides in the notification when it fits (see events.rs).
                    &format!(
                        "WITH e AS (INSERT INTO cluster_events (node_id, data) VALUES ($1, $2) RETURNING id) \
                         SELECT pg_notify('{}', CASE WHEN octet_length($2) <= {} THEN id::text || ' ' || $2 ELSE id::text END) FROM e",
                        events::CHANNEL,
                        events::PAYLOAD_MAX
                    ),
                    &[node, &data],
                )
                .await?;
            }
            tx.commit().await.map_err(db_err)?;
            // This node replays its own write like any other (one order for all).
            self.wake.notify_one();
            Ok(out)
        })
        .await
    }
}

/// Statements go through each connection's prepared-statement cache: one round trip per
/// query instead of two (parse, then execute).
async fn exec<C: GenericClient>(c: &C, sql: &str, params: &[Param<'_>]) -> Result<u64> {
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    c.execute(&st, params).await.map_err(db_err)
}

async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    c.query(&st, params).await.map_err(db_err)
}

async fn opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    c.query_opt(&st, params).await.map_err(db_err)
}

fn boxed<'t, T>(
    f: impl Future<Output = Result<T>> + Send + 't,
) -> futures_util::future::BoxFuture<'t, Result<T>> {
    Box::pin(f)
}

/// The stored row `id` (an expired one only with `expired`).
async fn select_raw<C: GenericClient>(
    c: &C,
    schema: &EntitySchema,
    id: &str,
    expired: bool,
) -> Result<Option<RawRow>> {
    let sql = format!(
        "SELECT data, ttl FROM \"{}\" WHERE id = $1 AND (ttl IS NULL OR ttl > $2)",
        schema.name
    );
    let at = if expired { i64::MIN } else { now() };
    let r = opt(c, &sql, &[&id, &at]).await?;
    Ok(r.map(|r| RawRow {
        id: id.into(),
        text: r.get::<_, String>(0).into_boxed_str(),
        expires_at: r.get(1),
    }))
}

async fn check_constraints(
    tx: &Transaction<'_>,
    schema: &'static EntitySchema,
    row: &Row,
) -> Result<()> {
    for c in rules::checks(schema, row) {
        let mut sql = format!("SELECT 1 FROM \"{}\" WHERE {} = $1", c.table, c.column);
        let found = match &c.exclude {
            Some(x) => {
                sql.push_str(" AND id <> $2");
                opt(tx, &sql, &[&c.value, x]).await
            }
            None => opt(tx, &sql, &[&c.value]).await,
        }?
        .is_some();
        c.outcome(found)?;
    }
    Ok(())
}

/// Writes the row and its tags (insert or replace by id); returns it as stored.
async fn put_row(
    tx: &Transaction<'_>,
    schema: &'static EntitySchema,
    row: &Row,
    expires: Option<i64>,
) -> Result<RawRow> {
    let id = rules::row_id(row);
    let (sql, extra) = schema::upsert_sql(schema);
    let text = serde_json::to_string(row).map_err(|e| Error::database(e.to_string()))?;
    let extra_vals: Vec<Option<String>> = extra
        .iter()
        .map(|col| rules::column_text(schema, col, row))
        .collect();
    let mut params: Vec<Param> = vec![&id, &text, &expires];
    params.extend(extra_vals.iter().map(|v| v as Param));
    let st = tx.prepare_cached(&sql).await.map_err(db_err)?;
    if let Err(e) = tx.execute(&st, &params).await {
        // A unique index caught what the explicit checks did not (bulk imports skip
        // them): name the violated constraint in Kong's terms.
        if let Some(err) = unique_index_error(&e, schema, row) {
            return Err(err);
        }
        return Err(db_err(e));
    }
    exec(
        tx,
        "DELETE FROM tags WHERE entity_name = $1 AND entity_id = $2",
        &[&schema.name, &id],
    )
    .await?;
    if let Some(Value::Array(tags)) = row.get("tags") {
        let tags: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
        if !tags.is_empty() {
            exec(
                tx,
                "INSERT INTO tags (entity_name, entity_id, tag) SELECT $1, $2, t FROM unnest($3::text[]) AS t ON CONFLICT DO NOTHING",
                &[&schema.name, &id, &tags],
            )
            .await?;
        }
    }
    Ok(RawRow {
        id: id.into(),
        text: text.into_boxed_str(),
        expires_at: expires,
    })
}

/// Kong's error for a unique-index violation (SQLSTATE 23505) on one of `row`'s columns.
fn unique_index_error(
    e: &tokio_postgres::Error,
    schema: &'static EntitySchema,
    row: &Row,
) -> Option<Error> {
    let db = e.as_db_error()?;
    if db.code() != &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
        return None;
    }
    if db.constraint().is_some_and(|c| c.ends_with("_pkey")) {
        return Some(Error::primary_key_violation(&rules::row_id(row)));
    }
    let detail = db.detail().unwrap_or_default();
    rules::checks(schema, row)
        .into_iter()
        .find(|c| !c.must_exist && detail.contains(&format!("({})", c.column.trim_matches('"'))))
        .map(|c| c.error)
}

/// Deletes `id` of `schema`, cascading to children declared `cascade` and refusing when a
/// non-cascading child still points to it.
fn delete_tx<'t>(
    tx: &'t Transaction<'t>,
    schema: &'static EntitySchema,
    id: String,
    touched: &'t mut Touched,
) -> futures_util::future::BoxFuture<'t, Result<()>> {
    Box::pin(async move {
        for rel in rules::children_of(schema) {
            let sql = format!(
                "SELECT id FROM \"{}\" WHERE {} = $1 ORDER BY id",
                rel.child.name, rel.column
            );
            let ids: Vec<String> = rows(tx, &sql, &[&id])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if ids.is_empty() {
                continue;
            }
            if !rel.cascade {
                return Err(rules::restricted(schema, rel.child));
            }
            for cid in ids {
                delete_tx(tx, rel.child, cid, touched).await?;
            }
        }
        if schema.name == "ca_certificates" {
            let used = opt(
                tx,
                "SELECT 1 FROM services WHERE (data::jsonb -> 'ca_certificates') ? $1 LIMIT 1",
                &[&id],
            )
            .await?;
            if used.is_some() {
                return Err(rules::ca_certificate_in_use());
            }
        }
        if let Some(old) = select_raw(tx, schema, &id, true).await? {
            touched.rows.push(RowChange {
                entity: schema.name,
                id: id.as_str().into(),
                op: ChangeOp::Delete,
                new: None,
                old: Some(old),
            });
        }
        exec(
            tx,
            &format!("DELETE FROM \"{}\" WHERE id = $1", schema.name),
            &[&id],
        )
        .await?;
        exec(
            tx,
            "DELETE FROM tags WHERE entity_name = $1 AND entity_id = $2",
            &[&schema.name, &id],
        )
        .await?;
        Ok(())
    })
}

/// Writes a whole configuration, then checks foreign keys set-wise (they may point into
/// the file or into what the database already had).
async fn upsert_all(tx: &Transaction<'_>, data: &EntitySet) -> Result<()> {
    for schema in rules::import_order() {
        for texts in data.rows(schema.name).chunks(IMPORT_PIPELINE) {
            let chunk: Vec<(Row, Option<i64>)> = texts
                .iter()
                .map(|text| {
                    let mut row = text.to_row();
                    let exp = take_ttl(schema, &mut row);
                    (row, exp)
                })
                .collect();
            let done = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|(row, exp)| put_row(tx, schema, row, *exp)),
            )
            .await;
            // Rows' statements interleave, so once one fails the others fail too
            // ("transaction aborted"): report the constraint error, in input order.
            let errors: Vec<Error> = done.into_iter().filter_map(|r| r.err()).collect();
            if let Some(i) = errors
                .iter()
                .position(|e| e.code() != tollgate_model::ErrorCode::DatabaseError)
            {
                return Err(errors[i].clone());
            }
            if let Some(e) = errors.into_iter().next() {
                return Err(e);
            }
        }
    }
    for schema in entities::ALL.iter() {
        for f in schema.foreign_fields() {
            let Some(parent) = f.foreign_entity() else {
                continue;
            };
            let col = fk_col(f.name);
            let sql = format!(
                "SELECT {col} FROM \"{}\" WHERE {col} IS NOT NULL AND {col} NOT IN (SELECT id FROM \"{parent}\") LIMIT 1",
                schema.name
            );
            if let Some(r) = tx.query_opt(&sql, &[]).await.map_err(db_err)? {
                let fk: String = r.get(0);
                return Err(Error::foreign_key_violation(
                    f.name,
                    json!({ "id": fk }),
                    parent,
                ));
            }
        }
    }
    Ok(())
}

/// Executed migrations (none when the schema table does not exist yet).
async fn executed<C: GenericClient>(c: &C) -> Result<Vec<String>> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_meta') IS NOT NULL", &[])
        .await
        .map_err(db_err)?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    Ok(c.query("SELECT name FROM schema_meta ORDER BY name", &[])
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

impl PostgresStore {
    async fn put(&self, schema: &'static EntitySchema, row: Row, how: Write) -> Result<Row> {
        self.write(move |tx, touched| boxed(put_in(tx, touched, schema, row, how)))
            .await
    }

    /// Runs the pending migrations in one transaction under the migrations lock: nodes
    /// starting together on an empty database wait for the first, then find nothing to do.
    async fn migrate(&self) -> Result<Vec<String>> {
        self.timed_long(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(db_err)?;
            if let Some(s) = &self.settings.primary.schema {
                tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)))
                    .await
                    .map_err(db_err)?;
            }
            tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_meta (name TEXT PRIMARY KEY, executed_at BIGINT NOT NULL)")
                .await
                .map_err(db_err)?;
            let done = executed(&tx).await?;
            let mut ran = Vec::new();
            for m in MIGRATIONS {
                if done.iter().any(|d| d == m) {
                    continue;
                }
                let sql = schema::migration_sql(m)
                    .ok_or_else(|| Error::database(format!("no PostgreSQL DDL for migration {m}")))?;
                tx.batch_execute(&sql).await.map_err(db_err)?;
                tx.execute(
                    "INSERT INTO schema_meta (name, executed_at) VALUES ($1, $2)",
                    &[m, &now()],
                )
                .await
                .map_err(db_err)?;
                ran.push((*m).to_string());
            }
            tx.commit().await.map_err(db_err)?;
            // A node that could not read cluster_events when it connected (not migrated
            // yet) replays from here: what it loads next is at least this recent.
            let head = Feed::head(&self.pool).await?;
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none() {
                *last = Some(head);
            }
            Ok(ran)
        })
        .await
    }

    /// Migrations may wait for another node's: allow a minute beyond `pg_timeout`.
    async fn timed_long<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let t = self.settings.primary.timeout + std::time::Duration::from_secs(60);
        tokio::time::timeout(t, f).await.unwrap_or_else(|_| {
            Err(Error::database(
                "postgres: migrations did not finish in time (another node may hold the migrations lock)",
            ))
        })
    }

    async fn load_on(&self, pool: &Pool, wanted: Vec<&'static EntitySchema>) -> Result<Dataset> {
        let c = pool.get().await.map_err(pool_err)?;
        let mut out = Dataset::new();
        let at = now();
        for s in wanted {
            let sql = format!(
                "SELECT data, ttl FROM \"{}\" WHERE ttl IS NULL OR ttl > $1 ORDER BY id",
                s.name
            );
            let mut v = Vec::new();
            for r in rows(&c, &sql, &[&at]).await? {
                v.push(with_ttl(s, parse_row(r.get(0))?, r.get(1)));
            }
            out.insert(s.name.to_string(), v);
        }
        Ok(out)
    }
}

/// One write of a row inside a write transaction.
async fn put_in(
    tx: &Transaction<'_>,
    touched: &mut Touched,
    schema: &'static EntitySchema,
    mut row: Row,
    how: Write,
) -> Result<Row> {
    let id = rules::row_id(&row);
    let old = match how {
        Write::Insert => {
            let sql = format!("SELECT 1 FROM \"{}\" WHERE id = $1", schema.name);
            if opt(tx, &sql, &[&id]).await?.is_some() {
                return Err(Error::primary_key_violation(&id));
            }
            None
        }
        Write::Upsert => {
            let old = select_raw(tx, schema, &id, true).await?;
            rules::keep_created_at(&mut row, old.as_ref())?;
            old
        }
        Write::Update => {
            let Some(old) = select_raw(tx, schema, &id, false).await? else {
                return Err(Error::not_found(json!({ "id": id })));
            };
            Some(old)
        }
    };
    let exp = take_ttl(schema, &mut row);
    check_constraints(tx, schema, &row).await?;
    let new = put_row(tx, schema, &row, exp).await?;
    touched.rows.push(RowChange {
        entity: schema.name,
        id: new.id.clone(),
        op: ChangeOp::Upsert,
        new: Some(new),
        old,
    });
    Ok(with_ttl(schema, row, exp))
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn insert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.put(schema, row, Write::Insert).await
    }

    async fn write_family(
        &self,
        schema: &'static EntitySchema,
        row: Row,
        mode: Write,
        add: Vec<(&'static EntitySchema, Row)>,
        remove: Vec<(&'static EntitySchema, String)>,
    ) -> Result<Row> {
        self.write(move |tx, touched| {
            boxed(async move {
                let saved = put_in(tx, touched, schema, row, mode).await?;
                for (s, id) in remove {
                    delete_tx(tx, s, id, touched).await?;
                }
                for (s, r) in add {
                    put_in(tx, touched, s, r, Write::Insert).await?;
                }
                Ok(saved)
            })
        })
        .await
    }

    async fn upsert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.put(schema, row, Write::Upsert).await
    }

    async fn update(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.put(schema, row, Write::Update).await
    }

    async fn select(&self, schema: &'static EntitySchema, id: &str) -> Result<Option<Row>> {
        self.timed(async {
            let c = self.conn().await?;
            select_raw(&c, schema, id, false)
                .await?
                .map(|r| parse_row(&r.text).map(|row| with_ttl(schema, row, r.expires_at)))
                .transpose()
        })
        .await
    }

    async fn select_by_field(
        &self,
        schema: &'static EntitySchema,
        field: &str,
        value: &str,
    ) -> Result<Option<Row>> {
        let sql = rules::select_by_field_sql(schema, field, &super::schema::DIALECT)?;
        self.timed(async {
            let c = self.conn().await?;
            let r = opt(&c, &sql, &[&value, &now()]).await?;
            r.map(|r| parse_row(r.get(0)).map(|row| with_ttl(schema, row, r.get(1))))
                .transpose()
        })
        .await
    }

    async fn delete(&self, schema: &'static EntitySchema, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |tx, touched| delete_tx(tx, schema, id, touched))
            .await
    }

    async fn page(&self, schema: &'static EntitySchema, q: &PageQuery) -> Result<Page> {
        let at = now();
        let mut sql = format!(
            "SELECT data, ttl FROM \"{}\" WHERE (ttl IS NULL OR ttl > $1)",
            schema.name
        );
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(at)];
        // Placeholders are numbered as arguments are pushed.
        if let Some(off) = &q.offset {
            args.push(Box::new(decode_offset(off)?));
            sql.push_str(&format!(" AND id > ${}", args.len()));
        }
        if let Some((field, id)) = &q.foreign {
            args.push(Box::new(id.clone()));
            sql.push_str(&format!(" AND {} = ${}", fk_col(field), args.len()));
        }
        if let Some(tf) = &q.tags {
            args.push(Box::new(schema.name.to_string()));
            let name = args.len();
            args.push(Box::new(tf.tags().to_vec()));
            let tags = args.len();
            match tf {
                TagFilter::All(t) => sql.push_str(&format!(
                    " AND id IN (SELECT entity_id FROM tags WHERE entity_name = ${name} AND tag = ANY(${tags}) GROUP BY entity_id HAVING COUNT(DISTINCT tag) = {})",
                    t.len()
                )),
                TagFilter::Any(_) => sql.push_str(&format!(
                    " AND id IN (SELECT entity_id FROM tags WHERE entity_name = ${name} AND tag = ANY(${tags}))"
                )),
            }
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", q.size + 1));
        self.timed(async {
            let c = self.conn().await?;
            let params: Vec<Param> = args.iter().map(|a| a.as_ref() as Param).collect();
            let rows = rows(&c, &sql, &params).await?;
            let more = rows.len() > q.size;
            let mut out = Vec::with_capacity(rows.len().min(q.size));
            for r in rows.iter().take(q.size) {
                out.push(with_ttl(schema, parse_row(r.get(0))?, r.get(1)));
            }
            let next_offset = if more {
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
        })
        .await
    }

    async fn replace_all(&self, data: EntitySet) -> Result<()> {
        self.write_within(WHOLE_CONFIGURATION, move |tx, touched| {
            boxed(async move {
                touched.reset = true;
                let mut sql = String::new();
                for s in entities::ALL.iter() {
                    sql.push_str(&format!("DELETE FROM \"{}\";", s.name));
                }
                sql.push_str("DELETE FROM tags;");
                tx.batch_execute(&sql).await.map_err(db_err)?;
                upsert_all(tx, &data).await
            })
        })
        .await
    }

    async fn import(&self, data: EntitySet) -> Result<()> {
        self.write_within(WHOLE_CONFIGURATION, move |tx, touched| {
            boxed(async move {
                touched.reset = true;
                upsert_all(tx, &data).await
            })
        })
        .await
    }

    async fn tags_page(
        &self,
        tag: Option<&str>,
        size: usize,
        offset: Option<&str>,
    ) -> Result<TagPage> {
        let after = offset.map(crate::paging::decode_tag_offset).transpose()?;
        let mut sql = String::from("SELECT entity_name, entity_id, tag FROM tags WHERE TRUE");
        let mut args: Vec<String> = Vec::new();
        if let Some(t) = tag {
            args.push(t.to_string());
            sql.push_str(&format!(" AND tag = ${}", args.len()));
        }
        if let Some((a, b, t)) = after {
            let n = args.len();
            sql.push_str(&format!(
                " AND (entity_name, entity_id, tag) > (${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3
            ));
            args.extend([a, b, t]);
        }
        sql.push_str(&format!(
            " ORDER BY entity_name, entity_id, tag LIMIT {}",
            size + 1
        ));
        self.timed(async {
            let c = self.conn().await?;
            let params: Vec<Param> = args.iter().map(|a| a as Param).collect();
            let mut out: Vec<(String, String, String)> = rows(&c, &sql, &params)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let more = out.len() > size;
            out.truncate(size);
            let next_offset = if more {
                out.last().map(crate::paging::encode_tag_offset)
            } else {
                None
            };
            Ok(TagPage {
                rows: out,
                next_offset,
            })
        })
        .await
    }

    async fn load(&self, names: &[&str]) -> Result<Dataset> {
        let wanted = rules::schemas(names)?;
        self.timed_for(self.bulk_timeout(), self.load_on(&self.ro, wanted))
            .await
    }

    async fn load_all(&self) -> Result<Dataset> {
        // db_export and `GET /config` are Admin reads: from the primary.
        let wanted: Vec<&'static EntitySchema> = entities::ALL.iter().collect();
        self.timed_for(self.bulk_timeout(), self.load_on(&self.pool, wanted))
            .await
    }

    async fn scan(&self, entity: &str, after: Option<&str>, limit: usize) -> Result<ScanPage> {
        let schema = entities::by_name(entity)
            .ok_or_else(|| Error::database(format!("unknown entity {entity}")))?;
        let sql = format!(
            "SELECT id, data, ttl FROM \"{}\" WHERE id > $1 ORDER BY id LIMIT $2",
            schema.name
        );
        let after = after.unwrap_or("").to_string();
        self.timed(async {
            let c = self.ro.get().await.map_err(pool_err)?;
            let rows = rows(&c, &sql, &[&after, &(limit as i64)]).await?;
            let at = now();
            let next = if rows.len() < limit {
                None
            } else {
                rows.last().map(|r| r.get::<_, String>(0))
            };
            let rows = rows
                .iter()
                .filter(|r| r.get::<_, Option<i64>>(2).is_none_or(|t| t > at))
                .map(|r| RawRow {
                    id: r.get::<_, String>(0).into_boxed_str(),
                    text: r.get::<_, String>(1).into_boxed_str(),
                    expires_at: r.get(2),
                })
                .collect();
            Ok(ScanPage { rows, next })
        })
        .await
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
        let data = self.hub.encode(channel, &purge);
        // Under the write lock like any write: event ids must grow in commit order.
        self.write(move |_, touched| {
            touched.broadcast = Some(data);
            boxed(async { Ok(()) })
        })
        .await?;
        self.hub.deliver(channel, &purge);
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.timed(async {
            let c = self.conn().await?;
            c.simple_query("SELECT 1").await.map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn increment_counters(
        &self,
        table: CounterTable,
        rows: Vec<CounterIncrement>,
    ) -> Result<Vec<i64>> {
        self.timed(async {
            let mut c = self.conn().await?;
            if rows.is_empty() {
                c.simple_query("SELECT 1").await.map_err(db_err)?;
                return Ok(Vec::new());
            }
            // No write lock and no cluster event: counters are not configuration, and
            // the rows are taken in one order so concurrent nodes cannot deadlock.
            let tx = c.transaction().await.map_err(db_err)?;
            let st = tx
                .prepare_cached(&rules::increment_counter_sql(table, &schema::DIALECT))
                .await
                .map_err(db_err)?;
            let mut totals = vec![0; rows.len()];
            for i in rules::increment_order(&rows) {
                let r = &rows[i];
                let row = tx
                    .query_one(
                        &st,
                        &[
                            &r.identifier,
                            &r.period,
                            &r.period_date,
                            &r.service_id,
                            &r.route_id,
                            &r.value,
                            &r.expires_at,
                        ],
                    )
                    .await
                    .map_err(db_err)?;
                totals[i] = row.get(0);
            }
            tx.commit().await.map_err(db_err)?;
            Ok(totals)
        })
        .await
    }

    async fn purge_counters(&self, now: i64) -> Result<()> {
        self.timed(async {
            let c = self.conn().await?;
            for t in CounterTable::ALL {
                c.execute(&rules::purge_counters_sql(t, &schema::DIALECT), &[&now])
                    .await
                    .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn migrations_status(&self) -> Result<MigrationStatus> {
        self.timed(async {
            let c = self.conn().await?;
            Ok(MigrationStatus::from_executed(executed(&c).await?))
        })
        .await
    }

    async fn migrations_bootstrap(&self) -> Result<Vec<String>> {
        self.migrate().await
    }

    async fn migrations_up(&self) -> Result<Vec<String>> {
        self.migrate().await
    }

    async fn migrations_reset(&self) -> Result<()> {
        self.timed_long(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(db_err)?;
            tx.batch_execute(&schema::drop_all())
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            // Cached statements name the dropped tables.
            self.pool.manager().statement_caches.clear();
            self.ro.manager().statement_caches.clear();
            Ok(())
        })
        .await
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        self.timed(async {
            let c = self.conn().await?;
            let sql = "SELECT name, hash, read_only, created_at FROM admin_tokens ORDER BY name";
            Ok(rows(&c, sql, &[])
                .await?
                .iter()
                .map(|r| AdminToken {
                    name: r.get(0),
                    hash: r.get(1),
                    read_only: r.get::<_, i64>(2) != 0,
                    created_at: r.get(3),
                })
                .collect())
        })
        .await
    }

    async fn admin_token_create(&self, t: AdminToken) -> Result<()> {
        self.write(move |tx, touched| {
            boxed(async move {
                let sql = "SELECT 1 FROM admin_tokens WHERE name = $1";
                if opt(tx, sql, &[&t.name]).await?.is_some() {
                    return Err(rules::admin_token_taken(&t.name));
                }
                exec(
                    tx,
                    "INSERT INTO admin_tokens (name, hash, read_only, created_at) VALUES ($1, $2, $3, $4)",
                    &[&t.name, &t.hash, &(t.read_only as i64), &t.created_at],
                )
                .await?;
                touched.admin_tokens = true;
                Ok(())
            })
        })
        .await
    }

    async fn admin_token_revoke(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx, touched| {
            boxed(async move {
                let n = exec(tx, "DELETE FROM admin_tokens WHERE name = $1", &[&name]).await?;
                touched.admin_tokens = true;
                Ok(n > 0)
            })
        })
        .await
    }
}
