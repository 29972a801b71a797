//! `tollgate start`: runs the gateway in the foreground until SIGTERM or SIGINT, then stops
//! accepting, drains in-flight requests and exits 0.

use super::db_snapshot;
use super::process::{pid_path, running_pid};
use super::Common;
use crate::node;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tollgate_admin::{AdminState, NodeInfo};
use tollgate_config::{Config, Database, Listen};
use tollgate_model::declarative;
use tollgate_plugins::ConsumerIndex;
use tollgate_proxy::snapshot::SharedConsumers;
use tollgate_proxy::{Proxy, SharedSnapshot, Stats};
use tollgate_store::{ChangeEvent, ChangeEvents, MemoryStore, Store};

pub fn run(common: &Common, run_migrations: bool) -> anyhow::Result<()> {
    let config = node::load_config(common, None)?;
    init_logging(&config);
    crate::admin_auth::check(&config)?;
    tollgate_proxy::server::check_limits(&config).map_err(anyhow::Error::msg)?;
    prepare_prefix(&config)?;
    // The default prefix of `{vault://env/…}` references (Kong's KONG_VAULT_ENV_PREFIX).
    tollgate_model::vault::set_env_prefix(config.raw.get("vault_env_prefix").cloned());
    let rt = node::runtime()?;
    let result = rt.block_on(serve(config.clone(), run_migrations));
    let _ = std::fs::remove_file(pid_path(&config.prefix));
    result
}

fn init_logging(config: &Config) {
    let level = config.log_level.tracing_level();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,h2=warn,rustls=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn prepare_prefix(config: &Config) -> anyhow::Result<()> {
    let prefix = &config.prefix;
    for dir in [prefix.clone(), prefix.join("pids"), prefix.join("logs")] {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e} (set 'prefix' to a writable directory)",
                dir.display()
            )
        })?;
    }
    if let Some(pid) = running_pid(prefix) {
        if pid != std::process::id() as i32 {
            anyhow::bail!("Tollgate is already running in {} (pid {pid}); stop it first or use another prefix", prefix.display());
        }
    }
    std::fs::write(pid_path(prefix), format!("{}\n", std::process::id()))
        .map_err(|e| anyhow::anyhow!("cannot write the pid file in {}: {e}", prefix.display()))?;
    std::fs::write(prefix.join(".tollgate_env"), config.render_conf()).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e}",
            prefix.join(".tollgate_env").display()
        )
    })?;
    Ok(())
}

/// Opens the store: the database, or for `database = off` the declarative file in memory.
/// The third value is where the first configuration comes from when it is not the store:
/// the saved snapshot of an unreachable database (`db_snapshot`).
async fn open(
    config: &Config,
    catalog: &tollgate_model::PluginCatalog,
    run_migrations: bool,
) -> anyhow::Result<(Arc<dyn Store>, String, Option<Arc<dyn Store>>)> {
    if config.database == Database::Off {
        let text = match (
            &config.declarative_config,
            &config.declarative_config_string,
        ) {
            (Some(path), _) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read declarative_config {}: {e}", path.display())
            })?),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        let Some(text) = text else {
            return Ok((Arc::new(MemoryStore::default()), String::new(), None));
        };
        let parsed = declarative::parse(&text, catalog).map_err(|e| {
            let mut msg = e.message().to_string();
            if let Some(f) = declarative::flattened_errors(&e) {
                msg.push_str(&format!("\n{f}"));
            }
            anyhow::anyhow!("invalid declarative configuration: {msg}")
        })?;
        return Ok((
            Arc::new(MemoryStore::from_set(parsed.set)),
            parsed.hash,
            None,
        ));
    }
    let store = node::open_store(config).await?;
    let status = match store.migrations_status().await {
        Ok(s) => s,
        Err(e) if config.database != Database::Sqlite && config.db_snapshot => {
            let path = db_snapshot::path(config);
            if !path.exists() {
                anyhow::bail!("cannot start: the database is not available ({e}) and there is no saved configuration at {} yet", path.display());
            }
            let saved = db_snapshot::read(&path)?;
            tracing::warn!(error = %e, path = %path.display(), "the database is not available; starting from the saved configuration (Admin API writes fail until it is back)");
            return Ok((store, String::new(), Some(Arc::new(saved))));
        }
        Err(e) => anyhow::bail!(
            "cannot start: the database is not available: {e} (with db_snapshot = on a node starts from its last saved configuration instead)"
        ),
    };
    if !status.bootstrapped() || !status.pending.is_empty() {
        // The embedded store belongs to this node alone, so it migrates itself. A shared
        // database is bootstrapped by whichever node finds it empty (under the database's
        // migrations lock, so nodes may start together); upgrading one that holds data
        // needs `--run-migrations` or `tollgate migrations up`.
        if config.database == Database::Sqlite || run_migrations || !status.bootstrapped() {
            node::ensure_migrated(store.as_ref()).await?;
        } else {
            anyhow::bail!("the database needs migrations; run 'tollgate migrations up' or start with --run-migrations");
        }
    }
    Ok((store, String::new(), None))
}

/// Binds the plain listeners (TLS ones are skipped with a warning: only the Admin API
/// serves TLS, through [`bind_tls`]).
async fn bind_all(
    listeners: &[Listen],
    what: &str,
) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    for l in listeners.iter().filter(|l| l.ssl) {
        tracing::warn!(listener = %l.listener, "TLS {what} listeners are not supported yet; skipping");
    }
    bind(listeners.iter().filter(|l| !l.ssl), what).await
}

/// Binds the `ssl` listeners.
async fn bind_tls(
    listeners: &[Listen],
    what: &str,
) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    bind(listeners.iter().filter(|l| l.ssl), what).await
}

async fn bind(
    listeners: impl Iterator<Item = &Listen>,
    what: &str,
) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::new();
    for l in listeners {
        let addr: SocketAddr = l
            .socket_addr()
            .ok_or_else(|| anyhow::anyhow!("cannot resolve {what} listener '{}'", l.listener))?;
        let sock = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))?;
        tracing::info!(%addr, "{what} listening");
        out.push(sock);
    }
    Ok(out)
}

/// `admin_gui_url` as origins (scheme://authority), as Kong's `admin_gui_origin`.
fn gui_origins(config: &Config) -> Vec<String> {
    config
        .admin_gui_url
        .iter()
        .filter_map(|u| {
            let p = tollgate_model::url::parse(u).ok()?;
            let authority = match p.port {
                Some(port) => format!("{}:{port}", p.host?),
                None => p.host?,
            };
            Some(format!("{}://{authority}", p.scheme?))
        })
        .collect()
}

/// The Kong Manager build to serve on `admin_gui_listen`: `admin_gui_dir`, else Kong's
/// `<prefix>/gui`. Without a build there, no GUI listener opens; a directory named
/// explicitly must hold one.
fn gui_config(config: &Config) -> anyhow::Result<Option<tollgate_admin::gui::GuiConfig>> {
    let named = config.admin_gui_dir.as_ref();
    let dir = named.cloned().unwrap_or_else(|| config.prefix.join("gui"));
    if !dir.join("index.html").is_file() {
        if named.is_some() {
            anyhow::bail!(
                "admin_gui_dir = {}: no index.html there (name the directory of a Kong Manager build)",
                dir.display()
            );
        }
        return Ok(None);
    }
    let port = |ssl: bool| {
        config
            .admin_listen
            .iter()
            .find(|l| l.ssl == ssl)
            .and_then(|l| l.socket_addr())
            .map(|a| a.port())
    };
    let api_url = config.admin_gui_api_url.as_deref().unwrap_or_default();
    let kconfig =
        tollgate_admin::gui::kconfig_js(&config.admin_gui_path, api_url, port(false), port(true));
    tracing::info!(dir = %dir.display(), "serving Kong Manager on admin_gui_listen");
    Ok(Some(tollgate_admin::gui::GuiConfig {
        dir,
        base_path: config.admin_gui_path.clone(),
        kconfig,
    }))
}

async fn serve(config: Config, run_migrations: bool) -> anyhow::Result<()> {
    let catalog = Arc::new(node::catalog(&config)?);
    {
        use tollgate_proxy::balancer::dns;
        let servers = match config.dns.get("dns_resolver") {
            Some(v) => dns::parse_servers(v).map_err(|e| anyhow::anyhow!(e))?,
            None => Vec::new(),
        };
        let key = |k: &str| config.dns.get(k).cloned();
        let defaults = dns::Options::default();
        dns::configure(dns::Options {
            servers,
            order: key("dns_order").unwrap_or(defaults.order),
            hostsfile: key("dns_hostsfile"),
            valid_ttl: config.dns_valid_ttl,
            stale_ttl: config.dns_stale_ttl,
            not_found_ttl: config.dns_not_found_ttl,
            error_ttl: config.dns_error_ttl,
            cache_size: config.dns_cache_size as usize,
            no_sync: config.dns_no_sync,
        })
        .map_err(|e| anyhow::anyhow!(e))?;
    }
    let (store, initial_hash, saved) = open(&config, &catalog, run_migrations).await?;
    node::install_counters(&config, &store);
    let source: &dyn Store = saved.as_deref().unwrap_or(store.as_ref());

    // The first snapshot is built before any listener opens, so the node never serves a
    // half-loaded configuration.
    // Subscribe before loading so a write that lands in between is not missed.
    let snapshot_events = store.events();
    let events = store.events();
    let consumers: SharedConsumers = Arc::new(arc_swap::ArcSwap::from_pointee(
        load_consumers(source).await?,
    ));
    let snapshot: SharedSnapshot = Arc::new(arc_swap::ArcSwap::from_pointee(
        super::rebuilder::first(source, consumers.clone()).await?,
    ));
    // The rows parsed for the first build are free: back to the system before serving.
    crate::memory::release_freed();
    // Started from the saved configuration: not healthy until the database answers (the
    // store then announces a reset and everything reloads from it).
    let healthy_db = Arc::new(AtomicBool::new(saved.is_none()));
    if config.db_snapshot && config.database != Database::Sqlite {
        db_snapshot::spawn_writer(store.clone(), db_snapshot::path(&config));
    }
    spawn_consumer_updater(store.clone(), events, consumers.clone(), healthy_db.clone());
    super::rebuilder::spawn(
        store.clone(),
        snapshot_events,
        (snapshot.clone(), consumers),
        healthy_db.clone(),
    );

    let stats = Arc::new(Stats::default());
    let node = NodeInfo {
        kong_version: node::KONG_COMPAT_VERSION.into(),
        tollgate_version: env!("CARGO_PKG_VERSION").into(),
        hostname: node::hostname(),
        node_id: uuid_v4(),
        configuration: config.to_kong_json(),
    };
    tollgate_plugins::set_node(&node.node_id, &node.hostname);
    let mut admin = AdminState::new(store.clone(), catalog.clone(), node);
    if let Ok(mut h) = admin.config_hash.write() {
        *h = initial_hash;
    }
    admin.metrics = super::metrics::metrics_fn(
        snapshot.clone(),
        stats.clone(),
        store.clone(),
        admin.node.node_id.clone(),
    );
    let st = stats.clone();
    admin.server_status = Arc::new(move || st.to_json());
    let ready = Arc::new(AtomicBool::new(false));
    let (r, db) = (ready.clone(), healthy_db.clone());
    admin.readiness = Arc::new(move || {
        if !r.load(Ordering::Relaxed) {
            Err("draining".into())
        } else if !db.load(Ordering::Relaxed) {
            Err("database unreachable; serving the last configuration".into())
        } else {
            Ok(())
        }
    });
    admin.gui_origins = gui_origins(&config);
    admin.upstream_health = Some(Arc::new(crate::node::BalancerHealth(snapshot.clone())));
    admin.auth = crate::admin_auth::guard(&config, &store).await?;
    let caches = Arc::new(crate::node::ProxyCaches);
    tollgate_admin::proxy_cache::follow_purges(store.as_ref(), caches.clone());
    admin.proxy_cache = Some(caches);
    let admin = Arc::new(admin);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (listeners, app, what) in [
        (
            bind_all(&config.admin_listen, "admin").await?,
            tollgate_admin::router(admin.clone()),
            "admin",
        ),
        (
            bind_all(&config.status_listen, "status").await?,
            tollgate_admin::status_router(admin.clone()),
            "status",
        ),
        match gui_config(&config)? {
            Some(gui) => (
                bind_all(&config.admin_gui_listen, "admin_gui").await?,
                tollgate_admin::gui::router(gui),
                "admin_gui",
            ),
            None => (Vec::new(), axum::Router::new(), "admin_gui"),
        },
    ] {
        for l in listeners {
            let mut rx = stop_rx.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "{what} listener failed");
                }
            }));
        }
    }

    let admin_tls = bind_tls(&config.admin_listen, "admin (TLS)").await?;
    if !admin_tls.is_empty() {
        let tls = crate::admin_auth::tls_config(&config)?;
        let app = tollgate_admin::router(admin.clone());
        for l in admin_tls {
            tasks.push(tokio::spawn(tollgate_admin::tls::serve(
                l,
                tls.clone(),
                app.clone(),
                stop_rx.clone(),
            )));
        }
    }

    let mut proxy =
        Proxy::new(&config, snapshot.clone(), stats.clone()).map_err(|e| anyhow::anyhow!(e))?;
    proxy.bind().await.map_err(|e| anyhow::anyhow!(e))?;
    let mut rx = stop_rx.clone();
    let proxy_task = tokio::spawn(proxy.serve(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    // Start-up's code is not needed resident any more (see `memory`).
    crate::memory::release_startup_code();
    ready.store(true, Ordering::Relaxed);
    tracing::info!(prefix = %config.prefix.display(), database = store.kind(), "Tollgate started");

    wait_for_signal().await;
    tracing::info!("stopping: draining in-flight requests");
    ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    match proxy_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "proxy stopped with an error"),
        Err(e) => tracing::error!(error = %e, "proxy task failed"),
        Ok(Ok(())) => {}
    }
    // The log plugins' queues send what they hold (bounded; a dead endpoint gives up).
    let unsent =
        tollgate_plugins::log_plugins::queue::flush(std::time::Duration::from_secs(10)).await;
    if unsent > 0 {
        tracing::warn!(entries = unsent, "log entries not sent before exit");
    }
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("Tollgate stopped");
    Ok(())
}

/// Consumers and the credentials and groups the auth plugins look up.
const CONSUMER_ENTITIES: &[&str] = tollgate_plugins::consumers::ENTITIES;

/// Rows per [`Store::scan`] page: bounds what a (re)build holds besides the index.
const SCAN_PAGE: usize = 8192;

/// Builds the consumer index from the store page by page, each row read straight from its
/// stored JSON text.
async fn load_consumers(store: &dyn Store) -> tollgate_model::Result<ConsumerIndex> {
    let t0 = std::time::Instant::now();
    let mut ix = ConsumerIndex::with_capacity(1 << 20);
    for entity in CONSUMER_ENTITIES {
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(entity, after.as_deref(), SCAN_PAGE).await?;
            for r in &page.rows {
                if !ix.put_text(entity, &r.text, r.expires_at) {
                    tracing::warn!(entity, id = %r.id, "unreadable row left out of the consumer index");
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    tracing::info!(
        consumers = ix.len(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "consumer index built"
    );
    Ok(ix)
}

/// Keeps the consumer index current from the store's row events: each batch of events is
/// applied to a copy-on-write clone of the serving index, which is then swapped in. A
/// reset, a lag (missed events) or a change the index cannot apply falls back to a full
/// rebuild, subscribed anew before reading so nothing written meanwhile is lost.
fn spawn_consumer_updater(
    store: Arc<dyn Store>,
    mut events: ChangeEvents,
    consumers: SharedConsumers,
    healthy_db: Arc<AtomicBool>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    tokio::spawn(async move {
        loop {
            let mut rebuild = false;
            let mut batch = Vec::new();
            match events.recv().await {
                Ok(e) => batch.push(e),
                Err(RecvError::Lagged(_)) => rebuild = true,
                Err(RecvError::Closed) => return,
            }
            // Whatever else is already queued goes into the same swap.
            while !rebuild && batch.len() < 1024 {
                match events.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(TryRecvError::Lagged(_)) => rebuild = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if !rebuild {
                let mut next: Option<ConsumerIndex> = None;
                'apply: for e in &batch {
                    let rows = match &**e {
                        ChangeEvent::Reset => {
                            rebuild = true;
                            break 'apply;
                        }
                        ChangeEvent::Rows(rows) => rows,
                    };
                    for r in rows
                        .iter()
                        .filter(|r| CONSUMER_ENTITIES.contains(&r.entity))
                    {
                        let ix = next.get_or_insert_with(|| (**consumers.load()).clone());
                        let applied = ix.apply(
                            r.entity,
                            &r.id,
                            r.old.as_ref().map(|o| &*o.text),
                            r.new.as_ref().map(|n| (&*n.text, n.expires_at)),
                        );
                        if !applied {
                            rebuild = true;
                            break 'apply;
                        }
                    }
                }
                if !rebuild {
                    if let Some(ix) = next {
                        consumers.store(Arc::new(ix));
                    }
                    continue;
                }
            }
            // Rebuild: events from here on are replayed over what the scan reads.
            events = events.resubscribe();
            loop {
                match load_consumers(store.as_ref()).await {
                    Ok(ix) => {
                        consumers.store(Arc::new(ix));
                        crate::memory::release_freed();
                        break;
                    }
                    Err(e) => {
                        healthy_db.store(false, Ordering::Relaxed);
                        tracing::error!(error = %e, "cannot load consumers; still serving the previous ones");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        events = events.resubscribe();
                    }
                }
            }
        }
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; wait forever.
        std::future::pending::<()>().await;
        return;
    };
    // SIGUSR1, nginx's logrotate signal: file-log reopens its files.
    if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening log files");
                tollgate_plugins::log_plugins::reopen_files();
            }
        });
    }
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}
