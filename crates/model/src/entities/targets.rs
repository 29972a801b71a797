use super::entity;
use crate::schema::{typedefs as t, CompositeKey, EntitySchema, Field, Type};
use serde_json::json;

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("targets", "targets");
    s.endpoint_key = Some("target");
    s.nested_path = Some("targets");
    s.fields = vec![
        t::uuid_id(),
        t::created_at_ms(),
        t::updated_at_ms(),
        t::foreign("upstream", "upstreams").required().cascade(),
        Field::new("target", Type::String)
            .required()
            .custom(validate_target),
        Field::new("weight", Type::Integer)
            .default(json!(100))
            .between(0, 65535),
        t::tags(),
    ];
    s.cache_key = Some(CompositeKey {
        fields: vec!["upstream", "target"],
    });
    s.transform = Some(|rec, _| {
        // Kong stores targets with an explicit port (8000 when none is given).
        if let Some(serde_json::Value::String(tg)) = rec.get("target") {
            let normalized = normalize_target(tg);
            rec.insert("target".into(), json!(normalized));
        }
        Ok(())
    });
    s.import_order = 50;
    s
}

fn validate_target(target: &str) -> Result<(), String> {
    if t::validate_host_with_optional_port(target).is_ok() {
        Ok(())
    } else if target.is_ascii() {
        Err(format!(
            "Invalid target ('{target}'); not a valid hostname or ip address"
        ))
    } else {
        Err("Invalid target; not a valid hostname or ip address".into())
    }
}

/// `host` → `host:8000`; `[::1]` → `[::1]:8000`; a bare IPv6 gets brackets.
pub fn normalize_target(target: &str) -> String {
    if target.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{target}]:8000");
    }
    if let Some(rest) = target.strip_prefix('[') {
        return if rest.contains("]:") {
            target.to_string()
        } else {
            format!("{target}:8000")
        };
    }
    if target.contains(':') {
        target.to_string()
    } else {
        format!("{target}:8000")
    }
}
