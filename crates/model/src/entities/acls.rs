use super::entity;
use crate::schema::{typedefs as t, CompositeKey, EntitySchema, Field, Type};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("acls", "acls");
    s.nested_path = Some("acls");
    s.fields = vec![
        t::uuid_id(),
        t::created_at(),
        t::foreign("consumer", "consumers").required().cascade(),
        Field::new("group", Type::String).required(),
        t::tags(),
    ];
    s.cache_key = Some(CompositeKey {
        fields: vec!["consumer", "group"],
    });
    s.import_order = 100;
    s
}
