//! Kong's declarative configuration format (`kong/db/schema/others/declarative_config.lua`,
//! `kong/db/declarative/*`): parsing YAML/JSON into a validated, flattened [`EntitySet`],
//! Kong's error shapes for `POST /config`, and the `db_export` shape for `GET /config`.
//!
//! # Pipeline (Kong's `flatten`)
//! 1. `load`: JSON is tried first, then YAML (Kong's `unserialize`).
//! 2. `_format_version` 1.1 / 2.1 files are migrated on the fly (regex route paths get `~`)
//!    and become 3.0.
//! 3. Nested entities are collected (services → routes → plugins, consumers → credentials,
//!    certificates → snis, …: every foreign key allows nesting the child under its parent).
//! 4. Ids: an entity without `id` gets Kong's deterministic uuid-v5 (see [`generate_id`]).
//! 5. Phase 1, schema validation: every entity through [`EntitySchema::process`] (plugins also
//!    through [`PluginCatalog::validate`]); all errors are collected in Kong's nested shape.
//! 6. Phase 2, references: duplicate endpoint keys / ids, and references that name no entity.
//! 7. Phase 3, other unique fields (`custom_id`, …).
//!
//! Each phase that finds errors stops the parse with an [`Error`] of code 14 whose message is
//! `declarative config is invalid: <Penlight rendering of the fields>`, as Kong's.
//!
//! # Flattened errors
//! `POST /config?flatten_errors=1`: parse with [`ParseOptions::flatten_errors`]; the error's
//! `fields` then hold what could not be flattened plus the list under the key
//! [`FLATTENED_KEY`]. [`flattened_errors`] returns that list and [`error_body`] the exact
//! response body Kong sends (`{code, name, message, fields, flattened_errors}`).

mod errors;
mod export;
mod migrate;
#[cfg(test)]
mod tests;
mod yaml;

pub use export::{export, export_dataset, to_yaml};

use crate::entities;
use crate::error::{Error, ErrorCode};
use crate::plugin::PluginCatalog;
use crate::schema::{now_secs, Context, EntitySchema, Operation};
use crate::{Row, RowText};
use errors::{Key, Node};
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

/// The accepted `_format_version` values.
pub const FORMAT_VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];
/// Kong's `DECLARATIVE_EMPTY_CONFIG_HASH`: the hash of a configuration with no entities.
pub const EMPTY_CONFIG_HASH: &str = "00000000000000000000000000000000";
/// Where a flattening parse puts Kong's `flattened_errors` list inside the error's fields.
pub const FLATTENED_KEY: &str = "@flattened_errors";

/// Kong's namespace for declarative ids (`uuid_generators._entities`).
const ID_NAMESPACE: uuid::Uuid = uuid::uuid!("fd02801f-0957-4a15-a55a-c8d9606f30b5");
/// Stands in for a reference that resolves to nothing while the entity is validated; the
/// reference itself is reported in phase 2.
const UNRESOLVED: &str = "00000000-0000-0000-0000-000000000000";

/// Every entity of a configuration, validated and flattened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntitySet {
    /// Entity name (`services`) → rows in the order the file declares them (parents before
    /// their nested children). Every row is complete; foreign keys are `{"id": …}`. Rows
    /// are kept as text: an import of 100,000 consumers must fit in little memory.
    pub entities: BTreeMap<String, Vec<RowText>>,
}

impl EntitySet {
    /// Number of rows over all entities.
    pub fn len(&self) -> usize {
        self.entities.values().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.entities.values().all(Vec::is_empty)
    }
    /// The rows of one entity (empty when there are none).
    pub fn rows(&self, entity: &str) -> &[RowText] {
        self.entities.get(entity).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The rows as maps (entity name → rows).
    pub fn into_dataset(self) -> BTreeMap<String, Vec<Row>> {
        self.entities
            .into_iter()
            .map(|(e, rows)| (e, rows.iter().map(RowText::to_row).collect()))
            .collect()
    }
    pub fn from_dataset(data: &BTreeMap<String, Vec<Row>>) -> EntitySet {
        EntitySet {
            entities: data
                .iter()
                .map(|(e, rows)| (e.clone(), rows.iter().map(RowText::new).collect()))
                .collect(),
        }
    }
}

/// A parsed configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub set: EntitySet,
    /// Kong's `meta._format_version`: always "3.0" (older files are migrated on the fly).
    pub format_version: String,
    pub transform: bool,
    /// Kong's configuration hash: md5 hex of the text (of the canonical JSON for
    /// [`parse_value`]), or [`EMPTY_CONFIG_HASH`] when the set is empty.
    pub hash: String,
}

/// Options of [`parse_with`] / [`parse_value_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions {
    /// Produce Kong's `flattened_errors` (see [`flattened_errors`]).
    pub flatten_errors: bool,
    /// The clock for `created_at`/`updated_at` (seconds); now when `None`.
    pub now: Option<f64>,
}

/// Parses YAML or JSON text.
pub fn parse(text: &str, catalog: &PluginCatalog) -> Result<Parsed, Error> {
    parse_with(text, catalog, &ParseOptions::default())
}

/// Parses an already decoded configuration.
pub fn parse_value(v: Value, catalog: &PluginCatalog) -> Result<Parsed, Error> {
    parse_value_with(v, catalog, &ParseOptions::default())
}

pub fn parse_with(
    text: &str,
    catalog: &PluginCatalog,
    opts: &ParseOptions,
) -> Result<Parsed, Error> {
    let v = load(text)?;
    let hash = hex::encode(Md5::digest(text.as_bytes()));
    run(v, catalog, opts, hash)
}

pub fn parse_value_with(
    v: Value,
    catalog: &PluginCatalog,
    opts: &ParseOptions,
) -> Result<Parsed, Error> {
    let mut canon = String::new();
    canonical_json(&v, &mut canon);
    let hash = hex::encode(Md5::digest(canon.as_bytes()));
    run(v, catalog, opts, hash)
}

/// Kong's `unserialize`: JSON first, then YAML; the result must be an object.
pub fn load(text: &str) -> Result<Value, Error> {
    let v = match serde_json::from_str::<Value>(text) {
        Ok(v) if v.is_object() => v,
        _ => match yaml::to_json(text) {
            Ok(v) => v,
            Err(e) => return Err(unserialize_error(&e)),
        },
    };
    if !v.is_object() {
        return Err(unserialize_error("expected an object"));
    }
    Ok(v)
}

fn unserialize_error(why: &str) -> Error {
    let mut node = Node::tab();
    node.set_msg(
        &[Key::s("error")],
        format!("failed parsing declarative configuration: {why}"),
    );
    declarative_error(&node)
}

/// Kong's `errors:declarative_config(err_t)`.
fn declarative_error(node: &Node) -> Error {
    Error::declarative(
        format!("declarative config is invalid: {}", node.lua_pretty()),
        node.to_json(),
    )
}

/// The `flattened_errors` list of an error from a parse with `flatten_errors` set.
pub fn flattened_errors(err: &Error) -> Option<Value> {
    if err.code() != ErrorCode::DeclarativeConfig {
        return None;
    }
    err.fields()?.get(FLATTENED_KEY).cloned()
}

/// The response body Kong sends for a declarative error: `{code, name, message, fields}`,
/// plus `flattened_errors` (moved out of `fields`) when the parse flattened them.
pub fn error_body(err: &Error) -> Value {
    let mut body = err.to_json();
    if let Some(Value::Object(fields)) = body.get_mut("fields") {
        if let Some(list) = fields.remove(FLATTENED_KEY) {
            body["flattened_errors"] = list;
        }
    }
    body
}

// ---------------------------------------------------------------------------------------
// Entities and their relationships

const CORE_ENTITIES: &[&str] = &[
    "workspaces",
    "consumers",
    "certificates",
    "services",
    "routes",
    "snis",
    "upstreams",
    "targets",
    "plugins",
    "tags",
    "ca_certificates",
    "clustering_data_planes",
    "parameters",
    "vaults",
    "key_sets",
    "keys",
    "filter_chains",
];

/// Every entity in Kong's topological order (`kong/db/schema/topological_sort.lua`):
/// referenced entities first, core before plugin entities, then by name.
pub fn known_entities() -> &'static [&'static EntitySchema] {
    static KNOWN: LazyLock<Vec<&'static EntitySchema>> = LazyLock::new(|| {
        let score = |s: &EntitySchema| match s.name {
            "workspaces" => 2,
            n if CORE_ENTITIES.contains(&n) => 1,
            _ => 0,
        };
        let mut items: Vec<&'static EntitySchema> = entities::ALL.iter().collect();
        items.sort_by(|a, b| score(a).cmp(&score(b)).then(b.name.cmp(a.name)));
        // pointing[x] = the entities with a foreign key to x, in `items` order.
        let mut pointing: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, s) in items.iter().enumerate() {
            for f in s.foreign_fields() {
                let r = f.foreign_entity().unwrap_or_default();
                if items.iter().any(|x| x.name == r) {
                    pointing.entry(r).or_default().push(i);
                }
            }
        }
        fn visit(
            i: usize,
            items: &[&'static EntitySchema],
            pointing: &HashMap<&str, Vec<usize>>,
            visited: &mut [bool],
            sorted: &mut Vec<usize>,
        ) {
            if visited[i] {
                return;
            }
            visited[i] = true;
            for &n in pointing
                .get(items[i].name)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                visit(n, items, pointing, visited, sorted);
            }
            sorted.push(i);
        }
        let mut visited = vec![false; items.len()];
        let mut sorted = Vec::new();
        for i in 0..items.len() {
            visit(i, &items, &pointing, &mut visited, &mut sorted);
        }
        sorted.iter().rev().map(|&i| items[i]).collect()
    });
    &KNOWN
}

/// The entities that may be nested under `parent`, with the child's foreign key field.
/// A parent field of the child's name that is not transient is a plain field instead
/// (`routes.snis`), as in Kong.
fn nested_children(parent: &EntitySchema) -> &'static [(&'static EntitySchema, &'static str)] {
    static MAP: LazyLock<HashMap<&'static str, Vec<(&'static EntitySchema, &'static str)>>> =
        LazyLock::new(|| {
            let mut m: HashMap<&'static str, Vec<(&'static EntitySchema, &'static str)>> =
                HashMap::new();
            for p in known_entities() {
                let mut list = Vec::new();
                for c in known_entities() {
                    if p.field(c.name).is_some() && !p.transient.contains(&c.name) {
                        continue;
                    }
                    for f in c.foreign_fields() {
                        if f.foreign_entity() == Some(p.name) {
                            list.push((*c, f.name));
                        }
                    }
                }
                m.insert(p.name, list);
            }
            m
        });
    MAP.get(parent.name).map(Vec::as_slice).unwrap_or(&[])
}

/// The endpoint key used to look entities up and to check uniqueness: only a unique one.
fn unique_endpoint_key(s: &EntitySchema) -> Option<&'static str> {
    s.endpoint_key
        .filter(|k| s.field(k).is_some_and(|f| f.unique))
}

/// Kong's `cache_key` of each entity (the plugin DAOs declare theirs in `daos.lua`).
fn kong_cache_key(entity: &str) -> Option<&'static [&'static str]> {
    Some(match entity {
        "plugins" => &["name", "route", "service", "consumer"],
        "targets" => &["upstream", "target"],
        "acls" => &["consumer", "group"],
        "keyauth_credentials" | "jwt_secrets" => &["key"],
        "basicauth_credentials" | "hmacauth_credentials" => &["username"],
        _ => return None,
    })
}

/// Entities whose Kong schema has `transformations`, and the field they compute; with
/// `_transform: false` the given value is stored as is.
const TRANSFORMED: &[(&str, &str)] = &[
    ("basicauth_credentials", "password"),
    ("ca_certificates", "cert_digest"),
];

/// The string Kong hashes into a declarative id (`get_key_for_uuid_gen`), or `None` when
/// the entity gets a random id.
fn id_key(
    s: &EntitySchema,
    input: &Map<String, Value>,
    parent: Option<(&str, &str)>,
    resolve: &dyn Fn(&str, &Value) -> Option<String>,
) -> Option<String> {
    if let Some(ck) = kong_cache_key(s.name) {
        let mut parts: Vec<String> = vec![s.name.to_string(), "*".to_string()];
        for k in ck {
            let field = s.field(k)?;
            // A reference that names an entity of the file counts as that entity's id,
            // so that nested and flat forms (and references by name or id) agree.
            if let (Some(target), Some(v)) = (field.foreign_entity(), input.get(*k)) {
                if let Some(id) = resolve(target, v) {
                    parts.push(id);
                    continue;
                }
            }
            match input.get(*k) {
                Some(Value::String(v)) => parts.push(v.clone()),
                // Kong skips a table value here; its id is used instead so that two
                // references by `{id: …}` cannot collide.
                Some(Value::Object(m)) => {
                    if let Some(Value::String(id)) = m.get("id") {
                        parts.push(id.clone());
                    }
                }
                None if field.auto => return None,
                None => match parent {
                    Some((pid, fk)) if fk == *k => parts.push(pid.to_string()),
                    _ if field.required => return None,
                    _ => parts.push(String::new()),
                },
                Some(_) => {}
            }
        }
        return Some(parts.join(":"));
    }
    let ek = s.endpoint_key?;
    let Some(Value::String(key)) = input.get(ek) else {
        return None;
    };
    let mut key = key.clone();
    if !s.field(ek).is_some_and(|f| f.unique) {
        for f in s.foreign_fields().filter(|f| f.on_delete_cascade) {
            match parent {
                Some((pid, _)) => key = format!("{key}:{pid}"),
                None => {
                    if let Some(Value::String(v)) = input.get(f.name) {
                        key = format!("{key}:{v}");
                    }
                }
            }
        }
        key.push_str(":*");
    }
    Some(key)
}

/// Kong's deterministic id: uuid-v5 of `key` in the namespace uuid-v5(`fd02801f-…`, entity).
pub fn generate_id(entity: &str, key: &str) -> String {
    let ns = uuid::Uuid::new_v5(&ID_NAMESPACE, entity.as_bytes());
    uuid::Uuid::new_v5(&ns, key.as_bytes()).to_string()
}

// ---------------------------------------------------------------------------------------
// Parsing

struct Item {
    schema: &'static EntitySchema,
    /// 1-based position in its list; with the parent's, where its errors go (see
    /// [`path_of`]: a path per item would cost more than the row).
    pos: u32,
    input: Map<String, Value>,
    /// The parent item and the foreign key that points to it.
    parent: Option<(usize, &'static str)>,
    /// Nested children in Kong's traversal order.
    children: Vec<usize>,
    /// The id (given or generated); `None` when a given id is not a string.
    id: Option<String>,
    /// The id was generated deterministically (it goes into flattened-error entities).
    deterministic: bool,
    refs: Vec<Reference>,
    /// The validated row; as text, since every entity of the file is held at once (phases
    /// 2 and 3 read it back one row at a time).
    row: Option<RowText>,
}

/// Where item `i` sits in the input: its parent's path, its entity's key, its position.
fn path_of(items: &[Item], i: usize) -> Vec<Key> {
    let it = &items[i];
    let mut p = match it.parent {
        Some((parent, _)) => path_of(items, parent),
        None => Vec::new(),
    };
    p.push(Key::s(it.schema.name));
    p.push(Key::Int(it.pos as usize));
    p
}

struct Reference {
    field: &'static str,
    target: &'static str,
    value: Value,
    found: bool,
}

struct Collector {
    items: Vec<Item>,
    errs: Node,
}

impl Collector {
    /// Takes the entity arrays out of `container` (the root or a parent entity) and returns
    /// the new items' indexes in Kong's order.
    fn collect(
        &mut self,
        container: &mut Map<String, Value>,
        kinds: &[(&'static EntitySchema, Option<&'static str>)],
        parent: Option<usize>,
        prefix: &[Key],
    ) -> Vec<usize> {
        let mut out = Vec::new();
        for (schema, fk) in kinds {
            let Some(list) = container.remove(schema.name) else {
                continue;
            };
            let mut path = prefix.to_vec();
            path.push(Key::s(schema.name));
            let list = match list {
                Value::Null => continue,
                Value::Array(a) => a,
                // Kong accepts `{}` (an empty Lua table) as an empty array.
                Value::Object(m) if m.is_empty() => continue,
                _ => {
                    self.errs.set_msg(&path, "expected an array".into());
                    continue;
                }
            };
            for (i, v) in list.into_iter().enumerate() {
                let mut p = path.clone();
                p.push(Key::Int(i + 1));
                let v = match v {
                    // certificates' `snis` may list names.
                    Value::String(s) if schema.name == "snis" => json!({ "name": s }),
                    v => v,
                };
                let Value::Object(mut m) = v else {
                    self.errs.set_msg(&p, "expected a record".into());
                    continue;
                };
                if !matches!(
                    m.remove("_comment"),
                    None | Some(Value::Null) | Some(Value::String(_))
                ) {
                    let mut fp = p.clone();
                    fp.push(Key::s("_comment"));
                    self.errs.set_msg(&fp, "expected a string".into());
                }
                if !matches!(
                    m.remove("_ignore"),
                    None | Some(Value::Null) | Some(Value::Array(_))
                ) {
                    let mut fp = p.clone();
                    fp.push(Key::s("_ignore"));
                    self.errs.set_msg(&fp, "expected an array".into());
                }
                let idx = self.items.len();
                self.items.push(Item {
                    schema,
                    pos: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    input: Map::new(),
                    parent: parent.zip(*fk),
                    children: Vec::new(),
                    id: None,
                    deterministic: false,
                    refs: Vec::new(),
                    row: None,
                });
                let kinds: Vec<_> = nested_children(schema)
                    .iter()
                    .map(|(c, f)| (*c, Some(*f)))
                    .collect();
                let children = self.collect(&mut m, &kinds, Some(idx), &p);
                self.items[idx].children = children;
                self.items[idx].input = m;
                out.push(idx);
            }
        }
        out
    }
}

#[derive(Default)]
struct Index {
    by_key: HashMap<&'static str, HashMap<String, usize>>,
    by_id: HashMap<&'static str, HashMap<String, usize>>,
}

impl Index {
    /// Kong's `find_entity`: by endpoint key first, then by id.
    fn find(&self, items: &[Item], entity: &str, key: &str) -> Option<String> {
        if let Some(&i) = self.by_key.get(entity).and_then(|m| m.get(key)) {
            return items[i].id.clone();
        }
        self.by_id
            .get(entity)
            .and_then(|m| m.get(key))
            .map(|_| key.to_string())
    }

    /// Kong's `populate_references` order: children before their parent, entities in
    /// topological order. Duplicate keys and ids are reported into `errs`.
    fn register(&mut self, items: &[Item], order: &[usize], errs: &mut Node) {
        for &i in order {
            self.register(items, &items[i].children, errs);
            let it = &items[i];
            let name = it.schema.name;
            let mut failed = false;
            if let Some(ek) = unique_endpoint_key(it.schema) {
                if let Some(Value::String(k)) = it.input.get(ek) {
                    let keys = self.by_key.entry(name).or_default();
                    if keys.contains_key(k) {
                        errs.set_msg(&path_of(items, i), uniqueness_msg(name, ek, k));
                        failed = true;
                    } else {
                        keys.insert(k.clone(), i);
                    }
                }
            }
            if let Some(id) = &it.id {
                let ids = self.by_id.entry(name).or_default();
                if ids.contains_key(id) {
                    if !failed {
                        errs.set_msg(&path_of(items, i), uniqueness_msg(name, "primary key", id));
                    }
                } else {
                    ids.insert(id.clone(), i);
                }
            }
        }
    }
}

fn uniqueness_msg(entity: &str, key: &str, value: &str) -> String {
    format!("uniqueness violation: '{entity}' entity with {key} set to '{value}' already declared")
}

/// The value a reference names: a string, `{id: …}` or `{<endpoint key>: …}`.
fn reference_key(v: &Value, target: &EntitySchema) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            let ok = k == "id" || unique_endpoint_key(target) == Some(k.as_str());
            match v {
                Value::String(s) if ok => Some(s.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn run(
    root: Value,
    catalog: &PluginCatalog,
    opts: &ParseOptions,
    hash: String,
) -> Result<Parsed, Error> {
    let mut root = root;
    if !root.is_object() {
        return Err(unserialize_error("expected an object"));
    }
    migrate::migrate(&mut root);
    let original = opts.flatten_errors.then(|| root.clone());
    let Value::Object(mut top) = root else {
        unreachable!("checked above")
    };

    let mut c = Collector {
        items: Vec::new(),
        errs: Node::tab(),
    };

    // Top-level keys.
    let format_version = match top.remove("_format_version") {
        None | Some(Value::Null) => {
            c.errs.set_msg(
                &[Key::s("_format_version")],
                "required field missing".into(),
            );
            String::new()
        }
        Some(Value::String(s)) if FORMAT_VERSIONS.contains(&s.as_str()) => s,
        Some(Value::String(_)) => {
            c.errs.set_msg(
                &[Key::s("_format_version")],
                format!("expected one of: {}", FORMAT_VERSIONS.join(", ")),
            );
            String::new()
        }
        Some(_) => {
            c.errs
                .set_msg(&[Key::s("_format_version")], "expected a string".into());
            String::new()
        }
    };
    let transform = match top.remove("_transform") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            c.errs
                .set_msg(&[Key::s("_transform")], "expected a boolean".into());
            true
        }
    };
    for (k, want) in [
        ("_comment", "a string"),
        ("_workspace", "a string"),
        ("_ignore", "an array"),
    ] {
        match (top.remove(k), want) {
            (None | Some(Value::Null), _)
            | (Some(Value::String(_)), "a string")
            | (Some(Value::Array(_)), "an array") => {}
            _ => c.errs.set_msg(&[Key::s(k)], format!("expected {want}")),
        }
    }
    let kinds: Vec<_> = known_entities().iter().map(|s| (*s, None)).collect();
    let roots = c.collect(&mut top, &kinds, None, &[]);
    for k in top.keys() {
        c.errs.set_msg(&[Key::s(k)], "unknown field".into());
    }
    let Collector {
        mut items,
        errs: mut phase1,
    } = c;

    // Ids, parents before children. Entities with a cache key come second: theirs may
    // include the ids of the entities they reference.
    let mut resolver: HashMap<&str, HashMap<String, String>> = HashMap::new();
    for cache_keyed in [false, true] {
        for i in 0..items.len() {
            if kong_cache_key(items[i].schema.name).is_some() != cache_keyed {
                continue;
            }
            let parent = items[i]
                .parent
                .map(|(p, fk)| (items[p].id.clone().unwrap_or_default(), fk));
            let resolve = |target: &str, v: &Value| -> Option<String> {
                let t = entities::by_name(target)?;
                resolver.get(target)?.get(&reference_key(v, t)?).cloned()
            };
            let it = &items[i];
            let (id, deterministic) = match it.input.get("id") {
                Some(Value::String(s)) => (Some(s.clone()), false),
                Some(_) => (None, false),
                None => {
                    let parent = parent.as_ref().map(|(p, fk)| (p.as_str(), *fk));
                    match id_key(it.schema, &it.input, parent, &resolve) {
                        Some(k) => (Some(generate_id(it.schema.name, &k)), true),
                        None => (Some(uuid::Uuid::new_v4().to_string()), false),
                    }
                }
            };
            if !cache_keyed {
                if let Some(id) = &id {
                    let m = resolver.entry(it.schema.name).or_default();
                    if let Some(ek) = unique_endpoint_key(it.schema) {
                        if let Some(Value::String(k)) = it.input.get(ek) {
                            m.entry(k.clone()).or_insert_with(|| id.clone());
                        }
                    }
                    m.entry(id.clone()).or_insert_with(|| id.clone());
                }
            }
            items[i].id = id;
            items[i].deterministic = deterministic;
        }
    }

    drop(resolver);
    let mut phase2 = Node::tab();
    let mut index = Index::default();
    index.register(&items, &roots, &mut phase2);

    // Phase 1: every entity through its schema.
    let cx = Context {
        op: Operation::Insert,
        coerce: false,
        now: opts.now.unwrap_or_else(now_secs),
    };
    for i in 0..items.len() {
        let parent_id = items[i]
            .parent
            .map(|(p, fk)| (items[p].id.clone().unwrap_or_default(), fk));
        let schema = items[i].schema;
        let mut input = std::mem::take(&mut items[i].input);
        let mut refs = Vec::new();
        for f in schema.foreign_fields() {
            let target = f.foreign_entity().unwrap_or_default();
            let given = input.remove(f.name);
            if let Some((pid, fk)) = &parent_id {
                if *fk == f.name {
                    if let Some(v) = given.filter(|v| !v.is_null()) {
                        let found = entities::by_name(target)
                            .and_then(|t| reference_key(&v, t))
                            .and_then(|k| index.find(&items, target, &k))
                            .is_some();
                        refs.push(Reference {
                            field: f.name,
                            target,
                            value: v,
                            found,
                        });
                    }
                    input.insert(f.name.into(), json!({ "id": pid }));
                    continue;
                }
            }
            let Some(v) = given else { continue };
            let key = entities::by_name(target).and_then(|t| reference_key(&v, t));
            match key {
                Some(k) => {
                    let found = index.find(&items, target, &k);
                    input.insert(
                        f.name.into(),
                        json!({ "id": found.as_deref().unwrap_or(UNRESOLVED) }),
                    );
                    refs.push(Reference {
                        field: f.name,
                        target,
                        value: v,
                        found: found.is_some(),
                    });
                }
                None => {
                    input.insert(f.name.into(), v);
                }
            }
        }
        if let (Some(id), false) = (&items[i].id, input.contains_key("id")) {
            input.insert("id".into(), Value::String(id.clone()));
        }
        let kept: Vec<(&str, Value)> = if transform {
            Vec::new()
        } else {
            TRANSFORMED
                .iter()
                .filter(|(e, _)| *e == schema.name)
                .filter_map(|(_, f)| {
                    input
                        .get(*f)
                        .filter(|v| !v.is_null())
                        .map(|v| (*f, v.clone()))
                })
                .collect()
        };
        let plugin_input = (schema.name == "plugins").then(|| input.clone());
        let path = path_of(&items, i);
        match schema.process(input, &cx) {
            Ok(mut row) => {
                if plugin_input.is_some() {
                    if let Err(e) = catalog.validate(&mut row, &cx) {
                        merge_error(&mut phase1, &path, &e);
                    }
                }
                for (f, v) in kept {
                    row.insert(f.into(), v);
                }
                items[i].row = Some(RowText::new(&row));
            }
            Err(e) => {
                merge_error(&mut phase1, &path, &e);
                if let Some(mut row) = plugin_input {
                    if let Err(e) = catalog.validate(&mut row, &cx) {
                        merge_error(&mut phase1, &path, &e);
                    }
                }
            }
        }
        items[i].refs = refs;
    }
    if !phase1.is_empty() {
        return Err(finish(phase1, original, &items, false));
    }

    // Phase 2: duplicates (found while indexing) and dangling references.
    for it in &items {
        for r in it.refs.iter().filter(|r| !r.found) {
            let row = it.row.as_ref().map(RowText::to_row);
            let at = unique_endpoint_key(it.schema)
                .and_then(|ek| row.as_ref()?.get(ek)?.as_str())
                .map(str::to_string)
                .or_else(|| it.id.clone())
                .unwrap_or_default();
            let shown = match &r.value {
                Value::String(s) => s.clone(),
                other => errors::cjson_encode(other),
            };
            phase2.push_msg(
                &[Key::s(it.schema.name), Key::Str(at)],
                format!(
                    "invalid reference '{}: {}' (no such entry in '{}')",
                    r.field, shown, r.target
                ),
            );
        }
    }
    if !phase2.is_empty() {
        return Err(finish(phase2, original, &items, true));
    }

    // Phase 3: the other unique fields.
    let mut phase3 = Node::tab();
    let mut seen: HashSet<(&str, &str, String)> = HashSet::new();
    let mut post_order = Vec::with_capacity(items.len());
    fn post(items: &[Item], order: &[usize], out: &mut Vec<usize>) {
        for &i in order {
            post(items, &items[i].children, out);
            out.push(i);
        }
    }
    post(&items, &roots, &mut post_order);
    for &i in &post_order {
        let it = &items[i];
        let Some(text) = &it.row else { continue };
        let mut uniques = it
            .schema
            .unique_fields()
            .filter(|f| f.foreign_entity().is_none())
            .peekable();
        if uniques.peek().is_none() {
            continue;
        }
        let row = text.to_row();
        for f in uniques {
            let v = match row.get(f.name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            if !seen.insert((it.schema.name, f.name, v.clone())) {
                let at = it
                    .schema
                    .endpoint_key
                    .and_then(|ek| row.get(ek))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| it.id.clone())
                    .unwrap_or_default();
                phase3.set_msg(
                    &[Key::s(it.schema.name), Key::Str(at)],
                    uniqueness_msg(it.schema.name, f.name, &v),
                );
            }
        }
    }
    if !phase3.is_empty() {
        return Err(finish(phase3, original, &items, true));
    }

    let mut set = EntitySet::default();
    for it in items {
        if let Some(row) = it.row {
            set.entities
                .entry(it.schema.name.to_string())
                .or_default()
                .push(row);
        }
    }
    let hash = if set.is_empty() {
        EMPTY_CONFIG_HASH.to_string()
    } else {
        hash
    };
    Ok(Parsed {
        set,
        format_version: if format_version.is_empty() {
            "3.0".into()
        } else {
            format_version
        },
        transform,
        hash,
    })
}

/// Adds an entity's schema-violation fields (or a transformation error) at its position.
fn merge_error(errs: &mut Node, path: &[Key], e: &Error) {
    match e.fields() {
        Some(f @ Value::Object(_)) => errs.merge_value(path, f),
        _ => {
            let mut p = path.to_vec();
            p.push(Key::s("@entity"));
            errs.push_msg(&p, e.message().to_string());
        }
    }
}

/// Builds the error; with flattening, moves what it can into the flattened list. Past
/// phase 1, Kong's input already carries the generated ids, so the flattened entities do.
fn finish(mut errs: Node, original: Option<Value>, items: &[Item], with_ids: bool) -> Error {
    let Some(mut input) = original else {
        return declarative_error(&errs);
    };
    if with_ids {
        for (i, it) in items.iter().enumerate().filter(|(_, it)| it.deterministic) {
            let path = path_of(items, i);
            if let (Some(Value::Object(m)), Some(id)) = (value_at(&mut input, &path), &it.id) {
                m.insert("id".into(), Value::String(id.clone()));
            }
        }
    }
    let list = errors::flatten(&mut input, &mut errs);
    let mut err = declarative_error(&errs);
    let mut fields = err.fields().cloned().unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut fields {
        m.insert(FLATTENED_KEY.into(), Value::Array(list));
    }
    err = Error::declarative(err.message().to_string(), fields);
    err
}

fn value_at<'a>(v: &'a mut Value, path: &[Key]) -> Option<&'a mut Value> {
    let mut cur = v;
    for k in path {
        cur = match k {
            Key::Str(s) => cur.get_mut(s.as_str())?,
            Key::Int(i) => cur.get_mut(i.checked_sub(1)?)?,
        };
    }
    Some(cur)
}

/// JSON with object keys sorted, so equal configurations hash equally.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical_json(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
