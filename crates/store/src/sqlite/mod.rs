//! The embedded default store: SQLite (compiled into the binary), one file in the prefix.
//!
//! One connection behind a mutex, used from blocking tasks: SQLite serialises writers
//! anyway, and the request path never reads the store. WAL with `synchronous=FULL` makes
//! every acknowledged commit durable across a crash.

mod schema;

use crate::paging::{decode_offset, encode_offset};
use crate::rules::{self, fk_col, now, parse_row, take_ttl, with_ttl};
use crate::{
    AdminToken, ChangeEvent, ChangeEvents, ChangeOp, Changes, CounterIncrement, CounterTable,
    Dataset, EntitySet, MigrationStatus, Page, PageQuery, RawRow, RowChange, ScanPage, Store,
    TagFilter, WriteMode, MIGRATIONS,
};
use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tollgate_model::{entities, EntitySchema, Error, Result, Row};

pub struct SqliteStore {
    /// Every write goes through this connection (SQLite has one writer anyway).
    writer: Arc<Mutex<Connection>>,
    /// Reads use their own connection: in WAL mode they neither wait for nor block writes.
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    version: Arc<tokio::sync::watch::Sender<Changes>>,
    events: tokio::sync::broadcast::Sender<Arc<ChangeEvent>>,
    /// One node: broadcasts are delivered here only.
    hub: crate::Hub,
}

/// What a write transaction touched: entities for the change counters, rows for the
/// change events.
#[derive(Default)]
struct Touched {
    entities: Vec<&'static str>,
    rows: Vec<RowChange>,
    /// A whole-configuration write: one [`ChangeEvent::Reset`] instead of rows.
    reset: bool,
}

impl Touched {
    fn push(&mut self, entity: &'static str) {
        self.entities.push(entity);
    }

    fn reset_all(&mut self) {
        self.entities.extend(entities::ALL.iter().map(|s| s.name));
        self.reset = true;
    }

    fn upserted(&mut self, schema: &EntitySchema, new: RawRow, old: Option<RawRow>) {
        self.rows.push(RowChange {
            entity: schema.name,
            id: new.id.clone(),
            op: ChangeOp::Upsert,
            new: Some(new),
            old,
        });
    }
}

fn db_err(e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return Error::storage_full(format!("sqlite: {e}"));
    }
    Error::database(format!("sqlite: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file. Does not run migrations.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::database(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let open = || {
            Connection::open(path)
                .map_err(|e| Error::database(format!("cannot open {}: {e}", path.display())))
        };
        let writer = open()?;
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=OFF;",
            )
            .map_err(db_err)?;
        let reader = open()?;
        reader
            .execute_batch("PRAGMA busy_timeout=5000; PRAGMA query_only=1;")
            .map_err(db_err)?;
        let (tx, _) = tokio::sync::watch::channel(Changes::default());
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            version: Arc::new(tx),
            events: crate::event_channel(),
            hub: crate::Hub::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the read connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        Self::on(self.reader.clone(), f).await
    }

    async fn on<T: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| Error::database("sqlite connection poisoned"))?;
            f(&mut c)
        })
        .await
        .map_err(|e| Error::database(format!("sqlite task failed: {e}")))?
    }

    /// A write transaction; on commit its change event goes out and the counters of the
    /// entities it touched move.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Touched) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let events = self.events.clone();
        let (out, touched) = Self::on(self.writer.clone(), move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let mut touched = Touched::default();
            let out = f(&tx, &mut touched)?;
            tx.commit().map_err(db_err)?;
            // Sent while the writer is still held, so events leave in commit order.
            let rows = std::mem::take(&mut touched.rows);
            if touched.reset {
                let _ = events.send(Arc::new(ChangeEvent::Reset));
            } else if !rows.is_empty() {
                let _ = events.send(Arc::new(ChangeEvent::Rows(rows)));
            }
            Ok((out, touched.entities))
        })
        .await?;
        if !touched.is_empty() {
            self.version.send_modify(|c| c.bump(&touched));
        }
        Ok(out)
    }
}

/// The stored row `id` (an expired one only with `expired`).
fn select_raw_tx(
    tx: &Connection,
    schema: &EntitySchema,
    id: &str,
    expired: bool,
) -> Result<Option<RawRow>> {
    let sql = format!(
        "SELECT data, ttl FROM \"{}\" WHERE id = ?1 AND (ttl IS NULL OR ttl > ?2)",
        schema.name
    );
    let r: Option<(String, Option<i64>)> = tx
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row(params![id, if expired { i64::MIN } else { now() }], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_err)?;
    Ok(r.map(|(text, expires_at)| RawRow {
        id: id.into(),
        text: text.into_boxed_str(),
        expires_at,
    }))
}

fn select_tx(tx: &Connection, schema: &EntitySchema, id: &str) -> Result<Option<Row>> {
    select_raw_tx(tx, schema, id, false)?
        .map(|r| parse_row(&r.text).map(|row| with_ttl(schema, row, r.expires_at)))
        .transpose()
}

/// Runs the constraint checks of `row` (see [`rules::checks`]) and returns Kong's error
/// for the first violation.
fn check_constraints(tx: &Connection, schema: &'static EntitySchema, row: &Row) -> Result<()> {
    for c in rules::checks(schema, row) {
        let mut sql = format!("SELECT 1 FROM \"{}\" WHERE {} = ?1", c.table, c.column);
        let mut args = vec![c.value.clone()];
        if let Some(x) = &c.exclude {
            sql.push_str(" AND id <> ?2");
            args.push(x.clone());
        }
        let found: Option<i64> = tx
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_row(params_from_iter(args), |r| r.get(0))
                    .optional()
            })
            .map_err(db_err)?;
        c.outcome(found.is_some())?;
    }
    Ok(())
}

/// Writes the row and its tags (insert or replace by id); returns it as stored.
fn put_row(
    tx: &Connection,
    schema: &'static EntitySchema,
    row: &Row,
    expires: Option<i64>,
) -> Result<RawRow> {
    let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
    let (sql, extra) = schema::upsert_sql(schema);
    let text = serde_json::to_string(row).map_err(|e| Error::database(e.to_string()))?;
    let mut vals: Vec<rusqlite::types::Value> = vec![
        id.to_string().into(),
        text.clone().into(),
        expires
            .map(rusqlite::types::Value::Integer)
            .unwrap_or(rusqlite::types::Value::Null),
    ];
    for col in extra {
        vals.push(schema::column_value(schema, &col, row));
    }
    tx.execute(&sql, params_from_iter(vals))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                // A unique index caught what the explicit checks did not (only possible in
                // bulk imports, which skip them): report it in Kong's terms.
                match check_constraints(tx, schema, row) {
                    Err(e) => e,
                    Ok(()) => db_err(rusqlite::Error::SqliteFailure(f, None)),
                }
            }
            other => db_err(other),
        })?;
    tx.execute(
        "DELETE FROM tags WHERE entity_name = ?1 AND entity_id = ?2",
        params![schema.name, id],
    )
    .map_err(db_err)?;
    if let Some(Value::Array(tags)) = row.get("tags") {
        let mut st = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO tags (entity_name, entity_id, tag) VALUES (?1, ?2, ?3)",
            )
            .map_err(db_err)?;
        for t in tags.iter().filter_map(Value::as_str) {
            st.execute(params![schema.name, id, t]).map_err(db_err)?;
        }
    }
    Ok(RawRow {
        id: id.into(),
        text: text.into_boxed_str(),
        expires_at: expires,
    })
}

/// Deletes `id` of `schema`, cascading to children declared `cascade` and refusing when a
/// non-cascading child still points to it.
fn delete_tx(
    tx: &Connection,
    schema: &'static EntitySchema,
    id: &str,
    touched: &mut Touched,
) -> Result<()> {
    for rel in rules::children_of(schema) {
        let sql = format!(
            "SELECT id FROM \"{}\" WHERE {} = ?1",
            rel.child.name, rel.column
        );
        let ids: Vec<String> = {
            let mut st = tx.prepare(&sql).map_err(db_err)?;
            let rows = st.query_map(params![id], |r| r.get(0)).map_err(db_err)?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(db_err)?
        };
        if ids.is_empty() {
            continue;
        }
        if !rel.cascade {
            return Err(rules::restricted(schema, rel.child));
        }
        for cid in ids {
            delete_tx(tx, rel.child, &cid, touched)?;
        }
    }
    if schema.name == "ca_certificates" {
        let n: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM services, json_each(services.data, '$.ca_certificates') WHERE json_each.value = ?1",
                params![id],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if n > 0 {
            return Err(rules::ca_certificate_in_use());
        }
    }
    touched.push(schema.name);
    if let Some(old) = select_raw_tx(tx, schema, id, true)? {
        touched.rows.push(RowChange {
            entity: schema.name,
            id: id.into(),
            op: ChangeOp::Delete,
            new: None,
            old: Some(old),
        });
    }
    tx.execute(
        &format!("DELETE FROM \"{}\" WHERE id = ?1", schema.name),
        params![id],
    )
    .map_err(db_err)?;
    tx.execute(
        "DELETE FROM tags WHERE entity_name = ?1 AND entity_id = ?2",
        params![schema.name, id],
    )
    .map_err(db_err)?;
    Ok(())
}

fn page_tx(c: &Connection, schema: &EntitySchema, q: &PageQuery) -> Result<Page> {
    let mut sql = format!(
        "SELECT id, data, ttl FROM \"{}\" WHERE (ttl IS NULL OR ttl > ?)",
        schema.name
    );
    let mut args: Vec<rusqlite::types::Value> = vec![now().into()];
    if let Some(off) = &q.offset {
        sql.push_str(" AND id > ?");
        args.push(decode_offset(off)?.into());
    }
    if let Some((field, id)) = &q.foreign {
        sql.push_str(&format!(" AND {} = ?", fk_col(field)));
        args.push(id.clone().into());
    }
    if let Some(tf) = &q.tags {
        let marks = vec!["?"; tf.tags().len()].join(",");
        match tf {
            TagFilter::All(t) => sql.push_str(&format!(
                " AND id IN (SELECT entity_id FROM tags WHERE entity_name = ? AND tag IN ({marks}) GROUP BY entity_id HAVING COUNT(DISTINCT tag) = {})",
                t.len()
            )),
            TagFilter::Any(_) => sql.push_str(&format!(
                " AND id IN (SELECT entity_id FROM tags WHERE entity_name = ? AND tag IN ({marks}))"
            )),
        }
        args.push(schema.name.to_string().into());
        for t in tf.tags() {
            args.push(t.clone().into());
        }
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", q.size + 1));
    let mut st = c.prepare(&sql).map_err(db_err)?;
    let rows = st
        .query_map(params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(db_err)?;
    let mut out = Vec::new();
    let mut more = false;
    for r in rows {
        let (_, data, ttl) = r.map_err(db_err)?;
        if out.len() == q.size {
            more = true;
            break;
        }
        out.push(with_ttl(schema, parse_row(&data)?, ttl));
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
}

fn executed(c: &Connection) -> Result<Vec<String>> {
    let exists: Option<String> = c
        .query_row(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_meta'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut st = c
        .prepare("SELECT name FROM schema_meta ORDER BY name")
        .map_err(db_err)?;
    let names = st.query_map([], |r| r.get(0)).map_err(db_err)?;
    names.collect::<std::result::Result<_, _>>().map_err(db_err)
}

fn run_pending(tx: &Transaction<'_>) -> Result<Vec<String>> {
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_meta (name TEXT PRIMARY KEY, executed_at INTEGER NOT NULL)")
        .map_err(db_err)?;
    let done = executed(tx)?;
    let mut ran = Vec::new();
    for m in MIGRATIONS {
        if done.iter().any(|d| d == m) {
            continue;
        }
        tx.execute_batch(&schema::migration_sql(m))
            .map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_meta (name, executed_at) VALUES (?1, ?2)",
            params![m, now()],
        )
        .map_err(db_err)?;
        ran.push((*m).to_string());
    }
    Ok(ran)
}

fn upsert_all(tx: &Transaction<'_>, data: &EntitySet) -> Result<()> {
    for schema in rules::import_order() {
        for text in data.rows(schema.name) {
            {
                let mut row = text.to_row();
                let exp = take_ttl(schema, &mut row);
                put_row(tx, schema, &row, exp)?;
            }
        }
    }
    // Foreign keys may point into the file or into what the database already had; check
    // them set-wise once everything is in.
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
            let bad: Option<String> = tx
                .query_row(&sql, [], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            if let Some(fk) = bad {
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

/// One write of a row inside a write transaction: an insert refuses an id in use, an
/// upsert keeps a live row's `created_at`, an update needs the row.
fn put_in(
    tx: &Transaction<'_>,
    touched: &mut Touched,
    schema: &'static EntitySchema,
    mut row: Row,
    mode: WriteMode,
) -> Result<Row> {
    touched.push(schema.name);
    let id = rules::row_id(&row);
    let old = match mode {
        WriteMode::Insert => {
            let exists: Option<i64> = tx
                .query_row(
                    &format!("SELECT 1 FROM \"{}\" WHERE id = ?1", schema.name),
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if exists.is_some() {
                return Err(Error::primary_key_violation(&id));
            }
            None
        }
        WriteMode::Upsert => {
            let old = select_raw_tx(tx, schema, &id, true)?;
            rules::keep_created_at(&mut row, old.as_ref())?;
            old
        }
        WriteMode::Update => match select_raw_tx(tx, schema, &id, false)? {
            Some(old) => Some(old),
            None => return Err(Error::not_found(json!({ "id": id }))),
        },
    };
    let exp = take_ttl(schema, &mut row);
    check_constraints(tx, schema, &row)?;
    let new = put_row(tx, schema, &row, exp)?;
    touched.upserted(schema, new, old);
    Ok(with_ttl(schema, row, exp))
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn insert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.write(move |tx, touched| put_in(tx, touched, schema, row, WriteMode::Insert))
            .await
    }

    async fn write_family(
        &self,
        schema: &'static EntitySchema,
        row: Row,
        mode: WriteMode,
        add: Vec<(&'static EntitySchema, Row)>,
        remove: Vec<(&'static EntitySchema, String)>,
    ) -> Result<Row> {
        self.write(move |tx, touched| {
            let saved = put_in(tx, touched, schema, row, mode)?;
            for (s, id) in remove {
                delete_tx(tx, s, &id, touched)?;
            }
            for (s, r) in add {
                put_in(tx, touched, s, r, WriteMode::Insert)?;
            }
            Ok(saved)
        })
        .await
    }

    async fn upsert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.write(move |tx, touched| put_in(tx, touched, schema, row, WriteMode::Upsert))
            .await
    }

    async fn update(&self, schema: &'static EntitySchema, row: Row) -> Result<Row> {
        self.write(move |tx, touched| put_in(tx, touched, schema, row, WriteMode::Update))
            .await
    }

    async fn select(&self, schema: &'static EntitySchema, id: &str) -> Result<Option<Row>> {
        let id = id.to_string();
        self.with(move |c| select_tx(c, schema, &id)).await
    }

    async fn select_by_field(
        &self,
        schema: &'static EntitySchema,
        field: &str,
        value: &str,
    ) -> Result<Option<Row>> {
        let sql = rules::select_by_field_sql(schema, field, &schema::DIALECT)?;
        let value = value.to_string();
        self.with(move |c| {
            let r: Option<(String, Option<i64>)> = c
                .query_row(&sql, params![value, now()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err)?;
            r.map(|(d, t)| parse_row(&d).map(|row| with_ttl(schema, row, t)))
                .transpose()
        })
        .await
    }

    async fn delete(&self, schema: &'static EntitySchema, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |tx, touched| delete_tx(tx, schema, &id, touched))
            .await
    }

    async fn page(&self, schema: &'static EntitySchema, query: &PageQuery) -> Result<Page> {
        let q = query.clone();
        self.with(move |c| page_tx(c, schema, &q)).await
    }

    async fn replace_all(&self, data: EntitySet) -> Result<()> {
        self.write(move |tx, touched| {
            touched.reset_all();
            for s in entities::ALL.iter() {
                tx.execute(&format!("DELETE FROM \"{}\"", s.name), [])
                    .map_err(db_err)?;
            }
            tx.execute("DELETE FROM tags", []).map_err(db_err)?;
            upsert_all(tx, &data)
        })
        .await
    }

    async fn import(&self, data: EntitySet) -> Result<()> {
        self.write(move |tx, touched| {
            touched.reset_all();
            upsert_all(tx, &data)
        })
        .await
    }

    async fn load(&self, names: &[&str]) -> Result<Dataset> {
        let wanted: Vec<&'static EntitySchema> = names
            .iter()
            .map(|n| {
                entities::by_name(n).ok_or_else(|| Error::database(format!("unknown entity {n}")))
            })
            .collect::<Result<_>>()?;
        self.with(move |c| {
            let mut out = Dataset::new();
            for s in wanted {
                let mut st = c
                    .prepare(&format!(
                        "SELECT data, ttl FROM \"{}\" WHERE ttl IS NULL OR ttl > ?1 ORDER BY id",
                        s.name
                    ))
                    .map_err(db_err)?;
                let rows = st
                    .query_map(params![now()], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                    })
                    .map_err(db_err)?;
                let mut v = Vec::new();
                for r in rows {
                    let (d, t) = r.map_err(db_err)?;
                    v.push(with_ttl(s, parse_row(&d)?, t));
                }
                out.insert(s.name.to_string(), v);
            }
            Ok(out)
        })
        .await
    }

    async fn scan(&self, entity: &str, after: Option<&str>, limit: usize) -> Result<ScanPage> {
        let schema = entities::by_name(entity)
            .ok_or_else(|| Error::database(format!("unknown entity {entity}")))?;
        // The cursor is the rowid: the table's own order, read sequentially (id order
        // would visit the rows through the id index, one random page read each).
        let after: i64 = match after {
            None => 0,
            Some(c) => c
                .parse()
                .map_err(|_| Error::database(format!("invalid scan cursor {c:?}")))?,
        };
        self.with(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT rowid, id, data, ttl FROM \"{}\" WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    schema.name
                ))
                .map_err(db_err)?;
            let now = now();
            let mut last = None;
            let mut seen = 0usize;
            let mut rows = Vec::new();
            let mut q = st.query(params![after, limit as i64]).map_err(db_err)?;
            while let Some(r) = q.next().map_err(db_err)? {
                seen += 1;
                last = Some(r.get::<_, i64>(0).map_err(db_err)?);
                let expires_at: Option<i64> = r.get(3).map_err(db_err)?;
                if expires_at.is_some_and(|t| t <= now) {
                    continue;
                }
                rows.push(RawRow {
                    id: r.get::<_, String>(1).map_err(db_err)?.into_boxed_str(),
                    text: r.get::<_, String>(2).map_err(db_err)?.into_boxed_str(),
                    expires_at,
                });
            }
            let next = if seen < limit { None } else { last.map(|l| l.to_string()) };
            Ok(ScanPage { rows, next })
        })
        .await
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<Changes> {
        self.version.subscribe()
    }

    fn events(&self) -> ChangeEvents {
        self.events.subscribe()
    }

    async fn tags_page(
        &self,
        tag: Option<&str>,
        size: usize,
        offset: Option<&str>,
    ) -> Result<crate::TagPage> {
        let after = offset.map(crate::paging::decode_tag_offset).transpose()?;
        let tag = tag.map(str::to_string);
        self.with(move |c| {
            let mut sql = String::from("SELECT entity_name, entity_id, tag FROM tags WHERE 1=1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(t) = tag {
                sql.push_str(" AND tag = ?");
                args.push(t.into());
            }
            if let Some((a, b, t)) = after {
                sql.push_str(" AND (entity_name, entity_id, tag) > (?, ?, ?)");
                args.extend([a.into(), b.into(), t.into()]);
            }
            sql.push_str(&format!(
                " ORDER BY entity_name, entity_id, tag LIMIT {}",
                size + 1
            ));
            let mut st = c.prepare(&sql).map_err(db_err)?;
            let rows = st
                .query_map(params_from_iter(args), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(db_err)?;
            let mut out: Vec<(String, String, String)> = rows
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            let more = out.len() > size;
            out.truncate(size);
            let next_offset = if more {
                out.last().map(crate::paging::encode_tag_offset)
            } else {
                None
            };
            Ok(crate::TagPage {
                rows: out,
                next_offset,
            })
        })
        .await
    }

    fn hub(&self) -> &crate::Hub {
        &self.hub
    }

    async fn ping(&self) -> Result<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_err))
            .await
    }

    async fn increment_counters(
        &self,
        table: CounterTable,
        rows: Vec<CounterIncrement>,
    ) -> Result<Vec<i64>> {
        // On the writer, but no change event: counters are not configuration.
        Self::on(self.writer.clone(), move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let mut totals = vec![0; rows.len()];
            {
                let sql = rules::increment_counter_sql(table, &schema::DIALECT);
                let mut st = tx.prepare_cached(&sql).map_err(db_err)?;
                for i in rules::increment_order(&rows) {
                    let r = &rows[i];
                    totals[i] = st
                        .query_row(
                            rusqlite::params![
                                r.identifier,
                                r.period,
                                r.period_date,
                                r.service_id,
                                r.route_id,
                                r.value,
                                r.expires_at
                            ],
                            |row| row.get(0),
                        )
                        .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(totals)
        })
        .await
    }

    async fn purge_counters(&self, now: i64) -> Result<()> {
        Self::on(self.writer.clone(), move |c| {
            for t in CounterTable::ALL {
                c.execute(&rules::purge_counters_sql(t, &schema::DIALECT), [now])
                    .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn migrations_status(&self) -> Result<MigrationStatus> {
        self.with(|c| {
            let executed = executed(c)?;
            let pending = MIGRATIONS
                .iter()
                .filter(|m| !executed.iter().any(|e| e == *m))
                .map(|m| (*m).to_string())
                .collect();
            Ok(MigrationStatus { executed, pending })
        })
        .await
    }

    async fn migrations_bootstrap(&self) -> Result<Vec<String>> {
        self.write(|tx, _| run_pending(tx)).await
    }

    async fn migrations_up(&self) -> Result<Vec<String>> {
        self.write(|tx, _| run_pending(tx)).await
    }

    async fn migrations_reset(&self) -> Result<()> {
        self.write(|tx, _| {
            for s in entities::ALL.iter() {
                tx.execute(&format!("DROP TABLE IF EXISTS \"{}\"", s.name), [])
                    .map_err(db_err)?;
            }
            tx.execute_batch("DROP TABLE IF EXISTS tags; DROP TABLE IF EXISTS admin_tokens; DROP TABLE IF EXISTS schema_meta; DROP TABLE IF EXISTS ratelimiting_metrics; DROP TABLE IF EXISTS response_ratelimiting_metrics;")
                .map_err(db_err)
        })
        .await
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        self.with(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT name, hash, read_only, created_at FROM admin_tokens ORDER BY name",
                )
                .map_err(db_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(AdminToken {
                        name: r.get(0)?,
                        hash: r.get(1)?,
                        read_only: r.get::<_, i64>(2)? != 0,
                        created_at: r.get(3)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    async fn admin_token_create(&self, t: AdminToken) -> Result<()> {
        // Other processes (a running node) see the row by polling: SQLite has no
        // cross-process notification.
        self.write(move |tx, touched| {
            let taken = tx
                .query_row("SELECT 1 FROM admin_tokens WHERE name = ?1", [&t.name], |_| {
                    Ok(())
                })
                .optional()
                .map_err(db_err)?;
            if taken.is_some() {
                return Err(rules::admin_token_taken(&t.name));
            }
            tx.execute(
                "INSERT INTO admin_tokens (name, hash, read_only, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![t.name, t.hash, t.read_only as i64, t.created_at],
            )
            .map_err(db_err)?;
            touched.push(crate::ADMIN_TOKENS);
            Ok(())
        })
        .await
    }

    async fn admin_token_revoke(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx, touched| {
            let n = tx
                .execute("DELETE FROM admin_tokens WHERE name = ?1", [&name])
                .map_err(db_err)?;
            touched.push(crate::ADMIN_TOKENS);
            Ok(n > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
