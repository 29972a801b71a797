//! The small URL parser behind the `url` shorthand (LuaSocket's `url.parse` semantics:
//! scheme, host, port and path; Kong keeps the query out of `path`).

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Url {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
}

pub fn parse(input: &str) -> Result<Url, String> {
    if input.is_empty() {
        return Err("invalid url".into());
    }
    let mut rest = input;
    let mut url = Url::default();
    if let Some(i) = rest.find("://") {
        let scheme = &rest[..i];
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(format!("invalid scheme '{scheme}'"));
        }
        url.scheme = Some(scheme.to_ascii_lowercase());
        rest = &rest[i + 3..];
    } else {
        return Ok(Url {
            path: Some(input.to_string()),
            ..Url::default()
        });
    }
    // Fragment and query are not part of a service.
    if let Some(i) = rest.find('#') {
        rest = &rest[..i];
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, tail)) => (format!("[{h}]"), tail.strip_prefix(':').map(str::to_string)),
            None => return Err("invalid IPv6 host".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (authority.to_string(), None),
        }
    };
    if !host.is_empty() {
        url.host = Some(host);
    }
    url.port = port.filter(|p| !p.is_empty());
    let path = path.split('?').next().unwrap_or("");
    if !path.is_empty() {
        url.path = Some(path.to_string());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_urls() {
        let u = parse("https://example.com:8443/a/b?x=1").unwrap();
        assert_eq!(u.scheme.as_deref(), Some("https"));
        assert_eq!(u.host.as_deref(), Some("example.com"));
        assert_eq!(u.port.as_deref(), Some("8443"));
        assert_eq!(u.path.as_deref(), Some("/a/b"));
        let u = parse("http://[::1]:80").unwrap();
        assert_eq!(u.host.as_deref(), Some("[::1]"));
        assert_eq!(u.path, None);
        assert!(parse("example.com").unwrap().host.is_none());
    }
}
