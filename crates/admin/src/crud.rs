//! The endpoints Kong generates for every entity (`kong/api/endpoints.lua`): collections,
//! entities by id or endpoint key, nested collections and entities by foreign key, and an
//! entity's parent — all from the schemas, with no per-entity code but Kong's few custom
//! behaviours (certificate `snis`, consumer `custom_id` lookup, credential `ttl`).

use crate::body::{self, Body};
use crate::error::{json_response, ApiError, ApiResult};
use crate::AdminState;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use tollgate_model::schema::{is_uuid, Context, Operation};
use tollgate_model::{entities, EntitySchema, Error, Row};
use tollgate_store::{PageQuery, TagFilter, WriteMode};

pub(crate) struct Request<'a> {
    pub method: &'a Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// A child collection reachable under a parent: `/services/{s}/routes`.
struct Nested {
    child: &'static EntitySchema,
    field: &'static str,
}

fn nested_of(parent: &EntitySchema, segment: &str) -> Option<Nested> {
    entities::ALL.iter().find_map(|c| {
        let name = c.nested_path.unwrap_or(c.admin_path);
        if name != segment {
            return None;
        }
        c.foreign_fields()
            .find(|f| f.foreign_entity() == Some(parent.name))
            .map(|f| Nested {
                child: c,
                field: f.name,
            })
    })
}

/// What a generated path answers with, for the OpenAPI document.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// A page of `entity`; POST creates one (without `parent_field`, taken from the URL).
    Collection {
        entity: &'static EntitySchema,
        parent_field: Option<&'static str>,
    },
    /// One `entity`, by id or endpoint key (PUT upserts).
    Entity {
        entity: &'static EntitySchema,
        parent_field: Option<&'static str>,
    },
    /// The parent `entity` that a child's foreign key points to.
    Parent { entity: &'static EntitySchema },
}

/// One generated path: its template, methods and shape.
pub(crate) struct Generated {
    pub path: String,
    pub methods: Vec<&'static str>,
    pub shape: Shape,
}

/// Every generated path, for `/endpoints`, the OpenAPI document and `Allow` headers.
pub(crate) fn generated() -> Vec<Generated> {
    let mut out = Vec::new();
    let mut push = |path: String, methods: &[&'static str], shape| {
        out.push(Generated {
            path,
            methods: methods.to_vec(),
            shape,
        })
    };
    const LIST: &[&str] = &["GET", "POST"];
    const ONE: &[&str] = &["GET", "PUT", "PATCH", "DELETE"];
    for s in entities::ALL.iter() {
        let p = s.admin_path;
        let key = format!("{{{}}}", s.name);
        let (entity, parent_field) = (s, None);
        push(
            format!("/{p}"),
            LIST,
            Shape::Collection {
                entity,
                parent_field,
            },
        );
        push(
            format!("/{p}/{key}"),
            ONE,
            Shape::Entity {
                entity,
                parent_field,
            },
        );
        for f in s.foreign_fields() {
            let Some(parent) = f.foreign_entity().and_then(entities::by_name) else {
                continue;
            };
            let pkey = format!("{{{}}}", parent.name);
            let nested = s.nested_path.unwrap_or(s.admin_path);
            let parent_field = Some(f.name);
            let base = format!("/{}/{pkey}/{nested}", parent.admin_path);
            push(
                base.clone(),
                LIST,
                Shape::Collection {
                    entity,
                    parent_field,
                },
            );
            push(
                format!("{base}/{key}"),
                ONE,
                Shape::Entity {
                    entity,
                    parent_field,
                },
            );
            let shape = Shape::Parent { entity: parent };
            push(
                format!("/{p}/{key}/{}", f.name),
                &["GET", "PUT", "PATCH"],
                shape,
            );
        }
    }
    out
}

pub(crate) async fn dispatch(st: &AdminState, req: Request<'_>) -> ApiResult {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let Some(schema) = segs.first().and_then(|s| entities::by_admin_path(s)) else {
        return Err(ApiError::not_found());
    };
    match segs.as_slice() {
        [_] => match *req.method {
            Method::GET => list(st, schema, None, &req.query).await,
            Method::POST => create(st, schema, None, &req).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        [_, key] => entity(st, schema, key, None, &req).await,
        [_, key, sub] => {
            if let Some(n) = nested_of(schema, sub) {
                let parent = find(st, schema, key, None)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                let pid = id_of(&parent).to_string();
                match *req.method {
                    Method::GET => list(st, n.child, Some((n.field, pid)), &req.query).await,
                    Method::POST => create(st, n.child, Some((n.field, pid)), &req).await,
                    _ => Err(ApiError::method_not_allowed()),
                }
            } else if let Some(f) = schema.field(sub).filter(|f| f.foreign_entity().is_some()) {
                let row = find(st, schema, key, None)
                    .await?
                    .ok_or_else(ApiError::not_found)?;
                let parent_schema = f
                    .foreign_entity()
                    .and_then(entities::by_name)
                    .ok_or_else(ApiError::not_found)?;
                let Some(pid) = row
                    .get(f.name)
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                else {
                    return Err(ApiError::not_found());
                };
                if *req.method == Method::DELETE {
                    return Err(ApiError::method_not_allowed());
                }
                entity(st, parent_schema, pid, None, &req).await
            } else {
                Err(ApiError::not_found())
            }
        }
        [_, key, sub, child_key] => {
            let n = nested_of(schema, sub).ok_or_else(ApiError::not_found)?;
            let parent = find(st, schema, key, None)
                .await?
                .ok_or_else(ApiError::not_found)?;
            let pid = id_of(&parent).to_string();
            entity(st, n.child, child_key, Some((n.field, pid)), &req).await
        }
        _ => Err(ApiError::not_found()),
    }
}

fn id_of(r: &Row) -> &str {
    r.get("id").and_then(Value::as_str).unwrap_or_default()
}

fn fk_id<'r>(r: &'r Row, field: &str) -> Option<&'r str> {
    r.get(field)
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
}

/// Finds an entity by id or endpoint key, optionally required to belong to a parent.
/// Every row of `schema` (under `foreign` when given), page after page.
pub(crate) async fn every(
    st: &AdminState,
    schema: &'static EntitySchema,
    foreign: Option<(&'static str, String)>,
) -> ApiResult<Vec<Row>> {
    let mut out = Vec::new();
    let mut q = tollgate_store::PageQuery {
        size: 1000,
        foreign,
        ..Default::default()
    };
    loop {
        let page = st.store.page(schema, &q).await?;
        out.extend(page.rows);
        match page.next_offset {
            Some(o) => q.offset = Some(o),
            None => return Ok(out),
        }
    }
}

pub(crate) async fn find(
    st: &AdminState,
    schema: &'static EntitySchema,
    key: &str,
    parent: Option<&(&'static str, String)>,
) -> ApiResult<Option<Row>> {
    let row = if is_uuid(key) {
        st.store.select(schema, key).await?
    } else if schema.name == "targets" {
        // A target's address is unique only within its upstream.
        let Some((field, pid)) = parent else {
            return Ok(None);
        };
        let q = PageQuery {
            size: 1000,
            foreign: Some((field, pid.clone())),
            ..Default::default()
        };
        let want = tollgate_model::entities::normalize_target(key);
        st.store
            .page(schema, &q)
            .await?
            .rows
            .into_iter()
            .find(|r| r.get("target").and_then(Value::as_str) == Some(want.as_str()))
    } else if let Some(ek) = schema.endpoint_key {
        st.store.select_by_field(schema, ek, key).await?
    } else {
        return Err(Error::invalid_primary_key(json!({ "id": key })).into());
    };
    Ok(row.filter(|r| match parent {
        Some((field, pid)) => fk_id(r, field) == Some(pid.as_str()),
        None => true,
    }))
}

fn parse_size(q: &[(String, String)]) -> ApiResult<usize> {
    match q.iter().find(|(k, _)| k == "size") {
        None => Ok(100),
        Some((_, v)) => {
            let n: f64 = v
                .parse()
                .map_err(|_| Error::invalid_size("size must be a number"))?;
            if n.fract() != 0.0 || !(1.0..=1000.0).contains(&n) {
                return Err(
                    Error::invalid_size("size must be an integer between 1 and 1000").into(),
                );
            }
            Ok(n as usize)
        }
    }
}

pub(crate) fn parse_tags(q: &[(String, String)]) -> ApiResult<Option<TagFilter>> {
    let Some((_, t)) = q.iter().find(|(k, _)| k == "tags") else {
        return Ok(None);
    };
    let invalid = || {
        Error::invalid_options(
            "invalid option (tags: invalid filter syntax)",
            Some(json!({ "tags": "invalid filter syntax" })),
        )
    };
    let (and, or) = (t.contains(','), t.contains('/'));
    if and && or {
        return Err(invalid().into());
    }
    let parts: Vec<String> = t.split([',', '/']).map(str::to_string).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || tollgate_model::schema::typedefs::validate_tag(p).is_err())
    {
        return Err(invalid().into());
    }
    Ok(Some(if or {
        TagFilter::Any(parts)
    } else {
        TagFilter::All(parts)
    }))
}

fn escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn list(
    st: &AdminState,
    schema: &'static EntitySchema,
    foreign: Option<(&'static str, String)>,
    query: &[(String, String)],
) -> ApiResult {
    let size = parse_size(query)?;
    let tags = parse_tags(query)?;
    let offset = query
        .iter()
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| v.clone());
    // Kong's custom `/consumers?custom_id=` lookup.
    if schema.name == "consumers" {
        if let Some((_, cid)) = query.iter().find(|(k, _)| k == "custom_id") {
            let rows: Vec<Value> = st
                .store
                .select_by_field(schema, "custom_id", cid)
                .await?
                .into_iter()
                .map(Value::Object)
                .collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({ "data": rows, "next": null }),
            ));
        }
    }
    let q = PageQuery {
        size,
        offset,
        foreign,
        tags,
    };
    let page = st.store.page(schema, &q).await?;
    let mut rows = Vec::with_capacity(page.rows.len());
    for r in page.rows {
        rows.push(Value::Object(present(st, schema, r).await?));
    }
    let mut body = json!({ "data": rows });
    match page.next_offset {
        Some(off) => {
            let mut next = format!("/{}?offset={}", schema.admin_path, escape(&off));
            if query.iter().any(|(k, _)| k == "size") {
                next.push_str(&format!("&size={size}"));
            }
            if let Some((_, t)) = query.iter().find(|(k, _)| k == "tags") {
                next.push_str(&format!("&tags={}", escape(t)));
            }
            body["offset"] = json!(off);
            body["next"] = json!(next);
        }
        None => body["next"] = Value::Null,
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// Output form of a row: certificates gain their `snis` names.
async fn present(st: &AdminState, schema: &'static EntitySchema, mut row: Row) -> ApiResult<Row> {
    if schema.name == "certificates" {
        let snis = entities::by_name("snis").ok_or_else(ApiError::not_found)?;
        let q = PageQuery {
            size: 1000,
            foreign: Some(("certificate", id_of(&row).to_string())),
            ..Default::default()
        };
        let mut names: Vec<String> = st
            .store
            .page(snis, &q)
            .await?
            .rows
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        names.sort();
        row.insert("snis".into(), json!(names));
    }
    Ok(row)
}

fn refuse_dbless(st: &AdminState, schema: &EntitySchema, verb: &str) -> ApiResult<()> {
    if st.store.kind() == "off" {
        return Err(Error::operation_unsupported(format!(
            "cannot {verb} '{}' entities when not using a database",
            schema.name
        ))
        .into());
    }
    Ok(())
}

async fn read_body(req: &Request<'_>) -> ApiResult<Body> {
    body::parse(req.content_type, req.body).await
}

/// Validation shared by create, upsert and update.
fn validate(
    st: &AdminState,
    schema: &'static EntitySchema,
    input: Map<String, Value>,
    sent: &[String],
    op: Operation,
    coerce: bool,
) -> ApiResult<Row> {
    let cx = Context::new(op).coerce(coerce);
    let mut row = schema.process_with_keys(input, sent, &cx)?;
    if schema.name == "plugins" {
        st.catalog.validate(&mut row, &cx)?;
    }
    Ok(row)
}

/// Takes the options Kong reads from the body rather than the entity (`ttl`).
fn take_ttl(schema: &EntitySchema, map: &mut Map<String, Value>) -> ApiResult<Option<Value>> {
    let Some(ttl) = map.remove("ttl") else {
        return Ok(None);
    };
    if !schema.ttl {
        map.insert("ttl".into(), ttl);
        return Ok(None);
    }
    let n = match &ttl {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        Value::Null => return Ok(None),
        _ => None,
    };
    match n {
        Some(n) if (0..=100_000_000).contains(&n) => Ok(Some(json!(n))),
        _ => Err(Error::invalid_options(
            "invalid option (ttl: must be an integer between 0 and 100000000)",
            Some(json!({ "ttl": "must be an integer between 0 and 100000000" })),
        )
        .into()),
    }
}

/// Certificates carry `snis` as a convenience list stored as sni entities.
fn take_snis(schema: &EntitySchema, row: &mut Row) -> Option<Vec<String>> {
    if schema.name != "certificates" {
        return None;
    }
    match row.remove("snis") {
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        _ => None,
    }
}

/// SNI rows added and removed when a certificate's `snis` list becomes `names`.
type SniChanges = (
    Vec<(&'static EntitySchema, Row)>,
    Vec<(&'static EntitySchema, String)>,
);

/// What turns the certificate's stored SNIs into `names`.
async fn sni_changes(st: &AdminState, cert_id: &str, names: Vec<String>) -> ApiResult<SniChanges> {
    let snis = entities::by_name("snis").ok_or_else(ApiError::not_found)?;
    let q = PageQuery {
        size: 1000,
        foreign: Some(("certificate", cert_id.to_string())),
        ..Default::default()
    };
    let existing = st.store.page(snis, &q).await?.rows;
    let name_of = |r: &Row| r.get("name").and_then(Value::as_str).map(str::to_string);
    let remove = existing
        .iter()
        .filter(|r| name_of(r).is_none_or(|n| !names.contains(&n)))
        .map(|r| (snis, id_of(r).to_string()))
        .collect();
    let fresh = names
        .into_iter()
        .filter(|n| !existing.iter().any(|r| name_of(r).as_ref() == Some(n)))
        .collect();
    Ok((sni_rows(cert_id, fresh)?, remove))
}

/// Writes a certificate and its SNIs as one (other entities alone).
async fn write_with_snis(
    st: &AdminState,
    schema: &'static EntitySchema,
    row: Row,
    mode: WriteMode,
    snis: Option<Vec<String>>,
) -> ApiResult<Row> {
    let (add, remove) = match snis {
        // A new certificate has no SNIs yet.
        Some(names) if mode == WriteMode::Insert => (sni_rows(id_of(&row), names)?, Vec::new()),
        Some(names) => sni_changes(st, id_of(&row), names).await?,
        None => (Vec::new(), Vec::new()),
    };
    Ok(st
        .store
        .write_family(schema, row, mode, add, remove)
        .await?)
}

/// The SNI rows of a certificate for `names`.
fn sni_rows(cert_id: &str, names: Vec<String>) -> ApiResult<Vec<(&'static EntitySchema, Row)>> {
    let snis = entities::by_name("snis").ok_or_else(ApiError::not_found)?;
    names
        .into_iter()
        .map(|n| {
            let mut m = Map::new();
            m.insert("name".into(), json!(n));
            m.insert("certificate".into(), json!({ "id": cert_id }));
            Ok((snis, snis.process(m, &Context::new(Operation::Insert))?))
        })
        .collect()
}

/// Checks that certificate `snis` are free before anything is written.
async fn check_snis_free(
    st: &AdminState,
    cert_id: Option<&str>,
    names: &[String],
) -> ApiResult<()> {
    let snis = entities::by_name("snis").ok_or_else(ApiError::not_found)?;
    let mut seen = Vec::new();
    for n in names {
        if let Err(e) = tollgate_model::schema::typedefs::validate_wildcard_host(n) {
            return Err(Error::field("snis", e).into());
        }
        if seen.contains(n) {
            return Err(Error::field("snis", format!("{n} is duplicated")).into());
        }
        seen.push(n.clone());
        if let Some(r) = st.store.select_by_field(snis, "name", n).await? {
            if fk_id(&r, "certificate") != cert_id {
                return Err(Error::unique_violation(&[("name", json!(n))]).into());
            }
        }
    }
    Ok(())
}

async fn create(
    st: &AdminState,
    schema: &'static EntitySchema,
    parent: Option<(&'static str, String)>,
    req: &Request<'_>,
) -> ApiResult {
    refuse_dbless(st, schema, "create")?;
    let Body { mut map, coerce } = read_body(req).await?;
    let ttl = take_ttl(schema, &mut map)?;
    if let Some((field, pid)) = &parent {
        map.insert((*field).to_string(), json!({ "id": pid }));
    }
    crate::foreign::resolve(st, schema, &mut map).await?;
    let sent: Vec<String> = map.keys().cloned().collect();
    let mut row = validate(st, schema, map, &sent, Operation::Insert, coerce)?;
    let snis = take_snis(schema, &mut row);
    if let Some(names) = &snis {
        check_snis_free(st, None, names).await?;
    }
    if let Some(t) = ttl {
        row.insert("ttl".into(), t);
    }
    // A certificate and its SNIs are one write: never one without the other.
    let saved = write_with_snis(st, schema, row, WriteMode::Insert, snis).await?;
    let out = present(st, schema, saved).await?;
    Ok(json_response(StatusCode::CREATED, &Value::Object(out)))
}

async fn entity(
    st: &AdminState,
    schema: &'static EntitySchema,
    key: &str,
    parent: Option<(&'static str, String)>,
    req: &Request<'_>,
) -> ApiResult {
    match *req.method {
        Method::GET => {
            let row = find(st, schema, key, parent.as_ref())
                .await?
                .ok_or_else(ApiError::not_found)?;
            let out = present(st, schema, row).await?;
            Ok(json_response(StatusCode::OK, &Value::Object(out)))
        }
        Method::DELETE => {
            refuse_dbless(st, schema, "delete")?;
            if let Some(row) = find(st, schema, key, parent.as_ref()).await? {
                st.store.delete(schema, id_of(&row)).await?;
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::PATCH => {
            refuse_dbless(st, schema, "update")?;
            let existing = find(st, schema, key, parent.as_ref())
                .await?
                .ok_or_else(ApiError::not_found)?;
            let Body { mut map, coerce } = read_body(req).await?;
            let ttl = take_ttl(schema, &mut map)?;
            if let Some((field, pid)) = &parent {
                map.entry((*field).to_string())
                    .or_insert(json!({ "id": pid }));
            }
            crate::foreign::resolve(st, schema, &mut map).await?;
            let sent: Vec<String> = map.keys().cloned().collect();
            if map
                .get("id")
                .is_some_and(|v| v.as_str() != Some(id_of(&existing)))
            {
                return Err(Error::field("id", "immutable field cannot be updated").into());
            }
            let mut merged = existing.clone();
            merged.remove("ttl");
            if schema.name == "certificates" {
                merged.remove("snis");
            }
            body::merge(&mut merged, map);
            let mut row = validate(st, schema, merged, &sent, Operation::Update, coerce)?;
            let snis = take_snis(schema, &mut row);
            if let Some(names) = &snis {
                check_snis_free(st, Some(id_of(&existing)), names).await?;
            }
            if let Some(t) = ttl {
                row.insert("ttl".into(), t);
            }
            let saved = write_with_snis(st, schema, row, WriteMode::Update, snis).await?;
            let out = present(st, schema, saved).await?;
            Ok(json_response(StatusCode::OK, &Value::Object(out)))
        }
        Method::PUT => {
            refuse_dbless(st, schema, "create or update")?;
            let existing = find(st, schema, key, parent.as_ref()).await?;
            let Body { mut map, coerce } = read_body(req).await?;
            let ttl = take_ttl(schema, &mut map)?;
            if let Some((field, pid)) = &parent {
                map.insert((*field).to_string(), json!({ "id": pid }));
            }
            crate::foreign::resolve(st, schema, &mut map).await?;
            let id = match &existing {
                Some(r) => id_of(r).to_string(),
                None if is_uuid(key) => key.to_string(),
                None => uuid::Uuid::new_v4().to_string(),
            };
            if map
                .get("id")
                .is_some_and(|v| v.as_str() != Some(id.as_str()))
            {
                return Err(Error::field("id", "immutable field cannot be updated").into());
            }
            map.insert("id".into(), json!(id));
            if !is_uuid(key) {
                if let Some(ek) = schema.endpoint_key {
                    if schema.name == "targets" {
                        map.entry("target").or_insert(json!(key));
                    } else {
                        map.insert(ek.into(), json!(key));
                    }
                }
            }
            let sent: Vec<String> = map.keys().cloned().collect();
            let mut row = validate(st, schema, map, &sent, Operation::Upsert, coerce)?;
            let snis = take_snis(schema, &mut row);
            if let Some(names) = &snis {
                check_snis_free(st, Some(&id), names).await?;
            }
            if let Some(t) = ttl {
                row.insert("ttl".into(), t);
            }
            let saved = write_with_snis(st, schema, row, WriteMode::Upsert, snis).await?;
            let out = present(st, schema, saved).await?;
            Ok(json_response(StatusCode::OK, &Value::Object(out)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
