//! Connection settings: Kong's `cassandra_*` keys.

use scylla::frame::types::{Consistency, SerialConsistency};
use std::path::PathBuf;
use std::time::Duration;
use tollgate_model::{Error, Result};

/// How the keyspace is replicated when the store creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    /// `cassandra_repl_strategy = SimpleStrategy`, `cassandra_repl_factor`.
    Simple(u32),
    /// `NetworkTopologyStrategy` with `cassandra_data_centers` (`dc1:2,dc2:3`).
    NetworkTopology(Vec<(String, u32)>),
}

/// Everything the Cassandra store needs.
#[derive(Clone, Debug)]
pub struct CassandraSettings {
    /// `cassandra_contact_points` (hosts; `cassandra_port` is added to each).
    pub contact_points: Vec<String>,
    pub port: u16,
    pub keyspace: String,
    pub write_consistency: Consistency,
    pub read_consistency: Consistency,
    /// SERIAL, or LOCAL_SERIAL with a local datacenter (Kong's rule).
    pub serial_consistency: SerialConsistency,
    pub replication: Replication,
    /// `cassandra_local_datacenter`: preferred by the load balancing.
    pub local_datacenter: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `cassandra_ssl`: TLS to every node.
    pub ssl: bool,
    /// `cassandra_ssl_verify`: check each node's certificate, for its IP address, against
    /// `trusted_cas` (`lua_ssl_trusted_certificate`; the bundled web roots when empty).
    pub ssl_verify: bool,
    pub trusted_cas: Vec<PathBuf>,
    /// `cassandra_timeout`: connecting and each request.
    pub timeout: Duration,
    /// `cassandra_schema_consensus_timeout`: how long DDL waits for every node's schema.
    pub schema_consensus_timeout: Duration,
    /// `db_update_frequency`: how often `cluster_events` is polled.
    pub update_frequency: Duration,
    /// This node's id, recorded on the events it writes (its own are not replayed).
    pub node_id: String,
}

impl Default for CassandraSettings {
    /// Kong 2.8's defaults.
    fn default() -> Self {
        CassandraSettings {
            contact_points: vec!["127.0.0.1".into()],
            port: 9042,
            keyspace: "kong".into(),
            write_consistency: Consistency::One,
            read_consistency: Consistency::One,
            serial_consistency: SerialConsistency::Serial,
            replication: Replication::Simple(1),
            local_datacenter: None,
            username: None,
            password: None,
            ssl: false,
            ssl_verify: false,
            trusted_cas: Vec::new(),
            timeout: Duration::from_secs(5),
            schema_consensus_timeout: Duration::from_secs(10),
            update_frequency: Duration::from_secs(5),
            node_id: "tollgate".into(),
        }
    }
}

impl CassandraSettings {
    pub fn describe(&self) -> String {
        format!(
            "cassandra://{}/{} (port {})",
            self.contact_points.join(","),
            self.keyspace,
            self.port
        )
    }

    /// The `replication` map of `CREATE KEYSPACE`.
    pub(crate) fn replication_cql(&self) -> String {
        match &self.replication {
            Replication::Simple(n) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {n}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let mut s = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, n) in dcs {
                    s.push_str(&format!(", '{}': {n}", dc.replace('\'', "''")));
                }
                s.push('}');
                s
            }
        }
    }
}

/// Kong's consistency names (`ONE`, `LOCAL_QUORUM`, …), case-insensitive.
pub fn parse_consistency(key: &str, v: &str) -> Result<Consistency> {
    Ok(match v.trim().to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        other => {
            return Err(Error::database(format!(
                "invalid value for '{key}': {other:?} (expected ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE or ANY)"
            )))
        }
    })
}

/// `cassandra_data_centers`: `name:factor` pairs.
pub fn parse_data_centers(items: &[String]) -> Result<Vec<(String, u32)>> {
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (dc, n) = s.trim().split_once(':').ok_or_else(|| {
                Error::database(format!(
                    "invalid value for 'cassandra_data_centers': {s:?} (expected name:replication_factor)"
                ))
            })?;
            let n: u32 = n.trim().parse().map_err(|_| {
                Error::database(format!(
                    "invalid replication factor in 'cassandra_data_centers': {s:?}"
                ))
            })?;
            Ok((dc.trim().to_string(), n))
        })
        .collect()
}
