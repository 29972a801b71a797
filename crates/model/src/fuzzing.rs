//! Entry point for the `vault_ref` cargo-fuzz target in `fuzz/` and for the seed-corpus
//! test: arbitrary text through the secret-reference parser, the Admin API's check of a
//! referenceable field, and resolution against a fake environment. Never panics on any
//! input; asserts its own invariants.

use crate::schema::{Field, Type};
use crate::vault::{self, Reference};
use serde_json::{json, Value};

/// Percent-encodes every byte but the unreserved ones (the fuzz targets put text into
/// URLs with it).
pub fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A reference written back from its parts.
fn write(r: &Reference) -> String {
    let mut s = format!("{{vault://{}/{}", r.name, escape(&r.resource));
    if let Some(k) = &r.key {
        s.push('/');
        s.push_str(&escape(k));
    }
    if let Some(p) = &r.prefix {
        s.push_str("?prefix=");
        s.push_str(&escape(p));
    }
    if let Some(v) = r.version {
        s.push_str(&format!("#{v}"));
    }
    s.push('}');
    s
}

/// Parses `data` as a reference (and as the body of one), checks it as the Admin API does
/// and resolves it against an environment in which every variable holds the input.
///
/// Invariants: only Kong's shape parses; a parsed reference has a vault name and a
/// resource, and written back from its parts parses to the same reference; validation
/// accepts exactly the parsed env references; the variable name has no `-`; resolution
/// never panics, returns the variable for a plain reference, and its errors name the
/// reference but never the value.
pub fn vault_ref(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let wrapped = format!("{{vault://{text}}}");
    for s in [text.as_ref(), wrapped.as_str()] {
        let parsed = Reference::parse(s);
        let Ok(r) = parsed else {
            assert!(vault::validate(s).is_err());
            continue;
        };
        assert!(vault::is_reference(s));
        assert!(!r.name.is_empty() && !r.resource.is_empty(), "{r:?}");
        assert!(r.key.as_ref().is_none_or(|k| !k.is_empty()), "{r:?}");
        let again = write(&r);
        assert_eq!(
            Reference::parse(&again).as_ref(),
            Ok(&r),
            "{s:?} written back as {again:?}"
        );
        assert_eq!(
            vault::validate(s).is_ok(),
            r.name == vault::ENV_VAULT,
            "{s:?}"
        );
        let var = r.env_var(Some("def-"));
        assert!(
            !var.contains('-') && var.starts_with(r.prefix.as_deref().map_or("DEF_", |_| "")),
            "{var}"
        );

        // Every variable holds a marker value: a plain reference resolves to it, a keyed
        // one fails unless the marker is JSON (it is not), and errors never show it.
        const MARKER: &str = "fuzz-secret-marker";
        match vault::resolve_with(s, |_| Some(MARKER.to_string()), None) {
            Ok(v) => assert!(r.key.is_none() && v == MARKER, "{s:?}"),
            Err(e) => {
                assert!(s.contains(MARKER) || !e.contains(MARKER), "{e}");
                assert!(r.name != vault::ENV_VAULT || r.key.is_some(), "{s:?}: {e}");
            }
        }
        // The input as a JSON secret: a keyed reference takes its string.
        if let Some(k) = &r.key {
            let secret = json!({ k.as_str(): text.as_ref() }).to_string();
            if r.name == vault::ENV_VAULT {
                let v = vault::resolve_with(s, |_| Some(secret.clone()), None);
                assert_eq!(v.as_deref(), Ok(text.as_ref()), "{s:?}");
            }
        }
    }

    // Through a schema walk: only the referenceable field changes.
    let fields = vec![
        Field::new("secret", Type::String).referenceable(),
        Field::new("plain", Type::String),
    ];
    let mut rec = json!({"secret": text.as_ref(), "plain": text.as_ref()})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let res = |s: &str| vault::resolve_with(s, |v| Some(format!("<{v}>")), None);
    let out = vault::resolve_record(&fields, &mut rec, &res);
    let unchanged = |v: &Value| v.as_str() == Some(text.as_ref());
    assert!(unchanged(&rec["plain"]));
    let is_env_ref = vault::validate(&text).is_ok();
    match out {
        Ok(()) if is_env_ref => assert!(!unchanged(&rec["secret"])),
        Ok(()) => assert!(!vault::is_reference(&text) && unchanged(&rec["secret"])),
        Err(_) => assert!(vault::is_reference(&text)),
    }
}

/// Runs a fuzz target's entry point over its seed corpus (`fuzz/corpus/<target>/`), for the
/// crates' stable-toolchain tests: every seed must pass, and there must be some.
pub fn each_seed(target: &str, run: fn(&[u8])) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("seed");
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{target}: seed {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}
