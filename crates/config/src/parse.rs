//! The kong.conf file format.
//!
//! Kong reads kong.conf with Penlight's `pl.config` (`smart = false`) and then
//! strips trailing comments. The rules reproduced here:
//!
//! * blank lines and lines whose first non-blank character is `#` or `;` are skipped;
//! * a line ending with `\` (optionally followed by blanks) continues on the next line;
//! * `key = value`: the key is everything before the first `=` (surrounding
//!   blanks removed, every character that is not a letter or digit becomes `_`),
//!   the value everything after it;
//! * in the value, an unescaped `#` starts a comment (blanks before it are removed),
//!   and `\#` stands for a literal `#`; the value is then trimmed;
//! * quotes are **not** removed: `pg_password = "x"` sets the value `"x"`, quotes
//!   included, exactly as Kong does;
//! * an empty value means "unset", like `NONE` in Kong's defaults.
//!
//! Where Kong silently ignores a malformed line (no `=`, `[section]` headers),
//! Tollgate reports an error with the line number.

/// One `key = value` assignment read from a kong.conf text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalized key (non-alphanumeric characters replaced by `_`).
    pub key: String,
    /// Value with comments stripped and `\#` unescaped, trimmed.
    pub value: String,
    /// 1-based line number where the assignment starts.
    pub line: usize,
}

/// A syntax error in a kong.conf text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses kong.conf text into assignments (in file order; later duplicates
/// override earlier ones when applied) and syntax errors. Never panics.
pub fn parse_conf(text: &str) -> (Vec<Entry>, Vec<SyntaxError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();

    let mut pending: Option<(usize, String)> = None;
    for (idx, raw_line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let trimmed_start = line.trim_start();
        if trimmed_start.is_empty()
            || trimmed_start.starts_with('#')
            || trimmed_start.starts_with(';')
        {
            continue;
        }
        let trimmed_end = line.trim_end();
        if let Some(body) = trimmed_end.strip_suffix('\\') {
            match &mut pending {
                Some((_, acc)) => acc.push_str(body),
                None => pending = Some((line_no, body.to_string())),
            }
            continue;
        }
        let (start, full) = match pending.take() {
            Some((start, mut acc)) => {
                acc.push_str(line);
                (start, acc)
            }
            None => (line_no, line.to_string()),
        };
        parse_line(start, &full, &mut entries, &mut errors);
    }
    if let Some((start, acc)) = pending {
        parse_line(start, &acc, &mut entries, &mut errors);
    }
    (entries, errors)
}

fn parse_line(line_no: usize, line: &str, entries: &mut Vec<Entry>, errors: &mut Vec<SyntaxError>) {
    let line = line.trim_start();
    if line.starts_with('[') {
        errors.push(SyntaxError {
            line: line_no,
            message: format!(
                "section headers are not supported in kong.conf, got '{}'",
                line.trim()
            ),
        });
        return;
    }
    let Some(eq) = line.find('=') else {
        errors.push(SyntaxError {
            line: line_no,
            message: format!("expected 'key = value', got '{}'", line.trim()),
        });
        return;
    };
    let key_part = line[..eq].trim();
    if key_part.is_empty() {
        errors.push(SyntaxError {
            line: line_no,
            message: format!("missing key before '=' in '{}'", line.trim()),
        });
        return;
    }
    let key: String = key_part
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let value = strip_comment(&line[eq + 1..]);
    entries.push(Entry {
        key,
        value,
        line: line_no,
    });
}

/// Removes a trailing comment (an unescaped `#` and everything after it, plus
/// the blanks before it), unescapes `\#` and trims the result.
pub fn strip_comment(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut cut = value.len();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            cut = i;
            break;
        }
    }
    value[..cut].replace("\\#", "#").trim().to_string()
}

/// Escapes `#` as `\#` so that a value survives a round trip through kong.conf.
pub fn escape_value(value: &str) -> String {
    value.replace('#', "\\#")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        let (entries, errors) = parse_conf(text);
        assert!(errors.is_empty(), "{errors:?}");
        entries.into_iter().map(|e| (e.key, e.value)).collect()
    }

    #[test]
    fn basic_assignments_and_comments() {
        let text = "# comment\n\n  ; other comment\nlog_level = debug   # trailing\npg_password = ab\\#cd # real comment\nplugins=bundled,foo\n";
        assert_eq!(
            kv(text),
            vec![
                ("log_level".to_string(), "debug".to_string()),
                ("pg_password".to_string(), "ab#cd".to_string()),
                ("plugins".to_string(), "bundled,foo".to_string()),
            ]
        );
    }

    #[test]
    fn hash_without_space_is_a_comment_and_quotes_kept() {
        assert_eq!(kv("a = x#y")[0].1, "x");
        assert_eq!(kv("a = \"quoted value\"")[0].1, "\"quoted value\"");
        assert_eq!(kv("a = 'q'")[0].1, "'q'");
    }

    #[test]
    fn empty_value_and_equal_in_value() {
        assert_eq!(kv("a =")[0].1, "");
        assert_eq!(kv("a = b=c")[0].1, "b=c");
        assert_eq!(kv("a=")[0].1, "");
    }

    #[test]
    fn key_is_variabilized() {
        assert_eq!(kv("admin-listen = off")[0].0, "admin_listen");
        assert_eq!(kv("  pg.host   =   h  ")[0], ("pg_host".into(), "h".into()));
    }

    #[test]
    fn continuation_lines() {
        let (entries, errors) = parse_conf("a = one, \\\n  two\nb = 3\n");
        assert!(errors.is_empty());
        assert_eq!(entries[0].value, "one,   two");
        assert_eq!(entries[0].line, 1);
        assert_eq!(entries[1].line, 3);
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(
            kv("a = b\r\nc = d\r\n"),
            vec![("a".into(), "b".into()), ("c".into(), "d".into())]
        );
    }

    #[test]
    fn errors_have_line_numbers() {
        let (entries, errors) = parse_conf("a = 1\nbogus line\n[section]\n = x\nb = 2");
        assert_eq!(entries.len(), 2);
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.contains("bogus line"));
        assert_eq!(errors[1].line, 3);
        assert_eq!(errors[2].line, 4);
    }
}
