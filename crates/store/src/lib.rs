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
use tollgate_model::{EntitySchema, Result, Row};

/// Every entity of a configuration, keyed by entity name (`services`), rows sorted by id.
pub type Dataset = BTreeMap<String, Vec<Row>>;

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
    async fn replace_all(&self, data: Dataset) -> Result<()>;
    /// Adds a whole configuration in one transaction, failing on any conflict.
    async fn import(&self, data: Dataset) -> Result<()>;
    /// `/tags` and `/tags/{tag}`: `(entity_name, entity_id, tag)` triples, paged.
    async fn tags_page(
        &self,
        tag: Option<&str>,
        size: usize,
        offset: Option<&str>,
    ) -> Result<TagPage>;
    /// Everything, for the snapshot builder and db_export.
    async fn load_all(&self) -> Result<Dataset>;
    /// A counter that moves on every committed change; the snapshot builder watches it.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
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
