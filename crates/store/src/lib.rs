//! Tollgate's storage: one [`Store`] trait, one module per backend.
//!
//! Every backend stores each entity as its full JSON row plus the columns that
//! constraints need (unique fields, foreign keys, the composite cache key, tags), all
//! derived from the entity's [`EntitySchema`], so adding an entity needs no SQL. Unique,
//! foreign-key and cascade rules are checked inside the write transaction, which yields
//! Kong's exact errors instead of parsing driver messages.

mod memory;
mod paging;
pub mod sqlite;

pub use memory::MemoryStore;
pub use paging::{decode_offset, encode_offset, Page, PageQuery, TagFilter};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::collections::BTreeMap;
pub use tollgate_model::declarative::EntitySet;
use tollgate_model::{EntitySchema, Result, Row};

/// Every entity of a configuration, keyed by entity name (`services`), rows sorted by id.
pub type Dataset = BTreeMap<String, Vec<Row>>;

/// How many committed writes touched each entity (a cascade touches the children too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    counters: BTreeMap<&'static str, u64>,
}

impl Changes {
    pub fn get(&self, entity: &str) -> u64 {
        self.counters.get(entity).copied().unwrap_or(0)
    }

    pub fn bump(&mut self, entities: &[&'static str]) {
        for e in entities {
            *self.counters.entry(e).or_insert(0) += 1;
        }
    }

    /// Bumps every entity (whole-configuration imports).
    pub fn bump_all(&mut self) {
        let all: Vec<&'static str> = tollgate_model::entities::ALL
            .iter()
            .map(|s| s.name)
            .collect();
        self.bump(&all);
    }

    /// Whether any of `entities` moved since `earlier`.
    pub fn changed_since(&self, earlier: &Changes, entities: &[&str]) -> bool {
        entities.iter().any(|e| self.get(e) != earlier.get(e))
    }
}

/// One page of `/tags`.
#[derive(Clone, Debug, Default)]
pub struct TagPage {
    pub rows: Vec<(String, String, String)>,
    pub next_offset: Option<String>,
}

/// Where migrations stand (`tollgate migrations status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    pub executed: Vec<String>,
    pub pending: Vec<String>,
}

impl MigrationStatus {
    pub fn bootstrapped(&self) -> bool {
        !self.executed.is_empty()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite`, `postgres`, `cassandra` or `off`.
    fn kind(&self) -> &'static str;

    /// Inserts a processed row. Errors: primary key, unique, foreign key violations.
    async fn insert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row>;
    /// Inserts or fully replaces the row with this id (PUT).
    async fn upsert(&self, schema: &'static EntitySchema, row: Row) -> Result<Row>;
    /// Replaces an existing row (PATCH after merging). Errors with not found.
    async fn update(&self, schema: &'static EntitySchema, row: Row) -> Result<Row>;
    async fn select(&self, schema: &'static EntitySchema, id: &str) -> Result<Option<Row>>;
    /// Looks a row up by a unique field (the endpoint key).
    async fn select_by_field(
        &self,
        schema: &'static EntitySchema,
        field: &str,
        value: &str,
    ) -> Result<Option<Row>>;
    /// Deletes a row and, per the schemas, cascades to or is restricted by its children.
    /// Deleting a missing row is not an error (Kong answers 204).
    async fn delete(&self, schema: &'static EntitySchema, id: &str) -> Result<()>;
    async fn page(&self, schema: &'static EntitySchema, query: &PageQuery) -> Result<Page>;
    /// Replaces the whole configuration atomically (db_import, `POST /config`).
    async fn replace_all(&self, data: EntitySet) -> Result<()>;
    /// Adds a whole configuration in one transaction, failing on any conflict.
    async fn import(&self, data: EntitySet) -> Result<()>;
    /// `/tags` and `/tags/{tag}`: `(entity_name, entity_id, tag)` triples, paged.
    async fn tags_page(
        &self,
        tag: Option<&str>,
        size: usize,
        offset: Option<&str>,
    ) -> Result<TagPage>;
    /// The rows of the named entities (the snapshot builder loads only what it uses).
    async fn load(&self, entities: &[&str]) -> Result<Dataset>;
    /// Everything, for db_export and `GET /config`.
    async fn load_all(&self) -> Result<Dataset> {
        let names: Vec<&str> = tollgate_model::entities::ALL
            .iter()
            .map(|s| s.name)
            .collect();
        self.load(&names).await
    }
    /// Per-entity change counters, moved by every committed write; the snapshot builder
    /// watches them and rebuilds only when an entity it uses changed.
    fn changes(&self) -> tokio::sync::watch::Receiver<Changes>;
    /// Whether the database answers (`/status`'s `database.reachable`).
    async fn ping(&self) -> Result<()>;

    async fn migrations_status(&self) -> Result<MigrationStatus>;
    /// Creates the schema on an empty database (idempotent under a lock).
    async fn migrations_bootstrap(&self) -> Result<Vec<String>>;
    /// Runs pending migrations.
    async fn migrations_up(&self) -> Result<Vec<String>>;
    /// Drops everything Tollgate created.
    async fn migrations_reset(&self) -> Result<()>;
}

/// All migrations, in order. A backend maps each name to its own DDL.
pub const MIGRATIONS: &[&str] = &["000_base", "001_tags_index"];
