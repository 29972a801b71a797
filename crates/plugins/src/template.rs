//! The value templates of request-transformer: Penlight's `$(expr)` in a string, where
//! Kong evaluates `expr` as sandboxed Lua against `headers`, `query_params`,
//! `uri_captures` and `shared`, and renders `tostring(expr or '')`.
//!
//! Only the expressions that need no Lua are accepted — a lookup (`headers.x`,
//! `headers["x-y"]`, `query_params.q`, `uri_captures.name`, `uri_captures[1]`,
//! `shared.k`), a string or integer literal, and `a or b` chains of these — and anything
//! else is refused when the configuration is validated, never rendered differently.

use crate::api::Captures;

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    /// `a or b or …`: the first term that is neither nil nor false.
    Expr(Vec<Term>),
}

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Str(String),
    Int(i64),
    Lookup(Table, Key),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Headers,
    QueryParams,
    UriCaptures,
    /// `kong.ctx.shared`: no bundled plugin here writes to it, so every key is nil.
    Shared,
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Name(String),
    Index(i64),
}

/// A query argument's value as `kong.request.get_query()` has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    Str(String),
    /// A bare `name` (Lua's `true`).
    True,
}

/// What a template is rendered against.
pub(crate) struct Env<'a> {
    pub headers: &'a http::HeaderMap,
    pub query: &'a [(String, Vec<Arg>)],
    pub captures: Option<&'a Captures>,
}

/// Penlight finds `$(` … `)` with Lua's `%b()`: balanced parentheses.
fn balanced_end(s: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &b) in s.iter().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

impl Template {
    pub(crate) fn parse(src: &str) -> Result<Template, String> {
        let b = src.as_bytes();
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' && b.get(i + 1) == Some(&b'(') {
                if let Some(end) = balanced_end(b, i + 1) {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Expr(parse_expr(&src[i + 2..end])?));
                    i = end + 1;
                    continue;
                }
            }
            let ch = src[i..].chars().next().unwrap_or_default();
            text.push(ch);
            i += ch.len_utf8();
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    pub(crate) fn render(&self, env: &Env<'_>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(terms) => {
                    if let Some(v) = terms.iter().find_map(|t| eval(t, env)) {
                        out.push_str(&v);
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Dot,
    Open,
    Close,
}

fn unsupported(expr: &str) -> String {
    format!(
        "unsupported template expression '$({expr})': only lookups in headers, query_params, uri_captures and shared, string and integer literals, and 'or' are supported"
    )
}

fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = expr.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match c {
            c if c.is_whitespace() => {}
            '.' => out.push(Tok::Dot),
            '[' => out.push(Tok::Open),
            ']' => out.push(Tok::Close),
            '\'' | '"' => {
                let mut s = String::new();
                let mut closed = false;
                for (_, d) in it.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                    if d == '\\' {
                        return Err(unsupported(expr));
                    }
                    s.push(d);
                }
                if !closed {
                    return Err(unsupported(expr));
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() => {
                let mut end = i + 1;
                while let Some(&(j, d)) = it.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    end = j + 1;
                    it.next();
                }
                let n = expr[i..end].parse().map_err(|_| unsupported(expr))?;
                out.push(Tok::Int(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = i + 1;
                while let Some(&(j, d)) = it.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_') {
                        break;
                    }
                    end = j + 1;
                    it.next();
                }
                out.push(Tok::Ident(expr[i..end].to_owned()));
            }
            _ => return Err(unsupported(expr)),
        }
    }
    Ok(out)
}

fn parse_expr(expr: &str) -> Result<Vec<Term>, String> {
    let toks = tokens(expr)?;
    let mut terms = Vec::new();
    let mut i = 0;
    loop {
        let term = match (
            toks.get(i),
            toks.get(i + 1),
            toks.get(i + 2),
            toks.get(i + 3),
        ) {
            (Some(Tok::Str(s)), ..) => {
                i += 1;
                Term::Str(s.clone())
            }
            (Some(Tok::Int(n)), ..) => {
                i += 1;
                Term::Int(*n)
            }
            (Some(Tok::Ident(t)), Some(Tok::Dot), Some(Tok::Ident(k)), _) => {
                i += 3;
                Term::Lookup(
                    table(t).ok_or_else(|| unsupported(expr))?,
                    Key::Name(k.clone()),
                )
            }
            (Some(Tok::Ident(t)), Some(Tok::Open), Some(k), Some(Tok::Close)) => {
                i += 4;
                let key = match k {
                    Tok::Str(s) => Key::Name(s.clone()),
                    Tok::Int(n) => Key::Index(*n),
                    _ => return Err(unsupported(expr)),
                };
                Term::Lookup(table(t).ok_or_else(|| unsupported(expr))?, key)
            }
            _ => return Err(unsupported(expr)),
        };
        terms.push(term);
        match toks.get(i) {
            None => return Ok(terms),
            Some(Tok::Ident(or)) if or == "or" => i += 1,
            Some(_) => return Err(unsupported(expr)),
        }
    }
}

fn table(name: &str) -> Option<Table> {
    Some(match name {
        "headers" => Table::Headers,
        "query_params" => Table::QueryParams,
        "uri_captures" => Table::UriCaptures,
        "shared" => Table::Shared,
        _ => return None,
    })
}

/// `tostring` of a term's value; `None` for nil (and false, which no lookup yields).
/// A repeated header or query argument is a table to Kong (rendered as `table: 0x…`);
/// its first value is rendered here.
fn eval(t: &Term, env: &Env<'_>) -> Option<String> {
    match t {
        Term::Str(s) => Some(s.clone()),
        Term::Int(n) => Some(n.to_string()),
        Term::Lookup(Table::Headers, Key::Name(n)) => {
            // ngx's header table: case-insensitive, `_` read as `-`.
            let name = n.to_ascii_lowercase().replace('_', "-");
            env.headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        }
        Term::Lookup(Table::QueryParams, Key::Name(n)) => env
            .query
            .iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.first())
            .map(|a| match a {
                Arg::Str(s) => s.clone(),
                Arg::True => "true".into(),
            }),
        Term::Lookup(Table::UriCaptures, Key::Index(i)) => {
            let c = env.captures.filter(|c| !c.is_empty())?;
            usize::try_from(*i)
                .ok()
                .and_then(|i| c.get(i))
                .map(Into::into)
        }
        Term::Lookup(Table::UriCaptures, Key::Name(n)) => {
            env.captures.and_then(|c| c.name(n)).map(Into::into)
        }
        Term::Lookup(..) => None,
    }
}

/// `ngx.decode_args`: `+` and `%XX` decoded, a bare name is `true`, repeats collect.
pub(crate) fn decode_args(s: &str) -> Vec<(String, Vec<Arg>)> {
    let mut out: Vec<(String, Vec<Arg>)> = Vec::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let has_eq = pair.contains('=');
        let Some((k, v)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        if k.is_empty() {
            continue;
        }
        let v = if has_eq {
            Arg::Str(v.into_owned())
        } else {
            Arg::True
        };
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vals)) => vals.push(v),
            None => out.push((k.into_owned(), vec![v])),
        }
    }
    out
}

/// `ngx.escape_uri` of a component: everything but `A-Za-z0-9-._~` percent-encoded.
fn escape(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `kong.service.request.set_query`'s encoding: each argument through `ngx.encode_args`
/// (`name=value`, a bare `name` for `true`, repeats for a table), the pieces sorted.
pub(crate) fn encode_args(args: &[(String, Vec<Arg>)]) -> String {
    let mut pieces: Vec<String> = args
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, vals)| {
            let mut s = String::new();
            for (i, v) in vals.iter().enumerate() {
                if i > 0 {
                    s.push('&');
                }
                escape(k, &mut s);
                if let Arg::Str(v) = v {
                    s.push('=');
                    escape(v, &mut s);
                }
            }
            s
        })
        .collect();
    pieces.sort_unstable();
    pieces.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_render(
        t: &str,
        headers: &[(&str, &str)],
        query: &str,
        caps: Option<&Captures>,
    ) -> String {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let q = decode_args(query);
        Template::parse(t).unwrap().render(&Env {
            headers: &h,
            query: &q,
            captures: caps,
        })
    }

    #[test]
    fn renders_kongs_lookups() {
        let caps = Captures {
            unnamed: vec![Some("/users/7".into()), Some("7".into())],
            named: vec![("id".into(), "7".into())],
        };
        let h = [("x-user-agent", "curl"), ("host", "example.com")];
        assert_eq!(
            env_render("a-$(headers.x_user_agent)-b", &h, "", None),
            "a-curl-b"
        );
        assert_eq!(
            env_render("$(headers['X-User-Agent'])", &h, "", None),
            "curl"
        );
        assert_eq!(env_render("$(headers.host)", &h, "", None), "example.com");
        assert_eq!(
            env_render("$(headers.missing)", &h, "", None),
            "",
            "nil renders ''"
        );
        assert_eq!(
            env_render(
                "$(query_params.q)/$(query_params.flag)",
                &[],
                "q=a%20b&flag",
                None
            ),
            "a b/true"
        );
        assert_eq!(
            env_render("$(uri_captures[1])$(uri_captures.id)", &[], "", Some(&caps)),
            "77"
        );
        assert_eq!(
            env_render("$(uri_captures[0])", &[], "", Some(&caps)),
            "/users/7"
        );
        assert_eq!(
            env_render("$(uri_captures.nope or 'dflt')", &[], "", Some(&caps)),
            "dflt"
        );
        assert_eq!(env_render("$(shared.v or 1)", &[], "", None), "1");
        assert_eq!(
            env_render("no $ (template) here", &[], "", None),
            "no $ (template) here"
        );
    }

    #[test]
    fn refuses_what_needs_lua() {
        for t in [
            "$(10 * uri_captures.user1)",
            "$(ERROR())",
            "$(type(headers.x))",
            "$(headers.x .. 'y')",
            "$(os.exit)",
            "$(shared.written = true)",
            "$('unterminated)",
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains("unsupported template expression"), "{t}: {e}");
        }
    }

    #[test]
    fn query_encoding_is_kongs() {
        let args = decode_args("b=2&a=1&a=x%20y&flag&e=");
        assert_eq!(encode_args(&args), "a=1&a=x%20y&b=2&e=&flag");
    }
}
