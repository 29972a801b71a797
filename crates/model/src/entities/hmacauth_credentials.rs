use super::entity;
use crate::schema::{typedefs as t, EntitySchema, Field, Type};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("hmacauth_credentials", "hmac-auths");
    s.nested_path = Some("hmac-auth");
    s.endpoint_key = Some("username");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::foreign("consumer", "consumers").required().cascade(),
        Field::new("username", Type::String).required().unique(),
        Field::new("secret", Type::String).auto().sensitive(),
        t::tags(),
    ];
    s.import_order = 100;
    s
}
