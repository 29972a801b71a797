//! Consumers and their credentials, indexed for the request path: every lookup an auth
//! plugin makes is a hash-map hit or two here, never a database call.
//!
//! The index is built from the entities in [`ENTITIES`] and swapped independently of the
//! proxy snapshot, so that a consumer or credential write never recompiles the router.
//!
//! # Building and updating
//!
//! Rows come in as JSON text (the store's `data` column, see [`ConsumerIndex::put_text`])
//! or as loaded maps ([`ConsumerIndex::build`]); either way each row is read into a small
//! borrowed [`RowView`], never a `serde_json::Map`, and only the fields the plugins use
//! are kept.
//!
//! Every map is split into shards, each behind its own `Arc`: [`ConsumerIndex::apply`]
//! on a clone of the current index copies only the shards a change touches (a few
//! hundred entries even with a million consumers), so one new credential takes effect
//! in microseconds without a rebuild, and a lookup stays a shard pick plus one hash hit.
//! Credentials refer to their consumer by id, so a consumer update (new username, an acl
//! group more) never has to rewrite its credentials; a credential whose consumer is gone
//! finds nothing.
//!
//! Adding a credential entity: list it in [`ENTITIES`] (after `consumers`), give it a
//! struct implementing [`Credential`] and a map, and an arm in [`ConsumerIndex::creds`].

use serde::Deserialize;
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use tollgate_model::schema::is_uuid;

/// An entity row, as the store loads it.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// The entities the index is built from, parents first (`consumers` before anything
/// that refers to them).
pub const ENTITIES: &[&str] = &[
    "consumers",
    "keyauth_credentials",
    "basicauth_credentials",
    "acls",
    "jwt_secrets",
    "hmacauth_credentials",
];

#[derive(Debug)]
pub struct Consumer {
    pub id: Arc<str>,
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

#[derive(Clone, Debug)]
pub struct KeyAuthCredential {
    /// The credential's id followed by its key: one allocation for both (a million keys
    /// are a million of these).
    text: Box<str>,
    id_len: u32,
    /// Unix seconds; 0 = no ttl.
    expires_at: u64,
    consumer: Arc<str>,
}

impl KeyAuthCredential {
    pub fn id(&self) -> &str {
        &self.text[..self.id_len as usize]
    }
    pub fn key(&self) -> &str {
        &self.text[self.id_len as usize..]
    }
    /// Unix seconds; `None` = no ttl.
    pub fn expires_at(&self) -> Option<u64> {
        (self.expires_at != 0).then_some(self.expires_at)
    }
}

#[derive(Clone, Debug)]
pub struct BasicAuthCredential {
    pub id: Box<str>,
    pub username: Box<str>,
    consumer: Arc<str>,
    /// Kong's hash: hex SHA-1 of password .. consumer id.
    pub password: Box<str>,
}

#[derive(Clone, Debug)]
pub struct JwtSecret {
    pub id: Box<str>,
    pub key: Box<str>,
    pub secret: Option<Box<str>>,
    pub rsa_public_key: Option<Box<str>>,
    /// Kong's default is HS256.
    pub algorithm: Box<str>,
    consumer: Arc<str>,
}

#[derive(Clone, Debug)]
pub struct HmacAuthCredential {
    pub id: Box<str>,
    pub username: Box<str>,
    pub secret: Box<str>,
    consumer: Arc<str>,
}

/// A string field that borrows from the row text unless it had escapes.
#[derive(Debug, Default)]
pub struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Deserialize)]
pub struct ForeignKey<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
}

/// The fields of a consumer, credential or acl row the index reads; everything else in
/// the row is skipped unparsed. Fields of the wrong type make the row unreadable.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RowView<'a> {
    #[serde(borrow)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub username: Option<Str<'a>>,
    #[serde(borrow)]
    pub custom_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub key: Option<Str<'a>>,
    #[serde(borrow)]
    pub password: Option<Str<'a>>,
    #[serde(borrow)]
    pub secret: Option<Str<'a>>,
    #[serde(borrow)]
    pub rsa_public_key: Option<Str<'a>>,
    #[serde(borrow)]
    pub algorithm: Option<Str<'a>>,
    #[serde(borrow)]
    pub group: Option<Str<'a>>,
    #[serde(borrow)]
    pub consumer: Option<ForeignKey<'a>>,
    /// Seconds left, as [`ConsumerIndex::build`]'s rows report a ttl.
    pub ttl: Option<u64>,
}

impl<'a> RowView<'a> {
    pub fn parse(text: &'a str) -> Option<RowView<'a>> {
        serde_json::from_str(text).ok()
    }

    pub fn of(row: &'a Row) -> Option<RowView<'a>> {
        RowView::deserialize(row).ok()
    }

    fn consumer_id(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| &*c.id)
    }
}

fn st<'v>(v: &'v Option<Str<'_>>) -> Option<&'v str> {
    v.as_deref()
}

/// A credential entity: how its lookup key and record come out of a row.
pub trait Credential: Clone {
    /// The value the plugin looks the credential up by.
    fn key<'v>(row: &'v RowView<'_>) -> Option<&'v str>;
    /// The record, given its consumer's id and its absolute expiry (Unix seconds).
    fn from_row(row: &RowView<'_>, consumer: Arc<str>, expires_at: Option<u64>) -> Option<Self>;
    /// What [`Credential::key`] read, kept in the record (the set's key).
    fn lookup_key(&self) -> &str;
    fn id(&self) -> &str;
    fn consumer_id(&self) -> &str;
}

impl Credential for KeyAuthCredential {
    fn key<'v>(row: &'v RowView<'_>) -> Option<&'v str> {
        st(&row.key)
    }
    fn from_row(row: &RowView<'_>, consumer: Arc<str>, expires_at: Option<u64>) -> Option<Self> {
        let (id, key) = (st(&row.id)?, st(&row.key)?);
        Some(KeyAuthCredential {
            text: [id, key].concat().into(),
            id_len: u32::try_from(id.len()).ok()?,
            // An expiry at 0 is long past: 1 keeps it expired without meaning "no ttl".
            expires_at: expires_at.map_or(0, |t| t.max(1)),
            consumer,
        })
    }
    fn lookup_key(&self) -> &str {
        self.key()
    }
    fn id(&self) -> &str {
        &self.text[..self.id_len as usize]
    }
    fn consumer_id(&self) -> &str {
        &self.consumer
    }
}

impl Credential for BasicAuthCredential {
    fn key<'v>(row: &'v RowView<'_>) -> Option<&'v str> {
        st(&row.username)
    }
    fn from_row(row: &RowView<'_>, consumer: Arc<str>, _: Option<u64>) -> Option<Self> {
        Some(BasicAuthCredential {
            id: st(&row.id)?.into(),
            username: st(&row.username)?.into(),
            consumer,
            password: st(&row.password)?.into(),
        })
    }
    fn lookup_key(&self) -> &str {
        &self.username
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn consumer_id(&self) -> &str {
        &self.consumer
    }
}

impl Credential for JwtSecret {
    fn key<'v>(row: &'v RowView<'_>) -> Option<&'v str> {
        st(&row.key)
    }
    fn from_row(row: &RowView<'_>, consumer: Arc<str>, _: Option<u64>) -> Option<Self> {
        Some(JwtSecret {
            id: st(&row.id)?.into(),
            key: st(&row.key)?.into(),
            secret: st(&row.secret).map(Into::into),
            rsa_public_key: st(&row.rsa_public_key).map(Into::into),
            algorithm: st(&row.algorithm).unwrap_or("HS256").into(),
            consumer,
        })
    }
    fn lookup_key(&self) -> &str {
        &self.key
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn consumer_id(&self) -> &str {
        &self.consumer
    }
}

impl Credential for HmacAuthCredential {
    fn key<'v>(row: &'v RowView<'_>) -> Option<&'v str> {
        st(&row.username)
    }
    fn from_row(row: &RowView<'_>, consumer: Arc<str>, _: Option<u64>) -> Option<Self> {
        Some(HmacAuthCredential {
            id: st(&row.id)?.into(),
            username: st(&row.username)?.into(),
            secret: st(&row.secret)?.into(),
            consumer,
        })
    }
    fn lookup_key(&self) -> &str {
        &self.username
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn consumer_id(&self) -> &str {
        &self.consumer
    }
}

/// A hash set split into a power-of-two number of shards, each shared copy-on-write:
/// a clone costs one reference count per shard, and a write to a clone copies only the
/// shard it lands in. Elements are looked up by the `str` they borrow as (see [`Keyed`],
/// [`ById`], [`ByUsername`]), so a key is stored once, inside its element.
#[derive(Clone, Debug)]
struct Sharded<T> {
    /// Picks the shard; independent of the shards' own hashers so that the keys of one
    /// shard still spread over its buckets.
    pick: RandomState,
    shards: Vec<Arc<HashSet<T>>>,
}

impl<T> Default for Sharded<T> {
    fn default() -> Self {
        Sharded::new(1)
    }
}

impl<T> Sharded<T> {
    fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        Sharded {
            pick: RandomState::new(),
            shards: (0..n).map(|_| Arc::new(HashSet::new())).collect(),
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }
}

impl<T: Borrow<str> + Hash + Eq + Clone> Sharded<T> {
    fn at(&self, key: &str) -> usize {
        (self.pick.hash_one(key) as usize) & (self.shards.len() - 1)
    }

    fn get(&self, key: &str) -> Option<&T> {
        self.shards[self.at(key)].get(key)
    }

    fn shard_mut(&mut self, key: &str) -> &mut HashSet<T> {
        let i = self.at(key);
        Arc::make_mut(&mut self.shards[i])
    }

    /// Adds `v`, replacing the element with the same key.
    fn insert(&mut self, v: T) {
        self.shard_mut(v.borrow()).replace(v);
    }

    fn remove(&mut self, key: &str) -> Option<T> {
        // Only copy the shard when there is something to remove.
        self.get(key)?;
        self.shard_mut(key).take(key)
    }
}

/// Implements `Hash`/`Eq`/`Borrow<str>` for a set element by the text it is looked up
/// by, so that `set.get(key: &str)` finds it (`Borrow` requires the same hash as `str`).
macro_rules! keyed_by_str {
    ($t:ty, [$($g:tt)*], |$v:ident| $key:expr) => {
        impl<$($g)*> Borrow<str> for $t {
            fn borrow(&self) -> &str {
                let $v = self;
                $key
            }
        }
        impl<$($g)*> Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                Borrow::<str>::borrow(self).hash(h)
            }
        }
        impl<$($g)*> PartialEq for $t {
            fn eq(&self, o: &Self) -> bool {
                Borrow::<str>::borrow(self) == Borrow::<str>::borrow(o)
            }
        }
        impl<$($g)*> Eq for $t {}
    };
}

/// A credential as a set element, keyed by [`Credential::lookup_key`].
#[derive(Clone, Debug)]
struct Keyed<C>(C);
keyed_by_str!(Keyed<C>, [C: Credential], |v| v.0.lookup_key());

/// A consumer keyed by id.
#[derive(Clone, Debug)]
struct ById(Arc<Consumer>);
keyed_by_str!(ById, [], |v| &v.0.id);

/// A consumer keyed by username (only consumers that have one are in the set).
#[derive(Clone, Debug)]
struct ByUsername(Arc<Consumer>);
keyed_by_str!(ByUsername, [], |v| v
    .0
    .username
    .as_deref()
    .unwrap_or_default());

/// How many shards each map gets for about `rows` entries: a few hundred entries each,
/// so a copy-on-write of one shard stays in the microseconds.
fn shards_for(rows: usize) -> usize {
    (rows / 512).clamp(1, 1024).next_power_of_two()
}

#[derive(Clone, Debug, Default)]
pub struct ConsumerIndex {
    by_id: Sharded<ById>,
    by_username: Sharded<ByUsername>,
    keyauth: Sharded<Keyed<KeyAuthCredential>>,
    basicauth: Sharded<Keyed<BasicAuthCredential>>,
    jwt_secrets: Sharded<Keyed<JwtSecret>>,
    hmacauth: Sharded<Keyed<HmacAuthCredential>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Adds or drops the credential `row` in `map`.
fn put_cred<C: Credential>(
    map: &mut Sharded<Keyed<C>>,
    by_id: &Sharded<ById>,
    row: &RowView<'_>,
    expires_at: Option<u64>,
) -> bool {
    let (Some(_), Some(c)) = (C::key(row), row.consumer_id()) else {
        return false;
    };
    // Share the consumer's id text when the consumer is known.
    let consumer = by_id
        .get(c)
        .map(|c| c.0.id.clone())
        .unwrap_or_else(|| c.into());
    match C::from_row(row, consumer, expires_at) {
        Some(cred) => {
            map.insert(Keyed(cred));
            true
        }
        None => false,
    }
}

fn remove_cred<C: Credential>(map: &mut Sharded<Keyed<C>>, row: &RowView<'_>) -> bool {
    let (Some(key), Some(id)) = (C::key(row), st(&row.id)) else {
        return false;
    };
    // Another credential may hold the key by now (a replay of older events).
    if map.get(key).is_some_and(|c| c.0.id() == id) {
        map.remove(key);
    }
    true
}

/// Which credential map an entity goes to.
enum Creds<'i> {
    KeyAuth(&'i mut Sharded<Keyed<KeyAuthCredential>>),
    BasicAuth(&'i mut Sharded<Keyed<BasicAuthCredential>>),
    Jwt(&'i mut Sharded<Keyed<JwtSecret>>),
    Hmac(&'i mut Sharded<Keyed<HmacAuthCredential>>),
}

impl ConsumerIndex {
    /// An empty index sized for about `rows` consumers and credentials in all.
    pub fn with_capacity(rows: usize) -> ConsumerIndex {
        let n = shards_for(rows);
        ConsumerIndex {
            by_id: Sharded::new(n),
            by_username: Sharded::new(n),
            keyauth: Sharded::new(n),
            basicauth: Sharded::new(n),
            jwt_secrets: Sharded::new(n),
            hmacauth: Sharded::new(n),
        }
    }

    /// Builds the index from loaded rows (credentials of unknown consumers find nothing).
    pub fn build(data: &BTreeMap<String, Vec<Row>>) -> ConsumerIndex {
        let total = data.values().map(Vec::len).sum();
        let mut ix = ConsumerIndex::with_capacity(total);
        for entity in ENTITIES {
            for row in data.get(*entity).map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(v) = RowView::of(row) {
                    ix.put(entity, &v, None);
                }
            }
        }
        ix
    }

    /// Adds one stored row (JSON text) of an entity in [`ENTITIES`]; `expires_at` is the
    /// store's absolute expiry. Rows are added parents first, as [`ENTITIES`] lists them.
    /// Returns false when the row cannot be read or the entity is not indexed.
    pub fn put_text(&mut self, entity: &str, text: &str, expires_at: Option<i64>) -> bool {
        match RowView::parse(text) {
            Some(v) => self.put(entity, &v, expires_at),
            None => false,
        }
    }

    /// Applies one committed row change to this index (a copy of the serving one, which
    /// is then swapped in): `old` is the row before (updates and deletes), `new` the row
    /// after with its expiry (creates and updates). Applying a change twice, or one the
    /// index already reflects, is harmless. Returns false when the change cannot be
    /// applied here — an entity the index does not know, an unreadable row, a credential
    /// delete without its old row — and the caller must rebuild from the store.
    pub fn apply(
        &mut self,
        entity: &str,
        id: &str,
        old: Option<&str>,
        new: Option<(&str, Option<i64>)>,
    ) -> bool {
        if !ENTITIES.contains(&entity) {
            return false;
        }
        let old = match old.map(RowView::parse) {
            Some(None) => return false,
            Some(Some(v)) => Some(v),
            None => None,
        };
        let new_view = match new.map(|(t, _)| RowView::parse(t)) {
            Some(None) => return false,
            Some(Some(v)) => Some(v),
            None => None,
        };
        if entity == "consumers" {
            return match &new_view {
                Some(v) => self.put(entity, v, None),
                None => {
                    self.remove_consumer(id);
                    true
                }
            };
        }
        if old.is_none() && new_view.is_none() {
            return false;
        }
        if let Some(o) = &old {
            if !self.remove(entity, o) {
                return false;
            }
        }
        match (&new_view, new) {
            (Some(v), Some((_, exp))) => self.put(entity, v, exp),
            _ => true,
        }
    }

    fn creds(&mut self, entity: &str) -> Option<Creds<'_>> {
        Some(match entity {
            "keyauth_credentials" => Creds::KeyAuth(&mut self.keyauth),
            "basicauth_credentials" => Creds::BasicAuth(&mut self.basicauth),
            "jwt_secrets" => Creds::Jwt(&mut self.jwt_secrets),
            "hmacauth_credentials" => Creds::Hmac(&mut self.hmacauth),
            _ => return None,
        })
    }

    fn put(&mut self, entity: &str, row: &RowView<'_>, expires_at: Option<i64>) -> bool {
        match entity {
            "consumers" => self.put_consumer(row),
            "acls" => self.change_group(row, true),
            _ => {
                // The store reports a ttl either as an absolute expiry or, in loaded rows,
                // as seconds left.
                let expires_at = match expires_at {
                    Some(t) => Some(t.max(0) as u64),
                    None => row.ttl.map(|ttl| now_secs() + ttl),
                };
                // Disjoint field borrows: cloning `by_id` here (1,024 shard handles) was
                // half of the index's build time.
                let by_id = &self.by_id;
                match entity {
                    "keyauth_credentials" => put_cred(&mut self.keyauth, by_id, row, expires_at),
                    "basicauth_credentials" => {
                        put_cred(&mut self.basicauth, by_id, row, expires_at)
                    }
                    "jwt_secrets" => put_cred(&mut self.jwt_secrets, by_id, row, expires_at),
                    "hmacauth_credentials" => put_cred(&mut self.hmacauth, by_id, row, expires_at),
                    _ => false,
                }
            }
        }
    }

    fn remove(&mut self, entity: &str, row: &RowView<'_>) -> bool {
        match entity {
            "acls" => self.change_group(row, false),
            _ => match self.creds(entity) {
                Some(Creds::KeyAuth(m)) => remove_cred(m, row),
                Some(Creds::BasicAuth(m)) => remove_cred(m, row),
                Some(Creds::Jwt(m)) => remove_cred(m, row),
                Some(Creds::Hmac(m)) => remove_cred(m, row),
                None => false,
            },
        }
    }

    /// Stores `c` under its id and username.
    fn set_consumer(&mut self, c: Consumer) {
        let c = Arc::new(c);
        if c.username.is_some() {
            self.by_username.insert(ByUsername(c.clone()));
        }
        self.by_id.insert(ById(c));
    }

    fn put_consumer(&mut self, row: &RowView<'_>) -> bool {
        let Some(id) = st(&row.id) else { return false };
        let username = st(&row.username);
        let (id, groups) = match self.by_id.get(id).map(|c| c.0.clone()) {
            Some(old) => {
                if let Some(u) = old.username.as_deref().filter(|u| Some(*u) != username) {
                    if self.by_username.get(u).is_some_and(|c| c.0.id == old.id) {
                        self.by_username.remove(u);
                    }
                }
                (old.id.clone(), old.groups.clone())
            }
            None => (Arc::from(id), Box::default()),
        };
        self.set_consumer(Consumer {
            id,
            username: username.map(Into::into),
            custom_id: st(&row.custom_id).map(Into::into),
            groups,
        });
        true
    }

    /// Drops a consumer. Its credentials stop matching at once (they find no consumer);
    /// the store's cascade deletes remove them from the maps.
    fn remove_consumer(&mut self, id: &str) {
        if let Some(ById(old)) = self.by_id.remove(id) {
            if let Some(u) = old.username.as_deref() {
                if self.by_username.get(u).is_some_and(|c| c.0.id == old.id) {
                    self.by_username.remove(u);
                }
            }
        }
    }

    /// Adds (`add`) or removes an acl row's group on its consumer.
    fn change_group(&mut self, row: &RowView<'_>, add: bool) -> bool {
        let (Some(c), Some(g)) = (row.consumer_id(), st(&row.group)) else {
            return false;
        };
        // An acl of an unknown consumer matches nothing, like any orphan.
        let Some(old) = self.by_id.get(c).map(|c| c.0.clone()) else {
            return true;
        };
        let has = old.groups.iter().any(|x| &**x == g);
        let groups: Box<[Box<str>]> = match (add, has) {
            (true, false) => old.groups.iter().cloned().chain([g.into()]).collect(),
            (false, true) => old.groups.iter().filter(|x| &***x != g).cloned().collect(),
            _ => return true,
        };
        self.set_consumer(Consumer {
            id: old.id.clone(),
            username: old.username.clone(),
            custom_id: old.custom_id.clone(),
            groups,
        });
        true
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn consumer_by_id(&self, id: &str) -> Option<&Consumer> {
        self.by_id.get(id).map(|c| &*c.0)
    }

    /// `kong.client.load_consumer(value, true)`: by id when it is a UUID, else by username.
    pub fn consumer_by_id_or_username(&self, v: &str) -> Option<&Consumer> {
        if is_uuid(v) {
            if let Some(c) = self.consumer_by_id(v) {
                return Some(c);
            }
        }
        self.by_username.get(v).map(|c| &*c.0)
    }

    fn with_consumer<'s, C: Credential>(&'s self, c: &'s C) -> Option<(&'s C, &'s Consumer)> {
        Some((c, self.consumer_by_id(c.consumer_id())?))
    }

    /// The key-auth credential for `key` with its consumer, unless it expired by `now`.
    pub fn keyauth(&self, key: &str, now: u64) -> Option<(&KeyAuthCredential, &Consumer)> {
        let c = &self.keyauth.get(key)?.0;
        if c.expires_at().is_some_and(|t| t <= now) {
            return None;
        }
        self.with_consumer(c)
    }

    pub fn basicauth(&self, username: &str) -> Option<(&BasicAuthCredential, &Consumer)> {
        self.with_consumer(&self.basicauth.get(username)?.0)
    }

    /// The jwt secret whose `key` is the token's key claim, with its consumer.
    pub fn jwt_secret(&self, key: &str) -> Option<(&JwtSecret, &Consumer)> {
        self.with_consumer(&self.jwt_secrets.get(key)?.0)
    }

    /// The hmac-auth credential for `username`, with its consumer.
    pub fn hmacauth(&self, username: &str) -> Option<(&HmacAuthCredential, &Consumer)> {
        self.with_consumer(&self.hmacauth.get(username)?.0)
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
        assert_eq!(cred.id(), "k1");
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.groups.len(), 2);
        assert!(ix.keyauth("old", now).is_none(), "expired");
        assert!(ix.keyauth("orphan", now).is_none());
        assert!(ix.consumer_by_id_or_username("alice").is_some());
        assert!(ix.consumer_by_id_or_username(c1).is_some());
        assert!(ix.consumer_by_id_or_username("bob").is_none());
    }

    const C1: &str = "11111111-1111-4111-8111-111111111111";
    const C2: &str = "22222222-2222-4222-8222-222222222222";

    fn text(v: serde_json::Value) -> String {
        v.to_string()
    }

    /// alice with key `k-alice` and group `admin`, on an index with many shards.
    fn base() -> ConsumerIndex {
        let mut ix = ConsumerIndex::with_capacity(1 << 20);
        assert!(ix.put_text(
            "consumers",
            &text(json!({"id": C1, "username": "alice", "tags": ["x"], "created_at": 1})),
            None
        ));
        assert!(ix.put_text(
            "keyauth_credentials",
            &text(json!({"id": "ka", "key": "k-alice", "consumer": {"id": C1}})),
            None
        ));
        assert!(ix.put_text(
            "acls",
            &text(json!({"id": "a1", "group": "admin", "consumer": {"id": C1}})),
            None
        ));
        ix
    }

    #[test]
    fn reads_stored_text_including_escapes_and_absolute_expiry() {
        let mut ix = base();
        let key = "we\"ird\\key\u{e9}";
        let row = text(json!({"id": "kb", "key": key, "consumer": {"id": C1}}));
        assert!(row.contains("\\\""), "the text has escapes: {row}");
        assert!(ix.put_text("keyauth_credentials", &row, None));
        assert_eq!(ix.keyauth(key, 0).unwrap().0.id(), "kb");
        let exp = now_secs() as i64 + 100;
        let row = text(json!({"id": "kc", "key": "ttl", "consumer": {"id": C1}}));
        assert!(ix.put_text("keyauth_credentials", &row, Some(exp)));
        assert!(ix.keyauth("ttl", exp as u64 - 1).is_some());
        assert!(ix.keyauth("ttl", exp as u64).is_none());
        assert!(!ix.put_text("keyauth_credentials", "{not json", None));
        assert!(!ix.put_text("services", &text(json!({"id": "s"})), None));
        let (c, consumer) = ix.keyauth("k-alice", 0).unwrap();
        assert_eq!((c.id(), &*consumer.id), ("ka", C1));
        assert_eq!(&*consumer.groups, [Box::from("admin")]);
    }

    #[test]
    fn applies_inserts_updates_and_deletes_copy_on_write() {
        let serving = Arc::new(base());
        let mut next = (*serving).clone();
        // Insert a consumer and its credential.
        let bob = text(json!({"id": C2, "username": "bob"}));
        assert!(next.apply("consumers", C2, None, Some((&bob, None))));
        let kb = text(json!({"id": "kb", "key": "k-bob", "consumer": {"id": C2}}));
        assert!(next.apply("keyauth_credentials", "kb", None, Some((&kb, None))));
        assert_eq!(
            next.keyauth("k-bob", 0).unwrap().1.username.as_deref(),
            Some("bob")
        );
        // The serving index is untouched.
        assert!(serving.keyauth("k-bob", 0).is_none());
        assert!(serving.consumer_by_id(C2).is_none());
        assert_eq!(serving.len(), 1);
        assert_eq!(next.len(), 2);

        // Update: the key changes, the old one stops working.
        let kb2 = text(json!({"id": "kb", "key": "k-bob-2", "consumer": {"id": C2}}));
        assert!(next.apply("keyauth_credentials", "kb", Some(&kb), Some((&kb2, None))));
        assert!(next.keyauth("k-bob", 0).is_none());
        assert!(next.keyauth("k-bob-2", 0).is_some());

        // A renamed consumer keeps its groups and credentials, under its new name only.
        let alice = text(json!({"id": C1, "username": "alice"}));
        let alice2 = text(json!({"id": C1, "username": "alicia", "custom_id": "A"}));
        assert!(next.apply("consumers", C1, Some(&alice), Some((&alice2, None))));
        assert!(next.consumer_by_id_or_username("alice").is_none());
        let c = next.consumer_by_id_or_username("alicia").unwrap();
        assert_eq!((c.custom_id.as_deref(), c.groups.len()), (Some("A"), 1));
        assert_eq!(
            next.keyauth("k-alice", 0).unwrap().1.username.as_deref(),
            Some("alicia")
        );

        // acl groups come and go.
        let a2 = text(json!({"id": "a2", "group": "dev", "consumer": {"id": C1}}));
        assert!(next.apply("acls", "a2", None, Some((&a2, None))));
        assert_eq!(next.consumer_by_id(C1).unwrap().groups.len(), 2);
        assert!(next
            .keyauth("k-alice", 0)
            .unwrap()
            .1
            .in_any_group(&["dev".into()]));
        assert!(next.apply("acls", "a2", Some(&a2), None));
        assert!(!next
            .keyauth("k-alice", 0)
            .unwrap()
            .1
            .in_any_group(&["dev".into()]));

        // Delete a credential.
        assert!(next.apply("keyauth_credentials", "kb", Some(&kb2), None));
        assert!(next.keyauth("k-bob-2", 0).is_none());
        assert!(next.consumer_by_id(C2).is_some());
    }

    #[test]
    fn cascading_consumer_delete_and_replays() {
        let mut ix = base();
        let ka = text(json!({"id": "ka", "key": "k-alice", "consumer": {"id": C1}}));
        let alice = text(json!({"id": C1, "username": "alice"}));
        // A consumer delete alone already disables its credentials …
        let mut only_parent = ix.clone();
        assert!(only_parent.apply("consumers", C1, Some(&alice), None));
        assert!(only_parent.keyauth("k-alice", 0).is_none());
        assert!(only_parent.consumer_by_id_or_username("alice").is_none());
        // … and the cascade's events (children first) drop them from the maps.
        assert!(ix.apply("keyauth_credentials", "ka", Some(&ka), None));
        assert!(ix.apply("consumers", C1, Some(&alice), None));
        assert!(ix.keyauth.get("k-alice").is_none());
        assert!(ix.is_empty());
        // Replaying older events, or the same ones again, converges to the same state.
        assert!(ix.apply("keyauth_credentials", "ka", Some(&ka), None));
        assert!(ix.apply("consumers", C1, Some(&alice), None));
        assert!(ix.is_empty());
        // A new credential that took over a deleted key is not dropped by a stale delete.
        let mut ix = base();
        let kz = text(json!({"id": "kz", "key": "k-alice", "consumer": {"id": C1}}));
        assert!(ix.apply("keyauth_credentials", "ka", Some(&ka), None));
        assert!(ix.apply("keyauth_credentials", "kz", None, Some((&kz, None))));
        assert!(ix.apply("keyauth_credentials", "ka", Some(&ka), None));
        assert_eq!(ix.keyauth("k-alice", 0).unwrap().0.id(), "kz");
    }

    #[test]
    fn asks_for_a_rebuild_when_it_cannot_apply_a_change() {
        let mut ix = base();
        // A credential delete without its old row cannot find the key.
        assert!(!ix.apply("keyauth_credentials", "ka", None, None));
        // Unknown entities and unreadable rows.
        assert!(!ix.apply("services", "s", None, Some(("{}", None))));
        assert!(!ix.apply("consumers", C1, None, Some(("nope", None))));
        assert!(!ix.apply("acls", "a", Some("[1]"), None));
        // Rebuilding from the store's rows gives the same index as applying.
        let mut d = BTreeMap::new();
        d.insert(
            "consumers".to_string(),
            vec![row(json!({"id": C1, "username": "alice"}))],
        );
        d.insert(
            "keyauth_credentials".to_string(),
            vec![row(
                json!({"id": "ka", "key": "k-alice", "consumer": {"id": C1}}),
            )],
        );
        let rebuilt = ConsumerIndex::build(&d);
        assert_eq!(rebuilt.keyauth("k-alice", 0).unwrap().0.id(), "ka");
    }

    #[test]
    fn indexes_jwt_and_hmac_credentials_incrementally() {
        let mut ix = base();
        let j = text(json!({"id": "j1", "key": "iss-1", "secret": "s", "consumer": {"id": C1}}));
        assert!(ix.apply("jwt_secrets", "j1", None, Some((&j, None))));
        let (s, c) = ix.jwt_secret("iss-1").unwrap();
        assert_eq!((&*s.algorithm, &*c.id), ("HS256", C1));
        let h = text(json!({"id": "h1", "username": "hu", "secret": "x", "consumer": {"id": C1}}));
        assert!(ix.apply("hmacauth_credentials", "h1", None, Some((&h, None))));
        assert_eq!(&*ix.hmacauth("hu").unwrap().0.secret, "x");
        assert!(ix.apply("hmacauth_credentials", "h1", Some(&h), None));
        assert!(ix.hmacauth("hu").is_none());
    }
}
