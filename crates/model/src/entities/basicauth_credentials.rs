use super::entity;
use crate::schema::{typedefs as t, EntitySchema, Field, Type};
use serde_json::Value;
use sha1::{Digest, Sha1};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("basicauth_credentials", "basic-auths");
    s.nested_path = Some("basic-auth");
    s.endpoint_key = Some("username");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::foreign("consumer", "consumers").required().cascade(),
        Field::new("username", Type::String).required().unique(),
        Field::new("password", Type::String).required().sensitive(),
        t::tags(),
    ];
    s.transform = Some(|rec, input_keys| {
        // Hash only a password that came in with this write; a PATCH that leaves it out
        // keeps the stored hash.
        if !input_keys.iter().any(|k| k == "password") {
            return Ok(());
        }
        let consumer = rec
            .get("consumer")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(Value::String(pw)) = rec.get("password") {
            let h = hash_password(&consumer, pw);
            rec.insert("password".into(), Value::String(h));
        }
        Ok(())
    });
    s.import_order = 100;
    s
}

/// Kong's basic-auth hash: SHA-1 of the password salted with the consumer id, hex.
/// Kept for compatibility with credentials exported from Kong.
pub fn hash_password(consumer_id: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(password.as_bytes());
    h.update(consumer_id.as_bytes());
    hex::encode(h.finalize())
}
