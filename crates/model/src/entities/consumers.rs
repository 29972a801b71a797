use super::entity;
use crate::schema::{typedefs as t, EntityCheck, EntitySchema, Field, Type};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("consumers", "consumers");
    s.endpoint_key = Some("username");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::updated_at(),
        Field::new("username", Type::String).unique(),
        Field::new("custom_id", Type::String).unique(),
        t::tags(),
    ];
    s.checks = vec![EntityCheck::AtLeastOneOf(vec!["custom_id", "username"])];
    s.import_order = 30;
    s
}
