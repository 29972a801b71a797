//! Broadcasts to node-local caches (Kong's `cluster_events:broadcast`): a purge made on
//! one node reaches the subscribers of its channel on every node, carried by the same
//! `cluster_events` rows as the row changes (PostgreSQL, Cassandra), or delivered here
//! alone where the store has one node (SQLite, DB-less).
//!
//! Each node applies each broadcast exactly once: its own at once, inside
//! [`crate::Store::broadcast`] (so the Admin API answers after its own cache dropped the
//! entry), the others' when its feed replays them; the feed skips the rows this node
//! wrote by the sender id they carry.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::{Arc, RwLock};

/// What a node-local cache drops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purge {
    /// Everything the cache holds.
    All,
    /// Everything one instance holds (proxy-cache: one shared dictionary).
    Instance(String),
    /// One key of one instance.
    Key { instance: String, key: String },
}

/// A subscriber: called on the feed's task (or the broadcaster's, for this node's own),
/// so it must be quick and must not block.
pub type Subscriber = Arc<dyn Fn(&Purge) + Send + Sync>;

/// This node's subscribers, by channel, and the id its broadcasts carry.
pub struct Hub {
    node: String,
    subscribers: RwLock<Vec<(String, Subscriber)>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            // Per store, not per process: two stores in one process (tests) are two nodes.
            node: uuid::Uuid::new_v4().to_string(),
            subscribers: RwLock::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("node", &self.node).finish()
    }
}

/// The stored form: one object under its own tag, which row events never have.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    broadcast: Message<'a>,
}

#[derive(Serialize, Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    purge: Purge,
}

const TAG: &str = r#"{"broadcast":"#;

impl Hub {
    pub(crate) fn subscribe(&self, channel: &str, f: Subscriber) {
        let mut subs = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
        subs.push((channel.to_owned(), f));
    }

    /// Hands `purge` to this node's subscribers of `channel`.
    pub(crate) fn deliver(&self, channel: &str, purge: &Purge) {
        let subs = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for (_, f) in subs.iter().filter(|(c, _)| c == channel) {
            f(purge);
        }
    }

    /// The `cluster_events` data of a broadcast from this node.
    pub(crate) fn encode(&self, channel: &str, purge: &Purge) -> String {
        let m = Stored {
            broadcast: Message {
                from: Cow::Borrowed(&self.node),
                channel: Cow::Borrowed(channel),
                purge: purge.clone(),
            },
        };
        serde_json::to_string(&m).unwrap_or_default()
    }

    /// Delivers `data` when it is another node's broadcast; says whether it was a
    /// broadcast at all (else it is a row event for the caller to replay).
    pub(crate) fn receive(&self, data: &str) -> bool {
        if !data.starts_with(TAG) {
            return false;
        }
        match serde_json::from_str::<Stored<'_>>(data) {
            Ok(Stored { broadcast: m }) if m.from != self.node => {
                self.deliver(&m.channel, &m.purge)
            }
            Ok(_) => {}
            // A newer node's form this one cannot read: nothing to reload for it.
            Err(e) => tracing::warn!(error = %e, "unreadable broadcast ignored"),
        }
        true
    }

    /// After events may have been missed (purged before they were read, the database
    /// unreadable for a while): whatever a missed purge named may still be cached, so
    /// every subscriber drops everything.
    pub(crate) fn missed(&self) {
        let subs = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for (_, f) in subs.iter() {
            f(&Purge::All);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recorder(hub: &Hub, channel: &str) -> Arc<Mutex<Vec<Purge>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        hub.subscribe(
            channel,
            Arc::new(move |p| g.lock().unwrap().push(p.clone())),
        );
        got
    }

    #[test]
    fn stored_form_reaches_other_hubs_only() {
        let (a, b) = (Hub::default(), Hub::default());
        let (ga, gb) = (recorder(&a, "c"), recorder(&b, "c"));
        let other = recorder(&b, "other");
        for p in [
            Purge::All,
            Purge::Instance("d".into()),
            Purge::Key {
                instance: "d".into(),
                key: "k:1\"".into(),
            },
        ] {
            let data = a.encode("c", &p);
            assert!(a.receive(&data) && b.receive(&data), "{data}");
            assert_eq!(gb.lock().unwrap().pop(), Some(p));
        }
        assert!(
            ga.lock().unwrap().is_empty(),
            "the sender skips its own rows"
        );
        assert!(other.lock().unwrap().is_empty());
        assert!(!b.receive(r#"{"rows":[]}"#));
        assert!(b.receive(r#"{"broadcast":{"from":"x","channel":"c","purge":"new"}}"#));
        b.missed();
        assert_eq!(*other.lock().unwrap(), [Purge::All]);
    }
}
