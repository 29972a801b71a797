//! A real PostgreSQL for tests (this crate's and the end-to-end suite's): the server named
//! by `TOLLGATE_TEST_PG` (a `postgres://user@host:port/db` URL, as `scripts/test` exports),
//! or else one started through `scripts/pg` for this test process. Never skipped: without
//! a server that can be started, the tests fail.

use super::options::PgOptions;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// One PostgreSQL server.
#[derive(Clone, Debug)]
pub struct TestServer {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The cluster directory when this process started the server (it can stop it).
    pub dir: Option<PathBuf>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg")
}

fn parse_url(url: &str) -> TestServer {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("TOLLGATE_TEST_PG must be a postgres:// URL, got {url:?}"));
    let (auth, hostpart) = rest.split_once('@').unwrap_or(("postgres", rest));
    let hostport = hostpart.split('/').next().unwrap_or("127.0.0.1");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    TestServer {
        host: host.to_string(),
        port: port.parse().expect("port in TOLLGATE_TEST_PG"),
        user: auth.split(':').next().unwrap_or("postgres").to_string(),
        dir: None,
    }
}

impl TestServer {
    /// The server shared by the tests of this process.
    pub fn shared() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(|| match std::env::var("TOLLGATE_TEST_PG") {
            Ok(url) if !url.is_empty() => parse_url(&url),
            _ => TestServer::private(),
        })
    }

    /// A server of its own (for tests that stop and restart it), deleted when this process
    /// exits.
    pub fn private() -> TestServer {
        Self::private_with(&[])
    }

    /// A server of its own that also serves TLS, with a certificate for 127.0.0.1 issued
    /// by a private CA ([`TestServer::certificate`]).
    pub fn private_tls() -> TestServer {
        Self::private_with(&["--ssl"])
    }

    /// The CA certificate of a [`TestServer::private_tls`] server.
    pub fn certificate(&self) -> PathBuf {
        self.dir.as_ref().expect("a private server").join("ca.crt")
    }

    fn private_with(flags: &[&str]) -> TestServer {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-pg-{}",
            crate::test_script::unique_suffix()
        ));
        let out = std::process::Command::new(script())
            .arg("start")
            .arg(&dir)
            .arg("--owner")
            .arg(std::process::id().to_string())
            .args(flags)
            .output()
            .expect("cannot run scripts/pg");
        assert!(
            out.status.success(),
            "scripts/pg start failed (PostgreSQL is needed by these tests): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = parse_url(String::from_utf8_lossy(&out.stdout).trim());
        s.dir = Some(dir);
        s
    }

    /// Options for database `name` on this server.
    pub fn options(&self, name: &str) -> PgOptions {
        PgOptions {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: name.to_string(),
            timeout: Duration::from_secs(5),
            ..PgOptions::default()
        }
    }

    /// `postgres://…` for database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, name
        )
    }

    /// Creates an empty database with a fresh name and returns that name.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t_{}", crate::test_script::unique_suffix());
        self.execute(&format!("CREATE DATABASE {name}")).await;
        name
    }

    /// The first column of the first row of `sql` (a number) on the `postgres` database.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        let (client, conn) = self
            .options("postgres")
            .pg_config("tollgate-test")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Runs one statement on the server's `postgres` database.
    pub async fn execute(&self, sql: &str) {
        self.execute_in("postgres", sql).await
    }

    /// Runs one statement on database `db`.
    pub async fn execute_in(&self, db: &str, sql: &str) {
        let mut last = String::new();
        for _ in 0..50 {
            match self
                .options(db)
                .pg_config("tollgate-test")
                .connect(tokio_postgres::NoTls)
                .await
            {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client
                        .batch_execute(sql)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("cannot connect to the test PostgreSQL: {last}");
    }

    /// Stops a server this process started (data kept).
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
