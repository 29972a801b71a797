//! Tollgate's storage: one [`Store`] trait, one module per backend.
//!
//! Every backend stores each entity as its full JSON row plus the columns that
//! constraints need (unique fields, foreign keys, the composite cache key, tags), all
//! derived from the entity's [`EntitySchema`], so adding an entity needs no SQL. Unique,
//! foreign-key and cascade rules are checked inside the write transaction, which yields
//! Kong's exact errors instead of parsing driver messages.

#[cfg(test)]
mod conformance;

mod broadcast;
pub mod cassandra;
mod codec;
mod memory;
mod paging;
pub mod postgres;
mod rules;
pub mod sqlite;
mod test_script;
mod tls;

pub use broadcast::{Hub, Purge, Subscriber};
pub use memory::MemoryStore;
pub use paging::{decode_offset, encode_offset, Page, PageQuery, TagFilter};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
pub use tollgate_model::counters::{CounterIncrement, CounterTable};
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

/// One stored row in its stored form, unparsed: its id, its JSON text (the `data` column)
/// and, for entities with a `ttl`, its absolute expiry in Unix seconds.
/// One page of [`Store::scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub rows: Vec<RawRow>,
    /// The cursor of the next page; `None` when this was the last.
    pub next: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRow {
    pub id: Box<str>,
    pub text: Box<str>,
    pub expires_at: Option<i64>,
}

/// How a write treats a stored row with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// The id must be new (POST).
    Insert,
    /// Create or fully replace (PUT).
    Upsert,
    /// The row must exist (PATCH).
    Update,
}

/// What a committed write did to one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// Created or replaced: `new` holds the row as stored, `old` the previous version.
    Upsert,
    /// Deleted (directly or by a cascade): `old` holds the row as it was.
    Delete,
}

/// One row changed by a committed write.
///
/// `old` is required for updates and deletes: an index keyed by something other than the
/// id (a key-auth key, a basic-auth username) finds the entry to drop through it. Kong's
/// DAO carries the same pair (`entity`, `old_entity`) in its cluster events, so the
/// PostgreSQL store (LISTEN/NOTIFY with the rows in `cluster_events`) and the Cassandra
/// store produce these events unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    pub entity: &'static str,
    pub id: Box<str>,
    pub op: ChangeOp,
    pub new: Option<RawRow>,
    pub old: Option<RawRow>,
}

/// Everything one commit changed, delivered in commit order on [`Store::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeEvent {
    /// Row by row; a cascade lists the children's deletes before the parent's.
    Rows(Vec<RowChange>),
    /// A whole-configuration write (db_import, `POST /config`): reload everything.
    Reset,
}

/// A subscription to [`ChangeEvent`]s. A receiver that falls more than
/// [`EVENT_CAPACITY`] commits behind gets `RecvError::Lagged`: it missed changes and must
/// reload what it derives from the store (resubscribing first, then replaying).
pub type ChangeEvents = tokio::sync::broadcast::Receiver<Arc<ChangeEvent>>;

/// How many commits a subscriber may fall behind before it has to reload.
pub const EVENT_CAPACITY: usize = 8192;

pub(crate) fn event_channel() -> tokio::sync::broadcast::Sender<Arc<ChangeEvent>> {
    tokio::sync::broadcast::channel(EVENT_CAPACITY).0
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
    /// The status given the executed migrations: every other one of [`MIGRATIONS`] is
    /// pending.
    pub fn from_executed(executed: Vec<String>) -> Self {
        let pending = MIGRATIONS
            .iter()
            .filter(|m| !executed.iter().any(|e| e == *m))
            .map(|m| (*m).to_string())
            .collect();
        MigrationStatus { executed, pending }
    }

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
    /// Writes a row with `mode` together with rows that reference it (a certificate and
    /// its SNIs): removes the `remove` rows and inserts the `add` rows, as one write —
    /// all or nothing where the database has transactions (SQLite, PostgreSQL) or logged
    /// batches (Cassandra), so a crash or a refused child never leaves the parent
    /// half-written. Answers the parent.
    async fn write_family(
        &self,
        schema: &'static EntitySchema,
        row: Row,
        mode: WriteMode,
        add: Vec<(&'static EntitySchema, Row)>,
        remove: Vec<(&'static EntitySchema, String)>,
    ) -> Result<Row> {
        let saved = match mode {
            WriteMode::Insert => self.insert(schema, row).await?,
            WriteMode::Upsert => self.upsert(schema, row).await?,
            WriteMode::Update => self.update(schema, row).await?,
        };
        for (s, id) in remove {
            self.delete(s, &id).await?;
        }
        for (s, r) in add {
            self.insert(s, r).await?;
        }
        Ok(saved)
    }
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
    /// Up to `limit` unexpired rows of one entity as stored (no JSON parsing), from the
    /// opaque cursor `after` (`None`: the start) in the backend's cheapest order: callers
    /// holding many rows (the consumer index) page through an entity with this instead of
    /// [`Store::load`]. The page's `next` continues the scan; `None` means it is done.
    async fn scan(&self, entity: &str, after: Option<&str>, limit: usize) -> Result<ScanPage>;
    /// Row-level change events of every committed write, in commit order, alongside the
    /// counters of [`Store::changes`]. Subscribe before reading what the events patch.
    fn events(&self) -> ChangeEvents;
    /// Everything, for db_export and `GET /config`.
    async fn load_all(&self) -> Result<Dataset> {
        let names: Vec<&str> = tollgate_model::entities::ALL
            .iter()
            .map(|s| s.name)
            .collect();
        self.load(&names).await
    }
    /// Per-entity change counters, moved by every committed write (after its
    /// [`Store::events`]); for whoever needs to know that something changed, not what (the
    /// saved configuration of `db_snapshot`).
    fn changes(&self) -> tokio::sync::watch::Receiver<Changes>;
    /// Whether the database answers (`/status`'s `database.reachable`).
    async fn ping(&self) -> Result<()>;

    /// This node's subscribers to [`Store::broadcast`].
    fn hub(&self) -> &Hub;
    /// Tells node-local caches on every node to drop what `purge` names (Kong's
    /// `cluster_events:broadcast`): the subscribers of `channel` here get it before this
    /// returns, those of the other nodes when they replay `cluster_events`. An error
    /// means no node was told (this one included), so a retry finds the entry again.
    async fn broadcast(&self, channel: &str, purge: Purge) -> Result<()> {
        self.hub().deliver(channel, &purge);
        Ok(())
    }
    /// Calls `f` with every purge broadcast on `channel` (this node's own included, once
    /// each), and with [`Purge::All`] when this node may have missed some.
    fn subscribe(&self, channel: &str, f: Subscriber) {
        self.hub().subscribe(channel, f);
    }

    /// The `cluster` rate-limiting policy: adds each increment to its counter atomically
    /// and answers the totals after them, in order (an empty batch checks the database
    /// answers). Stores without a database refuse (Kong refuses `cluster` in DB-less mode).
    async fn increment_counters(
        &self,
        _table: CounterTable,
        _rows: Vec<CounterIncrement>,
    ) -> Result<Vec<i64>> {
        Err(tollgate_model::Error::database(format!(
            "the cluster policy keeps its counters in the database, and this store ({}) keeps none: use the local or redis policy",
            self.kind()
        )))
    }
    /// Deletes counters whose window ended before `now` (seconds since the epoch).
    async fn purge_counters(&self, _now: i64) -> Result<()> {
        Ok(())
    }

    async fn migrations_status(&self) -> Result<MigrationStatus>;
    /// Creates the schema on an empty database (idempotent under a lock).
    async fn migrations_bootstrap(&self) -> Result<Vec<String>>;
    /// Runs pending migrations.
    async fn migrations_up(&self) -> Result<Vec<String>>;
    /// Drops everything Tollgate created.
    async fn migrations_reset(&self) -> Result<()>;

    /// The Admin API tokens (`admin_auth = token`), by name. They are not entities: the
    /// Admin API, exports and change events never carry them.
    async fn admin_tokens(&self) -> Result<Vec<AdminToken>> {
        Err(no_admin_tokens(self.kind()))
    }
    /// Adds a token; a taken name is a unique violation.
    async fn admin_token_create(&self, _token: AdminToken) -> Result<()> {
        Err(no_admin_tokens(self.kind()))
    }
    /// Removes the named token; `false` when there was none.
    async fn admin_token_revoke(&self, _name: &str) -> Result<bool> {
        Err(no_admin_tokens(self.kind()))
    }
}

fn no_admin_tokens(kind: &str) -> tollgate_model::Error {
    tollgate_model::Error::database(format!(
        "database = {kind} keeps no Admin API tokens (use database = sqlite, postgres or cassandra, or admin_auth = mtls)"
    ))
}

/// One Admin API token as stored: never the token itself, only its SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    pub name: String,
    pub hash: String,
    pub read_only: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// The [`Changes`] counter a token creation or revocation moves (on PostgreSQL and
/// Cassandra on every node, through `cluster_events`).
pub const ADMIN_TOKENS: &str = "admin_tokens";

/// All migrations, in order. A backend maps each name to its own DDL.
pub const MIGRATIONS: &[&str] = &[
    "000_base",
    "001_tags_index",
    "002_admin_tokens",
    "003_counters",
];
