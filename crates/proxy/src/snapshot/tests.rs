//! Incremental snapshots equal full builds: random batches of writes (with the store's
//! cascades) applied one after another, each result compared with a from-scratch build of
//! the same rows.

use super::*;
use serde_json::{json, Value};
use std::fmt::Write;
use tollgate_model::entities;
use tollgate_model::schema::{Context, Operation};

/// A small deterministic generator (xorshift64*), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

fn uuid(kind: u8, n: usize) -> String {
    format!("00000000-0000-4000-8{kind:03}-{n:012}")
}

fn processed(entity: &str, v: Value) -> Row {
    let Value::Object(m) = v else { unreachable!() };
    entities::by_name(entity)
        .unwrap()
        .process(m, &Context::new(Operation::Insert))
        .unwrap_or_else(|e| panic!("{entity}: {e:?}"))
}

/// The configuration as the store holds it: entity → id → row.
#[derive(Default)]
struct Model(BTreeMap<&'static str, BTreeMap<String, Row>>);

impl Model {
    fn ids(&self, entity: &str) -> Vec<String> {
        self.0
            .get(entity)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }
    fn dataset(&self) -> Dataset {
        self.0
            .iter()
            .map(|(e, t)| (e.to_string(), t.values().cloned().collect()))
            .collect()
    }
    fn put(&mut self, edits: &mut Vec<Edit>, entity: &'static str, row: Row) {
        let id = row["id"].as_str().unwrap().to_owned();
        edits.push(Edit {
            entity,
            id: id.as_str().into(),
            new: Some(row.clone()),
        });
        self.0.entry(entity).or_default().insert(id, row);
    }
    fn delete(&mut self, edits: &mut Vec<Edit>, entity: &'static str, id: &str) {
        // The store's cascades: the children's deletes come first.
        let children: &[(&'static str, &str)] = match entity {
            "upstreams" => &[("targets", "upstream")],
            "routes" => &[("plugins", "route")],
            "services" => &[("plugins", "service"), ("routes", "service")],
            _ => &[],
        };
        for (child, field) in children {
            for cid in self.ids(child) {
                if fk(&self.0[child][&cid], field).as_deref() == Some(id) {
                    self.delete(edits, child, &cid);
                }
            }
        }
        if self.0.get_mut(entity).and_then(|t| t.remove(id)).is_some() {
            edits.push(Edit {
                entity,
                id: id.into(),
                new: None,
            });
        }
    }

    /// One random write, as an Admin API call would make it.
    fn write(&mut self, r: &mut Rng, edits: &mut Vec<Edit>) {
        let services = self.ids("services");
        let routes = self.ids("routes");
        let upstreams = self.ids("upstreams");
        match r.below(100) {
            0..=9 => {
                let n = r.below(4);
                let row = processed(
                    "services",
                    json!({
                        "id": uuid(1, n), "name": format!("s{n}"),
                        "host": *r.pick(&["up0", "up1", "example.com"]),
                        "protocol": *r.pick(&["http", "https"]),
                        "enabled": r.chance(85), "retries": r.below(6),
                    }),
                );
                self.put(edits, "services", row);
            }
            10..=13 if !services.is_empty() => {
                let id = r.pick(&services).clone();
                self.delete(edits, "services", &id);
            }
            14..=44 => {
                let n = r.below(12);
                let mut v = json!({
                    "id": uuid(2, n), "name": format!("r{n}"),
                    "paths": [*r.pick(&["/a", "/b", "/a/b", "~/r\\d+$", "/"])],
                    "regex_priority": r.below(3), "strip_path": r.chance(50),
                    "created_at": 1000 + r.below(5),
                });
                if r.chance(30) {
                    v["hosts"] = json!([*r.pick(&["a.test", "*.b.test", "c.*"])]);
                }
                if r.chance(20) {
                    v["headers"] = json!({"x-v": [*r.pick(&["1", "~*v\\d"])]});
                }
                if !services.is_empty() && r.chance(85) {
                    v["service"] = json!({"id": r.pick(&services)});
                }
                self.put(edits, "routes", processed("routes", v));
            }
            45..=54 if !routes.is_empty() => {
                let id = r.pick(&routes).clone();
                self.delete(edits, "routes", &id);
            }
            55..=61 => {
                let n = r.below(3);
                let row = processed(
                    "upstreams",
                    json!({"id": uuid(3, n), "name": format!("up{n}"),
                           "algorithm": *r.pick(&["round-robin", "consistent-hashing"])}),
                );
                self.put(edits, "upstreams", row);
            }
            62..=64 if !upstreams.is_empty() => {
                let id = r.pick(&upstreams).clone();
                self.delete(edits, "upstreams", &id);
            }
            65..=74 if !upstreams.is_empty() => {
                let n = r.below(8);
                let row = processed(
                    "targets",
                    json!({"id": uuid(4, n), "upstream": {"id": r.pick(&upstreams)},
                           "target": format!("127.0.0.{}:80", 1 + r.below(4)),
                           "weight": r.below(3) * 50}),
                );
                self.put(edits, "targets", row);
            }
            75..=78 => {
                let targets = self.ids("targets");
                if !targets.is_empty() {
                    let id = r.pick(&targets).clone();
                    self.delete(edits, "targets", &id);
                }
            }
            79..=94 => {
                let n = r.below(10);
                let (name, config) = r
                    .pick(&[
                        ("cors", json!({})),
                        ("correlation-id", json!({})),
                        ("request-termination", json!({"status_code": 403})),
                        (
                            "request-termination",
                            json!({"status_code": 200, "echo": true}),
                        ),
                    ])
                    .clone();
                let pick_fk = |r: &mut Rng, ids: &[String]| match ids.is_empty() || r.chance(50) {
                    true => Value::Null,
                    false => json!({"id": r.pick(ids)}),
                };
                let route = pick_fk(r, &routes);
                let service = pick_fk(r, &services);
                let consumer = match r.chance(10) {
                    true => json!({"id": uuid(5, r.below(2))}),
                    false => Value::Null,
                };
                let row = json!({
                    "id": uuid(6, n), "name": name, "config": config,
                    "enabled": r.chance(90), "protocols": ["http", "https"],
                    "route": route, "service": service, "consumer": consumer,
                    "instance_name": null, "created_at": 1, "tags": null,
                });
                let Value::Object(row) = row else {
                    unreachable!()
                };
                self.put(edits, "plugins", row);
            }
            _ => {
                let plugins = self.ids("plugins");
                if !plugins.is_empty() {
                    let id = r.pick(&plugins).clone();
                    self.delete(edits, "plugins", &id);
                }
            }
        }
    }
}

/// Everything a request can observe of a snapshot, deterministically.
fn fingerprint(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut routes: Vec<_> = s.routes.iter().collect();
    routes.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    for (i, r) in routes {
        // the router holds the route at the same index
        assert_eq!(
            s.router.route(i).map(|r| r.id.as_str()),
            Some(r.id.as_str())
        );
        let _ = writeln!(
            out,
            "route {} {:?} svc={:?} {} {} {} {:?} {} {} [{}] {:?}",
            r.id,
            r.name,
            r.service.as_ref().map(|s| &s.id),
            r.strip_path,
            r.preserve_host,
            r.https_redirect_status_code,
            r.path_handling,
            r.request_buffering,
            r.response_buffering,
            r.plugins.fingerprint(),
            r.row
        );
        if let Some(svc) = &r.service {
            // a route's service is the snapshot's own (not a stale copy)
            assert!(
                Arc::ptr_eq(svc, s.services.get(&svc.id).unwrap()),
                "route {}",
                r.id
            );
        }
    }
    let mut specs: Vec<_> = s.router.routes().map(|(_, r)| r).collect();
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    let _ = writeln!(out, "router {} {specs:?}", s.router.matcher_count());
    let _ = writeln!(out, "routing {}", routing(s));
    let mut services: Vec<_> = s.services.values().collect();
    services.sort_by(|a, b| a.id.cmp(&b.id));
    for v in services {
        let _ = writeln!(
            out,
            "service {} {:?} {} {}:{} {:?} {} {:?} {:?} {:?} {} {} {} {:?}",
            v.id,
            v.name,
            v.protocol,
            v.host,
            v.port,
            v.path,
            v.retries,
            v.connect_timeout,
            v.write_timeout,
            v.read_timeout,
            v.enabled,
            v.tls.is_some(),
            v.tls_profile,
            v.row
        );
    }
    let mut ups: Vec<_> = s.upstreams.iter().collect();
    ups.sort_by(|a, b| a.0.cmp(b.0));
    for (name, b) in ups {
        let _ = writeln!(out, "upstream {name} {b:?}");
    }
    let mut certs: Vec<_> = s.certificates.exact.keys().collect();
    certs.sort();
    let _ = writeln!(out, "certs {certs:?} {}", s.certificates_by_id.len());
    let _ = writeln!(out, "plugins {}", s.plugins.fingerprint());
    out
}

/// Which route (and how) each of a set of requests matches.
fn routing(s: &Snapshot) -> String {
    let mut out = String::new();
    for host in ["", "a.test", "x.b.test", "c.foo"] {
        for path in ["/", "/a", "/a/b", "/b", "/r12", "/r1x", "/zz"] {
            for header in [None, Some("1"), Some("v3")] {
                let lookup = move |n: &str| if n == "x-v" { header } else { None };
                let req = tollgate_router::RequestInfo {
                    scheme: "http",
                    method: "GET",
                    host,
                    port: 80,
                    path,
                    sni: None,
                    headers: &lookup,
                };
                let m = s.router.find(&req).map(|m| {
                    assert_eq!(s.routes[m.route_index].id, m.route_id);
                    (m.route_id, m.matched_path, m.prefix_len, m.priority)
                });
                let _ = write!(out, "{m:?} ");
            }
        }
    }
    out
}

#[test]
fn incremental_snapshots_equal_full_builds() {
    let consumers: SharedConsumers =
        Arc::new(arc_swap::ArcSwap::from_pointee(ConsumerIndex::default()));
    let (mut kept_router, mut reads_rows, mut steps) = (0, 0, 0);
    for seed in 1..=12u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut model = Model::default();
        let mut snap = Snapshot::build_with(&model.dataset(), consumers.clone()).unwrap();
        for step in 0..150 {
            let mut edits = Vec::new();
            for _ in 0..1 + r.below(3) {
                model.write(&mut r, &mut edits);
            }
            let full = Snapshot::build_with(&model.dataset(), consumers.clone());
            let next = snap.apply(edits);
            let (full, next) = match (full, next) {
                (Ok(f), Ok(n)) => (f, n),
                (Err(a), Err(b)) => {
                    assert_eq!(a, b, "seed {seed} step {step}");
                    continue;
                }
                (f, n) => panic!(
                    "seed {seed} step {step}: full {:?}, incremental {:?}",
                    f.err(),
                    n.err()
                ),
            };
            if let Some(n) = &next {
                kept_router += usize::from(Arc::ptr_eq(&n.router, &snap.router));
            }
            let next = next.unwrap_or(snap);
            assert_eq!(
                fingerprint(&next),
                fingerprint(&full),
                "seed {seed} step {step}"
            );
            steps += 1;
            reads_rows += usize::from(next.plugins.reads_router_rows());
            snap = next;
        }
    }
    assert!(steps > 1000, "{steps} steps compared");
    assert!(reads_rows > 0, "no step had a plugin reading router rows");
    assert!(kept_router > 0, "no step kept the router");
}

#[test]
fn a_plugin_write_keeps_the_router_and_the_other_routes() {
    let route = |n: usize, path: &str| {
        processed(
            "routes",
            json!({"id": uuid(2, n), "paths": [path], "service": {"id": uuid(1, 0)}}),
        )
    };
    let data: Dataset = [
        (
            "services".to_string(),
            vec![processed(
                "services",
                json!({"id": uuid(1, 0), "host": "example.com"}),
            )],
        ),
        ("routes".to_string(), vec![route(0, "/a"), route(1, "/b")]),
    ]
    .into_iter()
    .collect();
    let consumers: SharedConsumers =
        Arc::new(arc_swap::ArcSwap::from_pointee(ConsumerIndex::default()));
    let first = Snapshot::build_with(&data, consumers).unwrap();
    let plugin = json!({
        "id": uuid(6, 0), "name": "cors", "config": {}, "enabled": true,
        "protocols": ["http"], "route": {"id": uuid(2, 1)}, "service": null,
        "consumer": null, "instance_name": null,
    });
    let Value::Object(plugin) = plugin else {
        unreachable!()
    };
    let edit = Edit {
        entity: "plugins",
        id: uuid(6, 0).as_str().into(),
        new: Some(plugin),
    };
    let next = first.apply(vec![edit]).unwrap().unwrap();
    assert!(Arc::ptr_eq(&first.router, &next.router));
    assert!(Arc::ptr_eq(&first.routes[0], &next.routes[0]));
    assert!(!Arc::ptr_eq(&first.routes[1], &next.routes[1]));
    assert!(next.routes[1].plugins.fingerprint().starts_with("cors:"));
    // a consumer write touches nothing the snapshot is built from
    let other = Edit {
        entity: "consumers",
        id: "c".into(),
        new: None,
    };
    assert!(next.apply(vec![other]).unwrap().is_none());
}
