//! The memory strategy (`strategies/memory.lua`): responses kept in a named shared
//! dictionary (Kong's `lua_shared_dict`), bounded in bytes, each entry with its own
//! storage TTL. The dictionaries belong to the node, not to a snapshot: they outlive
//! configuration changes, and the Admin API reaches them through [`caches`].

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Kong's `CACHE_VERSION`.
const VERSION: u32 = 1;

/// One cached response.
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    /// The response headers to replay (hop-by-hop, length and cache headers left out).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// When it was stored, in seconds since the epoch (`ngx.time()`).
    pub timestamp: u64,
    /// The resource's TTL (cache_ttl, or what Cache-Control / Expires said).
    pub ttl: f64,
    /// How long the dictionary keeps it; `None`: until evicted.
    pub storage_ttl: Option<Duration>,
}

impl Entry {
    /// The object Kong's Admin API returns for a cache key.
    pub fn to_json(&self) -> Value {
        let mut headers = Map::new();
        for (k, v) in &self.headers {
            let v = Value::from(String::from_utf8_lossy(v.as_bytes()));
            match headers.get_mut(k.as_str()) {
                Some(Value::Array(a)) => a.push(v),
                Some(old) => *old = json!([old.take(), v]),
                None => {
                    headers.insert(k.as_str().to_owned(), v);
                }
            }
        }
        json!({
            "status": self.status,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
            "body_len": self.body.len(),
            "timestamp": self.timestamp,
            "ttl": self.ttl,
            "version": VERSION,
        })
    }

    fn weight(key: &str, e: &Entry) -> u64 {
        let headers: usize = e
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        (key.len() + headers + e.body.len() + 64) as u64
    }
}

struct StorageTtl;

impl moka::Expiry<Box<str>, Arc<Entry>> for StorageTtl {
    fn expire_after_create(&self, _: &Box<str>, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        e.storage_ttl
    }
    fn expire_after_update(
        &self,
        _: &Box<str>,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        e.storage_ttl
    }
}

/// One shared dictionary.
pub struct Dict {
    cache: moka::sync::Cache<Box<str>, Arc<Entry>>,
    capacity: u64,
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dict")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Dict {
    pub fn new(capacity: u64) -> Dict {
        let cache = moka::sync::Cache::<Box<str>, Arc<Entry>>::builder()
            .max_capacity(capacity)
            .weigher(|k, e| u32::try_from(Entry::weight(k, e)).unwrap_or(u32::MAX))
            .expire_after(StorageTtl)
            .build();
        Dict { cache, capacity }
    }
    /// The largest entry worth collecting: a body past it could never be stored.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    pub fn fetch(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }
    /// Stores `entry` (replacing what `key` held); `false` when it cannot fit.
    pub fn store(&self, key: &str, entry: Entry) -> bool {
        if Entry::weight(key, &entry) > self.capacity {
            return false;
        }
        self.cache.insert(key.into(), Arc::new(entry));
        true
    }
    /// Drops `key`; whether it was there.
    pub fn purge(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }
    /// Drops every entry (`flush_all` + `flush_expired`).
    pub fn flush(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }
}

/// The node's shared dictionaries by name.
#[derive(Debug)]
pub struct Caches {
    dicts: HashMap<String, Arc<Dict>>,
}

/// The dictionaries Kong's nginx template sizes with `mem_cache_size`.
pub const KONG_DICTS: &[&str] = &["kong_db_cache", "kong_core_db_cache"];

impl Caches {
    /// Kong's dictionaries of `mem_cache_size` bytes, plus the ones
    /// `nginx_http_lua_shared_dict` declares (name, bytes).
    pub fn new(mem_cache_size: u64, declared: &[(String, u64)]) -> Caches {
        let mut dicts: HashMap<String, Arc<Dict>> = KONG_DICTS
            .iter()
            .map(|n| ((*n).to_owned(), Arc::new(Dict::new(mem_cache_size))))
            .collect();
        for (name, size) in declared {
            dicts.insert(name.clone(), Arc::new(Dict::new(*size)));
        }
        Caches { dicts }
    }
    pub fn dict(&self, name: &str) -> Option<&Arc<Dict>> {
        self.dicts.get(name)
    }
    /// Drops every entry of every dictionary.
    pub fn flush_all(&self) {
        self.dicts.values().for_each(|d| d.flush());
    }
}

static CACHES: OnceLock<Caches> = OnceLock::new();

/// Sets the node's dictionaries, once, before the first configuration is compiled
/// (later calls are ignored).
pub fn install(caches: Caches) {
    let _ = CACHES.set(caches);
}

/// The node's dictionaries (Kong's defaults at 128 MiB when [`install`] never ran).
pub fn caches() -> &'static Caches {
    CACHES.get_or_init(|| Caches::new(128 << 20, &[]))
}

/// `nginx_http_lua_shared_dict` (`name size[; name size]`) as (name, bytes).
pub fn parse_shared_dicts(v: &str) -> Vec<(String, u64)> {
    v.split(';')
        .filter_map(|d| {
            let mut it = d.split_whitespace();
            let (name, size) = (it.next()?, it.next()?);
            let (num, mult) = match size.as_bytes().last()? {
                b'k' | b'K' => (&size[..size.len() - 1], 1u64 << 10),
                b'm' | b'M' => (&size[..size.len() - 1], 1 << 20),
                b'g' | b'G' => (&size[..size.len() - 1], 1 << 30),
                _ => (size, 1),
            };
            Some((name.to_owned(), num.parse::<u64>().ok()? * mult))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize, ttl: Option<Duration>) -> Entry {
        Entry {
            status: 200,
            headers: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1"),
            )],
            body: Bytes::from(vec![b'x'; body]),
            timestamp: 0,
            ttl: 1.0,
            storage_ttl: ttl,
        }
    }

    #[test]
    fn bounded_in_bytes_with_per_entry_ttl() {
        let d = Dict::new(64 << 10);
        assert!(
            !d.store("huge", entry(65 << 10, None)),
            "larger than the dictionary"
        );
        for i in 0..200 {
            assert!(d.store(&format!("k{i}"), entry(1 << 10, None)));
        }
        d.cache.run_pending_tasks();
        assert!(
            d.cache.weighted_size() <= 64 << 10,
            "{}",
            d.cache.weighted_size()
        );
        assert!(d.cache.entry_count() < 200);

        d.store("short", entry(10, Some(Duration::from_millis(50))));
        assert!(d.fetch("short").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(d.fetch("short").is_none(), "expired");
        d.flush();
        assert_eq!(d.cache.entry_count(), 0);
        assert_eq!(
            parse_shared_dicts("a 5m; b 10k ;bad"),
            [("a".to_owned(), 5 << 20), ("b".to_owned(), 10 << 10)]
        );
    }
}
