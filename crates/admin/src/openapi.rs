//! An OpenAPI 3 document of the Admin API, generated from the same tables that route and
//! validate it, so it cannot drift from what the server does. It is precise enough for a
//! property-based tester (schemathesis, `scripts/schemathesis`): request bodies carry each
//! entity's fields, types, enums, bounds and required fields; responses carry the entity or
//! page shapes. What JSON Schema cannot say (Kong's entity checks, uniqueness, foreign keys)
//! is why every write also declares 400, 404 and 409.

use crate::crud::{self, Shape};
use crate::error::json_response;
use crate::info::all_paths;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use tollgate_model::schema::{Check, Field, Type};
use tollgate_model::{entities, EntitySchema};

/// Whether a schema describes what the server returns or what a client may send.
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Response,
    Request,
}

fn field_schema(f: &Field, dir: Dir) -> Value {
    let mut s = match &f.ty {
        Type::String => json!({ "type": "string" }),
        Type::Integer => json!({ "type": "integer" }),
        Type::Number => json!({ "type": "number" }),
        Type::Boolean => json!({ "type": "boolean" }),
        Type::Array(el) => json!({ "type": "array", "items": field_schema(el, dir) }),
        Type::Set(el) => {
            // Kong drops repeated elements of a set it is sent; it never returns any.
            let mut s = json!({ "type": "array", "items": field_schema(el, dir) });
            if dir == Dir::Response {
                s["uniqueItems"] = json!(true);
            }
            s
        }
        Type::Map { values, .. } => {
            json!({ "type": "object", "additionalProperties": field_schema(values, dir) })
        }
        Type::Record(fields, _) => record_schema(fields, dir, None),
        Type::Foreign(_) => json!({
            "type": "object",
            "properties": { "id": { "type": "string", "format": "uuid" } },
            "required": ["id"],
        }),
        Type::Json => json!({}),
    };
    if dir == Dir::Request {
        // Kong refuses empty strings unless a field sets its own minimum length.
        if matches!(f.ty, Type::String) {
            s["minLength"] = json!(1);
        }
        for c in &f.checks {
            constrain(&mut s, c);
        }
    }
    // The server writes every field, null when unset; a client may send null to unset.
    let must_be_set = f.required && dir == Dir::Request;
    if !matches!(f.ty, Type::Json) && !must_be_set {
        s["nullable"] = json!(true);
        // OpenAPI 3.0: `nullable` does not extend an `enum`; null must be listed.
        if let Some(e) = s.get_mut("enum").and_then(Value::as_array_mut) {
            e.push(Value::Null);
        }
    }
    if let Some(d) = f.default.as_ref().filter(|d| !d.is_null()) {
        s["default"] = d.clone();
    }
    if !f.description.is_empty() {
        s["description"] = json!(f.description);
    }
    // Kong decodes JSON into Lua tables, where `{}` and `[]` are one thing: it takes an empty
    // object wherever it takes an array, and so do we (clients in some languages send it).
    if dir == Dir::Request && s["type"] == "array" {
        let nullable = s
            .as_object_mut()
            .and_then(|o| o.remove("nullable"))
            .is_some();
        let empty_object = json!({ "type": "object", "maxProperties": 0 });
        s = json!({ "anyOf": [s, empty_object] });
        if nullable {
            s["nullable"] = json!(true);
        }
    }
    s
}

/// The checks JSON Schema can express; the rest (custom validators, patterns in Rust's
/// regex dialect) stay the server's, answered with 400.
fn constrain(s: &mut Value, c: &Check) {
    match c {
        Check::Between(lo, hi) => {
            s["minimum"] = json!(lo);
            s["maximum"] = json!(hi);
        }
        Check::Gt(v) => {
            s["minimum"] = json!(v);
            s["exclusiveMinimum"] = json!(true);
        }
        Check::OneOf(vals) => s["enum"] = json!(vals),
        Check::LenMin(n) if s["type"] == "array" => s["minItems"] = json!(n),
        Check::LenMax(n) if s["type"] == "array" => s["maxItems"] = json!(n),
        Check::LenMin(n) => s["minLength"] = json!(n),
        Check::LenMax(n) => s["maxLength"] = json!(n),
        Check::StartsWith(p) => {
            let escaped: String = p
                .chars()
                .flat_map(|c| {
                    let special = "\\.+*?()|[]{}^$/".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect();
            s["pattern"] = json!(format!("^{escaped}"));
        }
        Check::Uuid => s["format"] = json!("uuid"),
        _ => {}
    }
}

/// An entity's record. In requests, `skip` names the foreign key taken from the URL, and
/// `required` lists what a create must carry (required without default or generation).
fn record_schema(fields: &[Field], dir: Dir, skip: Option<&str>) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields.iter().filter(|f| Some(f.name) != skip) {
        if dir == Dir::Request && f.auto && f.immutable && f.name != "id" {
            continue; // created_at and the like: the server's to set
        }
        props.insert(f.name.into(), field_schema(f, dir));
        if dir == Dir::Request && f.required && f.default.is_none() && !f.auto {
            required.push(f.name);
        }
    }
    // Kong answers unknown fields with "unknown field": requests may carry only these.
    let mut s = json!({ "type": "object", "properties": props });
    if dir == Dir::Request {
        s["additionalProperties"] = json!(false);
    }
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    s
}

/// PUT on an entity's URL: the id comes from the URL.
fn without_id(mut s: Value) -> Value {
    if let Some(props) = s["properties"].as_object_mut() {
        props.remove("id");
    }
    s
}

/// PATCH: any subset of the fields that may change.
fn update_schema(e: &EntitySchema, skip: Option<&str>) -> Value {
    let mut s = without_id(record_schema(&e.fields, Dir::Request, skip));
    if let Some(o) = s.as_object_mut() {
        o.remove("required");
    }
    if let Some(props) = s["properties"].as_object_mut() {
        for f in e.fields.iter().filter(|f| f.immutable) {
            props.remove(f.name);
        }
    }
    s
}

fn entity_ref(e: &EntitySchema) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", e.name) })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn error_schema() -> Value {
    json!({ "type": "object", "properties": {
        "code": { "type": "integer" }, "name": { "type": "string" },
        "message": { "type": "string" }, "fields": { "type": "object" }
    }, "required": ["message"] })
}

fn page_schema(e: &EntitySchema) -> Value {
    json!({ "type": "object", "required": ["data"], "properties": {
        "data": { "type": "array", "items": entity_ref(e) },
        "next": { "type": "string", "nullable": true },
        "offset": { "type": "string" },
    }})
}

fn list_parameters() -> Vec<Value> {
    vec![
        json!({ "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
        json!({ "name": "offset", "in": "query", "schema": { "type": "string" } }),
        json!({ "name": "tags", "in": "query", "schema": { "type": "string" } }),
    ]
}

/// One operation of a generated path: its success response and request body.
fn operation(method: &str, shape: Option<Shape>) -> Map<String, Value> {
    let err = json!({ "description": "error", "content": json_content(json!({ "$ref": "#/components/schemas/Error" })) });
    let mut responses = Map::new();
    let mut op = Map::new();
    let success =
        |schema: Value| json!({ "description": "success", "content": json_content(schema) });
    let (code, body) = match (method, shape) {
        ("DELETE", _) => ("204", json!({ "description": "deleted (or absent)" })),
        ("POST", Some(Shape::Collection { entity, .. })) => ("201", success(entity_ref(entity))),
        ("GET", Some(Shape::Collection { entity, .. })) => {
            op.insert("parameters".into(), json!(list_parameters()));
            ("200", success(page_schema(entity)))
        }
        (_, Some(Shape::Entity { entity, .. } | Shape::Parent { entity })) => {
            ("200", success(entity_ref(entity)))
        }
        ("POST", _) => ("201", json!({ "description": "success" })),
        _ => ("200", json!({ "description": "success" })),
    };
    responses.insert(code.into(), body);
    for c in ["400", "404", "409"] {
        responses.insert(c.into(), err.clone());
    }
    let request = match (method, shape) {
        (
            "POST",
            Some(Shape::Collection {
                entity,
                parent_field,
            }),
        ) => Some(record_schema(&entity.fields, Dir::Request, parent_field)),
        (
            "PUT",
            Some(Shape::Entity {
                entity,
                parent_field,
            }),
        ) => {
            let mut s = without_id(record_schema(&entity.fields, Dir::Request, parent_field));
            // The URL may name the entity by its endpoint key, which then fills that field
            // whatever the body says.
            if let Some(key) = entity.endpoint_key {
                if let Some(req) = s["required"].as_array_mut() {
                    req.retain(|f| f != key);
                }
                s["properties"][key] = json!({
                    "description": "ignored when the URL names the entity by this key"
                });
            }
            Some(s)
        }
        ("PUT", Some(Shape::Parent { entity })) => Some(without_id(record_schema(
            &entity.fields,
            Dir::Request,
            None,
        ))),
        (
            "PATCH",
            Some(Shape::Entity {
                entity,
                parent_field,
            }),
        ) => Some(update_schema(entity, parent_field)),
        ("PATCH", Some(Shape::Parent { entity })) => Some(update_schema(entity, None)),
        ("POST" | "PUT" | "PATCH", _) => Some(json!({ "type": "object" })),
        _ => None,
    };
    if let Some(schema) = request {
        op.insert(
            "requestBody".into(),
            json!({ "content": json_content(schema) }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    op
}

pub(crate) fn build() -> Value {
    let mut schemas = Map::new();
    for s in entities::ALL.iter() {
        schemas.insert(s.name.into(), record_schema(&s.fields, Dir::Response, None));
    }
    schemas.insert("Error".into(), error_schema());
    let shapes: Vec<crud::Generated> = crud::generated();
    let mut paths = Map::new();
    for (path, methods) in all_paths() {
        let shape = shapes.iter().find(|g| g.path == path).map(|g| g.shape);
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                // An id, or the entity's endpoint key (a service's name…) where it has one.
                let by_id = entities::by_name(name).is_some_and(|e| e.endpoint_key.is_none());
                let schema = if by_id {
                    json!({ "type": "string", "format": "uuid" })
                } else {
                    json!({ "type": "string", "minLength": 1 })
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        let mut item = Map::new();
        item.insert("parameters".into(), json!(params));
        for m in methods {
            let mut op = operation(m, shape);
            op.insert("operationId".into(), json!(operation_id(m, &path)));
            // proxy-cache's api.lua answers a miss with a bare 404 (`kong.response.exit(404)`).
            if path.starts_with("/proxy-cache/") {
                op["responses"]["404"] =
                    json!({ "description": "not in the cache (no body, as Kong)" });
            }
            item.insert(m.to_ascii_lowercase(), Value::Object(op));
        }
        paths.insert(path, Value::Object(item));
    }
    add_links(&mut paths, &shapes);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Tollgate Admin API (Kong-compatible)", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": schemas,
            // `admin_auth = token` (Tollgate's, with Kong Enterprise's header); with `off`
            // or `mtls` no header is needed, hence the empty alternative.
            "securitySchemes": { "adminToken": {
                "type": "apiKey", "in": "header", "name": "Kong-Admin-Token",
            }},
        },
        "security": [{ "adminToken": [] }, {}],
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for c in path.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '_' });
    }
    id
}

/// OpenAPI links from each create to the operations that take the new entity's id as their
/// only path parameter (`POST /services` → `GET /services/{services}`,
/// `POST /services/{services}/routes` …), so a stateful tester works on real entities.
fn add_links(paths: &mut Map<String, Value>, shapes: &[crud::Generated]) {
    let templates: Vec<(String, Vec<String>)> = paths
        .iter()
        .map(|(p, item)| {
            let methods = item
                .as_object()
                .map(|o| o.keys().filter(|k| *k != "parameters").cloned().collect())
                .unwrap_or_default();
            (p.clone(), methods)
        })
        .collect();
    for g in shapes {
        let Shape::Collection { entity, .. } = g.shape else {
            continue;
        };
        let param = format!("{{{}}}", entity.name);
        let mut links = Map::new();
        for (path, methods) in &templates {
            let params: Vec<&str> = path.split('/').filter(|s| s.starts_with('{')).collect();
            if params != [param.as_str()] {
                continue;
            }
            for m in methods {
                let target = operation_id(m, path);
                links.insert(
                    target.clone(),
                    json!({ "operationId": target, "parameters": { entity.name: "$response.body#/id" } }),
                );
            }
        }
        if let Some(created) = paths
            .get_mut(&g.path)
            .and_then(|item| item.get_mut("post"))
            .and_then(|op| op["responses"].get_mut("201"))
        {
            created["links"] = Value::Object(links);
        }
    }
}

pub(crate) async fn document() -> Response {
    json_response(StatusCode::OK, &build())
}
