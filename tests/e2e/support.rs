//! Starts the real `tollgate` binary on ephemeral loopback ports with its own prefix and
//! talks to it over HTTP.

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
pub use tollgate_store::cassandra::test_server::{fresh_keyspace, TestCassandra};
pub use tollgate_store::postgres::test_server::TestServer;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Which database a test gateway uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// The embedded store in the gateway's prefix (the default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server (`TOLLGATE_TEST_PG`, or one started
    /// through scripts/pg).
    Postgres,
    /// A fresh keyspace on the test Cassandra node (`TOLLGATE_TEST_CASSANDRA`, or one
    /// started through scripts/cassandra).
    Cassandra,
}

impl Db {
    /// A fresh database of this kind on the shared test server, for one test.
    pub async fn fresh(self) -> FreshDb {
        match self {
            Db::Sqlite => FreshDb {
                env: Vec::new(),
                _keyspace: None,
            },
            Db::Postgres => {
                let server = TestServer::shared();
                FreshDb {
                    env: pg_env(server, &server.fresh_database().await),
                    _keyspace: None,
                }
            }
            Db::Cassandra => {
                let keyspace = Keyspace::lend().await;
                FreshDb {
                    env: cassandra_env(TestCassandra::shared(), &keyspace.name),
                    _keyspace: Some(keyspace),
                }
            }
        }
    }
}

/// An empty database for one test; a Cassandra keyspace goes back to the pool when this is
/// dropped (after the gateways on it: declare it first).
pub struct FreshDb {
    /// Points a gateway at the database (empty for SQLite: the gateway's prefix holds it).
    pub env: Vec<(String, String)>,
    _keyspace: Option<Keyspace>,
}

/// A keyspace of the shared test Cassandra node, lent to one test at a time. Every keyspace
/// costs the node memory (about 80 of them exhausted its 512 MiB heap), so a used one is
/// emptied (TRUNCATE, [`TestCassandra::empty_keyspace`]) and lent again: the node holds as
/// many as tests ran at once. Emptying also costs less than the six schema changes of a
/// new keyspace (2.6 s of gateway start against SQLite's 0.7 s here).
struct Keyspace {
    name: String,
}

static KEYSPACES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Keyspace {
    async fn lend() -> Keyspace {
        let used = KEYSPACES.lock().unwrap().pop();
        let name = match used {
            Some(name) => {
                TestCassandra::shared().empty_keyspace(&name).await;
                name
            }
            // The first gateway on it creates it.
            None => fresh_keyspace(),
        };
        Keyspace { name }
    }
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        if let Ok(mut free) = KEYSPACES.lock() {
            free.push(std::mem::take(&mut self.name));
        }
    }
}

/// `Db::…` from the name of a test module (`on_each_database!`).
#[macro_export]
macro_rules! db_named {
    (sqlite) => {
        $crate::support::Db::Sqlite
    };
    (postgres) => {
        $crate::support::Db::Postgres
    };
    (cassandra) => {
        $crate::support::Db::Cassandra
    };
}

/// Runs store-dependent tests once per database: `on_each_database!(a, b)` makes the
/// tests `sqlite::a`, `postgres::a`, `cassandra::a`, …, each calling `async fn a(db: Db)`
/// of the enclosing module; `on_each_database!([postgres, cassandra] { a, b })` picks
/// the databases.
#[macro_export]
macro_rules! on_each_database {
    ([$($db:ident),+ $(,)?] $tests:tt) => {
        $( $crate::on_each_database!(@one $db $tests); )+
    };
    (@one $db:ident { $($name:ident),+ $(,)? }) => {
        mod $db {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name($crate::db_named!($db)).await
                }
            )+
        }
    };
    ($($name:ident),+ $(,)?) => {
        $crate::on_each_database!([sqlite, postgres, cassandra] { $($name),+ });
    };
}

/// The environment that points a gateway at PostgreSQL database `name` on `server`.
pub fn pg_env(server: &TestServer, name: &str) -> Vec<(String, String)> {
    vec![
        ("TOLLGATE_DATABASE".into(), "postgres".into()),
        ("TOLLGATE_PG_HOST".into(), server.host.clone()),
        ("TOLLGATE_PG_PORT".into(), server.port.to_string()),
        ("TOLLGATE_PG_USER".into(), server.user.clone()),
        ("TOLLGATE_PG_DATABASE".into(), name.to_string()),
    ]
}

/// The environment that points a gateway at `keyspace` on the Cassandra `node`.
pub fn cassandra_env(node: &TestCassandra, keyspace: &str) -> Vec<(String, String)> {
    vec![
        ("TOLLGATE_DATABASE".into(), "cassandra".into()),
        (
            "TOLLGATE_CASSANDRA_CONTACT_POINTS".into(),
            node.host.clone(),
        ),
        ("TOLLGATE_CASSANDRA_PORT".into(), node.port.to_string()),
        ("TOLLGATE_CASSANDRA_KEYSPACE".into(), keyspace.to_string()),
        // A busy CI machine: schema changes may take seconds each.
        (
            "TOLLGATE_CASSANDRA_SCHEMA_CONSENSUS_TIMEOUT".into(),
            "60000".into(),
        ),
        ("TOLLGATE_CASSANDRA_TIMEOUT".into(), "10000".into()),
    ]
}

/// Borrowed pairs of an owned environment, as `Gateway::start_with` takes them.
pub fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `n` gateways started at the same moment with `env` (one shared database: a cluster).
pub async fn cluster(env: &[(String, String)], n: usize) -> Vec<Gateway> {
    let env = pairs(env);
    futures_util::future::join_all((0..n).map(|_| Gateway::start_with(&env))).await
}

/// A database server of the test's own (it stops and restarts it) holding one fresh
/// database.
pub struct OwnDatabase {
    server: OwnServer,
    /// Points a gateway at the database.
    pub env: Vec<(String, String)>,
}

enum OwnServer {
    Postgres(TestServer),
    Cassandra(TestCassandra),
}

impl OwnDatabase {
    /// A new server of kind `db` (PostgreSQL or Cassandra), deleted when this process
    /// exits.
    pub async fn start(db: Db) -> OwnDatabase {
        let (server, env) = match db {
            Db::Postgres => {
                let server = TestServer::private();
                let env = pg_env(&server, &server.fresh_database().await);
                (OwnServer::Postgres(server), env)
            }
            Db::Cassandra => {
                let node = TestCassandra::private();
                let env = cassandra_env(&node, &fresh_keyspace());
                (OwnServer::Cassandra(node), env)
            }
            Db::Sqlite => panic!("SQLite has no server to stop"),
        };
        OwnDatabase { server, env }
    }

    /// Stops the server (data kept).
    pub fn stop(&self) {
        match &self.server {
            OwnServer::Postgres(s) => s.stop(),
            OwnServer::Cassandra(n) => n.stop(),
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        match &self.server {
            OwnServer::Postgres(s) => s.start(),
            OwnServer::Cassandra(n) => n.start(),
        }
    }
}

/// Clients proxying until [`Load::finish`], one per URL, each waiting `pause` between its
/// requests (not at all when zero); a request fails unless it gets a 200.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(u64, u64)>>,
}

impl Load {
    pub fn start(client: &Client, urls: impl IntoIterator<Item = String>, pause: Duration) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = urls
            .into_iter()
            .map(|url| {
                let (client, stop) = (client.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == StatusCode::OK => ok += 1,
                            _ => failed += 1,
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops the clients and checks that they proxied (over 100 requests) and that not
    /// one request failed; `what` names the ordeal in the printed figures.
    pub async fn finish(self, what: &str) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failed) = (0, 0);
        for w in self.workers {
            let (o, f) = w.await.unwrap();
            ok += o;
            failed += f;
        }
        eprintln!("{what}: {ok} proxied, {failed} failed");
        assert!(ok > 100, "{what}: only {ok} proxied");
        assert_eq!(failed, 0, "{what}: {failed} failed, {ok} proxied");
        ok
    }
}

pub struct Gateway {
    /// `sqlite`, `postgres` or `cassandra`, as the Admin API reports it.
    pub database: &'static str,
    child: Option<Child>,
    pub prefix: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub admin: String,
    pub proxy: String,
    pub status: String,
    pub client: Client,
    /// The ports this process was given and must be listening on once ready (one a
    /// test's own `TOLLGATE_*_LISTEN` replaced is not checked).
    own_ports: Vec<u16>,
    /// Released after the process stopped (fields drop after `Drop::drop`).
    _database: Option<FreshDb>,
}

/// A command for the binary with a clean environment (no KONG_/TOLLGATE_ leaking in).
pub fn command(prefix: &Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("KONG_") || k.starts_with("TOLLGATE_") {
            c.env_remove(k);
        }
    }
    c.env("TOLLGATE_PREFIX", prefix);
    c
}

impl Gateway {
    pub async fn start() -> Gateway {
        Gateway::start_with(&[]).await
    }

    /// Starts on a fresh database of the given kind.
    pub async fn start_on(db: Db, env: &[(&str, &str)]) -> Gateway {
        let database = db.fresh().await;
        let mut all = database.env.clone();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut g = Gateway::start_with(&pairs(&all)).await;
        g._database = Some(database);
        g
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_path_buf();
        let mut g = Gateway::launch(prefix, env).await;
        g._dir = Some(dir);
        g
    }

    /// Starts on an existing prefix (restart persistence). Ports are picked free and then
    /// released, so a parallel test may take one first: then it starts again on others.
    pub async fn launch(prefix: PathBuf, env: &[(&str, &str)]) -> Gateway {
        for _ in 0..5 {
            let mut g = Gateway::spawn(prefix.clone(), env);
            match g.wait_ready().await {
                Ok(()) => return g,
                Err(log) if log.contains("Address already in use") => {
                    g.stop();
                    continue;
                }
                Err(log) => panic!("gateway not ready in time:\n{log}"),
            }
        }
        panic!("gateway could not bind free ports in 5 tries")
    }

    /// Starts on an existing prefix and waits only until the proxy accepts connections
    /// (for nodes that serve while not ready, e.g. from a saved configuration).
    pub async fn launch_unready(prefix: PathBuf, env: &[(&str, &str)]) -> Gateway {
        let mut g = Gateway::spawn(prefix, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = g.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    panic!("gateway exited:\n{}", g.stderr());
                }
            }
            if g.client
                .get(format!("{}/status", g.status))
                .send()
                .await
                .is_ok()
            {
                return g;
            }
            assert!(Instant::now() < deadline, "gateway not up:\n{}", g.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(prefix: PathBuf, env: &[(&str, &str)]) -> Gateway {
        let (a, p, s) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(prefix.join("test-stderr.log")).unwrap();
        let mut cmd = command(&prefix);
        cmd.arg("start")
            .env("TOLLGATE_ADMIN_LISTEN", format!("127.0.0.1:{a}"))
            .env("TOLLGATE_PROXY_LISTEN", format!("127.0.0.1:{p}"))
            .env("TOLLGATE_STATUS_LISTEN", format!("127.0.0.1:{s}"))
            .env("TOLLGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        // `{proxy_port}` in a value is the proxy port picked here (for listen flags).
        for (k, v) in env {
            cmd.env(k, v.replace("{proxy_port}", &p.to_string()));
        }
        let child = cmd.spawn().expect("spawn tollgate");
        let database = match env.iter().find(|(k, _)| *k == "TOLLGATE_DATABASE") {
            Some((_, "postgres")) => "postgres",
            Some((_, "cassandra")) => "cassandra",
            _ => "sqlite",
        };
        Gateway {
            database,
            child: Some(child),
            prefix,
            _dir: None,
            admin: format!("http://127.0.0.1:{a}"),
            proxy: format!("http://127.0.0.1:{p}"),
            status: format!("http://127.0.0.1:{s}"),
            client: Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            own_ports: [("TOLLGATE_ADMIN_LISTEN", a), ("TOLLGATE_STATUS_LISTEN", s)]
                .into_iter()
                .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
                .map(|(_, port)| port)
                .collect(),
            _database: None,
        }
    }

    /// The gateway's process id (to signal it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.prefix.join("test-stderr.log")).unwrap_or_default()
    }

    /// Waits for readiness; the process's log when it exits or does not get ready.
    async fn wait_ready(&mut self) -> Result<(), String> {
        // Bootstrapping a Cassandra keyspace is a series of schema changes (seconds each
        // on a busy machine).
        let limit = if self.database == "cassandra" { 90 } else { 20 };
        let deadline = Instant::now() + Duration::from_secs(limit);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return Err(self.stderr());
                }
            }
            if let Ok(r) = self
                .client
                .get(format!("{}/status/ready", self.status))
                .send()
                .await
            {
                // (the answer may come from another test's gateway that took the
                // port this one was given: then this one fails to bind and is retried)
                if r.status() == StatusCode::OK && self.owns_its_ports() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this gateway's own process listens on the Admin API and status ports
    /// it was given (read from /proc: the listening sockets on those ports, and the
    /// process's fds).
    fn owns_its_ports(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        let inodes: std::collections::HashSet<String> = fds
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().into_owned();
                l.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .map(str::to_owned)
            })
            .collect();
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listens = |want: u16| {
            table.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 9
                    && f[3] == "0A"
                    && f[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(want)
                    && inodes.contains(f[9])
            })
        };
        self.own_ports.iter().all(|p| listens(*p))
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.admin, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin request");
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> StatusCode {
        self.call(Method::DELETE, path, None).await.0
    }

    /// Sends a form-urlencoded body.
    pub async fn form(
        &self,
        method: Method,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let r = self
            .client
            .request(method, format!("{}{}", self.admin, path))
            .form(pairs)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the proxy until `check` accepts the response (config changes apply
    /// asynchronously, within milliseconds).
    pub async fn proxy_until(
        &self,
        path: &str,
        host: Option<&str>,
        check: impl Fn(StatusCode) -> bool,
    ) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut req = self.client.get(format!("{}{}", self.proxy, path));
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let r = req.send().await.expect("proxy request");
            if check(r.status()) || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Nodes that bootstrapped one database together (`env` points at it) ended with one
/// schema, fully migrated whoever ran it, and each reports the database reachable.
pub async fn assert_one_schema(nodes: &[Gateway], env: &[(String, String)]) {
    let out = command(&nodes[0].prefix)
        .args(["migrations", "list"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("Database is up-to-date"), "{list}");
    for g in nodes {
        let (s, st) = g.get("/status").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(st["database"]["reachable"], true, "{st}");
    }
}

/// The rows of every page of a listing, following `next` from `first`.
pub async fn pages(g: &Gateway, first: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next {
        let (s, page) = g.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {page}");
        out.push(page["data"].as_array().expect("data").clone());
        next = page["next"].as_str().map(str::to_string);
        assert!(out.len() <= 1000, "{first}: pages without end");
    }
    out
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tiny upstream that answers every request with a JSON echo of what it received.
pub async fn echo_upstream() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let n = match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let mut lines = head.split("\r\n");
                        let first = lines.next().unwrap_or_default().to_string();
                        let mut parts = first.split(' ');
                        let method = parts.next().unwrap_or_default();
                        let uri = parts.next().unwrap_or_default();
                        let mut headers = serde_json::Map::new();
                        for l in lines {
                            if let Some((k, v)) = l.split_once(':') {
                                headers
                                    .insert(k.trim().to_ascii_lowercase(), Value::from(v.trim()));
                            }
                        }
                        let body =
                            serde_json::json!({ "method": method, "uri": uri, "headers": headers })
                                .to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                            body.len(),
                            body
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), h)
}

/// The certificate the gateway presents for `name` over TLS at `addr`.
pub async fn peer_cert(addr: std::net::SocketAddr, name: &str) -> Option<Vec<u8>> {
    let c = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .resolve(name, addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = c
        .get(format!("https://{name}:{}/", addr.port()))
        .send()
        .await
        .ok()?;
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

/// Polls `g`'s proxy for `path` until it answers `want`; how long that took.
pub async fn until_status(g: &Gateway, path: &str, want: StatusCode, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let s = g
            .client
            .get(format!("{}{}", g.proxy, path))
            .send()
            .await
            .map(|r| r.status())
            .ok();
        if s == Some(want) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{path} on {} still answers {s:?} after {limit:?}",
            g.proxy
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
