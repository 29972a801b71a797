//! A database several gateways share, for the tests that run the same cluster scenario on
//! PostgreSQL and on Cassandra.

use crate::support::{cassandra_env, pg_env, TestCassandra, TestServer};
use tollgate_store::cassandra::test_server::fresh_keyspace;

/// A cluster database.
#[derive(Clone, Copy, Debug)]
pub enum SharedDb {
    Postgres,
    Cassandra,
}

/// The environment of a gateway on a fresh database (PostgreSQL) or keyspace (Cassandra),
/// polled every `frequency` seconds; every gateway started with it shares that database.
pub async fn shared_env(db: SharedDb, frequency: &str) -> Vec<(String, String)> {
    let mut env = match db {
        SharedDb::Postgres => {
            let server = TestServer::shared();
            let name = server.fresh_database().await;
            pg_env(server, &name)
        }
        SharedDb::Cassandra => cassandra_env(TestCassandra::shared(), &fresh_keyspace()),
    };
    env.push(("TOLLGATE_DB_UPDATE_FREQUENCY".into(), frequency.into()));
    env
}

/// `env` as the `&str` pairs `Gateway::start_with` takes.
pub fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
