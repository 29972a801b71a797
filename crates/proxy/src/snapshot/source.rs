//! The rows a snapshot was compiled from, kept beside it (shared, not copied: the
//! compiled routes and services point at the same rows) so that a row event patches them
//! instead of every entity being read from the store again.

use super::{fk, Dataset, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tollgate_router::persistent::POrdMap;

/// The entities a snapshot is compiled from. Consumers and credentials are not among
/// them: the consumer index follows their row events on its own.
pub const ENTITIES: &[&str] = &[
    "services",
    "routes",
    "certificates",
    "snis",
    "ca_certificates",
    "upstreams",
    "targets",
    "plugins",
];

/// One entity's rows by id, in id order (the order a full load returns them in); a
/// persistent map, so an edit copies one chunk of it, not every row pointer.
type Table = POrdMap<Arc<str>, Arc<Row>>;

/// Every row of [`ENTITIES`].
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Source {
    tables: BTreeMap<&'static str, Table>,
}

/// One row written (`new`) or deleted (`new: None`), as a store's row event says.
#[derive(Clone, Debug)]
pub struct Edit {
    pub entity: &'static str,
    pub id: Arc<str>,
    pub new: Option<Row>,
}

impl Source {
    /// The snapshot entities of a full load (others are left out).
    pub fn from_dataset(mut data: Dataset) -> Source {
        let mut tables = BTreeMap::new();
        for &entity in ENTITIES {
            let table: Table = data
                .remove(entity)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|row| {
                    let id: Arc<str> = row.get("id")?.as_str()?.into();
                    Some((id, Arc::new(compact(entity, row))))
                })
                .collect();
            tables.insert(entity, table);
        }
        Source { tables }
    }

    /// An entity's rows in id order.
    pub fn rows(&self, entity: &str) -> impl Iterator<Item = &Arc<Row>> + '_ {
        self.tables.get(entity).into_iter().flat_map(|t| t.values())
    }

    /// An entity's ids in order.
    pub fn ids(&self, entity: &str) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.tables
            .get(entity)
            .into_iter()
            .flat_map(|t| t.iter().map(|(k, _)| k))
    }

    /// One row by id.
    pub fn row(&self, entity: &str, id: &str) -> Option<&Arc<Row>> {
        self.tables.get(entity)?.get(id)
    }

    /// Applies edits in order (those of other entities are ignored) and says what they
    /// touched.
    pub(super) fn edit(&mut self, edits: Vec<Edit>) -> Touched {
        let mut t = Touched::default();
        for e in edits {
            let Some(&entity) = ENTITIES.iter().find(|n| **n == e.entity) else {
                continue;
            };
            let table = self.tables.entry(entity).or_default();
            let new = e.new.map(|row| Arc::new(compact(entity, row)));
            let old = match &new {
                Some(r) => table.insert(e.id.clone(), r.clone()),
                None => table.remove(&e.id),
            };
            t.record(entity, &e.id, old.as_deref(), new.as_deref());
        }
        t
    }
}

/// The entities held by the thousand (a route and a service per API): their rows are
/// kept without null fields, every map and array at its exact size. A parsed row's maps
/// and arrays keep the spare capacity they grew into, and its nulls are read as absent
/// by everything compiled from it and dropped by the log serializer as in Kong, so a
/// row costs about half as much for the same meaning.
const COMPACT: &[&str] = &["services", "routes"];

fn compact(entity: &str, row: Row) -> Row {
    if !COMPACT.contains(&entity) {
        return row;
    }
    let mut out = Row::with_capacity(row.values().filter(|v| !v.is_null()).count());
    for (k, v) in row {
        if !v.is_null() {
            out.insert(k, exact(v));
        }
    }
    out
}

/// A value again, its maps and arrays at their exact size (nested nulls kept).
fn exact(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            out.extend(a.into_iter().map(exact));
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Row::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k, exact(v));
            }
            Value::Object(out)
        }
        other => other,
    }
}

/// What a batch of edits touched, so that only the parts it affects are compiled again.
#[derive(Default, Debug)]
pub(super) struct Touched {
    /// Everything (a first build).
    pub all: bool,
    entities: HashSet<&'static str>,
    ids: HashMap<&'static str, HashSet<Arc<str>>>,
    /// Upstream ids whose balancer changes (the upstream or one of its targets).
    pub upstreams: HashSet<String>,
    /// A global or consumer plugin changed: every route's chain.
    pub plugins_everywhere: bool,
    /// Routes and services a changed plugin was or is scoped to.
    pub plugin_routes: HashSet<String>,
    pub plugin_services: HashSet<String>,
    /// Each route edit in order: the route, its service before and after.
    pub route_moves: Vec<(Arc<str>, Option<String>, Option<String>)>,
}

impl Touched {
    pub fn everything() -> Touched {
        Touched {
            all: true,
            ..Touched::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.entities.is_empty()
    }

    pub fn has(&self, entity: &str) -> bool {
        self.all || self.entities.contains(entity)
    }

    pub fn has_id(&self, entity: &'static str, id: &str) -> bool {
        self.all || self.ids.get(entity).is_some_and(|s| s.contains(id))
    }

    /// The ids an entity's edits touched.
    pub fn ids(&self, entity: &str) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.ids.get(entity).into_iter().flatten()
    }

    fn record(
        &mut self,
        entity: &'static str,
        id: &Arc<str>,
        old: Option<&Row>,
        new: Option<&Row>,
    ) {
        self.entities.insert(entity);
        self.ids.entry(entity).or_default().insert(id.clone());
        let rows = old.into_iter().chain(new);
        match entity {
            "upstreams" => {
                self.upstreams.insert(id.to_string());
            }
            "routes" => self.route_moves.push((
                id.clone(),
                old.and_then(|r| fk(r, "service")),
                new.and_then(|r| fk(r, "service")),
            )),
            "targets" => self
                .upstreams
                .extend(rows.filter_map(|r| fk(r, "upstream"))),
            "plugins" => {
                for r in rows {
                    match (fk(r, "route"), fk(r, "service"), fk(r, "consumer")) {
                        (_, _, Some(_)) | (None, None, None) => self.plugins_everywhere = true,
                        (Some(route), _, None) => {
                            self.plugin_routes.insert(route);
                        }
                        (None, Some(service), None) => {
                            self.plugin_services.insert(service);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod compact_tests {
    use super::*;
    use serde_json::json;

    fn row(v: serde_json::Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn routes_and_services_are_kept_without_their_null_fields() {
        let r = json!({"id": "r1", "hosts": null, "paths": ["/a"],
            "headers": {"x": ["1"], "y": null}, "service": {"id": "s1"}, "tags": null});
        let mut data = Dataset::new();
        data.insert("routes".into(), vec![row(r)]);
        data.insert(
            "plugins".into(),
            vec![row(json!({"id": "p1", "route": null}))],
        );
        let mut source = Source::from_dataset(data);
        let kept = source.rows("routes").next().unwrap();
        // top-level nulls go, nested ones stay, the order of the fields is kept
        assert_eq!(
            **kept,
            row(
                json!({"id": "r1", "paths": ["/a"], "headers": {"x": ["1"], "y": null},
                "service": {"id": "s1"}})
            )
        );
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["id", "paths", "headers", "service"]
        );
        // other entities' rows are kept whole
        assert!(source.rows("plugins").next().unwrap()["route"].is_null());
        // an edit's row is compacted the same way
        source.edit(vec![Edit {
            entity: "services",
            id: "s1".into(),
            new: Some(row(json!({"id": "s1", "path": null, "host": "h"}))),
        }]);
        assert_eq!(
            **source.rows("services").next().unwrap(),
            row(json!({"id": "s1", "host": "h"}))
        );
    }
}
