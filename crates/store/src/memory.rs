//! DB-less mode (`database = off`): the configuration lives in memory, loaded from the
//! declarative file or `POST /config`. Reads behave like any store; entity writes are
//! refused with Kong's code 12.

use crate::paging::{decode_offset, encode_offset};
use crate::{
    ChangeEvent, ChangeEvents, Dataset, EntitySet, MigrationStatus, Page, PageQuery, RawRow,
    ScanPage, Store,
};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use tollgate_model::{EntitySchema, Error, Result, Row};

pub struct MemoryStore {
    data: RwLock<Arc<Dataset>>,
    version: tokio::sync::watch::Sender<crate::Changes>,
    events: tokio::sync::broadcast::Sender<Arc<ChangeEvent>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Dataset::new())
    }
}

fn refuse(schema: &EntitySchema, verb: &str) -> Error {
    Error::operation_unsupported(format!(
        "cannot {verb} '{}' entities when not using a database",
        schema.name
    ))
}

fn id_of(r: &Row) -> &str {
    r.get("id").and_then(Value::as_str).unwrap_or_default()
}

impl MemoryStore {
    pub fn new(mut data: Dataset) -> Self {
        for rows in data.values_mut() {
            rows.sort_by(|a, b| id_of(a).cmp(id_of(b)));
        }
        let (tx, _) = tokio::sync::watch::channel(crate::Changes::default());
        MemoryStore {
            data: RwLock::new(Arc::new(data)),
            version: tx,
            events: crate::event_channel(),
        }
    }

    fn snapshot(&self) -> Arc<Dataset> {
        self.data.read().map(|d| d.clone()).unwrap_or_default()
    }

    fn rows(&self, schema: &EntitySchema) -> Vec<Row> {
        self.snapshot()
            .get(schema.name)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "off"
    }
    async fn insert(&self, schema: &'static EntitySchema, _row: Row) -> Result<Row> {
        Err(refuse(schema, "create"))
    }
    async fn upsert(&self, schema: &'static EntitySchema, _row: Row) -> Result<Row> {
        Err(refuse(schema, "create or update"))
    }
    async fn update(&self, schema: &'static EntitySchema, _row: Row) -> Result<Row> {
        Err(refuse(schema, "update"))
    }
    async fn select(&self, schema: &'static EntitySchema, id: &str) -> Result<Option<Row>> {
        let d = self.snapshot();
        let rows = d.get(schema.name).map(Vec::as_slice).unwrap_or_default();
        Ok(rows
            .binary_search_by(|r| id_of(r).cmp(id))
            .ok()
            .map(|i| rows[i].clone()))
    }
    async fn select_by_field(
        &self,
        schema: &'static EntitySchema,
        field: &str,
        value: &str,
    ) -> Result<Option<Row>> {
        Ok(self
            .rows(schema)
            .into_iter()
            .find(|r| r.get(field).and_then(Value::as_str) == Some(value)))
    }
    async fn delete(&self, schema: &'static EntitySchema, _id: &str) -> Result<()> {
        Err(refuse(schema, "delete"))
    }
    async fn page(&self, schema: &'static EntitySchema, q: &PageQuery) -> Result<Page> {
        let after = q.offset.as_deref().map(decode_offset).transpose()?;
        let d = self.snapshot();
        let rows = d.get(schema.name).map(Vec::as_slice).unwrap_or_default();
        let mut out = Vec::new();
        let mut more = false;
        for r in rows {
            if after.as_deref().is_some_and(|a| id_of(r) <= a) {
                continue;
            }
            if let Some((field, id)) = &q.foreign {
                if r.get(*field)
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    != Some(id)
                {
                    continue;
                }
            }
            if q.tags.as_ref().is_some_and(|t| !t.matches(r)) {
                continue;
            }
            if out.len() == q.size {
                more = true;
                break;
            }
            out.push(r.clone());
        }
        let next_offset = if more {
            out.last().map(|r| encode_offset(id_of(r)))
        } else {
            None
        };
        Ok(Page {
            rows: out,
            next_offset,
        })
    }
    async fn replace_all(&self, data: EntitySet) -> Result<()> {
        let mut data = data.into_dataset();
        for rows in data.values_mut() {
            rows.sort_by(|a, b| id_of(a).cmp(id_of(b)));
        }
        if let Ok(mut d) = self.data.write() {
            *d = Arc::new(data);
            // Under the lock, so a reset never overtakes the configuration it announces.
            let _ = self.events.send(Arc::new(ChangeEvent::Reset));
        }
        self.version.send_modify(crate::Changes::bump_all);
        Ok(())
    }
    async fn import(&self, _data: EntitySet) -> Result<()> {
        Err(Error::operation_unsupported(
            "cannot import into the database when not using a database",
        ))
    }
    async fn load(&self, entities: &[&str]) -> Result<Dataset> {
        let d = self.snapshot();
        Ok(entities
            .iter()
            .map(|e| (e.to_string(), d.get(*e).cloned().unwrap_or_default()))
            .collect())
    }
    async fn scan(&self, entity: &str, after: Option<&str>, limit: usize) -> Result<ScanPage> {
        let d = self.snapshot();
        let rows = d.get(entity).map(Vec::as_slice).unwrap_or_default();
        // The cursor is the last id seen: rows are kept in id order.
        let start = match after {
            Some(a) => rows.partition_point(|r| id_of(r) <= a),
            None => 0,
        };
        let page: Vec<RawRow> = rows[start..]
            .iter()
            .take(limit)
            .map(|r| RawRow {
                id: id_of(r).into(),
                text: serde_json::to_string(r)
                    .unwrap_or_default()
                    .into_boxed_str(),
                expires_at: None,
            })
            .collect();
        let next = (page.len() == limit)
            .then(|| page.last().map(|r| r.id.to_string()))
            .flatten();
        Ok(ScanPage { rows: page, next })
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<crate::Changes> {
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
        let d = self.snapshot();
        let mut all = Vec::new();
        for (entity, rows) in d.iter() {
            for r in rows {
                if let Some(Value::Array(tags)) = r.get("tags") {
                    for t in tags.iter().filter_map(Value::as_str) {
                        if tag.is_none_or(|want| want == t) {
                            all.push((entity.clone(), id_of(r).to_string(), t.to_string()));
                        }
                    }
                }
            }
        }
        all.sort();
        let mut out: Vec<_> = all
            .into_iter()
            .filter(|x| after.as_ref().is_none_or(|a| x > a))
            .take(size + 1)
            .collect();
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
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
    async fn migrations_status(&self) -> Result<MigrationStatus> {
        Ok(MigrationStatus {
            executed: Vec::new(),
            pending: Vec::new(),
        })
    }
    async fn migrations_bootstrap(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn migrations_up(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn migrations_reset(&self) -> Result<()> {
        Ok(())
    }
}
