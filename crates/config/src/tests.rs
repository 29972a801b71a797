use std::io::Write;
use std::time::Duration;

use super::*;

fn home_env() -> Vec<(&'static str, &'static str)> {
    vec![("HOME", "/home/tester")]
}

fn load(opts: LoadOptions) -> Loaded {
    match Config::load(opts) {
        Ok(l) => l,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn with_file(text: &str) -> (tempfile::NamedTempFile, LoadOptions) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let opts = LoadOptions::isolated().env(home_env()).file(f.path());
    (f, opts)
}

fn err_of(opts: LoadOptions) -> ConfigError {
    match Config::load(opts) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn one_error(opts: LoadOptions) -> String {
    let e = err_of(opts);
    assert_eq!(e.problems().len(), 1, "{e}");
    e.to_string()
}

#[test]
fn defaults_follow_kong() {
    let c = load(LoadOptions::isolated().env(home_env())).config;
    assert_eq!(c.log_level, LogLevel::Notice);
    assert_eq!(c.proxy_access_log, "logs/access.log");
    assert_eq!(c.proxy_error_log, "logs/error.log");
    assert_eq!(c.admin_access_log, "logs/admin_access.log");
    assert_eq!(c.admin_error_log, "logs/error.log");
    assert_eq!(c.status_access_log, "off");
    assert_eq!(c.plugins, vec!["bundled"]);
    assert_eq!(c.role, Role::Traditional);
    assert_eq!(c.admin_gui_url, Vec::<String>::new());
    assert_eq!(c.admin_gui_path, "/");
    assert_eq!(c.declarative_config, None);
    assert_eq!(c.declarative_config_string, None);
    assert_eq!(c.pg_host, "127.0.0.1");
    assert_eq!(c.pg_port, 5432);
    assert_eq!(c.pg_timeout, Duration::from_millis(5000));
    assert_eq!(c.pg_user, "kong");
    assert_eq!(c.pg_password, None);
    assert_eq!(c.pg_database, "kong");
    assert_eq!(c.pg_schema, None);
    assert!(!c.pg_ssl);
    assert!(!c.pg_ssl_verify);
    assert_eq!(c.pg_max_concurrent_queries, 0);
    assert_eq!(c.pg_ro_host, None);
    assert_eq!(c.pg_ro_port, None);
    assert_eq!(c.pg_ro_user, None);
    assert_eq!(c.pg_ro_password, None);
    assert_eq!(c.pg_ro_database, None);
    assert_eq!(c.cassandra_contact_points, vec!["127.0.0.1"]);
    assert_eq!(c.cassandra_port, 9042);
    assert_eq!(c.cassandra_keyspace, "kong");
    assert_eq!(c.cassandra_username, "kong");
    assert_eq!(c.cassandra_password, None);
    assert_eq!(c.cassandra_consistency, None);
    assert_eq!(c.cassandra_write_consistency, "ONE");
    assert_eq!(c.cassandra_read_consistency, "ONE");
    assert_eq!(c.cassandra_repl_strategy, "SimpleStrategy");
    assert_eq!(c.cassandra_repl_factor, 1);
    assert_eq!(c.cassandra_timeout, Duration::from_millis(5000));
    assert_eq!(c.db_update_frequency, Duration::from_secs(5));
    assert_eq!(c.db_update_propagation, Duration::ZERO);
    assert_eq!(c.db_cache_ttl, Duration::ZERO);
    assert_eq!(c.mem_cache_size, 128 * 1024 * 1024);
    assert_eq!(c.router_flavor, RouterFlavor::TraditionalCompatible);
    assert_eq!(
        c.headers,
        vec!["server_tokens", "latency_tokens", "x-kong-request-id"]
    );
    assert_eq!(c.headers_upstream, vec!["x-kong-request-id"]);
    assert!(c.trusted_ips.is_empty());
    assert_eq!(c.real_ip_header, "X-Real-IP");
    assert!(!c.real_ip_recursive);
    assert_eq!(c.client_max_body_size, 0);
    assert_eq!(c.client_body_buffer_size, 8 * 1024);
    assert_eq!(c.error_default_type, "text/plain");
    assert!(c.ssl_cert.is_empty() && c.ssl_cert_key.is_empty());
    assert!(c.admin_ssl_cert.is_empty() && c.admin_ssl_cert_key.is_empty());
    assert!(!c.client_ssl);
    assert_eq!(c.client_ssl_cert, None);
    assert_eq!(c.client_ssl_cert_key, None);
    assert_eq!(c.lua_ssl_trusted_certificate, vec!["system"]);
    assert_eq!(c.lua_ssl_verify_depth, 1);
    assert_eq!(c.proxy_server, None);
    assert!(c.proxy_server_ssl_verify);
    assert_eq!(c.upstream_keepalive_pool_size, 512);
    assert_eq!(c.upstream_keepalive_max_requests, 10000);
    assert_eq!(c.upstream_keepalive_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.nginx_worker_processes, WorkerProcesses::Auto);
    assert_eq!(c.lua_max_req_headers, 100);
    assert_eq!(c.lua_max_resp_headers, 100);
    assert_eq!(c.lua_max_uri_args, 100);
    assert_eq!(c.lua_max_post_args, 100);
    assert_eq!(c.admin_auth, None);
    assert_eq!(c.admin_audit_log.as_deref(), Some("logs/admin_audit.log"));
    assert_eq!(c.admin_ssl_client_ca, None);
    assert_eq!(
        c.dns.get("dns_order").map(String::as_str),
        Some("LAST,SRV,A,CNAME")
    );
    assert_eq!(
        c.dns.get("dns_hostsfile").map(String::as_str),
        Some("/etc/hosts")
    );
    assert_eq!(c.dns.get("dns_stale_ttl").map(String::as_str), Some("3600"));
    assert!(!c.dns.contains_key("dns_resolver"));
    // Kong's DNS cache lifetimes (kong_defaults.lua)
    assert_eq!(c.dns_valid_ttl, None);
    assert_eq!(c.dns_stale_ttl, Duration::from_secs(3600));
    assert_eq!(c.dns_not_found_ttl, Duration::from_secs(30));
    assert_eq!(c.dns_error_ttl, Duration::from_secs(1));
    assert_eq!(c.dns_cache_size, 10000);
    assert!(!c.dns_no_sync);
    // every Kong default with a value is in raw (except where Tollgate differs)
    for (k, v) in KONG_DEFAULTS {
        if v.is_empty() || ["prefix", "database", "anonymous_reports"].contains(k) {
            continue;
        }
        assert_eq!(
            c.raw.get(*k).map(String::as_str),
            Some(*v),
            "raw value of {k}"
        );
    }
}

#[test]
fn kong_default_listeners() {
    let c = Config::defaults();
    let texts = |l: &[Listen]| l.iter().map(|l| l.listener.clone()).collect::<Vec<_>>();
    assert_eq!(
        c.raw["proxy_listen"],
        "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384"
    );
    assert_eq!(
        texts(&c.proxy_listen),
        vec![
            "0.0.0.0:8000 reuseport backlog=16384",
            "0.0.0.0:8443 ssl reuseport backlog=16384"
        ]
    );
    assert!(c.proxy_listen[1].ssl && c.proxy_listen[1].http2);
    assert_eq!(
        c.raw["admin_listen"],
        "127.0.0.1:8001 reuseport backlog=16384, 127.0.0.1:8444 http2 ssl reuseport backlog=16384"
    );
    assert_eq!(c.admin_listen.len(), 2);
    assert_eq!(c.admin_listen[0].port, 8001);
    assert_eq!(c.admin_listen[1].port, 8444);
    assert_eq!(
        c.raw["status_listen"],
        "127.0.0.1:8007 reuseport backlog=16384"
    );
    assert_eq!(c.status_listen[0].backlog, Some(16384));
    assert_eq!(
        c.raw["admin_gui_listen"],
        "127.0.0.1:8002, 127.0.0.1:8445 ssl"
    );
    assert_eq!(
        texts(&c.admin_gui_listen),
        vec!["127.0.0.1:8002", "127.0.0.1:8445 ssl"]
    );
    assert!(c.stream_listen.is_empty());
    assert!(Config::is_loopback_only(&c.admin_listen));
    assert!(Config::is_loopback_only(&c.status_listen));
    assert!(!Config::is_loopback_only(&c.proxy_listen));
    assert!(Config::is_loopback_only(&[]));
}

#[test]
fn tollgate_defaults_differ() {
    let c = load(LoadOptions::isolated().env(home_env())).config;
    assert_eq!(c.database, Database::Sqlite);
    assert_eq!(c.raw["database"], "sqlite");
    assert_eq!(c.prefix, PathBuf::from("/home/tester/.tollgate"));
    assert_eq!(c.raw["prefix"], "/home/tester/.tollgate");
    assert_eq!(
        c.sqlite_path,
        PathBuf::from("/home/tester/.tollgate/tollgate.db")
    );
    assert_eq!(c.raw["sqlite_path"], "/home/tester/.tollgate/tollgate.db");
    assert_eq!(c.pg_pool_size, 10);
    assert!(!c.anonymous_reports);

    // without HOME: ./.tollgate, made absolute
    let c = Config::defaults();
    let expected = std::env::current_dir().unwrap().join(".tollgate");
    assert_eq!(c.prefix, expected);
    assert!(c.prefix.is_absolute());
}

#[test]
fn anonymous_reports_always_off() {
    let l = load(LoadOptions::isolated().set("anonymous_reports", "on"));
    assert!(!l.config.anonymous_reports);
    assert_eq!(l.config.to_kong_json()["anonymous_reports"], false);
    let e = one_error(LoadOptions::isolated().set("anonymous_reports", "maybe"));
    assert!(e.contains("'anonymous_reports'"), "{e}");
}

#[test]
fn precedence_default_file_kong_tollgate_override() {
    let (_f, opts) = with_file("log_level = info\npg_host = file-host\npg_user = file-user\npg_database = file-db\npg_port = 1111\n");
    let opts = opts
        .env([
            ("HOME", "/h"),
            ("KONG_PG_HOST", "kong-host"),
            ("KONG_PG_USER", "kong-user"),
            ("TOLLGATE_PG_USER", "tollgate-user"),
            ("KONG_PG_DATABASE", "kong-db"),
            ("TOLLGATE_PG_DATABASE", "tollgate-db"),
        ])
        .set("pg_database", "override-db");
    let l = load(opts);
    let c = &l.config;
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(c.log_level, LogLevel::Info); // file over default
    assert_eq!(c.pg_port, 1111);
    assert_eq!(c.pg_host, "kong-host"); // KONG_ over file
    assert_eq!(c.pg_user, "tollgate-user"); // TOLLGATE_ over KONG_
    assert_eq!(c.pg_database, "override-db"); // override over everything
    assert_eq!(c.pg_timeout, Duration::from_millis(5000)); // default
    assert!(matches!(
        c.sources["log_level"],
        Source::File { line: 1, .. }
    ));
    assert_eq!(
        c.sources["pg_host"],
        Source::Env {
            var: "KONG_PG_HOST".into()
        }
    );
    assert_eq!(
        c.sources["pg_user"],
        Source::Env {
            var: "TOLLGATE_PG_USER".into()
        }
    );
    assert_eq!(c.sources["pg_database"], Source::Override);
    assert_eq!(c.sources["pg_timeout"], Source::Default);
    assert_eq!(c.raw["pg_user"], "tollgate-user");
}

#[test]
fn prefix_override_and_sqlite_path() {
    let l = load(
        LoadOptions::isolated()
            .env(home_env())
            .set("prefix", "/srv/tg/"),
    );
    assert_eq!(l.config.prefix, PathBuf::from("/srv/tg"));
    assert_eq!(l.config.sqlite_path, PathBuf::from("/srv/tg/tollgate.db"));
    let l = load(
        LoadOptions::isolated()
            .set("prefix", "/srv/tg")
            .set("sqlite_path", "data/x.db"),
    );
    assert_eq!(l.config.sqlite_path, PathBuf::from("/srv/tg/data/x.db"));
    let l = load(LoadOptions::isolated().set("sqlite_path", "/var/lib/x.db"));
    assert_eq!(l.config.sqlite_path, PathBuf::from("/var/lib/x.db"));
    assert_eq!(
        l.config.prefix_path("logs/access.log"),
        l.config.prefix.join("logs/access.log")
    );
}

#[test]
fn file_comments_and_escaped_hash() {
    let (_f, opts) = with_file(
        "# a comment\n\n   # indented comment\npg_password = s3cr\\#t # trailing comment\nlog_level = debug#no-space comment\nreal_ip_header = X-Forwarded-For   \n",
    );
    let c = load(opts).config;
    assert_eq!(c.pg_password.as_deref(), Some("s3cr#t"));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.real_ip_header, "X-Forwarded-For");
}

#[test]
fn empty_value_unsets() {
    let (_f, opts) = with_file("pg_host =\ntrusted_ips =\n");
    let c = load(opts.env([("HOME", "/h"), ("KONG_LOG_LEVEL", "")])).config;
    assert_eq!(c.pg_host, "127.0.0.1"); // back to the built-in default
    assert!(!c.raw.contains_key("pg_host"));
    assert_eq!(c.log_level, LogLevel::Notice);
}

#[test]
fn missing_explicit_file_is_an_error() {
    let e = err_of(LoadOptions::isolated().file("/nonexistent/tollgate.conf"));
    assert!(matches!(e, ConfigError::FileNotFound(_)));
    assert_eq!(e.to_string(), "no file at: /nonexistent/tollgate.conf");
}

#[test]
fn default_paths_first_existing_wins() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("tollgate.conf");
    let b = dir.path().join("kong.conf");
    std::fs::write(&b, "log_level = warn\n").unwrap();
    let mut opts = LoadOptions::isolated();
    opts.default_paths = vec![a.clone(), b.clone()];
    let l = load(opts.clone());
    assert_eq!(l.file.as_deref(), Some(b.as_path()));
    assert_eq!(l.config.log_level, LogLevel::Warn);
    std::fs::write(&a, "log_level = error\n").unwrap();
    let l = load(opts);
    assert_eq!(l.file.as_deref(), Some(a.as_path()));
    assert_eq!(l.config.log_level, LogLevel::Error);
    // no file anywhere: fine, defaults
    let mut opts = LoadOptions::isolated();
    opts.default_paths = vec![dir.path().join("nope.conf")];
    assert_eq!(load(opts).file, None);
    assert_eq!(
        LoadOptions::default().default_paths,
        vec![
            PathBuf::from("/etc/tollgate/tollgate.conf"),
            PathBuf::from("/etc/kong/kong.conf"),
            PathBuf::from("/etc/kong.conf")
        ]
    );
}

#[test]
fn unknown_keys_warn_known_keys_silent() {
    let (_f, opts) = with_file(
        "foo_bar = 1\nnginx_http_lua_shared_dict = foo 5m\ncluster_cert = /x\nwasm = off\ngo_plugins_dir = off\nvault_env_prefix = X\n",
    );
    let l = load(
        opts.env([
            ("HOME", "/h"),
            ("KONG_NOPE", "1"),
            ("KONG_NGINX_MAIN_WORKER_RLIMIT_NOFILE", "1024"),
            ("KONG_VERSION", "3.9"),
            ("TOLLGATE_WHATEVER", "x"),
            ("PATH", "/bin"),
        ])
        .set("bogus", "1"),
    );
    let w = &l.warnings;
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(
        w[0].contains("'foo_bar'") && w[0].contains(":1"),
        "{}",
        w[0]
    );
    assert!(w
        .iter()
        .any(|w| w.contains("'nope'") && w.contains("KONG_NOPE")));
    assert!(w
        .iter()
        .any(|w| w.contains("'whatever'") && w.contains("TOLLGATE_WHATEVER")));
    assert!(w
        .iter()
        .any(|w| w.contains("'bogus'") && w.contains("command-line override")));
    let c = &l.config;
    assert!(!c.raw.contains_key("foo_bar"));
    assert_eq!(c.raw["nginx_http_lua_shared_dict"], "foo 5m");
    assert_eq!(c.raw["nginx_main_worker_rlimit_nofile"], "1024");
    assert_eq!(c.raw["cluster_cert"], "/x");
    assert_eq!(c.raw["vault_env_prefix"], "X");
}

#[test]
fn duplicate_key_in_file_warns_last_wins() {
    let (_f, opts) = with_file("log_level = info\nlog_level = warn\n");
    let l = load(opts);
    assert_eq!(l.config.log_level, LogLevel::Warn);
    assert_eq!(l.warnings.len(), 1);
    assert!(l.warnings[0].contains("line 2 overrides line 1"));
}

#[test]
fn syntax_errors_have_line_numbers() {
    let (f, opts) = with_file("log_level = info\nthis is not valid\n");
    let e = one_error(opts);
    assert!(e.contains("this is not valid"), "{e}");
    assert!(e.contains(&format!("{}:2", f.path().display())), "{e}");
}

#[test]
fn invalid_values_name_key_value_and_allowed() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "database",
            "mysql",
            "invalid value for 'database': 'mysql' (expected one of: sqlite, postgres, cassandra, off)",
        ),
        (
            "log_level",
            "verbose",
            "invalid value for 'log_level': 'verbose' (expected one of: debug, info, notice, warn, error, crit, alert, emerg)",
        ),
        ("pg_port", "abc", "invalid value for 'pg_port': 'abc' (expected an integer between 1 and 65535)"),
        ("pg_port", "70000", "'pg_port': '70000'"),
        ("pg_ssl", "yes", "invalid value for 'pg_ssl': 'yes' (expected a boolean: on, off, true or false)"),
        ("pg_timeout", "5s", "'pg_timeout': '5s'"),
        ("pg_pool_size", "0", "'pg_pool_size': '0'"),
        ("pg_ro_port", "x", "'pg_ro_port': 'x'"),
        ("pg_max_concurrent_queries", "-1", "'pg_max_concurrent_queries': '-1'"),
        ("db_update_frequency", "-5", "'db_update_frequency': '-5' (expected a non-negative number of seconds)"),
        ("db_cache_ttl", "soon", "'db_cache_ttl': 'soon'"),
        ("mem_cache_size", "128mb", "'mem_cache_size': '128mb' (expected a size such as 512, 128k, 10m or 1g)"),
        ("client_max_body_size", "lots", "'client_max_body_size': 'lots'"),
        ("client_body_buffer_size", "1.5k", "'client_body_buffer_size': '1.5k'"),
        ("router_flavor", "fast", "'router_flavor': 'fast' (expected one of: traditional, traditional_compatible, expressions)"),
        ("role", "data_plane", "'role': 'data_plane' (expected one of: traditional"),
        ("error_default_type", "text/csv", "'error_default_type': 'text/csv' (expected one of: application/json"),
        ("headers", "server_tokens, X-Foo", "invalid value for 'headers': 'X-Foo' (expected a comma-separated list of: off, server_tokens"),
        ("headers_upstream", "via", "'headers_upstream': 'via'"),
        ("trusted_ips", "10.0.0.0/8, 300.1.1.1", "invalid value for 'trusted_ips': '300.1.1.1' (expected an IPv4 or IPv6 address or CIDR block, or 'unix:')"),
        ("proxy_listen", "0.0.0.0:8000 fast", "invalid value for 'proxy_listen': '0.0.0.0:8000 fast' (expected [off] | <ip>:<port> [ssl] [http2]"),
        ("admin_listen", "", "'admin_listen': ''"),
        ("status_listen", "127.0.0.1", "'status_listen': '127.0.0.1'"),
        ("stream_listen", "0.0.0.0:9000 http2", "'stream_listen'"),
        ("lua_max_req_headers", "0", "'lua_max_req_headers': '0' (expected an integer between 1 and 1000)"),
        ("lua_max_resp_headers", "1001", "'lua_max_resp_headers': '1001'"),
        ("lua_max_uri_args", "x", "'lua_max_uri_args': 'x'"),
        ("lua_max_post_args", "2.5", "'lua_max_post_args': '2.5'"),
        ("upstream_keepalive_pool_size", "-1", "'upstream_keepalive_pool_size': '-1'"),
        ("upstream_keepalive_max_requests", "many", "'upstream_keepalive_max_requests'"),
        ("upstream_keepalive_idle_timeout", "-3", "'upstream_keepalive_idle_timeout'"),
        ("nginx_worker_processes", "zero", "invalid value for 'nginx_worker_processes': 'zero' (expected 'auto' or an integer"),
        ("admin_auth", "basic", "invalid value for 'admin_auth': 'basic' (expected one of: off, token, mtls)"),
        ("client_ssl", "enabled", "'client_ssl': 'enabled'"),
        ("real_ip_recursive", "maybe", "'real_ip_recursive': 'maybe'"),
        ("cassandra_write_consistency", "MOST", "'cassandra_write_consistency': 'MOST' (expected one of: ALL,"),
        ("cassandra_repl_strategy", "Any", "'cassandra_repl_strategy': 'Any'"),
        ("cassandra_port", "0", "'cassandra_port': '0'"),
        ("dns_order", "LAST,MX", "invalid value for 'dns_order': 'MX'"),
        ("admin_gui_path", "/manager/", "'admin_gui_path': '/manager/'"),
        // generic Kong type checks for keys Tollgate does not type
        ("dns_stale_ttl", "forever", "invalid value for 'dns_stale_ttl': 'forever' (expected a non-negative number of seconds)"),
        ("dns_not_found_ttl", "-1", "'dns_not_found_ttl': '-1'"),
        ("dns_error_ttl", "soon", "'dns_error_ttl': 'soon'"),
        ("dns_valid_ttl", "-5", "'dns_valid_ttl': '-5'"),
        ("dns_cache_size", "0", "'dns_cache_size': '0' (expected an integer between 1 and"),
        ("dns_no_sync", "maybe", "'dns_no_sync': 'maybe'"),
        ("new_dns_client", "on", "'new_dns_client': 'on' (expected off (the new DNS client is not supported"),
        ("wasm", "perhaps", "'wasm': 'perhaps' (expected a boolean"),
        ("cluster_mtls", "none", "'cluster_mtls': 'none' (expected one of: shared, pki)"),
        ("ssl_session_tickets", "true", "'ssl_session_tickets': 'true' (expected on or off)"),
    ];
    for (key, value, expected) in cases {
        let e = err_of(LoadOptions::isolated().set(*key, *value));
        let msg = e.to_string();
        assert!(
            e.problems().iter().any(|p| p.key.as_deref() == Some(*key)),
            "{key}={value}: {msg}"
        );
        assert!(
            msg.contains(expected),
            "{key}={value}: got {msg:?}, expected to contain {expected:?}"
        );
        assert!(msg.contains("[from command-line override]"), "{msg}");
    }
}

#[test]
fn sensitive_values_masked_in_errors() {
    let e = one_error(LoadOptions::isolated().set("proxy_server", "ftp://user:secret@proxy"));
    assert!(!e.contains("secret"), "{e}");
    assert!(
        e.contains("invalid value for 'proxy_server': '******'"),
        "{e}"
    );
    load(LoadOptions::isolated().set("proxy_server", "http://user:secret@proxy:3128"));
}

#[test]
fn ssl_cert_count_mismatch() {
    let e = err_of(
        LoadOptions::isolated()
            .set("ssl_cert", "a.crt")
            .set("ssl_cert_key", "k1,k2"),
    );
    assert!(e
        .to_string()
        .contains("ssl_cert was specified 1 times while ssl_cert_key was specified 2 times"));
}

#[test]
fn all_errors_are_collected() {
    let (_f, opts) = with_file("database = mysql\nlog_level = loud\nbroken line\n");
    let e = err_of(
        opts.env([("KONG_PG_PORT", "x"), ("TOLLGATE_HEADERS", "nope")])
            .set("proxy_listen", "bad"),
    );
    let problems = e.problems();
    assert_eq!(problems.len(), 6, "{e}");
    let text = e.to_string();
    assert!(text.starts_with("6 configuration errors:"), "{text}");
    for needle in [
        "'database': 'mysql'",
        "'log_level': 'loud'",
        "broken line",
        "'pg_port': 'x'",
        "[from environment variable KONG_PG_PORT]",
        "'headers': 'nope'",
        "'proxy_listen': 'bad'",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
}

#[test]
fn ssl_certificate_pairs_checked() {
    let e = one_error(LoadOptions::isolated().set("ssl_cert", "/a.crt"));
    assert!(e.contains("ssl_cert_key must be specified"), "{e}");
    let e = one_error(LoadOptions::isolated().set("admin_ssl_cert_key", "/a.key"));
    assert!(e.contains("admin_ssl_cert must be specified"), "{e}");
    // no ssl listener: nothing to check
    load(
        LoadOptions::isolated()
            .set("admin_listen", "127.0.0.1:8001")
            .set("admin_ssl_cert", "/a.crt"),
    );
    let e = one_error(
        LoadOptions::isolated()
            .set("client_ssl", "on")
            .set("client_ssl_cert", "/c.crt"),
    );
    assert!(e.contains("client_ssl_cert_key must be specified"), "{e}");
    let e = one_error(LoadOptions::isolated().set("admin_auth", "mtls"));
    assert!(e.contains("admin_ssl_client_ca must be specified"), "{e}");
    let c = load(
        LoadOptions::isolated()
            .set("admin_auth", "mtls")
            .set("admin_ssl_client_ca", "/ca.pem"),
    )
    .config;
    assert_eq!(c.admin_auth, Some(AdminAuth::Mtls));
}

#[test]
fn admin_auth_and_audit_log() {
    let c = load(
        LoadOptions::isolated()
            .set("admin_auth", "off")
            .set("admin_audit_log", "off"),
    )
    .config;
    assert_eq!(c.admin_auth, None);
    assert_eq!(c.admin_audit_log, None);
    let c = load(
        LoadOptions::isolated()
            .set("admin_auth", "token")
            .set("admin_audit_log", "logs/audit.log"),
    )
    .config;
    assert_eq!(c.admin_auth, Some(AdminAuth::Token));
    assert_eq!(c.admin_audit_log.as_deref(), Some("logs/audit.log"));
}

#[test]
fn typed_values() {
    let c = load(
        LoadOptions::isolated()
            .set("database", "off")
            .set("declarative_config", "/etc/kong/kong.yml")
            .set("client_max_body_size", "10m")
            .set("client_body_buffer_size", "128k")
            .set("mem_cache_size", "1g")
            .set("pg_ssl", "true")
            .set("pg_ssl_verify", "ON")
            .set("db_update_frequency", "0.5")
            .set("trusted_ips", "0.0.0.0/0, ::/0, unix:")
            .set("nginx_worker_processes", "4")
            .set("plugins", " bundled , my-plugin ,")
            .set("headers", "off")
            .set("pg_ro_host", "replica")
            .set("pg_ro_port", "5433"),
    )
    .config;
    assert_eq!(c.database, Database::Off);
    assert_eq!(
        c.declarative_config,
        Some(PathBuf::from("/etc/kong/kong.yml"))
    );
    assert_eq!(c.client_max_body_size, 10 * 1024 * 1024);
    assert_eq!(c.client_body_buffer_size, 128 * 1024);
    assert_eq!(c.mem_cache_size, 1 << 30);
    assert!(c.pg_ssl && c.pg_ssl_verify);
    assert_eq!(c.db_update_frequency, Duration::from_millis(500));
    assert_eq!(c.trusted_ips.len(), 3);
    assert!(c.is_trusted("1.2.3.4".parse().unwrap()));
    assert!(c.is_trusted("2001:db8::1".parse().unwrap()));
    assert_eq!(c.nginx_worker_processes, WorkerProcesses::Count(4));
    assert_eq!(c.nginx_worker_processes.resolve(8), 4);
    assert_eq!(WorkerProcesses::Auto.resolve(8), 8);
    assert_eq!(c.plugins, vec!["bundled", "my-plugin"]);
    let loaded = c.loaded_plugins();
    assert!(loaded.contains("my-plugin") && loaded.contains("key-auth"));
    assert_eq!(loaded.len(), BUNDLED_PLUGINS.len() + 1);
    assert!(!c.header_enabled("Via"));
    assert_eq!(c.pg_ro_host.as_deref(), Some("replica"));
    assert_eq!(c.pg_ro_port, Some(5433));
    assert!(load(LoadOptions::isolated().set("plugins", "off"))
        .config
        .loaded_plugins()
        .is_empty());
}

#[test]
fn client_max_body_size_alias() {
    // Kong's name alone
    let c = load(LoadOptions::isolated().set("nginx_http_client_max_body_size", "2m")).config;
    assert_eq!(c.client_max_body_size, 2 << 20);
    assert_eq!(c.raw["client_max_body_size"], "2m");
    assert_eq!(c.raw["nginx_http_client_max_body_size"], "2m");
    // higher-precedence source wins
    let (_f, opts) = with_file("client_max_body_size = 1m\n");
    let c = load(opts.env([("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "3m")])).config;
    assert_eq!(c.client_max_body_size, 3 << 20);
    // same source: Tollgate's name wins
    let (_f, opts) = with_file("nginx_http_client_max_body_size = 5m\nclient_max_body_size = 4m\n");
    assert_eq!(load(opts).config.client_max_body_size, 4 << 20);
    // invalid value through the alias names the alias' twin key
    let e = err_of(LoadOptions::isolated().set("nginx_http_client_max_body_size", "huge"));
    assert!(
        e.to_string().contains("'client_max_body_size': 'huge'"),
        "{e}"
    );
}

#[test]
fn other_aliases() {
    let c = load(
        LoadOptions::isolated()
            .set("nginx_proxy_real_ip_header", "X-Forwarded-For")
            .set("real_ip_recursive", "on")
            .set("nginx_main_worker_processes", "2"),
    )
    .config;
    assert_eq!(c.real_ip_header, "X-Forwarded-For");
    assert!(c.real_ip_recursive);
    assert_eq!(c.raw["nginx_proxy_real_ip_recursive"], "on");
    assert_eq!(c.nginx_worker_processes, WorkerProcesses::Count(2));
    let l = load(LoadOptions::isolated().set("opentelemetry_tracing", "all"));
    assert_eq!(l.config.raw["tracing_instrumentations"], "all");
    assert!(l
        .warnings
        .iter()
        .any(|w| w.contains("'opentelemetry_tracing' configuration property is deprecated")));
}

#[test]
fn deprecated_cassandra_consistency() {
    let l = load(LoadOptions::isolated().env([
        ("KONG_CASSANDRA_CONSISTENCY", "QUORUM"),
        ("TOLLGATE_CASSANDRA_READ_CONSISTENCY", "ALL"),
    ]));
    assert_eq!(l.config.cassandra_write_consistency, "QUORUM");
    assert_eq!(l.config.cassandra_read_consistency, "ALL");
    assert_eq!(l.config.cassandra_consistency.as_deref(), Some("QUORUM"));
    assert!(l
        .warnings
        .iter()
        .any(|w| w.contains("'cassandra_consistency'")));
}

#[test]
fn env_values_are_not_comment_stripped() {
    let c = load(LoadOptions::isolated().env([("KONG_PG_PASSWORD", " pa#ss ")])).config;
    assert_eq!(c.pg_password.as_deref(), Some("pa#ss"));
}

#[test]
fn kong_json_shape_and_types() {
    let c = load(
        LoadOptions::isolated()
            .env(home_env())
            .set("pg_password", "hunter2")
            .set("pg_ro_password", "ro-secret")
            .set("cassandra_password", "cass")
            .set("declarative_config_string", "{\"_format_version\":\"3.0\"}")
            .set("ssl_cert", "/a.crt")
            .set("ssl_cert_key", "/a.key")
            .set("admin_ssl_cert", "/b.crt")
            .set("admin_ssl_cert_key", "/b.key")
            .set("client_ssl_cert_key", "/c.key")
            .set("proxy_server", "http://user:pw@proxy:3128")
            .set("plugins", "key-auth, cors"),
    )
    .config;
    let j = c.to_kong_json();
    for k in [
        "pg_password",
        "pg_ro_password",
        "cassandra_password",
        "declarative_config_string",
        "ssl_cert_key",
        "admin_ssl_cert_key",
        "client_ssl_cert_key",
        "proxy_server",
    ] {
        assert_eq!(j[k], "******", "{k}");
    }
    let text = j.to_string();
    assert!(!text.contains("hunter2") && !text.contains("ro-secret") && !text.contains("user:pw"));
    // unset values are absent, like Kong's nil
    assert!(j.get("pg_schema").is_none());
    assert!(j.get("cluster_cert_key").is_none());
    // typed like Kong
    assert_eq!(j["pg_port"], 5432);
    assert_eq!(j["pg_timeout"], 5000);
    assert_eq!(j["db_update_frequency"], 5);
    assert_eq!(j["tracing_sampling_rate"], 0.01);
    assert_eq!(j["pg_ssl"], false);
    assert_eq!(j["proxy_server_ssl_verify"], true);
    assert_eq!(j["real_ip_recursive"], "off");
    assert_eq!(j["ssl_cert"], serde_json::json!(["/a.crt"]));
    assert_eq!(
        j["admin_listen"],
        serde_json::json!([
            "127.0.0.1:8001 reuseport backlog=16384",
            "127.0.0.1:8444 http2 ssl reuseport backlog=16384"
        ])
    );
    assert_eq!(j["plugins"], serde_json::json!(["key-auth", "cors"]));
    assert_eq!(j["database"], "sqlite");
    assert_eq!(j["role"], "traditional");
    assert_eq!(j["router_flavor"], "traditional_compatible");
    assert_eq!(j["prefix"], "/home/tester/.tollgate");
    assert_eq!(j["mem_cache_size"], "128m");
    assert_eq!(j["portal"], false);
    assert_eq!(j["rbac"], "off");
    assert_eq!(
        j["loaded_plugins"],
        serde_json::json!({"cors": true, "key-auth": true})
    );
    assert_eq!(j["loaded_vaults"], serde_json::json!({"env": true}));
    assert_eq!(j["enabled_headers"]["Via"], true);
    assert_eq!(j["enabled_headers"]["X-Kong-Proxy-Latency"], true);
    assert_eq!(j["enabled_headers"]["X-Kong-Request-Id"], true);
    assert_eq!(j["enabled_headers"]["X-Kong-Upstream-Status"], false);
    assert_eq!(j["enabled_headers_upstream"]["X-Kong-Request-Id"], true);
    let proxy = j["proxy_listeners"].as_array().unwrap();
    assert_eq!(proxy.len(), 2);
    assert_eq!(proxy[1]["port"], 8443);
    assert_eq!(proxy[1]["ssl"], true);
    assert_eq!(proxy[1]["http2"], true);
    assert_eq!(proxy[1]["ip"], "0.0.0.0");
    assert_eq!(proxy[1]["backlog=16384"], true);
    assert_eq!(
        proxy[1]["listener"],
        "0.0.0.0:8443 ssl reuseport backlog=16384"
    );
    let gui = j["admin_gui_listeners"].as_array().unwrap();
    assert_eq!(gui[0]["port"], 8002);
    assert_eq!(gui[0]["backlog=%d+"], false);
    assert_eq!(j["admin_listeners"].as_array().unwrap().len(), 2);
    assert_eq!(j["status_listeners"][0]["port"], 8007);
    assert_eq!(j["stream_listeners"], serde_json::json!([]));
    assert_eq!(j["cluster_listeners"][0]["port"], 8005);
    assert_eq!(j["proxy_ssl_enabled"], true);
    assert_eq!(j["stream_proxy_ssl_enabled"], false);
    // keys are sorted
    let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn render_conf_masks_and_round_trips() {
    let c = load(
        LoadOptions::isolated()
            .env(home_env())
            .set("pg_password", "hunter2")
            .set("ssl_cert", "/a.crt")
            .set("ssl_cert_key", "/a.key")
            .set("real_ip_header", "X-Has#Hash"),
    )
    .config;
    let text = c.render_conf();
    assert!(!text.contains("hunter2"));
    assert!(text.contains("\npg_password = ******\n"));
    assert!(text.contains("\nssl_cert_key = ******\n"));
    assert!(text.contains("\nssl_cert = /a.crt\n"));
    assert!(text.contains("\ndatabase = sqlite\n"));
    assert!(text.contains("\nprefix = /home/tester/.tollgate\n"));
    assert!(!text.contains("pg_schema"));
    // reading it back gives the same non-secret values
    let (entries, errors) = parse_conf(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let back: BTreeMap<String, String> = entries.into_iter().map(|e| (e.key, e.value)).collect();
    for (k, v) in &c.raw {
        if is_sensitive(k) {
            assert_eq!(back[k], "******");
        } else {
            assert_eq!(&back[k], v, "{k}");
        }
    }
}

#[test]
fn default_conf_text_lists_typed_keys() {
    let text = default_conf_text();
    assert!(text.contains("\n#database = sqlite\n"));
    assert!(text.contains("\n#pg_port = 5432\n"));
    assert!(text.contains("\n#pg_pool_size = 10\n"));
    assert!(text.contains(
        "\n#proxy_listen = 0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384\n"
    ));
    assert!(text.contains("\n#prefix =\n"));
    assert!(text.contains("\n#pg_password =\n"));
    // every line is a comment or blank: loading it changes nothing
    let (entries, errors) = parse_conf(&text);
    assert!(entries.is_empty() && errors.is_empty());
    // uncommenting every line gives a valid configuration equal to the defaults
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.contains(" =") && !rest.starts_with(' ') => format!("{rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let (_f, opts) = with_file(&uncommented);
    let l = load(opts);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(
        l.config,
        load(LoadOptions::isolated().env(home_env()))
            .config
            .with_sources_of(&l.config)
    );
}

impl Config {
    /// Test helper: same config with `other`'s sources (sources differ by design).
    fn with_sources_of(mut self, other: &Config) -> Config {
        self.sources = other.sources.clone();
        self
    }
}

#[test]
fn every_typed_key_is_a_known_key() {
    for (k, _) in render::TYPED_KEYS {
        assert!(is_known_key(k), "{k}");
    }
    assert!(is_known_key("nginx_http_anything"));
    assert!(!is_known_key("nginx_"));
    assert!(!is_known_key("not_a_key"));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC*") {
            let _ = parse_conf(&text);
        }

        #[test]
        fn parser_never_panics_on_conf_like_text(
            lines in proptest::collection::vec("[ \\t]*[a-z_#;\\[\\\\=-]{0,12}[ \\t]*=?[ \\t]*[ -~]{0,30}\\\\?", 0..20)
        ) {
            let _ = parse_conf(&lines.join("\n"));
        }

        #[test]
        fn loading_arbitrary_values_never_panics(
            key in proptest::sample::select(KONG_DEFAULTS.iter().map(|(k, _)| *k).collect::<Vec<_>>()),
            value in "[ -~]{0,40}",
        ) {
            let _ = Config::load(LoadOptions::isolated().set(key, value));
        }

        #[test]
        fn listen_parser_never_panics(value in "[ -~]{0,60}") {
            let _ = parse_listen(&value, Subsystem::Http);
            let _ = parse_listen(&value, Subsystem::Stream);
        }

        #[test]
        fn size_round_trip(n in 0u64..1_000_000, unit in proptest::sample::select(vec!["", "k", "m", "g", "K", "M", "G"])) {
            let mult = match unit.to_ascii_lowercase().as_str() { "k" => 1u64 << 10, "m" => 1 << 20, "g" => 1 << 30, _ => 1 };
            prop_assert_eq!(parse_size(&format!("{n}{unit}")), Ok(n * mult));
        }
    }
}

#[test]
fn admin_gui_dir_is_relative_to_the_prefix() {
    let c = load(LoadOptions::isolated().set("prefix", "/srv/tg")).config;
    assert_eq!(c.admin_gui_dir, None);
    assert_eq!(c.admin_gui_api_url, None);
    let c = load(
        LoadOptions::isolated()
            .set("prefix", "/srv/tg")
            .set("admin_gui_dir", "km/dist")
            .set("admin_gui_api_url", "http://api.example:8001"),
    )
    .config;
    assert_eq!(c.admin_gui_dir, Some(PathBuf::from("/srv/tg/km/dist")));
    assert_eq!(
        c.admin_gui_api_url.as_deref(),
        Some("http://api.example:8001")
    );
    let c = load(LoadOptions::isolated().set("admin_gui_dir", "/opt/kong-manager")).config;
    assert_eq!(c.admin_gui_dir, Some(PathBuf::from("/opt/kong-manager")));
}
