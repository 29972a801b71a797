use super::entity;
use crate::schema::{typedefs as t, EntitySchema};

pub(super) fn schema() -> EntitySchema {
    let mut s = entity("snis", "snis");
    s.endpoint_key = Some("name");
    s.fields = vec![
        t::uuid_id(),
        t::wildcard_host("name").required().unique(),
        t::created_at(),
        t::updated_at(),
        t::tags(),
        t::foreign("certificate", "certificates")
            .required()
            .cascade(),
    ];
    s.import_order = 3;
    s
}
