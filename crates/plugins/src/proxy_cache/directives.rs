//! `kong.tools.http`'s `parse_directive_header` and `calculate_resource_ttl`: the
//! Cache-Control directives as Kong reads them.

use crate::lua::tonumber;

/// A directive's value: `tonumber(value) or value or true`.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Flag,
    Number(f64),
    Text,
}

/// Parsed directives, names lowercased; a repeated name keeps its last value.
#[derive(Debug, Default)]
pub(crate) struct Directives(Vec<(String, Value)>);

impl Directives {
    /// Each comma-separated piece is `^\s*([^=]+)(?:=(.+))?` (the name keeps trailing
    /// spaces, as Kong's does).
    pub(crate) fn parse(h: Option<&str>) -> Directives {
        let Some(h) = h else {
            return Directives::default();
        };
        let mut out = Vec::new();
        for piece in h.split(',') {
            let piece = piece.trim_start();
            if piece.is_empty() || piece.starts_with('=') {
                continue;
            }
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) if !v.is_empty() => {
                    (n, tonumber(v).map_or(Value::Text, Value::Number))
                }
                Some((n, _)) => (n, Value::Flag),
                None => (piece, Value::Flag),
            };
            out.push((name.to_ascii_lowercase(), value));
        }
        Directives(out)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// `cc[name]` is truthy.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// `cc[name]` as a number (a value that is not one cannot be compared).
    pub(crate) fn number(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }
}

/// `calculate_resource_ttl`: `s-maxage`, else `max-age`, else `Expires` minus now;
/// never below 0.
pub(crate) fn resource_ttl(cc: &Directives, expires: Option<&str>, now: f64) -> f64 {
    let max_age = cc
        .number("s-maxage")
        .or_else(|| cc.number("max-age"))
        .or_else(|| {
            let at = httpdate::parse_http_date(expires?).ok()?;
            let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64();
            Some(at - now)
        });
    max_age.map_or(0.0, |m| m.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_kong() {
        let cc = Directives::parse(Some(
            "Max-Age=10, no-cache, private=\"x\", s-maxage=5 ,no-store ",
        ));
        assert_eq!(cc.number("max-age"), Some(10.0));
        assert!(cc.has("no-cache") && cc.has("private"));
        assert_eq!(cc.number("private"), None);
        assert_eq!(
            cc.number("s-maxage"),
            Some(5.0),
            "value spaces go to tonumber"
        );
        assert!(!cc.has("no-store"), "the name keeps its trailing space");
        assert!(Directives::parse(None).0.is_empty());
        assert_eq!(resource_ttl(&cc, None, 0.0), 5.0);
        let cc = Directives::parse(Some("max-age=-3"));
        assert_eq!(resource_ttl(&cc, None, 0.0), 0.0);
        let none = Directives::default();
        assert_eq!(resource_ttl(&none, None, 0.0), 0.0);
        let exp =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000));
        assert_eq!(resource_ttl(&none, Some(&exp), 400.0), 600.0);
    }
}
