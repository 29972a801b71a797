//! Shared field types (Kong's `kong/db/schema/typedefs.lua`), with its messages.

use super::{Check, Field, Type};
use regex::Regex;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::LazyLock;

pub const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];
pub const HTTP_PROTOCOLS: &[&str] = &["grpc", "grpcs", "http", "https"];

fn re(s: &str) -> Regex {
    Regex::new(s).expect("static regex")
}

pub fn uuid_id() -> Field {
    Field::new("id", Type::String)
        .check(Check::Uuid)
        .auto()
        .describe("A string representing a UUID (universally unique identifier).")
}

pub fn created_at() -> Field {
    let mut f = Field::new("created_at", Type::Integer).auto();
    f.timestamp = true;
    f.description = "Unix epoch when the resource was created.";
    f
}

pub fn updated_at() -> Field {
    let mut f = Field::new("updated_at", Type::Integer).auto();
    f.timestamp = true;
    f.description = "Unix epoch when the resource was last updated.";
    f
}

pub fn created_at_ms() -> Field {
    let mut f = Field::new("created_at", Type::Number).auto();
    f.timestamp = true;
    f.timestamp_ms = true;
    f
}

pub fn updated_at_ms() -> Field {
    let mut f = Field::new("updated_at", Type::Number).auto();
    f.timestamp = true;
    f.timestamp_ms = true;
    f
}

pub fn tags() -> Field {
    Field::new("tags", Type::Set(Box::new(tag()))).describe(
        "An optional set of strings associated with the entity for grouping and filtering.",
    )
}

pub fn tag() -> Field {
    Field::new("tag", Type::String)
        .required()
        .custom(validate_tag)
}

pub fn utf8_name(name: &'static str) -> Field {
    Field::new(name, Type::String)
        .unique()
        .custom(validate_utf8_name)
}

pub fn name(name: &'static str) -> Field {
    Field::new(name, Type::String)
        .unique()
        .custom(validate_name)
}

pub fn protocol(name: &'static str) -> Field {
    Field::new(name, Type::String).one_of(PROTOCOLS)
}

pub fn host(name: &'static str) -> Field {
    Field::new(name, Type::String).custom(validate_host)
}

pub fn port(name: &'static str) -> Field {
    Field::new(name, Type::Integer).between(0, 65535)
}

pub fn path(name: &'static str) -> Field {
    Field::new(name, Type::String)
        .check(Check::StartsWith("/"))
        .check(Check::MatchNone(re("//"), "must not have empty segments"))
        .custom(validate_path)
}

pub fn timeout(name: &'static str, default: i64) -> Field {
    Field::new(name, Type::Integer)
        .between(1, 2_147_483_646)
        .default(json!(default))
}

pub fn foreign(name: &'static str, entity: &'static str) -> Field {
    Field::new(name, Type::Foreign(entity))
}

pub fn protocols_http() -> Field {
    Field::new(
        "protocols",
        Type::Set(Box::new(
            Field::new("protocol", Type::String)
                .required()
                .one_of(HTTP_PROTOCOLS),
        )),
    )
    .required()
    .default(json!(HTTP_PROTOCOLS))
}

pub fn string_array(name: &'static str) -> Field {
    Field::new(
        name,
        Type::Array(Box::new(Field::new("element", Type::String).required())),
    )
}

pub fn methods() -> Field {
    Field::new(
        "methods",
        Type::Set(Box::new(
            Field::new("method", Type::String)
                .required()
                .check(Check::Match(re("^[A-Z]+$"))),
        )),
    )
}

pub fn hosts() -> Field {
    Field::new(
        "hosts",
        Type::Array(Box::new(
            Field::new("host", Type::String)
                .required()
                .check(Check::MatchNone(
                    re(r"\*.*\*"),
                    "invalid wildcard: must have at most one wildcard",
                ))
                .check(Check::MatchAny(
                    vec![re(r"^\*\."), re(r"\.\*$"), re(r"^[^*]*$")],
                    "invalid wildcard: must be placed at leftmost or rightmost label",
                ))
                .custom(validate_host_with_wildcards),
        )),
    )
}

pub fn router_paths() -> Field {
    Field::new(
        "paths",
        Type::Array(Box::new(
            Field::new("path", Type::String)
                .required()
                .check(Check::MatchAny(
                    vec![re("^/"), re("^~/")],
                    "should start with: / (fixed path) or ~/ (regex path)",
                ))
                .check(Check::MatchNone(re("//"), "must not have empty segments"))
                .custom(validate_router_path),
        )),
    )
}

pub fn header_name(name: &'static str) -> Field {
    Field::new(name, Type::String).custom(validate_header_name)
}

pub fn ip_or_cidr(name: &'static str) -> Field {
    Field::new(name, Type::String).custom(validate_ip_or_cidr)
}

pub fn wildcard_host(name: &'static str) -> Field {
    Field::new(name, Type::String).custom(validate_wildcard_host)
}

pub fn certificate(name: &'static str) -> Field {
    Field::new(name, Type::String).custom(crate::pem::validate_certificate)
}

pub fn key(name: &'static str) -> Field {
    Field::new(name, Type::String)
        .custom(crate::pem::validate_key)
        .sensitive()
}

pub fn ip_port_records(name: &'static str) -> Field {
    use super::EntityCheck;
    Field::new(
        name,
        Type::Set(Box::new(Field::new(
            "element",
            Type::Record(
                vec![ip_or_cidr("ip"), port("port")],
                vec![EntityCheck::AtLeastOneOf(vec!["ip", "port"])],
            ),
        ))),
    )
}

// ---- validators ---------------------------------------------------------------------

pub fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = tag
        .chars()
        .all(|c| c == ' ' || (c.is_ascii_graphic() && c != ',' && c != '/') || !c.is_ascii());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag '{tag}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
        ))
    }
}

pub fn validate_utf8_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~') || !c.is_ascii());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid value '{name}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"
        ))
    }
}

pub fn validate_name(name: &str) -> Result<(), String> {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid value '{name}': it must only contain alphanumeric and '., -, _, ~' characters"
        ))
    }
}

/// Host classification as Kong's `normalize_ip`: an IPv4/IPv6 address or a name, with an
/// optional port. `Err` is Kong's message.
fn parse_host(host: &str) -> Result<(bool, Option<u16>), String> {
    let invalid = || format!("invalid value: {host}");
    if let Some(rest) = host.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(invalid)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| invalid())?;
        return match tail.strip_prefix(':') {
            None if tail.is_empty() => Ok((true, None)),
            Some(p) => p
                .parse::<u16>()
                .map(|p| (true, Some(p)))
                .map_err(|_| "invalid port number".into()),
            None => Err(invalid()),
        };
    }
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((true, None));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| "invalid port number".to_string())?,
        ),
        None => None,
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok((true, port));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid());
    }
    Ok((false, port))
}

pub fn validate_host(host: &str) -> Result<(), String> {
    match parse_host(host) {
        Err(e) if e == "invalid port number" => Err("must not have a port".into()),
        Err(e) => Err(e),
        Ok((_, Some(_))) => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

pub fn validate_host_with_optional_port(host: &str) -> Result<(), String> {
    match parse_host(host) {
        Err(e) if e == "invalid port number" => Err(format!("invalid value: {host}")),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

fn validate_host_with_wildcards(host: &str) -> Result<(), String> {
    validate_host_with_optional_port(&host.replace('*', "abc"))
}

pub fn validate_wildcard_host(host: &str) -> Result<(), String> {
    let mut h = host.to_string();
    if let Some(idx) = host.find('*') {
        if idx != 0 && idx != host.len() - 1 {
            return Err("wildcard must be leftmost or rightmost character".into());
        }
        if host.matches('*').count() > 1 {
            return Err("only one wildcard must be specified".into());
        }
        h = host.replace('*', "wildcard");
    }
    match parse_host(&h) {
        Err(e) if e == "invalid port number" => Err("must not have a port".into()),
        Err(e) => Err(e),
        Ok((true, _)) => Err("must not be an IP".into()),
        Ok((false, Some(_))) => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

static PATH_CHARS: LazyLock<Regex> = LazyLock::new(|| re(r"^/[A-Za-z0-9.\-_~/%:@!$&'()*+,;=]*$"));
static PCT: LazyLock<Regex> = LazyLock::new(|| re("%[0-9A-Fa-f]{2}"));

pub fn validate_path(path: &str) -> Result<(), String> {
    if !PATH_CHARS.is_match(path) {
        return Err(format!(
            "invalid path: '{path}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    check_percent(path)
}

fn check_percent(path: &str) -> Result<(), String> {
    let raw = PCT.replace_all(path, "___");
    if let Some(i) = raw.find('%') {
        let end = (i + 3).min(raw.len());
        return Err(format!("invalid url-encoded value: '{}'", &raw[i..end]));
    }
    Ok(())
}

fn validate_router_path(path: &str) -> Result<(), String> {
    if let Some(regex) = path.strip_prefix('~') {
        // The router compiles paths with Rust's regex crate (as Kong's ATC router does).
        return match Regex::new(regex) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("invalid regex: '{regex}' (regex returned: {e})")),
        };
    }
    if !PATH_CHARS.is_match(path) {
        return Err(format!(
            "invalid path: '{path}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    check_percent(path)?;
    let normalized = normalize_prefix(path);
    if normalized != path {
        return Err(format!(
            "non-normalized path, consider use '{normalized}' instead"
        ));
    }
    Ok(())
}

/// Kong's `normalize(path, true)` for stored prefix paths: decode percent-escapes of
/// unreserved characters, upper-case the others, and resolve dot segments.
pub fn normalize_prefix(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut dec = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let h = &path[i + 1..i + 3];
            if let Ok(b) = u8::from_str_radix(h, 16) {
                let c = b as char;
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                    dec.push(c);
                } else {
                    dec.push('%');
                    dec.push_str(&h.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        dec.push(bytes[i] as char);
        i += 1;
    }
    // Remove dot segments (RFC 3986 5.2.4).
    let trailing = dec.ends_with('/') || dec.ends_with("/.") || dec.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in dec.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::from("/");
    s.push_str(&out.join("/"));
    if trailing && !s.ends_with('/') {
        s.push('/');
    }
    s
}

pub fn validate_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

pub fn validate_ip_or_cidr(s: &str) -> Result<(), String> {
    if parse_cidr(s).is_some() {
        Ok(())
    } else {
        Err(format!("invalid ip or cidr range: '{s}'"))
    }
}

/// Parses `ip` or `ip/prefix` into an address and prefix length.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, l)) => (ip, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => {
            let n: u8 = l.parse().ok()?;
            if n > max {
                return None;
            }
            n
        }
        None => max,
    };
    Some((ip, len))
}

/// `url` shorthand value check (Kong's `validate_url`).
pub fn validate_url(url: &str) -> Result<(), String> {
    let parsed = crate::url::parse(url).map_err(|e| format!("could not parse url. {e}"))?;
    if parsed.host.is_none() {
        return Err("missing host in url".into());
    }
    if parsed.scheme.is_none() {
        return Err("missing scheme in url".into());
    }
    Ok(())
}

pub fn json_str_list(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_kong() {
        assert!(validate_host("example.com").is_ok());
        assert!(validate_host("127.0.0.1").is_ok());
        assert_eq!(
            validate_host("example.com:80").unwrap_err(),
            "must not have a port"
        );
        assert_eq!(
            validate_host("exa mple").unwrap_err(),
            "invalid value: exa mple"
        );
        assert!(validate_host_with_optional_port("example.com:8080").is_ok());
        assert_eq!(
            validate_wildcard_host("a.*.com").unwrap_err(),
            "wildcard must be leftmost or rightmost character"
        );
        assert_eq!(
            validate_wildcard_host("1.2.3.4").unwrap_err(),
            "must not be an IP"
        );
        assert!(validate_wildcard_host("*.example.com").is_ok());
    }

    #[test]
    fn paths_follow_kong() {
        assert!(validate_path("/a/b").is_ok());
        assert_eq!(
            validate_path("/a b").unwrap_err(),
            "invalid path: '/a b' (characters outside of the reserved list of RFC 3986 found)"
        );
        assert_eq!(
            validate_path("/a%zz").unwrap_err(),
            "invalid url-encoded value: '%zz'"
        );
        assert_eq!(
            validate_router_path("/a/../b").unwrap_err(),
            "non-normalized path, consider use '/b' instead"
        );
        assert!(validate_router_path("~/users/(?<id>\\d+)$").is_ok());
        assert!(validate_router_path("~/(")
            .unwrap_err()
            .starts_with("invalid regex: '/('"));
        assert_eq!(normalize_prefix("/%7Euser/%2f/./x/"), "/~user/%2F/x/");
    }

    #[test]
    fn names_and_tags() {
        assert!(validate_utf8_name("my-service_1.ü").is_ok());
        assert!(validate_utf8_name("a b").is_err());
        assert!(validate_tag("with space").is_ok());
        assert!(validate_tag("a,b").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(validate_ip_or_cidr("::1/129").is_err());
    }
}
