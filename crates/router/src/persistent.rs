//! Persistent collections: a changed copy shares everything it did not write, so a
//! configuration change costs what it changes, not the size of the configuration. No
//! `Arc` is cloned per entry on a copy, only per shard or chunk (about √n of them).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A small fast hasher for short string keys.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(K);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(K);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

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
        (h.wrapping_mul(K) >> 32) as usize & (n - 1)
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
            if Arc::get_mut(&mut m.shards[i]).expect("new").insert(k, v).is_none() {
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

    #[inline]
    pub fn get(&self, slot: usize) -> Option<&T> {
        self.chunks
            .get(slot / CHUNK)?
            .get(slot % CHUNK)?
            .as_ref()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_copy_leaves_the_original_alone() {
        let mut a: PMap<Arc<str>, u32> = (0..1000).map(|i| (format!("k{i}").into(), i)).collect();
        let b = a.clone();
        for i in 0..1000 {
            if i % 3 == 0 {
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
        assert_eq!((s.get(5), t.get(5), s.get(130), t.get(130)), (None, Some(&5), Some(&7), None));
        assert_eq!(s.iter().map(|(i, _)| i).max(), Some(130));
    }
}
