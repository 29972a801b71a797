use super::entity;
use crate::pem;
use crate::schema::{typedefs as t, EntityCheck, EntitySchema, Field, Type};
use crate::vault::is_reference as is_ref;
use serde_json::Value;

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("certificates", "certificates");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::updated_at(),
        t::certificate("cert").required().referenceable(),
        t::key("key").required().referenceable(),
        t::certificate("cert_alt").referenceable(),
        t::key("key_alt").referenceable(),
        t::tags(),
        Field::new(
            "snis",
            Type::Array(Box::new(t::wildcard_host("sni").required())),
        ),
    ];
    s.transient = vec!["snis"];
    s.checks = vec![
        EntityCheck::MutuallyRequired(vec!["cert_alt", "key_alt"]),
        EntityCheck::Custom(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str);
            if let (Some(c), Some(k)) = (s("cert"), s("key")) {
                if !is_ref(c) && !is_ref(k) && !pem::key_matches(c, k).unwrap_or(false) {
                    return Err((None, "certificate does not match key".into()));
                }
            }
            if let (Some(c), Some(k)) = (s("cert_alt"), s("key_alt")) {
                if !is_ref(c) && !is_ref(k) && !pem::key_matches(c, k).unwrap_or(false) {
                    return Err((None, "alternative certificate does not match key".into()));
                }
            }
            if let (Some(k), Some(ka)) = (s("key"), s("key_alt")) {
                if !is_ref(k) && !is_ref(ka) && pem::key_type(k).ok() == pem::key_type(ka).ok() {
                    return Err((
                        None,
                        "certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type".into(),
                    ));
                }
            }
            Ok(())
        }),
    ];
    s.import_order = 1;
    s
}
