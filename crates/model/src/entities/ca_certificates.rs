use super::entity;
use crate::pem;
use crate::schema::{typedefs as t, EntityCheck, EntitySchema, Field, Type};
use serde_json::Value;

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("ca_certificates", "ca_certificates");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::updated_at(),
        t::certificate("cert").required(),
        Field::new("cert_digest", Type::String).unique(),
        t::tags(),
    ];
    s.checks = vec![EntityCheck::Custom(|r| {
        match r.get("cert").and_then(Value::as_str) {
            Some(c) => pem::validate_ca_certificate(c).map_err(|e| (None, e)),
            None => Ok(()),
        }
    })];
    s.transform = Some(|rec, _| {
        if let Some(Value::String(c)) = rec.get("cert") {
            let d = pem::cert_digest(c)
                .map_err(|_| "cannot create digest value of certificate".to_string())?;
            rec.insert("cert_digest".into(), Value::String(d));
        }
        Ok(())
    });
    s.import_order = 2;
    s
}
