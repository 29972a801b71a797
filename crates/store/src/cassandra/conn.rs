//! The session (made on first use, so a node starts while Cassandra is down), prepared
//! statements cached by their text, and the consistency each kind of statement runs at.

use super::options::CassandraSettings;
use super::{cerr, Keyspace};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryRowsResult;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_model::{Error, Result};

/// What a statement does, which decides its consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Read,
    Write,
    /// A lightweight transaction (`IF …`): Paxos at the serial consistency.
    Lwt,
    /// A read that sees every accepted LWT (reading back after "CAS result unknown").
    Serial,
}

pub(crate) struct Conn {
    pub settings: CassandraSettings,
    pub ks: Keyspace,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    prepared: Mutex<HashMap<(String, Kind), PreparedStatement>>,
}

impl Conn {
    pub fn new(settings: CassandraSettings) -> Self {
        let ks = Keyspace::new(&settings.keyspace);
        Conn {
            settings,
            ks,
            session: tokio::sync::Mutex::new(None),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The session, connecting when there is none yet (the driver reconnects by itself
    /// once it has one).
    pub async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let st = &self.settings;
        let mut profile = ExecutionProfile::builder()
            .consistency(st.read_consistency)
            .serial_consistency(Some(st.serial_consistency))
            .request_timeout(Some(st.timeout));
        if let Some(dc) = &st.local_datacenter {
            profile = profile.load_balancing_policy(
                DefaultPolicy::builder()
                    .prefer_datacenter(dc.clone())
                    .build(),
            );
        }
        let profile = profile.build().into_handle();
        let mut b = SessionBuilder::new()
            .known_nodes(st.contact_points.iter().map(|h| format!("{h}:{}", st.port)))
            .connection_timeout(st.timeout)
            .schema_agreement_timeout(st.schema_consensus_timeout)
            .default_execution_profile_handle(profile);
        if let (Some(u), Some(p)) = (&st.username, &st.password) {
            b = b.user(u.clone(), p.clone());
        }
        if st.ssl {
            let tls = crate::tls::client_config("cassandra", st.ssl_verify, &st.trusted_cas)?;
            b = b.tls_context(Some(Arc::new(tls)));
        }
        let s = tokio::time::timeout(st.timeout + std::time::Duration::from_secs(1), b.build())
            .await
            .map_err(|_| {
                Error::database_unreachable(format!(
                    "cassandra: no answer from {} within {} ms",
                    st.describe(),
                    st.timeout.as_millis()
                ))
            })?
            .map_err(|e| {
                // A refused certificate reads as a plain connection failure: name the keys.
                let tls = if st.ssl {
                    " (cassandra_ssl = on: check the node's certificate against \
                     cassandra_ssl_verify and lua_ssl_trusted_certificate)"
                } else {
                    ""
                };
                Error::database_unreachable(format!(
                    "cassandra: cannot connect to {}: {e}{tls}",
                    st.describe()
                ))
            })?;
        let s = Arc::new(s);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// The prepared form of `cql` at the consistency of `kind`.
    pub async fn prepare(&self, cql: &str, kind: Kind) -> Result<PreparedStatement> {
        let key = (cql.to_string(), kind);
        if let Some(p) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let s = self.session().await?;
        let mut p = s.prepare(cql).await.map_err(super::perr)?;
        let st = &self.settings;
        match kind {
            Kind::Read => p.set_consistency(st.read_consistency),
            Kind::Write => p.set_consistency(st.write_consistency),
            Kind::Lwt => {
                p.set_consistency(st.write_consistency);
                p.set_serial_consistency(Some(st.serial_consistency));
            }
            Kind::Serial => p.set_consistency(match st.serial_consistency {
                SerialConsistency::LocalSerial => Consistency::LocalSerial,
                _ => Consistency::Serial,
            }),
        }
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, p.clone());
        Ok(p)
    }

    /// Runs one statement; its rows when it returns any.
    pub async fn run(
        &self,
        cql: &str,
        kind: Kind,
        values: impl SerializeRow,
    ) -> Result<Option<QueryRowsResult>> {
        let p = self.prepare(cql, kind).await?;
        let s = self.session().await?;
        let r = s.execute_unpaged(&p, values).await.map_err(cerr)?;
        if r.is_rows() {
            Ok(Some(r.into_rows_result().map_err(|e| {
                Error::database(format!("cassandra: unreadable result: {e}"))
            })?))
        } else {
            Ok(None)
        }
    }

    /// Runs a statement that returns rows.
    pub async fn rows(
        &self,
        cql: &str,
        kind: Kind,
        values: impl SerializeRow,
    ) -> Result<QueryRowsResult> {
        self.run(cql, kind, values)
            .await?
            .ok_or_else(|| Error::database(format!("cassandra: no rows from {cql}")))
    }

    /// A schema change (unprepared), followed by a wait for every node to agree on it.
    pub async fn ddl(&self, cql: &str) -> Result<()> {
        let s = self.session().await?;
        s.query_unpaged(cql, ()).await.map_err(cerr)?;
        s.await_schema_agreement().await.map_err(|e| {
            Error::database(format!(
                "cassandra: the nodes did not agree on the schema within {} ms: {e}",
                self.settings.schema_consensus_timeout.as_millis()
            ))
        })?;
        // Statements prepared against the old schema may name dropped tables.
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}

/// Decodes rows, mapping a type mismatch to a database error.
pub(crate) fn decode<'a, R>(r: &'a QueryRowsResult) -> Result<Vec<R>>
where
    R: scylla::deserialize::row::DeserializeRow<'a, 'a>,
{
    r.rows::<R>()
        .map_err(|e| Error::database(format!("cassandra: unexpected result: {e}")))?
        .collect::<std::result::Result<Vec<R>, _>>()
        .map_err(|e| Error::database(format!("cassandra: unexpected row: {e}")))
}

impl Conn {
    /// Runs one statement and hands back the driver's own error (LWTs inspect it); the
    /// outer error is a failure to prepare or connect.
    pub async fn exec(
        &self,
        cql: &str,
        kind: Kind,
        values: impl SerializeRow,
    ) -> Result<std::result::Result<QueryRowsResult, scylla::errors::ExecutionError>> {
        let p = self.prepare(cql, kind).await?;
        let s = self.session().await?;
        Ok(match s.execute_unpaged(&p, values).await {
            Ok(r) => Ok(r.into_rows_result().map_err(|e| {
                Error::database(format!("cassandra: an LWT returned no rows: {e}"))
            })?),
            Err(e) => Err(e),
        })
    }
}

impl Conn {
    /// One page of at most `size` rows from `state`, and where the next page starts
    /// (`None`: no more). The driver's own error is handed back (a client's paging state
    /// that Cassandra rejects is an invalid offset, not a database error).
    pub async fn page(
        &self,
        cql: &str,
        kind: Kind,
        values: impl SerializeRow,
        state: PagingState,
        size: usize,
    ) -> Result<std::result::Result<(QueryRowsResult, Option<PagingState>), ExecutionError>> {
        let mut p = self.prepare(cql, kind).await?;
        p.set_page_size(size.clamp(1, i32::MAX as usize) as i32);
        let s = self.session().await?;
        Ok(match s.execute_single_page(&p, values, state).await {
            Ok((r, next)) => {
                let rows = r
                    .into_rows_result()
                    .map_err(|e| Error::database(format!("cassandra: unreadable result: {e}")))?;
                Ok((rows, next.into_paging_control_flow().continue_value()))
            }
            Err(e) => Err(e),
        })
    }
}

/// Plain (non-LWT) writes to apply together, in order.
#[derive(Default)]
pub(crate) struct Writes(Vec<(String, Vec<Option<CqlValue>>)>);

impl Writes {
    pub fn push(&mut self, cql: String, values: Vec<Option<CqlValue>>) {
        self.0.push((cql, values));
    }
}

/// A write that failed, and whether it may still have been applied (or may still be:
/// a logged batch whose batchlog was written is replayed by Cassandra).
pub(crate) struct Failed {
    pub error: Error,
    pub maybe_applied: bool,
}

/// Whether Cassandra surely did not apply a request that failed with `e` (refused
/// before writing, or never sent).
fn not_applied(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(_)
        | ExecutionError::ConnectionPoolError(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::AuthenticationError
                | DbError::Unauthorized
                | DbError::ConfigError
                | DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::Unprepared { .. }
                | DbError::ProtocolError
                | DbError::RateLimitReached { .. }
        ),
        _ => false,
    }
}

/// Cassandra's refusal of a batch above `batch_size_fail_threshold` (50 KiB by default).
fn too_large(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(DbError::Invalid, msg))
            if msg.contains("Batch too large")
    )
}

impl Conn {
    /// Applies `w` as one logged batch: all of it or nothing, even when this process dies
    /// once it is sent (Cassandra's batchlog finishes it). A batch Cassandra refuses as
    /// too large is applied statement by statement, in order, instead.
    pub async fn apply(&self, w: &Writes) -> std::result::Result<(), Failed> {
        let sure = |error| Failed {
            error,
            maybe_applied: false,
        };
        let mut batch = Batch::new(BatchType::Logged);
        let mut prepared = Vec::with_capacity(w.0.len());
        for (cql, _) in &w.0 {
            let p = self.prepare(cql, Kind::Write).await.map_err(sure)?;
            batch.append_statement(p.clone());
            prepared.push(p);
        }
        batch.set_consistency(self.settings.write_consistency);
        let s = self.session().await.map_err(sure)?;
        let values: Vec<&Vec<Option<CqlValue>>> = w.0.iter().map(|(_, v)| v).collect();
        let e = match s.batch(&batch, &values).await {
            Ok(_) => return Ok(()),
            Err(e) if too_large(&e) => e,
            Err(e) => {
                return Err(Failed {
                    maybe_applied: !not_applied(&e),
                    error: cerr(e),
                })
            }
        };
        tracing::debug!("cassandra: {e}; writing its statements one by one");
        for (i, (p, v)) in prepared.iter().zip(values).enumerate() {
            if let Err(e) = s.execute_unpaged(p, v).await {
                return Err(Failed {
                    maybe_applied: i > 0 || !not_applied(&e),
                    error: cerr(e),
                });
            }
        }
        Ok(())
    }
}
