//! A real Cassandra for tests (this crate's and the end-to-end suite's): the node named by
//! `TOLLGATE_TEST_CASSANDRA` (`host:port`, as `scripts/test` exports), or else one started
//! through `scripts/cassandra` for this test process. Never skipped: without a node that
//! can be started (a JDK 17 and Maven), the tests fail.

use super::options::CassandraSettings;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// One Cassandra node.
#[derive(Clone, Debug)]
pub struct TestCassandra {
    pub host: String,
    pub port: u16,
    /// The node's directory when this process started it (it can stop it).
    pub dir: Option<PathBuf>,
}

/// `scripts/cassandra` of this checkout.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cassandra")
}

fn parse_contact(s: &str) -> TestCassandra {
    let (host, port) = s
        .trim()
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("TOLLGATE_TEST_CASSANDRA must be host:port, got {s:?}"));
    TestCassandra {
        host: host.to_string(),
        port: port.parse().expect("port in TOLLGATE_TEST_CASSANDRA"),
        dir: None,
    }
}

impl TestCassandra {
    /// The node shared by the tests of this process.
    pub fn shared() -> &'static TestCassandra {
        static NODE: OnceLock<TestCassandra> = OnceLock::new();
        NODE.get_or_init(|| match std::env::var("TOLLGATE_TEST_CASSANDRA") {
            Ok(c) if !c.trim().is_empty() => parse_contact(&c),
            _ => TestCassandra::private(),
        })
    }

    /// A node of its own (for tests that stop and restart it), deleted when this process
    /// exits.
    pub fn private() -> TestCassandra {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-cassandra-{}",
            crate::test_script::unique_suffix()
        ));
        let out = std::process::Command::new(script())
            .arg("start")
            .arg(&dir)
            .arg("--owner")
            .arg(std::process::id().to_string())
            .output()
            .expect("cannot run scripts/cassandra");
        assert!(
            out.status.success(),
            "scripts/cassandra start failed (Cassandra is needed by these tests): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut node = parse_contact(String::from_utf8_lossy(&out.stdout).trim());
        node.dir = Some(dir);
        node
    }

    /// Two nodes on 127.0.0.1 and 127.0.0.2 (same ports, both seeds, started together),
    /// deleted when this process exits.
    pub fn ring() -> Vec<TestCassandra> {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (port, storage) = (free(), free());
        let seeds = format!("127.0.0.1:{storage},127.0.0.2:{storage}");
        let starts: Vec<_> = ["127.0.0.1", "127.0.0.2"]
            .iter()
            .map(|addr| {
                let dir = std::env::temp_dir().join(format!(
                    "tollgate-cassandra-{}",
                    crate::test_script::unique_suffix()
                ));
                let child = std::process::Command::new(script())
                    .arg("start")
                    .arg(&dir)
                    .args(["--owner", &std::process::id().to_string()])
                    .args(["--addr", addr, "--port", &port.to_string()])
                    .args(["--storage-port", &storage.to_string(), "--seeds", &seeds])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("cannot run scripts/cassandra");
                (dir, child)
            })
            .collect();
        starts
            .into_iter()
            .map(|(dir, child)| {
                let out = child.wait_with_output().expect("scripts/cassandra");
                assert!(
                    out.status.success(),
                    "scripts/cassandra start (ring) failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let mut node = parse_contact(String::from_utf8_lossy(&out.stdout).trim());
                node.dir = Some(dir);
                node
            })
            .collect()
    }

    pub fn contact(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Settings for `keyspace` on this node, polling events every `frequency`.
    pub fn settings(&self, keyspace: &str, frequency: Duration) -> CassandraSettings {
        CassandraSettings {
            contact_points: vec![self.host.clone()],
            port: self.port,
            keyspace: keyspace.to_string(),
            timeout: Duration::from_secs(10),
            schema_consensus_timeout: Duration::from_secs(60),
            update_frequency: frequency,
            node_id: format!("test-{}", crate::test_script::unique_suffix()),
            ..CassandraSettings::default()
        }
    }

    /// Empties `keyspace` for another test: every table but `meta` (the migrations stay
    /// done) truncated, quicker than the schema changes of a new keyspace and free of the
    /// memory each keyspace costs the node.
    pub async fn empty_keyspace(&self, keyspace: &str) {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_node(self.contact())
            .build()
            .await
            .expect("connect to the test Cassandra");
        let listed = session
            .query_unpaged(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                (keyspace,),
            )
            .await
            .expect("list the keyspace's tables")
            .into_rows_result()
            .expect("rows");
        let tables: Vec<(String,)> = listed
            .rows::<(String,)>()
            .expect("table names")
            .collect::<Result<_, _>>()
            .expect("table names");
        for (t,) in tables.iter().filter(|(t,)| t != "meta") {
            let cql = format!("TRUNCATE {}", super::Keyspace::new(keyspace).t(t));
            session
                .query_unpaged(cql, ())
                .await
                .unwrap_or_else(|e| panic!("TRUNCATE {keyspace}.{t}: {e}"));
        }
    }

    /// Stops a node this process started (data kept).
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Starts it again on the same port.
    pub fn start(&self) {
        self.ctl("start");
    }

    fn ctl(&self, what: &str) {
        crate::test_script::ctl(&script(), what, self.dir.as_ref());
    }
}

/// The CA that signs every test node's TLS certificate (`scripts/cassandra ca`).
pub fn test_ca() -> PathBuf {
    let out = std::process::Command::new(script())
        .arg("ca")
        .output()
        .expect("cannot run scripts/cassandra");
    assert!(
        out.status.success(),
        "scripts/cassandra ca failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A fresh keyspace name (letters, digits and `_`, at most 48 characters).
pub fn fresh_keyspace() -> String {
    format!("t_{}", crate::test_script::unique_suffix())
}
