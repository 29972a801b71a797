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
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tollgate_model::{EntitySchema, Error, Result, Row, RowText};

/// One entity's rows, sorted by id, each kept as its JSON text: a DB-less node with
/// 100,000 consumers holds them in a tenth of the memory maps would take. Rows are parsed
/// when read (Admin API reads, snapshot loads), never on the request path.
type Rows = Vec<Stored>;
type Compact = BTreeMap<String, Rows>;

pub struct MemoryStore {
    data: RwLock<Arc<Compact>>,
    version: tokio::sync::watch::Sender<crate::Changes>,
    events: tokio::sync::broadcast::Sender<Arc<ChangeEvent>>,
    /// DB-less nodes share nothing: broadcasts are delivered here only.
    hub: crate::Hub,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::from_set(EntitySet::default())
    }
}

/// A row's text and where its `id` is inside it: the id is read in place rather than
/// kept as a string of its own (36 bytes plus an allocation for each of 100,000s of rows).
#[derive(Debug)]
struct Stored {
    text: RowText,
    id_at: u32,
    id_len: u32,
}

impl Stored {
    fn new(text: RowText) -> Stored {
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            id: Option<&'a str>,
        }
        let t = text.as_str();
        // An id borrows from the text unless it had escapes, which no valid id has; a row
        // whose id cannot be read in place has the empty id, as one without an id.
        let (id_at, id_len) = serde_json::from_str::<IdOnly<'_>>(t)
            .ok()
            .and_then(|r| {
                let id = r.id?;
                Some((
                    u32::try_from(id.as_ptr() as usize - t.as_ptr() as usize).ok()?,
                    u32::try_from(id.len()).ok()?,
                ))
            })
            .unwrap_or((0, 0));
        Stored {
            text,
            id_at,
            id_len,
        }
    }

    fn id(&self) -> &str {
        let at = self.id_at as usize;
        &self.text.as_str()[at..at + self.id_len as usize]
    }
}

fn compact(set: EntitySet) -> Compact {
    set.entities
        .into_iter()
        .map(|(entity, rows)| {
            let mut rows: Rows = rows.into_iter().map(Stored::new).collect();
            rows.sort_by(|a, b| a.id().cmp(b.id()));
            (entity, rows)
        })
        .collect()
}

fn refuse(schema: &EntitySchema, verb: &str) -> Error {
    Error::operation_unsupported(format!(
        "cannot {verb} '{}' entities when not using a database",
        schema.name
    ))
}

impl MemoryStore {
    pub fn new(data: Dataset) -> Self {
        MemoryStore::from_set(EntitySet::from_dataset(&data))
    }

    /// A DB-less store holding a parsed declarative configuration.
    pub fn from_set(set: EntitySet) -> Self {
        let (tx, _) = tokio::sync::watch::channel(crate::Changes::default());
        MemoryStore {
            data: RwLock::new(Arc::new(compact(set))),
            version: tx,
            events: crate::event_channel(),
            hub: crate::Hub::default(),
        }
    }

    fn snapshot(&self) -> Arc<Compact> {
        self.data.read().map(|d| d.clone()).unwrap_or_default()
    }
}

fn rows_of<'d>(d: &'d Compact, entity: &str) -> &'d [Stored] {
    d.get(entity).map(Vec::as_slice).unwrap_or_default()
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
        let rows = rows_of(&d, schema.name);
        Ok(rows
            .binary_search_by(|r| r.id().cmp(id))
            .ok()
            .map(|i| rows[i].text.to_row()))
    }
    async fn select_by_field(
        &self,
        schema: &'static EntitySchema,
        field: &str,
        value: &str,
    ) -> Result<Option<Row>> {
        let d = self.snapshot();
        // Only rows whose text holds the value are parsed (a JSON string may escape it,
        // so the text check is loose only in the safe direction for plain values).
        let quoted = serde_json::to_string(value).unwrap_or_default();
        Ok(rows_of(&d, schema.name)
            .iter()
            .filter(|r| r.text.as_str().contains(quoted.as_str()))
            .map(|r| r.text.to_row())
            .find(|r| r.get(field).and_then(Value::as_str) == Some(value)))
    }
    async fn delete(&self, schema: &'static EntitySchema, _id: &str) -> Result<()> {
        Err(refuse(schema, "delete"))
    }
    async fn page(&self, schema: &'static EntitySchema, q: &PageQuery) -> Result<Page> {
        let after = q.offset.as_deref().map(decode_offset).transpose()?;
        let d = self.snapshot();
        let rows = rows_of(&d, schema.name);
        let start = match after.as_deref() {
            Some(a) => rows.partition_point(|r| r.id() <= a),
            None => 0,
        };
        let mut out: Vec<Row> = Vec::new();
        let mut more = false;
        for Stored { text, .. } in &rows[start..] {
            if let Some((_, id)) = &q.foreign {
                // A row pointing at `id` has it in its text: skip the others unparsed.
                if !text.as_str().contains(id.as_str()) {
                    continue;
                }
            }
            let r = text.to_row();
            if let Some((field, id)) = &q.foreign {
                if r.get(*field)
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    != Some(id)
                {
                    continue;
                }
            }
            if q.tags.as_ref().is_some_and(|t| !t.matches(&r)) {
                continue;
            }
            if out.len() == q.size {
                more = true;
                break;
            }
            out.push(r);
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
    async fn replace_all(&self, data: EntitySet) -> Result<()> {
        let data = compact(data);
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
            .map(|e| {
                let rows = rows_of(&d, e).iter().map(|r| r.text.to_row()).collect();
                (e.to_string(), rows)
            })
            .collect())
    }
    async fn scan(&self, entity: &str, after: Option<&str>, limit: usize) -> Result<ScanPage> {
        let d = self.snapshot();
        let rows = rows_of(&d, entity);
        // The cursor is the last id seen: rows are kept in id order.
        let start = match after {
            Some(a) => rows.partition_point(|r| r.id() <= a),
            None => 0,
        };
        let page: Vec<RawRow> = rows[start..]
            .iter()
            .take(limit)
            .map(|r| RawRow {
                id: r.id().into(),
                text: r.text.as_str().into(),
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
                // Rows without tags (`"tags":null`) are skipped unparsed.
                if !r.text.as_str().contains("\"tags\":[") {
                    continue;
                }
                if let Some(Value::Array(tags)) = r.text.to_row().get("tags") {
                    for t in tags.iter().filter_map(Value::as_str) {
                        if tag.is_none_or(|want| want == t) {
                            all.push((entity.clone(), r.id().to_string(), t.to_string()));
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
    fn hub(&self) -> &crate::Hub {
        &self.hub
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TagFilter;
    use serde_json::json;
    use tollgate_model::entities::by_name;

    fn store() -> MemoryStore {
        let mut d = Dataset::new();
        let row = |v: Value| v.as_object().unwrap().clone();
        d.insert(
            "consumers".into(),
            (0..5)
                .map(|i| {
                    row(json!({"id": format!("0000000{i}-0000-4000-8000-000000000000"),
                        "username": format!("u{i}"), "tags": if i % 2 == 0 { json!(["even"]) } else { Value::Null }}))
                })
                .collect(),
        );
        d.insert(
            "keyauth_credentials".into(),
            vec![row(
                json!({"id": "10000000-0000-4000-8000-000000000000", "key": "k\"1",
                "consumer": {"id": "00000003-0000-4000-8000-000000000000"}}),
            )],
        );
        MemoryStore::new(d)
    }

    #[test]
    fn a_stored_row_reads_its_id_in_place() {
        let text = |v: Value| RowText::new(v.as_object().unwrap());
        let id = "00000001-0000-4000-8000-000000000000";
        // the top-level id, wherever it is, not a foreign key's
        let s = Stored::new(text(json!({"consumer": {"id": "x"}, "key": "k", "id": id})));
        assert_eq!(s.id(), id);
        assert_eq!(s.text.to_row()["id"], id);
        // no id, or one that is not a string or has escapes: the empty id
        assert_eq!(Stored::new(text(json!({"key": "k"}))).id(), "");
        assert_eq!(Stored::new(text(json!({"id": 5}))).id(), "");
        assert_eq!(Stored::new(text(json!({"id": "a\"b"}))).id(), "");
    }

    #[tokio::test]
    async fn reads_compact_rows() {
        let s = store();
        let consumers = by_name("consumers").unwrap();
        let c = s
            .select(consumers, "00000002-0000-4000-8000-000000000000")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c["username"], "u2");
        let u = s
            .select_by_field(consumers, "username", "u4")
            .await
            .unwrap();
        assert_eq!(u.unwrap()["username"], "u4");
        let keys = by_name("keyauth_credentials").unwrap();
        // a value JSON escapes in the text is still found
        let k = s.select_by_field(keys, "key", "k\"1").await.unwrap();
        assert!(k.is_some());
        assert!(s
            .select_by_field(consumers, "username", "nobody")
            .await
            .unwrap()
            .is_none());

        let mut q = PageQuery {
            size: 2,
            ..Default::default()
        };
        let mut names = Vec::new();
        loop {
            let p = s.page(consumers, &q).await.unwrap();
            names.extend(
                p.rows
                    .iter()
                    .map(|r| r["username"].as_str().unwrap().to_string()),
            );
            match p.next_offset {
                Some(o) => q.offset = Some(o),
                None => break,
            }
        }
        assert_eq!(names, ["u0", "u1", "u2", "u3", "u4"]);
        let q = PageQuery {
            size: 10,
            foreign: Some(("consumer", "00000003-0000-4000-8000-000000000000".into())),
            ..Default::default()
        };
        assert_eq!(s.page(keys, &q).await.unwrap().rows.len(), 1);
        let q = PageQuery {
            size: 10,
            tags: Some(TagFilter::All(vec!["even".into()])),
            ..Default::default()
        };
        assert_eq!(s.page(consumers, &q).await.unwrap().rows.len(), 3);
        assert_eq!(
            s.tags_page(Some("even"), 10, None)
                .await
                .unwrap()
                .rows
                .len(),
            3
        );

        let first = s.scan("consumers", None, 3).await.unwrap();
        let rest = s.scan("consumers", first.next.as_deref(), 3).await.unwrap();
        assert_eq!(first.rows.len() + rest.rows.len(), 5);
        assert!(rest.next.is_none());
        let loaded = s.load(&["consumers"]).await.unwrap();
        assert_eq!(loaded["consumers"].len(), 5);

        s.replace_all(EntitySet::default()).await.unwrap();
        assert!(s
            .select(consumers, "00000002-0000-4000-8000-000000000000")
            .await
            .unwrap()
            .is_none());
    }
}
