//! An OpenAPI 3 document of the Admin API, generated from the same tables that route it,
//! so it cannot drift from what the server does.

use crate::error::json_response;
use crate::info::all_paths;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};
use tollgate_model::entities;
use tollgate_model::schema::{Field, Type};

fn field_schema(f: &Field) -> Value {
    let mut s = match &f.ty {
        Type::String => json!({ "type": "string" }),
        Type::Integer => json!({ "type": "integer" }),
        Type::Number => json!({ "type": "number" }),
        Type::Boolean => json!({ "type": "boolean" }),
        Type::Array(el) | Type::Set(el) => json!({ "type": "array", "items": field_schema(el) }),
        Type::Map { values, .. } => {
            json!({ "type": "object", "additionalProperties": field_schema(values) })
        }
        Type::Record(fields, _) => record_schema(fields),
        Type::Foreign(_) => {
            json!({ "type": "object", "properties": { "id": { "type": "string", "format": "uuid" } } })
        }
        Type::Json => json!({}),
    };
    if !matches!(f.ty, Type::Json) && !f.required {
        s["nullable"] = json!(true);
    }
    if let Some(d) = &f.default {
        if !d.is_null() {
            s["default"] = d.clone();
        }
    }
    if !f.description.is_empty() {
        s["description"] = json!(f.description);
    }
    s
}

fn record_schema(fields: &[Field]) -> Value {
    let mut props = Map::new();
    for f in fields {
        props.insert(f.name.into(), field_schema(f));
    }
    json!({ "type": "object", "properties": props })
}

fn error_schema() -> Value {
    json!({ "type": "object", "properties": {
        "code": { "type": "integer" }, "name": { "type": "string" },
        "message": { "type": "string" }, "fields": { "type": "object" }
    }})
}

pub(crate) fn build() -> Value {
    let mut schemas = Map::new();
    for s in entities::ALL.iter() {
        schemas.insert(s.name.into(), record_schema(&s.fields));
    }
    schemas.insert("Error".into(), error_schema());
    let mut paths = Map::new();
    for (path, methods) in all_paths() {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut item = Map::new();
        for m in methods {
            let err = json!({ "description": "error", "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Error" } } } });
            let mut responses = Map::new();
            let ok = match m {
                "POST" => "201",
                "DELETE" => "204",
                _ => "200",
            };
            responses.insert(ok.into(), json!({ "description": "success" }));
            responses.insert("400".into(), err.clone());
            responses.insert("404".into(), err.clone());
            responses.insert("409".into(), err);
            let mut op = json!({ "parameters": params, "responses": responses });
            if matches!(m, "POST" | "PUT" | "PATCH") {
                op["requestBody"] = json!({ "content": { "application/json": { "schema": { "type": "object" } } } });
            }
            item.insert(m.to_ascii_lowercase(), op);
        }
        paths.insert(path, Value::Object(item));
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Tollgate Admin API (Kong-compatible)", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

pub(crate) async fn document() -> Response {
    json_response(StatusCode::OK, &build())
}
