//! Typed value parsers shared by the loader. Errors are short descriptions
//! of what is allowed ("expected …" text), without the key name.

use std::net::IpAddr;
use std::time::Duration;

/// `on`/`off`/`true`/`false` (case-insensitive).
///
/// Kong treats anything that is not `on`/`true` as false; Tollgate rejects
/// other values so that typos (`yes`, `1`) do not silently disable a feature.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("a boolean: on, off, true or false".into()),
    }
}

/// A number as Kong's `tonumber` reads a decimal: integer or decimal fraction.
pub fn parse_number(v: &str) -> Result<f64, String> {
    let v = v.trim();
    let ok_chars = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    match v.parse::<f64>() {
        Ok(n) if ok_chars && n.is_finite() => Ok(n),
        _ => Err("a number".into()),
    }
}

/// An integer in `min..=max`.
pub fn parse_int(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let expected = if max == u64::MAX {
        format!("an integer of at least {min}")
    } else {
        format!("an integer between {min} and {max}")
    };
    let n = parse_number(v).map_err(|_| expected.clone())?;
    if n.fract() != 0.0 || n < min as f64 || n > max as f64 {
        return Err(expected);
    }
    Ok(n as u64)
}

/// A non-negative number of seconds (fractions allowed), Kong's style for
/// `db_update_frequency`, `db_cache_ttl`, ….
pub fn parse_seconds(v: &str) -> Result<Duration, String> {
    let expected = "a non-negative number of seconds";
    let n = parse_number(v).map_err(|_| expected.to_string())?;
    if !(0.0..=1e12).contains(&n) {
        return Err(expected.into());
    }
    Ok(Duration::from_secs_f64(n))
}

/// A non-negative number of milliseconds (`pg_timeout`, `cassandra_timeout`).
pub fn parse_millis(v: &str) -> Result<Duration, String> {
    let n = parse_int(v, 0, u64::MAX / 2)
        .map_err(|_| "a non-negative number of milliseconds".to_string())?;
    Ok(Duration::from_millis(n))
}

/// An nginx size: a number with an optional `k`, `m` or `g` suffix
/// (case-insensitive): `0`, `512`, `8k`, `10m`, `1g` → bytes.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let expected = || "a size such as 512, 128k, 10m or 1g".to_string();
    let v = v.trim();
    let (digits, mult) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1u64 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1u64 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(expected)
}

/// Comma-separated list, entries trimmed, empty entries dropped (Kong's `array`).
pub fn parse_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// One entry of `trusted_ips`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedIp {
    /// An address or CIDR block (a single address has the full prefix length).
    Net {
        /// Network address as written.
        addr: IpAddr,
        /// Prefix length (0–32 for IPv4, 0–128 for IPv6).
        prefix_len: u8,
    },
    /// `unix:`: connections over Unix domain sockets.
    Unix,
}

impl TrustedIp {
    /// Parses an IP, a CIDR block or `unix:`.
    pub fn parse(s: &str) -> Result<TrustedIp, String> {
        let expected = || "an IPv4 or IPv6 address or CIDR block, or 'unix:'".to_string();
        let s = s.trim();
        if s == "unix:" {
            return Ok(TrustedIp::Unix);
        }
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| expected())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(expected)?,
            Some(_) => return Err(expected()),
        };
        Ok(TrustedIp::Net { addr, prefix_len })
    }

    /// Whether `ip` falls within this entry (IPv4-mapped IPv6 addresses are
    /// compared as IPv4). `Unix` never matches an IP.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let TrustedIp::Net { addr, prefix_len } = *self else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if prefix_len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(prefix_len))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if prefix_len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(prefix_len))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for TrustedIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustedIp::Unix => f.write_str("unix:"),
            TrustedIp::Net { addr, prefix_len } => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if *prefix_len == full {
                    write!(f, "{addr}")
                } else {
                    write!(f, "{addr}/{prefix_len}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for t in ["on", "true", "ON", " True "] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["off", "false", "OFF"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        for bad in ["yes", "1", "", "onn"] {
            assert!(parse_bool(bad).is_err());
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("8k"), Ok(8 * 1024));
        assert_eq!(parse_size("128K"), Ok(128 * 1024));
        assert_eq!(parse_size("10m"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2048m"), Ok(2048 << 20));
        for bad in [
            "",
            "k",
            "1.5m",
            "-1",
            "10mb",
            "ten",
            "99999999999999999999g",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(parse_number("5"), Ok(5.0));
        assert_eq!(parse_number("0.01"), Ok(0.01));
        assert!(parse_number("inf").is_err());
        assert!(parse_number("NaN").is_err());
        assert!(parse_number("5s").is_err());
        assert_eq!(parse_int("100", 1, 1000), Ok(100));
        assert!(parse_int("0", 1, 1000).is_err());
        assert!(parse_int("1.5", 1, 1000).is_err());
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("-1").is_err());
        assert_eq!(parse_millis("5000"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list(" a , b,,c ,"), vec!["a", "b", "c"]);
        assert!(parse_list("").is_empty());
    }

    #[test]
    fn trusted_ips() {
        let all4 = TrustedIp::parse("0.0.0.0/0").unwrap();
        let all6 = TrustedIp::parse("::/0").unwrap();
        let net = TrustedIp::parse("10.0.0.0/8").unwrap();
        let one = TrustedIp::parse("192.168.1.1").unwrap();
        assert!(all4.contains("8.8.8.8".parse().unwrap()));
        assert!(!all4.contains("::1".parse().unwrap()));
        assert!(all6.contains("::1".parse().unwrap()));
        assert!(net.contains("10.2.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.2.3.4".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(one.contains("192.168.1.1".parse().unwrap()));
        assert!(!one.contains("192.168.1.2".parse().unwrap()));
        assert_eq!(TrustedIp::parse("unix:"), Ok(TrustedIp::Unix));
        assert_eq!(one.to_string(), "192.168.1.1");
        assert_eq!(net.to_string(), "10.0.0.0/8");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "foo",
            "1.2.3.4/",
            "1.2.3.4/x",
            "unix",
        ] {
            assert!(TrustedIp::parse(bad).is_err(), "{bad}");
        }
    }
}
