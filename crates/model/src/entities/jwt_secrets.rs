use super::entity;
use crate::schema::{typedefs as t, EntityCheck, EntitySchema, Field, Pred, Type};
use serde_json::json;

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("jwt_secrets", "jwts");
    s.nested_path = Some("jwt");
    s.endpoint_key = Some("key");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::foreign("consumer", "consumers").required().cascade(),
        Field::new("key", Type::String).unique().auto(),
        Field::new("secret", Type::String).auto().sensitive(),
        Field::new("rsa_public_key", Type::String),
        Field::new("algorithm", Type::String)
            .default(json!("HS256"))
            .one_of(&[
                "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                "PS256", "PS384", "PS512", "EdDSA",
            ]),
        t::tags(),
    ];
    s.checks = vec![EntityCheck::Conditional {
        if_field: "algorithm",
        if_match: Pred::OneOf(vec![
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
        ]),
        then_field: "rsa_public_key",
        then_match: Pred::NotNull,
        then_err: None,
    }];
    s.import_order = 100;
    s
}
