use super::*;
use serde_json::json;

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn shape() {
    assert!(is_reference("{vault://env/x}"));
    // Kong's test is the shape: this is a reference, one that does not parse.
    assert!(is_reference("{vault://}"));
    assert!(Reference::parse("{vault://}").is_err());
    assert!(!is_reference("vault://env/x"));
    assert!(!is_reference("{vault://env/x"));
    assert!(!is_reference("{Vault://env/x}"));
}

#[test]
fn parses_like_kong() {
    let a = r("{vault://env/my-secret}");
    assert_eq!(
        a,
        Reference {
            name: "env".into(),
            resource: "my-secret".into(),
            key: None,
            prefix: None,
            version: None
        }
    );
    // Kong's documented example.
    let b = r("{vault://env/cert/key?prefix=SSL_#1}");
    assert_eq!(b.resource, "cert");
    assert_eq!(b.key.as_deref(), Some("key"));
    assert_eq!(b.prefix.as_deref(), Some("SSL_"));
    assert_eq!(b.version, Some(1));
    // Several segments: the last is the key; a trailing slash keeps them all as the resource.
    let c = r("{vault://env/a/b/c}");
    assert_eq!((c.resource.as_str(), c.key.as_deref()), ("a/b", Some("c")));
    let d = r("{vault://env/a/b/}");
    assert_eq!((d.resource.as_str(), d.key), ("a/b", None));
    // Empty segments are dropped; escapes decode.
    let e = r("{vault://env//x%2Dy//k%20}");
    assert_eq!((e.resource.as_str(), e.key.as_deref()), ("x-y", Some("k ")));
    // Unknown query arguments are ignored, as the vault schema drops them.
    assert_eq!(
        r("{vault://env/x?ttl=60&prefix=A}").prefix.as_deref(),
        Some("A")
    );
}

#[test]
fn rejects_bad_references() {
    for (s, msg) in [
        ("{vault://env}", "empty path"),
        ("{vault://env/}", "empty path"),
        ("{vault:///x}", "missing host"),
        ("{vault://env/x#}", "invalid version"),
        ("{vault://env/x#v1}", "invalid version"),
        ("{vault://env/x?prefix=1A}", "invalid prefix"),
        ("{vault://Env/x}", "invalid vault name"),
        ("{vault://env/%ff}", "invalid path"),
    ] {
        let e = Reference::parse(s).unwrap_err();
        assert!(e.contains(msg) && e.contains(s), "{s}: {e}");
    }
    let e = validate("{vault://aws/x}").unwrap_err();
    assert!(e.contains("vault 'aws' is not supported"), "{e}");
    assert!(validate("{vault://env/x}").is_ok());
}

#[test]
fn env_variable_names() {
    assert_eq!(r("{vault://env/my-secret}").env_var(None), "MY_SECRET");
    assert_eq!(
        r("{vault://env/x?prefix=app-}").env_var(Some("DEF_")),
        "APP_X"
    );
    assert_eq!(r("{vault://env/x}").env_var(Some("def_")), "DEF_X");
    assert_eq!(r("{vault://env/x#2}").env_var(None), "X_PREVIOUS");
    assert_eq!(r("{vault://env/x#1}").env_var(None), "X");
}

#[test]
fn resolves_values_and_keys() {
    let env = |v: &str| match v {
        "PLAIN" => Some("s3cret".to_string()),
        "JSON" => Some(r#"{"user":"u","pass":"p","n":1}"#.to_string()),
        _ => None,
    };
    assert_eq!(
        resolve_with("{vault://env/plain}", env, None).unwrap(),
        "s3cret"
    );
    assert_eq!(
        resolve_with("{vault://env/json/pass}", env, None).unwrap(),
        "p"
    );
    for (s, msg) in [
        (
            "{vault://env/missing}",
            "environment variable MISSING is not set",
        ),
        ("{vault://env/json/nope}", "subfield nope not found in JSON"),
        ("{vault://env/json/n}", "subfield n of JSON is not a string"),
        ("{vault://env/plain/k}", "PLAIN does not hold a JSON object"),
    ] {
        let e = resolve_with(s, env, None).unwrap_err();
        assert!(e.contains(msg) && e.contains(s), "{s}: {e}");
        // The value never appears in an error.
        assert!(!e.contains("s3cret") && !e.contains("\"p\""), "{e}");
    }
}

#[test]
fn resolves_only_referenceable_fields() {
    let fields = vec![
        Field::new("password", Type::String).referenceable(),
        Field::new("plain", Type::String),
        Field::new(
            "headers",
            Type::Map {
                keys: Box::new(Field::new("k", Type::String)),
                values: Box::new(Field::new("v", Type::String).referenceable()),
            },
        ),
        Field::new(
            "redis",
            Type::Record(
                vec![Field::new("password", Type::String).referenceable()],
                vec![],
            ),
        ),
    ];
    let mut rec = json!({
        "password": "{vault://env/a}",
        "plain": "{vault://env/a}",
        "headers": {"x": "{vault://env/b}", "y": "literal"},
        "redis": {"password": "{vault://env/a}"},
    })
    .as_object()
    .unwrap()
    .clone();
    assert!(contains_reference(&Value::Object(rec.clone())));
    let res = |s: &str| resolve_with(s, |v| Some(format!("<{v}>")), None);
    resolve_record(&fields, &mut rec, &res).unwrap();
    assert_eq!(
        Value::Object(rec),
        json!({
            "password": "<A>",
            "plain": "{vault://env/a}",
            "headers": {"x": "<B>", "y": "literal"},
            "redis": {"password": "<A>"},
        })
    );
    let mut rec = json!({"password": "{vault://env/none}"})
        .as_object()
        .unwrap()
        .clone();
    let e = resolve_record(&fields, &mut rec, &|s| resolve_with(s, |_| None, None)).unwrap_err();
    assert!(e.contains("{vault://env/none}"), "{e}");
}
