//! Foreign references given by a unique field of the referenced entity instead of its id
//! (`"service": {"name": "billing"}`, `service.name=billing`), resolved to the id before
//! validation, as Kong's DAO does on insert, update and upsert (`kong/db/dao/init.lua`
//! `resolve_foreign`).

use crate::error::ApiResult;
use crate::AdminState;
use serde_json::{json, Map, Value};
use tollgate_model::schema::is_uuid;
use tollgate_model::{entities, EntitySchema, Error};

pub(crate) async fn resolve(
    st: &AdminState,
    schema: &'static EntitySchema,
    body: &mut Map<String, Value>,
) -> ApiResult<()> {
    let mut unresolved = Vec::new();
    for f in schema.foreign_fields() {
        let Some(Value::Object(reference)) = body.get(f.name) else {
            continue;
        };
        if reference
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(is_uuid)
        {
            continue;
        }
        let Some(parent) = f.foreign_entity().and_then(entities::by_name) else {
            continue;
        };
        let mut found = None;
        let mut misses = Vec::new();
        for uf in parent.fields.iter() {
            if !(uf.unique || parent.endpoint_key == Some(uf.name)) {
                continue;
            }
            let Some(value) = reference.get(uf.name).filter(|v| !v.is_null()) else {
                continue;
            };
            let (Some(key), Ok(())) = (value.as_str(), parent.validate_field_value(uf.name, value))
            else {
                continue;
            };
            if let Some(row) = st.store.select_by_field(parent, uf.name, key).await? {
                found = row.get("id").cloned();
                break;
            }
            misses.push((uf.name, value.clone()));
        }
        match found {
            Some(id) => {
                body.insert(f.name.to_string(), json!({ "id": id }));
            }
            None => {
                for (sub, value) in misses {
                    unresolved.push((f.name, sub, value, parent.name));
                }
            }
        }
    }
    if unresolved.is_empty() {
        Ok(())
    } else {
        Err(Error::foreign_keys_unresolved(&unresolved).into())
    }
}
