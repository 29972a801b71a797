use super::entity;
use crate::schema::{typedefs as t, EntitySchema, Field, Type};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("keyauth_credentials", "key-auths");
    s.nested_path = Some("key-auth");
    s.endpoint_key = Some("key");
    s.ttl = true;
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::foreign("consumer", "consumers").required().cascade(),
        Field::new("key", Type::String).unique().auto().sensitive(),
        t::tags(),
    ];
    s.import_order = 100;
    s
}
