//! The PostgreSQL store: the same tables, checks, errors and change events as the
//! embedded SQLite store, shared by any number of nodes.
//!
//! Consistency: every write is one transaction that takes a cluster-wide advisory lock,
//! checks its constraints (Kong's errors, [`crate::rules`]), writes, and appends its row
//! changes to `cluster_events` with a `NOTIFY` — so writes are serialisable across nodes
//! and every node's snapshot follows them in commit order ([`events`]). Admin reads go to
//! the primary (read-your-writes); the snapshot builder's bulk reads (`load`, `scan`) go to
//! the `pg_ro_*` replica when one is set, which may lag the events by its replication
//! delay (Kong makes the same trade).

mod events;
mod options;
mod schema;
mod store;
#[doc(hidden)]
pub mod test_server;

pub use options::{PgOptions, PgSettings};
pub use store::PostgresStore;

use tollgate_model::Error;

/// An error with its causes (`a: b: c`): the driver's top-level message alone ("error
/// performing TLS handshake") hides what to fix.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    if e.is_closed() || e.as_db_error().is_none() {
        return Error::database_unreachable(format!(
            "postgres: the database is unreachable ({})",
            chain(&e)
        ));
    }
    match e.as_db_error() {
        Some(db) if db.code() == &tokio_postgres::error::SqlState::DISK_FULL => {
            Error::storage_full(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        Some(db) => Error::database(format!("postgres: {} ({})", db.message(), db.code().code())),
        None => Error::database(format!("postgres: {e}")),
    }
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    pool_error(e, "")
}

/// A failure to get a connection: the server refused it (authentication, unknown
/// database: a configuration error) or could not be reached.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError, server: &str) -> Error {
    let at = if server.is_empty() {
        String::new()
    } else {
        format!(" at {server}")
    };
    if let deadpool_postgres::PoolError::Backend(b) = &e {
        if let Some(db) = b.as_db_error() {
            return Error::database(format!(
                "postgres: the server{at} refused the connection: {} ({})",
                db.message(),
                db.code().code()
            ));
        }
    }
    Error::database_unreachable(format!(
        "postgres: the database is unreachable{at} ({})",
        chain(&e)
    ))
}

#[cfg(test)]
mod tests;
