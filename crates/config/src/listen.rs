//! `*_listen` values, parsed like Kong's `kong/conf_loader/listeners.lua`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use serde_json::{Map, Value};

/// Which flags a listener accepts (Kong's `subsystem_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    /// `proxy_listen`, `admin_listen`, `status_listen`, `admin_gui_listen`, `cluster_listen`.
    Http,
    /// `stream_listen` (adds `udp`, no `http2`/`deferred`).
    Stream,
}

impl Subsystem {
    /// Kong's flag patterns, in Kong's order (this order is also the order
    /// of flags in [`Listen::listener`] and of keys in the JSON form).
    fn flags(self) -> &'static [&'static str] {
        match self {
            Subsystem::Http => &[
                "ssl",
                "http2",
                "proxy_protocol",
                "deferred",
                "bind",
                "reuseport",
                "backlog=%d+",
                "ipv6only=on",
                "ipv6only=off",
                "so_keepalive=on",
                "so_keepalive=off",
                "so_keepalive=%w*:%w*:%d*",
            ],
            Subsystem::Stream => &[
                "udp",
                "ssl",
                "proxy_protocol",
                "bind",
                "reuseport",
                "backlog=%d+",
                "ipv6only=on",
                "ipv6only=off",
                "so_keepalive=on",
                "so_keepalive=off",
                "so_keepalive=%w*:%w*:%d*",
            ],
        }
    }

    /// Usage text for a bad listen value.
    pub fn usage(self) -> String {
        let flags = match self {
            Subsystem::Http => "[ssl] [http2] [proxy_protocol] [deferred] [bind] [reuseport]",
            Subsystem::Stream => "[udp] [ssl] [proxy_protocol] [bind] [reuseport]",
        };
        format!(
            "[off] | <ip>:<port> {flags} [backlog=N] [ipv6only=on|off] \
             [so_keepalive=on|off|idle:intvl:cnt], [... next entry ...]"
        )
    }
}

/// One listening address of a `*_listen` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Address as Kong normalizes it: dotted IPv4, IPv6 in brackets and fully
    /// expanded (`[0000:…:0001]`), `*`, or a host name as written.
    pub addr: String,
    /// Port.
    pub port: u16,
    /// `ssl` flag.
    pub ssl: bool,
    /// `http2` flag.
    pub http2: bool,
    /// `proxy_protocol` flag.
    pub proxy_protocol: bool,
    /// `deferred` flag.
    pub deferred: bool,
    /// `bind` flag.
    pub bind: bool,
    /// `reuseport` flag.
    pub reuseport: bool,
    /// `udp` flag (stream listeners only).
    pub udp: bool,
    /// `backlog=N`.
    pub backlog: Option<u32>,
    /// `ipv6only=on|off`.
    pub ipv6only: Option<bool>,
    /// `so_keepalive=on|off|idle:intvl:cnt`, the text after `=`.
    pub so_keepalive: Option<String>,
    /// Kong's normalized text: `ip:port` followed by the flags found, in Kong's
    /// order, without `http2` (Kong's `listener` field).
    pub listener: String,
    flags_found: Vec<String>,
    subsystem_http: bool,
}

impl Listen {
    /// The socket address to bind, for IP literals and `*` (all IPv4
    /// interfaces, like nginx). `None` for host names (see [`Listen::resolve`]).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        if self.addr == "*" {
            return Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                self.port,
            ));
        }
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The IP address, when the address is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        let host = self
            .addr
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.addr);
        host.parse().ok()
    }

    /// Resolves the address (host names through the system resolver).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(sa) = self.socket_addr() {
            return Ok(vec![sa]);
        }
        Ok((self.addr.as_str(), self.port).to_socket_addrs()?.collect())
    }

    /// Whether this listener only accepts connections from the local host
    /// (`127.0.0.0/8`, `::1`, `localhost`).
    pub fn is_loopback(&self) -> bool {
        match self.ip() {
            Some(ip) => ip.is_loopback(),
            None => self.addr.eq_ignore_ascii_case("localhost"),
        }
    }

    /// The listener as Kong prints it in `proxy_listeners` & co: `ip`, `port`,
    /// `listener`, and one boolean per flag pattern (`"backlog=16384": true`
    /// when present, the literal pattern `"backlog=%d+": false` when absent).
    pub fn to_kong_json(&self) -> Value {
        let mut m = Map::new();
        let subsystem = if self.subsystem_http {
            Subsystem::Http
        } else {
            Subsystem::Stream
        };
        for pattern in subsystem.flags() {
            match self.flags_found.iter().find(|f| flag_matches(pattern, f)) {
                Some(found) => m.insert(found.clone(), Value::Bool(true)),
                None => m.insert((*pattern).to_string(), Value::Bool(false)),
            };
        }
        m.insert("ip".into(), Value::String(self.addr.clone()));
        m.insert("port".into(), Value::from(self.port));
        m.insert("listener".into(), Value::String(self.listener.clone()));
        Value::Object(m)
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.listener)
    }
}

/// Does whitespace-free token `tok` match Kong's flag pattern?
fn flag_matches(pattern: &str, tok: &str) -> bool {
    match pattern {
        "backlog=%d+" => tok
            .strip_prefix("backlog=")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "so_keepalive=%w*:%w*:%d*" => tok.strip_prefix("so_keepalive=").is_some_and(|rest| {
            let parts: Vec<&str> = rest.split(':').collect();
            parts.len() == 3
                && parts[0].bytes().all(|b| b.is_ascii_alphanumeric())
                && parts[1].bytes().all(|b| b.is_ascii_alphanumeric())
                && parts[2].bytes().all(|b| b.is_ascii_digit())
        }),
        literal => tok == literal,
    }
}

/// Parses a listen value (`off`, or comma-separated `ADDR:PORT [flags…]`).
/// The error is a description of the problem (without the key name).
pub fn parse_listen(value: &str, subsystem: Subsystem) -> Result<Vec<Listen>, String> {
    let entries: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if entries.is_empty() {
        return Err("a listen value must not be empty (use 'off' to disable)".to_string());
    }
    if entries[0] == "off" {
        return Ok(Vec::new());
    }
    entries.iter().map(|e| parse_entry(e, subsystem)).collect()
}

fn parse_entry(entry: &str, subsystem: Subsystem) -> Result<Listen, String> {
    let tokens: Vec<&str> = entry.split_whitespace().collect();
    let mut remainder: Vec<&str> = Vec::new();
    let mut found: Vec<String> = Vec::new();
    for tok in &tokens {
        if subsystem.flags().iter().any(|p| flag_matches(p, tok)) {
            if !found.iter().any(|f| f == tok) {
                found.push((*tok).to_string());
            }
        } else {
            remainder.push(tok);
        }
    }
    if remainder.len() != 1 {
        return Err(if remainder.is_empty() {
            format!("missing address in '{entry}'")
        } else {
            format!("unexpected '{}' in '{entry}'", remainder[1..].join(" "))
        });
    }
    let (addr, port) = parse_addr(remainder[0]).ok_or_else(|| {
        format!(
            "'{}' is not of the form <ip>:<port> or <hostname>:<port>",
            remainder[0]
        )
    })?;

    // Kong's order: flags in pattern order (one per pattern, first match).
    let mut ordered: Vec<String> = Vec::new();
    for pattern in subsystem.flags() {
        if let Some(f) = found.iter().find(|f| flag_matches(pattern, f)) {
            ordered.push(f.clone());
        }
    }
    let has = |name: &str| ordered.iter().any(|f| f == name);
    let mut backlog = None;
    let mut ipv6only = None;
    let mut so_keepalive = None;
    for f in &ordered {
        if let Some(n) = f.strip_prefix("backlog=") {
            backlog = Some(
                n.parse::<u32>()
                    .map_err(|_| format!("backlog value '{n}' is out of range"))?,
            );
        } else if let Some(v) = f.strip_prefix("ipv6only=") {
            ipv6only = Some(v == "on");
        } else if let Some(v) = f.strip_prefix("so_keepalive=") {
            so_keepalive = Some(v.to_string());
        }
    }
    let cleaned: Vec<&str> = ordered
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "http2")
        .collect();
    let mut listener = format!("{addr}:{port}");
    if !cleaned.is_empty() {
        listener.push(' ');
        listener.push_str(&cleaned.join(" "));
    }
    Ok(Listen {
        ssl: has("ssl"),
        http2: has("http2"),
        proxy_protocol: has("proxy_protocol"),
        deferred: has("deferred"),
        bind: has("bind"),
        reuseport: has("reuseport"),
        udp: has("udp"),
        backlog,
        ipv6only,
        so_keepalive,
        listener,
        addr,
        port,
        flags_found: ordered,
        subsystem_http: subsystem == Subsystem::Http,
    })
}

/// `ADDR:PORT` → (normalized address, port).
fn parse_addr(s: &str) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let ip: Ipv6Addr = rest[..close].parse().ok()?;
        let port = parse_port(rest[close + 1..].strip_prefix(':')?)?;
        return Some((format!("[{}]", expand_ipv6(&ip)), port));
    }
    let colon = s.rfind(':')?;
    let (host, port) = (&s[..colon], parse_port(&s[colon + 1..])?);
    if host.is_empty() || host.contains(':') {
        return None;
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host.parse().ok()?;
        return Some((ip.to_string(), port));
    }
    let valid_name = host == "*"
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid_name.then(|| (host.to_string(), port))
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Kong's IPv6 normalization: eight groups of four lower-case hex digits.
fn expand_ipv6(ip: &Ipv6Addr) -> String {
    ip.segments()
        .iter()
        .map(|s| format!("{s:04x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_default_proxy_listen() {
        let l = parse_listen(
            "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384",
            Subsystem::Http,
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].addr, "0.0.0.0");
        assert_eq!(l[0].port, 8000);
        assert!(l[0].reuseport && !l[0].ssl && !l[0].http2);
        assert_eq!(l[0].backlog, Some(16384));
        assert_eq!(l[0].listener, "0.0.0.0:8000 reuseport backlog=16384");
        assert!(l[1].ssl && l[1].http2 && l[1].reuseport);
        // http2 is dropped from Kong's listener text, flags in Kong's order
        assert_eq!(l[1].listener, "0.0.0.0:8443 ssl reuseport backlog=16384");
        assert_eq!(l[1].socket_addr(), Some("0.0.0.0:8443".parse().unwrap()));
    }

    #[test]
    fn off_and_empty() {
        assert!(parse_listen("off", Subsystem::Http).unwrap().is_empty());
        assert!(parse_listen(" off , 1.2.3.4:5", Subsystem::Http)
            .unwrap()
            .is_empty());
        assert!(parse_listen("", Subsystem::Http).is_err());
        assert!(parse_listen(" , ", Subsystem::Http).is_err());
    }

    #[test]
    fn ipv6() {
        let l = parse_listen("[::1]:8001 ssl, [::]:80 ipv6only=on", Subsystem::Http).unwrap();
        assert_eq!(l[0].addr, "[0000:0000:0000:0000:0000:0000:0000:0001]");
        assert_eq!(l[0].socket_addr(), Some("[::1]:8001".parse().unwrap()));
        assert!(l[0].is_loopback());
        assert_eq!(l[1].ipv6only, Some(true));
        assert_eq!(l[1].socket_addr(), Some("[::]:80".parse().unwrap()));
        assert!(!l[1].is_loopback());
        assert!(parse_listen("[::1]8001", Subsystem::Http).is_err());
        assert!(parse_listen("::1:8001", Subsystem::Http).is_err());
        assert!(parse_listen("[zz::1]:8001", Subsystem::Http).is_err());
    }

    #[test]
    fn wildcard_and_hostnames() {
        let l = parse_listen(
            "*:8000, localhost:9000 proxy_protocol deferred bind",
            Subsystem::Http,
        )
        .unwrap();
        assert_eq!(l[0].addr, "*");
        assert_eq!(l[0].socket_addr(), Some("0.0.0.0:8000".parse().unwrap()));
        assert_eq!(l[1].addr, "localhost");
        assert_eq!(l[1].socket_addr(), None);
        assert!(l[1].is_loopback());
        assert!(l[1].proxy_protocol && l[1].deferred && l[1].bind);
    }

    #[test]
    fn keepalive_and_bad_entries() {
        let l = parse_listen("127.0.0.1:80 so_keepalive=30m::10", Subsystem::Http).unwrap();
        assert_eq!(l[0].so_keepalive.as_deref(), Some("30m::10"));
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "256.0.0.1:80",
            "127.0.0.1:80 foo",
            "127.0.0.1:80 backlog=",
            "127.0.0.1:80 backlog=abc",
            "127.0.0.1:80 ipv6only=maybe",
            "ssl",
            "1.2.3.4:80 5.6.7.8:90",
            "127.0.0.1:80 udp",
        ] {
            assert!(
                parse_listen(bad, Subsystem::Http).is_err(),
                "{bad} should fail"
            );
        }
        assert!(parse_listen("127.0.0.1:80 udp", Subsystem::Stream).unwrap()[0].udp);
        assert!(parse_listen("127.0.0.1:80 http2", Subsystem::Stream).is_err());
    }

    #[test]
    fn json_like_kong() {
        let l = parse_listen(
            "127.0.0.1:8444 http2 ssl reuseport backlog=16384",
            Subsystem::Http,
        )
        .unwrap();
        let j = l[0].to_kong_json();
        assert_eq!(j["ip"], "127.0.0.1");
        assert_eq!(j["port"], 8444);
        assert_eq!(j["ssl"], true);
        assert_eq!(j["http2"], true);
        assert_eq!(j["proxy_protocol"], false);
        assert_eq!(j["deferred"], false);
        assert_eq!(j["bind"], false);
        assert_eq!(j["reuseport"], true);
        assert_eq!(j["backlog=16384"], true);
        assert_eq!(j["ipv6only=on"], false);
        assert_eq!(j["so_keepalive=%w*:%w*:%d*"], false);
        assert_eq!(j["listener"], "127.0.0.1:8444 ssl reuseport backlog=16384");
        let j = parse_listen("0.0.0.0:8002", Subsystem::Http).unwrap()[0].to_kong_json();
        assert_eq!(j["backlog=%d+"], false);
    }
}
