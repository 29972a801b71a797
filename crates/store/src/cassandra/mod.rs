//! The Cassandra store: the Admin API behaviour of the SQL stores on Apache Cassandra
//! (3.11+, tested on 5.0), shared by any number of nodes, without Kong 2.8's known holes.
//!
//! Layout (few tables: every schema change costs a second on a slow cluster):
//! - `entities ((entity), id)`: every row of one entity type in one partition, ordered by
//!   id, as its JSON text and absolute expiry — listings are single-partition reads, and
//!   the `offset` of a page is Cassandra's paging state ([`paging`]): valid on any node,
//!   never repeating an entity.
//! - `refs ((entity, field, parent), id)`: the children of a row, for nested listings,
//!   cascades and restricted deletes.
//! - `uniques (k)`: one row per unique value (and cache key), claimed with
//!   `INSERT … IF NOT EXISTS` — a lightweight transaction, so the same name created
//!   through two nodes at once gives exactly one winner ([`unique`]).
//! - `cluster_events ((channel), at)` with a TTL: what the other nodes replay ([`events`]).
//! - `meta (key)`: executed migrations, the migrations lock ([`schema`]) and the Admin API
//!   tokens ([`admin_tokens`]).
//! - `counters`: the rate-limiting plugins' `cluster` counters, a counter table
//!   ([`counters`]).
//!
//! Tags are read from the rows themselves (a tag filter scans the entity's partition).

mod admin_tokens;
mod conn;
mod counters;
mod events;
mod options;
mod paging;
mod schema;
mod store;
#[doc(hidden)]
pub mod test_server;
mod unique;

pub use options::{parse_consistency, parse_data_centers, CassandraSettings, Replication};
pub use scylla::frame::types::{Consistency, SerialConsistency};
pub use store::CassandraStore;

use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError, WriteType};
use tollgate_model::Error;

/// Fully qualified table names in the configured keyspace.
#[derive(Clone, Debug)]
pub(crate) struct Keyspace {
    /// The keyspace as written in CQL (double-quoted: case and characters kept).
    pub quoted: String,
    pub name: String,
}

impl Keyspace {
    fn new(name: &str) -> Self {
        Keyspace {
            quoted: format!("\"{}\"", name.replace('"', "\"\"")),
            name: name.to_string(),
        }
    }

    pub fn t(&self, table: &str) -> String {
        format!("{}.{table}", self.quoted)
    }
}

fn attempt_unreachable(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadFailure { .. }
                | DbError::WriteFailure { .. }
        ),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => true,
        _ => false,
    }
}

fn classify(unreachable: bool, e: &dyn std::fmt::Display) -> Error {
    if unreachable {
        Error::database_unreachable(format!("cassandra: the database is unreachable ({e})"))
    } else {
        Error::database(format!("cassandra: {e}"))
    }
}

/// A request's error in Kong's terms: unreachable (down, overloaded, timed out: a 503
/// and `database.reachable: false`) or a plain database error.
pub(crate) fn cerr(e: ExecutionError) -> Error {
    let unreachable = match &e {
        ExecutionError::LastAttemptError(a) => attempt_unreachable(a),
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::PrepareError(p) => prepare_unreachable(p),
        _ => false,
    };
    classify(unreachable, &e)
}

fn prepare_unreachable(e: &PrepareError) -> bool {
    match e {
        PrepareError::ConnectionPoolError(_) => true,
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_unreachable(first_attempt),
        _ => false,
    }
}

pub(crate) fn perr(e: PrepareError) -> Error {
    classify(prepare_unreachable(&e), &e)
}

/// Whether an LWT failed without knowing if it was applied (Cassandra's CasWriteUnknown,
/// or a timeout during Paxos): the caller reads back at SERIAL.
pub(crate) fn cas_unknown(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::Other(0x1700)
                | DbError::WriteTimeout {
                    write_type: WriteType::Cas,
                    ..
                }
        ),
        ExecutionError::RequestTimeout(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_shared_state;
