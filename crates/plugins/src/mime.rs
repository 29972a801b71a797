//! `kong.tools.mime_type`: RFC 2045 media types, as the response plugins compare them.

/// A parsed media type: type and subtype lowercased, parameter names lowercased.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MediaType<'a> {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<(String, &'a str)>,
}

fn is_token(b: u8) -> bool {
    b > 31 && b < 127 && !b"()<>@,;:\\\"/[]?={} \t".contains(&b)
}

fn token(s: &str) -> Option<(&str, &str)> {
    let n = s.bytes().take_while(|&b| is_token(b)).count();
    (n > 0).then(|| s.split_at(n))
}

/// A quoted string: its content (quoted pairs kept as written) and the rest.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((&s[1..i], &s[i + 1..])),
            b'\\' if i + 1 < b.len() && b[i + 1] < 128 => i += 2,
            c if c < 32 || c == 127 => return None,
            _ => i += 1,
        }
    }
    None
}

/// `parse_mime_type`: `type/subtype *(; attribute=value)` (or a lone `*`), the whole
/// string or nothing.
pub(crate) fn parse(s: &str) -> Option<MediaType<'_>> {
    let (kind, subtype, mut rest) = match s.strip_prefix('*') {
        Some(r) if !r.starts_with('/') => ("*", "*", r),
        _ => {
            let (kind, r) = token(s)?;
            let (subtype, r) = token(r.strip_prefix('/')?)?;
            (kind, subtype, r)
        }
    };
    let mut params = Vec::new();
    while !rest.is_empty() {
        let r = rest.trim_start_matches([' ', '\t']).strip_prefix(';')?;
        let (attr, r) = token(r.trim_start_matches([' ', '\t']))?;
        let r = r.strip_prefix('=')?;
        let (value, r) = quoted(r).or_else(|| token(r))?;
        params.push((attr.to_ascii_lowercase(), value));
        rest = r;
    }
    Some(MediaType {
        kind: kind.to_ascii_lowercase(),
        subtype: subtype.to_ascii_lowercase(),
        params,
    })
}

/// response-transformer's `is_json_body`: one of the comma-separated types is
/// `application/json` or `application/*+json`.
pub(crate) fn is_json(content_type: &str) -> bool {
    content_type.split(',').any(|ct| {
        parse(ct.trim()).is_some_and(|m| {
            m.kind == "application" && (m.subtype == "json" || m.subtype.ends_with("+json"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_kong() {
        let m = parse("Application/JSON; Charset=utf-8; q=\"1\"").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.subtype.as_str()),
            ("application", "json")
        );
        assert_eq!(m.params, [("charset".into(), "utf-8"), ("q".into(), "1")]);
        assert_eq!(parse("*").unwrap().subtype, "*");
        for bad in ["", "json", "a/b;", "a/b; c", "a b/c", "a/b x"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(is_json("text/html, application/problem+json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("text/json"));
    }
}
