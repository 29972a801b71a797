//! Persistent collections: a changed copy shares everything it did not write, so a
//! configuration change costs what it changes, not the size of the configuration. No
//! `Arc` is cloned per entry on a copy, only per shard or chunk (about √n of them).

use rustc_hash::FxHasher;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::Arc;

/// Fibonacci hashing's multiplier.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A hash map split into shards behind `Arc`s: a clone copies the shard pointers and a
/// write copies one shard (when it is shared). The shard count grows with the map
/// (about √(n/4), at most 256), so a write on a copy of a 10,000-entry map touches
/// ~160 entries instead of 10,000.
pub struct PMap<K, V> {
    shards: Vec<Arc<FxMap<K, V>>>,
    len: usize,
}

impl<K, V> Clone for PMap<K, V> {
    fn clone(&self) -> Self {
        PMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for PMap<K, V> {
    fn default() -> Self {
        PMap {
            shards: Vec::new(),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for PMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> PMap<K, V> {
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.shards.iter().flat_map(|s| s.values())
    }
}

fn shards_for(len: usize) -> usize {
    let mut n = 1;
    while n < 256 && 4 * n * n < len {
        n *= 2;
    }
    n
}

impl<K: Hash + Eq + Clone, V: Clone> PMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn shard_of<Q: Hash + ?Sized>(&self, k: &Q) -> usize {
        let n = self.shards.len();
        if n <= 1 {
            return 0;
        }
        let h = BuildHasherDefault::<FxHasher>::default().hash_one(k);
        // Remixed so the shard does not correlate with the bucket inside the shard.
        (h.wrapping_mul(MIX) >> 32) as usize & (n - 1)
    }

    #[inline]
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.len == 0 {
            return None;
        }
        self.shards[self.shard_of(k)].get(k)
    }

    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(k).is_some()
    }

    /// The entry to change in place (its shard copied first if shared).
    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.len == 0 {
            return None;
        }
        let i = self.shard_of(k);
        if !self.shards[i].contains_key(k) {
            return None;
        }
        Arc::make_mut(&mut self.shards[i]).get_mut(k)
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        if self.shards.is_empty() {
            self.shards.push(Arc::default());
        }
        let i = self.shard_of(&k);
        let old = Arc::make_mut(&mut self.shards[i]).insert(k, v);
        if old.is_none() {
            self.len += 1;
            if shards_for(self.len) > self.shards.len() {
                self.reshard();
            }
        }
        old
    }

    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.len == 0 {
            return None;
        }
        let i = self.shard_of(k);
        if !self.shards[i].contains_key(k) {
            return None;
        }
        let old = Arc::make_mut(&mut self.shards[i]).remove(k);
        self.len -= 1;
        old
    }

    fn reshard(&mut self) {
        let entries: Vec<(K, V)> = self.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        *self = entries.into_iter().collect();
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for PMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Self {
        let entries: Vec<(K, V)> = it.into_iter().collect();
        let n = shards_for(entries.len());
        let mut m = PMap {
            shards: (0..n).map(|_| Arc::default()).collect(),
            len: 0,
        };
        for (k, v) in entries {
            let i = m.shard_of(&k);
            if Arc::get_mut(&mut m.shards[i])
                .expect("new")
                .insert(k, v)
                .is_none()
            {
                m.len += 1;
            }
        }
        m
    }
}

/// Values by slot number (0, 1, …), some slots empty, in chunks behind `Arc`s: a clone
/// copies the chunk pointers, a write copies one chunk of 64 slots.
pub struct Slots<T> {
    chunks: Vec<Arc<Vec<Option<T>>>>,
    len: usize,
}

impl<T> Clone for Slots<T> {
    fn clone(&self) -> Self {
        Slots {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

const CHUNK: usize = 64;

impl<T> Slots<T> {
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&T> {
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)?.as_ref()
    }

    /// Filled slots in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter_map(move |(i, v)| v.as_ref().map(|v| (c * CHUNK + i, v)))
        })
    }
}

impl<T: Clone> Slots<T> {
    /// Filled slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the last slot that may be filled.
    pub fn end(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// Fills (`Some`) or empties (`None`) a slot; returns what it held.
    pub fn set(&mut self, slot: usize, v: Option<T>) -> Option<T> {
        let c = slot / CHUNK;
        if v.is_none() && c >= self.chunks.len() {
            return None;
        }
        while self.chunks.len() <= c {
            self.chunks
                .push(Arc::new((0..CHUNK).map(|_| None).collect()));
        }
        let filled = v.is_some();
        let old = std::mem::replace(&mut Arc::make_mut(&mut self.chunks[c])[slot % CHUNK], v);
        match (old.is_some(), filled) {
            (false, true) => self.len += 1,
            (true, false) => self.len -= 1,
            _ => {}
        }
        old
    }
}

impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;

    /// Panics on an empty slot.
    fn index(&self, slot: usize) -> &T {
        self.chunks[slot / CHUNK][slot % CHUNK]
            .as_ref()
            .expect("a filled slot")
    }
}

impl<T: Clone> FromIterator<T> for Slots<T> {
    /// Slots 0, 1, … in order.
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut s = Slots::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        for v in it {
            chunk.push(Some(v));
            s.len += 1;
            if chunk.len() == CHUNK {
                s.chunks.push(Arc::new(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(CHUNK),
                )));
            }
        }
        if !chunk.is_empty() {
            chunk.resize_with(CHUNK, || None);
            s.chunks.push(Arc::new(chunk));
        }
        s
    }
}

/// An ordered map in sorted chunks behind `Arc`s: a clone copies the chunk pointers and
/// a write copies one chunk of at most [`POrdMap::CHUNK`] entries.
pub struct POrdMap<K, V> {
    chunks: Vec<Arc<Vec<(K, V)>>>,
    len: usize,
}

impl<K, V> Clone for POrdMap<K, V> {
    fn clone(&self) -> Self {
        POrdMap {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for POrdMap<K, V> {
    fn default() -> Self {
        POrdMap {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for POrdMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for POrdMap<K, V> {
    fn eq(&self, o: &Self) -> bool {
        self.len == o.len && self.iter().eq(o.iter())
    }
}

impl<K, V> POrdMap<K, V> {
    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.iter().map(|(k, v)| (k, v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().map(|(_, v)| v))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<K: Ord + Clone, V: Clone> POrdMap<K, V> {
    pub const CHUNK: usize = 128;

    /// The chunk that holds `k` or would: the first whose last key is not below it.
    fn chunk_of<Q: Ord + ?Sized>(&self, k: &Q) -> usize
    where
        K: Borrow<Q>,
    {
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|(last, _)| last.borrow() < k));
        i.min(self.chunks.len().saturating_sub(1))
    }

    pub fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let c = self.chunks.get(self.chunk_of(k))?;
        let i = c.binary_search_by(|(x, _)| x.borrow().cmp(k)).ok()?;
        Some(&c[i].1)
    }

    /// Entries in key order from the first not below `k`.
    pub fn iter_from<'a, Q: Ord + ?Sized>(
        &'a self,
        k: &Q,
    ) -> impl Iterator<Item = (&'a K, &'a V)> + 'a
    where
        K: Borrow<Q>,
    {
        let ci = self.chunk_of(k);
        let start = self
            .chunks
            .get(ci)
            .map_or(0, |c| c.partition_point(|(x, _)| x.borrow() < k));
        self.chunks
            .iter()
            .skip(ci)
            .enumerate()
            .flat_map(move |(n, c)| {
                c[if n == 0 { start } else { 0 }..]
                    .iter()
                    .map(|(k, v)| (k, v))
            })
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::default());
        }
        let ci = self.chunk_of(&k);
        let c = Arc::make_mut(&mut self.chunks[ci]);
        match c.binary_search_by(|(x, _)| x.cmp(&k)) {
            Ok(i) => Some(std::mem::replace(&mut c[i].1, v)),
            Err(i) => {
                c.insert(i, (k, v));
                self.len += 1;
                if c.len() > Self::CHUNK {
                    let tail = c.split_off(c.len() / 2);
                    self.chunks.insert(ci + 1, Arc::new(tail));
                }
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let ci = self.chunk_of(k);
        let i = self
            .chunks
            .get(ci)?
            .binary_search_by(|(x, _)| x.borrow().cmp(k))
            .ok()?;
        let c = Arc::make_mut(&mut self.chunks[ci]);
        let (_, v) = c.remove(i);
        if c.is_empty() {
            self.chunks.remove(ci);
        }
        self.len -= 1;
        Some(v)
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for POrdMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Self {
        let mut all: Vec<(K, V)> = it.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        // the last of equal keys wins, as with repeated inserts
        all.reverse();
        all.dedup_by(|a, b| a.0 == b.0);
        all.reverse();
        let len = all.len();
        let half = Self::CHUNK / 2;
        let mut chunks = Vec::with_capacity(len.div_ceil(half));
        let mut rest = all.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(Arc::new(rest.by_ref().take(half).collect()));
        }
        POrdMap { chunks, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_copy_leaves_the_original_alone() {
        let mut a: PMap<Arc<str>, u32> = (0..1000).map(|i| (format!("k{i}").into(), i)).collect();
        let b = a.clone();
        for i in 0..1000u32 {
            if i.is_multiple_of(3) {
                a.remove(format!("k{i}").as_str());
            } else {
                *a.get_mut(format!("k{i}").as_str()).unwrap() += 1;
            }
        }
        for i in 1000..3000 {
            a.insert(format!("k{i}").into(), i);
        }
        assert_eq!(b.len(), 1000);
        assert_eq!(a.len(), 1000 - 334 + 2000);
        for i in 0..1000 {
            assert_eq!(b.get(format!("k{i}").as_str()), Some(&i));
            let want = (i % 3 != 0).then_some(i + 1);
            assert_eq!(a.get(format!("k{i}").as_str()).copied(), want);
        }
        assert_eq!(a.iter().count(), a.len());

        let mut s: Slots<u32> = (0..100).collect();
        let t = s.clone();
        s.set(5, None);
        s.set(130, Some(7));
        assert_eq!((s.len(), t.len()), (100, 100));
        assert_eq!(
            (s.get(5), t.get(5), s.get(130), t.get(130)),
            (None, Some(&5), Some(&7), None)
        );
        assert_eq!(s.iter().map(|(i, _)| i).max(), Some(130));
    }

    #[test]
    fn an_ordered_map_edited_in_place_matches_a_btree_map() {
        let mut want = std::collections::BTreeMap::new();
        let mut m: POrdMap<u64, u64> = (0..500u64).map(|i| (i * 7 % 1000, i)).collect();
        want.extend((0..500u64).map(|i| (i * 7 % 1000, i)));
        let before = m.clone();
        let mut x = 12345u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 1200;
            if x.is_multiple_of(3) {
                assert_eq!(m.remove(&k), want.remove(&k));
            } else {
                assert_eq!(m.insert(k, x), want.insert(k, x));
            }
            assert_eq!(m.get(&k), want.get(&k));
            assert!(m
                .iter_from(&k)
                .map(|(k, v)| (*k, *v))
                .eq(want.range(k..).map(|(k, v)| (*k, *v))));
        }
        assert_eq!(m.len(), want.len());
        assert!(m.iter().map(|(k, v)| (*k, *v)).eq(want.into_iter()));
        // the copy taken before the edits is untouched
        assert!(before == (0..500u64).map(|i| (i * 7 % 1000, i)).collect());
    }
}
