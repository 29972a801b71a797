use super::entity;
use crate::schema::{typedefs as t, CompositeKey, EntitySchema, Field, Type};
use serde_json::{json, Value};

/// The plugin entity. `config` is typed `Json` here; the plugin registry validates it
/// against the named plugin's own schema (Kong's subschema on `name`).
pub(super) fn schema() -> EntitySchema {
    let mut s = entity("plugins", "plugins");
    s.endpoint_key = Some("instance_name");
    s.fields = vec![
        t::uuid_id(),
        Field::new("name", Type::String).required(),
        t::utf8_name("instance_name"),
        t::created_at(),
        t::updated_at(),
        t::foreign("route", "routes").default(Value::Null).cascade(),
        t::foreign("service", "services")
            .default(Value::Null)
            .cascade(),
        t::foreign("consumer", "consumers")
            .default(Value::Null)
            .cascade(),
        Field::new("config", Type::Json),
        t::protocols_http(),
        Field::new("enabled", Type::Boolean)
            .required()
            .default(json!(true)),
        t::tags(),
    ];
    s.cache_key = Some(CompositeKey {
        fields: vec!["name", "route", "service", "consumer"],
    });
    s.import_order = 90;
    s
}
