//! Entry point for the `kong_conf` cargo-fuzz target in `fuzz/` and for the seed-corpus
//! test: arbitrary text through the kong.conf parser and the configuration loader. Never
//! panics on any input; asserts its own invariants.

use crate::parse::escape_value;
use crate::{parse_conf, Config, ConfigError, LoadOptions};

/// Parses `data` as a kong.conf file and loads a configuration from its assignments.
///
/// Invariants:
/// * every assignment and syntax error carries a line number of the text, keys are
///   non-empty and made of `[A-Za-z0-9_]`, values are trimmed;
/// * assignments written back as `key = value` lines (`#` escaped) parse to the same
///   assignments;
/// * loading either succeeds or reports at least one problem; a loaded configuration
///   written as kong.conf lines loads back to the same configuration, and renders
///   (`.kong_env`, `GET /` configuration) without syntax errors.
pub fn kong_conf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (entries, errors) = parse_conf(&text);
    // Lines as `str::lines` counts them, plus one for a last line without a newline.
    let lines = text.lines().count().max(1);
    for e in &entries {
        assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
        assert!(!e.key.is_empty());
        assert!(
            e.key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "key {:?}",
            e.key
        );
        assert_eq!(e.value.trim(), e.value, "untrimmed value");
    }
    for e in &errors {
        assert!(
            e.line >= 1 && e.line <= lines,
            "error line {} of {lines}",
            e.line
        );
        assert!(!e.message.is_empty());
    }

    // Written back, the assignments read the same.
    let written: String = entries
        .iter()
        .filter(|e| writable(&e.value))
        .map(|e| format!("{} = {}\n", e.key, escape_value(&e.value)))
        .collect();
    let (again, again_errors) = parse_conf(&written);
    assert!(again_errors.is_empty(), "{again_errors:?}\n{written}");
    let kv = |es: &[crate::Entry]| -> Vec<(String, String)> {
        es.iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    };
    let expected: Vec<_> = entries
        .iter()
        .filter(|e| writable(&e.value))
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert_eq!(kv(&again), expected, "written:\n{written}");

    // The loader, with the file's assignments (bounded: each load walks every key).
    let overrides: Vec<(String, String)> = entries
        .into_iter()
        .take(64)
        .map(|e| (e.key, e.value))
        .collect();
    let loaded = match load(&overrides) {
        Ok(l) => l,
        Err(e) => {
            assert!(
                !e.problems().is_empty(),
                "an invalid configuration names its problems"
            );
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let config = loaded.config;
    let _ = config.to_kong_json();
    let rendered = config.render_conf();
    let (_, render_errors) = parse_conf(&rendered);
    assert!(render_errors.is_empty(), "{render_errors:?}\n{rendered}");

    // The effective values, written as kong.conf and loaded again, give the same
    // configuration. Keys unset on purpose (`pg_user =`) are absent from `raw`: they are
    // written as empty so that their defaults do not come back.
    let raw: Vec<(String, String)> = config
        .raw
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(
            crate::KONG_DEFAULTS
                .iter()
                .filter(|(k, _)| !config.raw.contains_key(*k))
                .map(|(k, _)| ((*k).to_string(), String::new())),
        )
        .collect();
    let text: String = raw
        .iter()
        .filter(|(_, v)| writable(v))
        .map(|(k, v)| format!("{k} = {}\n", escape_value(v)))
        .collect();
    let (reread, reread_errors) = parse_conf(&text);
    assert!(reread_errors.is_empty(), "{reread_errors:?}");
    let reread: Vec<(String, String)> = reread.into_iter().map(|e| (e.key, e.value)).collect();
    if reread.len() == raw.len() {
        match load(&reread) {
            Ok(l) => {
                let (a, b) = (config.to_kong_json(), l.config.to_kong_json());
                let differ: Vec<String> = a
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                    .map(|(k, v)| format!("{k}: {v} became {}", b[k.as_str()]))
                    .chain(
                        b.as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| a.get(k.as_str()).is_none())
                            .map(|(k, v)| format!("{k}: appeared as {v}")),
                    )
                    .collect();
                assert!(differ.is_empty(), "loads back differently: {differ:?}");
                assert_eq!(a, b, "the effective configuration loads back differently");
            }
            Err(e) => panic!("the effective configuration does not load back: {e}"),
        }
    }
}

/// A value that a `key = value` line can carry: kong.conf trims values and has no escape
/// for a trailing backslash (it continues the line).
fn writable(v: &str) -> bool {
    !v.ends_with('\\') && v.trim() == v
}

fn load(overrides: &[(String, String)]) -> Result<crate::Loaded, ConfigError> {
    let mut opts = LoadOptions::isolated().env([("HOME", "/home/fuzz")]);
    opts.overrides = overrides.to_vec();
    Config::load(opts)
}
