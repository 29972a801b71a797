//! Consumers and their credentials, indexed for the request path: every lookup an auth
//! plugin makes is one hash-map hit here, never a database call.
//!
//! The index is built from the entities in [`ENTITIES`] and swapped independently of the
//! proxy snapshot, so that a consumer or credential write never recompiles the router.

use std::collections::{BTreeMap, HashMap};
use tollgate_model::schema::is_uuid;

/// An entity row, as the store loads it.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// The entities the index is built from.
pub const ENTITIES: &[&str] = &[
    "consumers",
    "keyauth_credentials",
    "basicauth_credentials",
    "acls",
];

#[derive(Debug)]
pub struct Consumer {
    pub id: Box<str>,
    pub username: Option<Box<str>>,
    pub custom_id: Option<Box<str>>,
    /// acl groups, in the store's order.
    pub groups: Box<[Box<str>]>,
}

impl Consumer {
    pub fn in_any_group(&self, groups: &[Box<str>]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}

#[derive(Debug)]
pub struct KeyAuthCredential {
    pub id: Box<str>,
    consumer: u32,
    /// Unix seconds; `None` = no ttl.
    pub expires_at: Option<u64>,
}

#[derive(Debug)]
pub struct BasicAuthCredential {
    pub id: Box<str>,
    pub username: Box<str>,
    consumer: u32,
    /// Kong's hash: hex SHA-1 of password .. consumer id.
    pub password: Box<str>,
}

#[derive(Debug, Default)]
pub struct ConsumerIndex {
    consumers: Vec<Consumer>,
    by_id: HashMap<Box<str>, u32>,
    by_username: HashMap<Box<str>, u32>,
    keyauth: HashMap<Box<str>, KeyAuthCredential>,
    basicauth: HashMap<Box<str>, BasicAuthCredential>,
}

fn s<'r>(row: &'r Row, k: &str) -> Option<&'r str> {
    row.get(k).and_then(|v| v.as_str())
}

fn fk<'r>(row: &'r Row, k: &str) -> Option<&'r str> {
    match row.get(k)? {
        serde_json::Value::Object(m) => m.get("id").and_then(|v| v.as_str()),
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ConsumerIndex {
    /// Builds the index from loaded rows (credentials of unknown consumers are skipped).
    pub fn build(data: &BTreeMap<String, Vec<Row>>) -> ConsumerIndex {
        let rows = |name: &str| data.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let mut ix = ConsumerIndex::default();
        let consumers = rows("consumers");
        ix.consumers.reserve(consumers.len());
        ix.by_id.reserve(consumers.len());
        let mut groups: HashMap<&str, Vec<Box<str>>> = HashMap::new();
        for row in rows("acls") {
            if let (Some(c), Some(g)) = (fk(row, "consumer"), s(row, "group")) {
                groups.entry(c).or_default().push(g.into());
            }
        }
        for row in consumers {
            let Some(id) = s(row, "id") else { continue };
            let n = ix.consumers.len() as u32;
            if let Some(u) = s(row, "username") {
                ix.by_username.insert(u.into(), n);
            }
            ix.by_id.insert(id.into(), n);
            ix.consumers.push(Consumer {
                id: id.into(),
                username: s(row, "username").map(Into::into),
                custom_id: s(row, "custom_id").map(Into::into),
                groups: groups.remove(id).unwrap_or_default().into_boxed_slice(),
            });
        }
        // The store reports a credential's ttl as seconds left at load time.
        let now = now_secs();
        for row in rows("keyauth_credentials") {
            let (Some(id), Some(key), Some(c)) = (s(row, "id"), s(row, "key"), fk(row, "consumer"))
            else {
                continue;
            };
            let Some(&consumer) = ix.by_id.get(c) else {
                continue;
            };
            let expires_at = row.get("ttl").and_then(|v| v.as_u64()).map(|ttl| now + ttl);
            ix.keyauth.insert(
                key.into(),
                KeyAuthCredential {
                    id: id.into(),
                    consumer,
                    expires_at,
                },
            );
        }
        for row in rows("basicauth_credentials") {
            let (Some(id), Some(user), Some(pw), Some(c)) = (
                s(row, "id"),
                s(row, "username"),
                s(row, "password"),
                fk(row, "consumer"),
            ) else {
                continue;
            };
            let Some(&consumer) = ix.by_id.get(c) else {
                continue;
            };
            ix.basicauth.insert(
                user.into(),
                BasicAuthCredential {
                    id: id.into(),
                    username: user.into(),
                    consumer,
                    password: pw.into(),
                },
            );
        }
        ix
    }

    pub fn len(&self) -> usize {
        self.consumers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    pub fn consumer_by_id(&self, id: &str) -> Option<&Consumer> {
        self.by_id.get(id).map(|&i| &self.consumers[i as usize])
    }

    /// `kong.client.load_consumer(value, true)`: by id when it is a UUID, else by username.
    pub fn consumer_by_id_or_username(&self, v: &str) -> Option<&Consumer> {
        if is_uuid(v) {
            if let Some(c) = self.consumer_by_id(v) {
                return Some(c);
            }
        }
        self.by_username
            .get(v)
            .map(|&i| &self.consumers[i as usize])
    }

    /// The key-auth credential for `key` with its consumer, unless it expired by `now`.
    pub fn keyauth(&self, key: &str, now: u64) -> Option<(&KeyAuthCredential, &Consumer)> {
        let c = self.keyauth.get(key)?;
        if c.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        Some((c, &self.consumers[c.consumer as usize]))
    }

    pub fn basicauth(&self, username: &str) -> Option<(&BasicAuthCredential, &Consumer)> {
        let c = self.basicauth.get(username)?;
        Some((c, &self.consumers[c.consumer as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: serde_json::Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn indexes_consumers_credentials_and_groups() {
        let c1 = "11111111-1111-4111-8111-111111111111";
        let mut d = BTreeMap::new();
        d.insert(
            "consumers".into(),
            vec![row(
                json!({"id": c1, "username": "alice", "custom_id": null}),
            )],
        );
        d.insert(
            "keyauth_credentials".into(),
            vec![
                row(json!({"id": "k1", "key": "secret", "consumer": {"id": c1}})),
                row(json!({"id": "k2", "key": "old", "consumer": {"id": c1}, "ttl": 0})),
                row(json!({"id": "k3", "key": "orphan", "consumer": {"id": "nope"}})),
            ],
        );
        d.insert(
            "acls".into(),
            vec![
                row(json!({"id": "a1", "group": "admin", "consumer": {"id": c1}})),
                row(json!({"id": "a2", "group": "dev", "consumer": {"id": c1}})),
            ],
        );
        let ix = ConsumerIndex::build(&d);
        let now = now_secs();
        let (cred, c) = ix.keyauth("secret", now).unwrap();
        assert_eq!(&*cred.id, "k1");
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.groups.len(), 2);
        assert!(ix.keyauth("old", now).is_none(), "expired");
        assert!(ix.keyauth("orphan", now).is_none());
        assert!(ix.consumer_by_id_or_username("alice").is_some());
        assert!(ix.consumer_by_id_or_username(c1).is_some());
        assert!(ix.consumer_by_id_or_username("bob").is_none());
    }
}
