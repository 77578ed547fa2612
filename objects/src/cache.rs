//! A connection's object cache: decoded committed states, bounded by count and bytes,
//! evicted least recently used first.
//!
//! Invariants:
//! - The cache holds only committed states (a transaction's changes live in the
//!   transaction until commit), so every entry may be evicted at any time: a reload
//!   at the same snapshot returns the same revision.
//! - `objects <= objects_max` and `bytes <= bytes_max` after every call, where an
//!   entry's bytes are its record's length; an object larger than `bytes_max` is not
//!   cached at all.
//! - Every entry is the newest revision at or before the snapshot of the connection's
//!   current transaction: the connection applies commit events at each begin.

use std::any::Any;
use std::sync::Arc;

use zodiac_storage::{Oid, OidMap, Tid};

/// Counters of one connection's cache, plus its current size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads of committed objects served from the cache, without a storage load.
    pub hits: u64,
    /// Reads of committed objects not in the cache, each followed by a load from
    /// the storage.
    pub misses: u64,
    /// Entries dropped, least recently used first, to stay within
    /// [`DatabaseOptions::cache_objects_max`](crate::DatabaseOptions::cache_objects_max)
    /// and [`DatabaseOptions::cache_bytes_max`](crate::DatabaseOptions::cache_bytes_max).
    pub evictions: u64,
    /// Entries dropped because another transaction committed a newer revision, or
    /// all at once when the connection fell too far behind the commits to tell
    /// which entries are current.
    pub invalidations: u64,
    /// Entries held now (at most `cache_objects_max`).
    pub objects: usize,
    /// Record bytes of the entries held now (at most `cache_bytes_max`; an object
    /// whose record alone is larger is never cached).
    pub bytes: usize,
}

pub(crate) type Value = Arc<dyn Any + Send + Sync>;

pub(crate) struct Entry {
    /// The revision this value is.
    pub tid: Tid,
    pub type_name: &'static str,
    pub value: Value,
    pub bytes: usize,
}

/// No slot: the end of the use list.
const NIL: u32 = u32::MAX;

/// An entry in the slab, linked into the use list (most recently used first).
struct Slot {
    oid: Oid,
    entry: Entry,
    /// Towards the most recently used end.
    newer: u32,
    /// Towards the least recently used end.
    older: u32,
}

/// Least-recently-used order in O(1) per use: the entries live in a slab, linked
/// from the most recently used (`newest`) to the least (`oldest`); freed slots are
/// reused. Invariant: `slot_of` and the linked slots hold the same oids.
pub(crate) struct Cache {
    slot_of: OidMap<u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    objects_max: usize,
    bytes_max: usize,
    stats: CacheStats,
}

impl Cache {
    pub fn new(objects_max: usize, bytes_max: usize) -> Cache {
        Cache {
            slot_of: OidMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            objects_max: objects_max.min(NIL as usize - 1),
            bytes_max,
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn slot(&mut self, i: u32) -> &mut Slot {
        self.slots[i as usize]
            .as_mut()
            .expect("a linked slot is occupied")
    }

    /// Takes slot `i` out of the use list.
    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let s = self.slot(i);
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slot(n).older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slot(o).newer = newer,
        }
    }

    /// Puts slot `i` at the most recently used end.
    fn link_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        {
            let s = self.slot(i);
            s.newer = NIL;
            s.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = i,
            n => self.slot(n).newer = i,
        }
        self.newest = i;
    }

    /// The entry for `oid`, marked as most recently used; counts a hit or a miss.
    pub fn get(&mut self, oid: Oid) -> Option<&Entry> {
        let Some(&i) = self.slot_of.get(&oid) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
        Some(&self.slot(i).entry)
    }

    pub fn insert(
        &mut self,
        oid: Oid,
        tid: Tid,
        type_name: &'static str,
        value: Value,
        bytes: usize,
    ) {
        self.remove(oid);
        if bytes > self.bytes_max || self.objects_max == 0 {
            return;
        }
        while self.stats.objects >= self.objects_max || self.stats.bytes + bytes > self.bytes_max {
            let victim = self.slot(self.oldest).oid;
            self.take(victim);
            self.stats.evictions += 1;
        }
        let slot = Slot {
            oid,
            entry: Entry {
                tid,
                type_name,
                value,
                bytes,
            },
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.link_newest(i);
        self.slot_of.insert(oid, i);
        self.stats.objects += 1;
        self.stats.bytes += bytes;
        debug_assert!(self.stats.objects <= self.objects_max && self.stats.bytes <= self.bytes_max);
    }

    fn take(&mut self, oid: Oid) -> Option<Entry> {
        let i = self.slot_of.remove(&oid)?;
        self.unlink(i);
        let slot = self.slots[i as usize]
            .take()
            .expect("a mapped slot is occupied");
        self.free.push(i);
        self.stats.objects -= 1;
        self.stats.bytes -= slot.entry.bytes;
        Some(slot.entry)
    }

    /// Drops every entry (the connection can no longer tell which are current).
    pub fn clear(&mut self) {
        self.stats.invalidations += self.slot_of.len() as u64;
        self.slot_of.clear();
        self.slots.clear();
        self.free.clear();
        self.newest = NIL;
        self.oldest = NIL;
        self.stats.objects = 0;
        self.stats.bytes = 0;
    }

    pub fn remove(&mut self, oid: Oid) {
        self.take(oid);
    }

    /// Whether `oid` is cached (without counting a use).
    pub fn contains(&self, oid: Oid) -> bool {
        self.slot_of.contains_key(&oid)
    }

    /// Drops `oid` if its cached revision is older than `tid` (a commit that
    /// changed it); a revision at or after `tid` is already current.
    pub fn invalidate(&mut self, oid: Oid, tid: Tid) {
        let Some(&i) = self.slot_of.get(&oid) else {
            return;
        };
        if self.slot(i).entry.tid < tid {
            self.take(oid);
            self.stats.invalidations += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cache: &mut Cache, oid: u64, bytes: usize) {
        cache.insert(Oid(oid), Tid(1), "t", Arc::new(oid), bytes);
    }

    #[test]
    fn count_bound_evicts_least_recently_used() {
        let mut cache = Cache::new(3, 1 << 20);
        for oid in 1..=3 {
            put(&mut cache, oid, 10);
        }
        assert!(cache.get(Oid(1)).is_some()); // 2 is now the oldest
        put(&mut cache, 4, 10);
        assert!(cache.get(Oid(2)).is_none());
        for oid in [1, 3, 4] {
            assert!(cache.get(Oid(oid)).is_some(), "{oid}");
        }
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 4,
                misses: 1,
                evictions: 1,
                invalidations: 0,
                objects: 3,
                bytes: 30,
            }
        );
    }

    #[test]
    fn byte_bound_evicts_until_the_new_entry_fits() {
        let mut cache = Cache::new(100, 100);
        put(&mut cache, 1, 40);
        put(&mut cache, 2, 40);
        put(&mut cache, 3, 60); // evicts only as many as needed: 1; then 40 + 60 = 100 fits
        assert!(cache.get(Oid(1)).is_none());
        assert!(cache.get(Oid(2)).is_some());
        assert_eq!(cache.stats().bytes, 100);
        assert_eq!(cache.stats().evictions, 1);
        put(&mut cache, 4, 100); // exactly the bound: everything else goes
        assert_eq!(cache.stats().objects, 1);
        assert_eq!(cache.stats().bytes, 100);
        put(&mut cache, 5, 101); // larger than the bound: not cached, nothing evicted
        assert!(cache.get(Oid(5)).is_none());
        assert!(cache.get(Oid(4)).is_some());
        assert_eq!(cache.stats().evictions, 3);
    }

    /// Against a model (a list, most recently used first): the same survivors in
    /// the same order after a long run of inserts, gets, removals and evictions.
    #[test]
    fn eviction_order_matches_a_model_over_a_long_run() {
        let mut cache = Cache::new(16, 1 << 20);
        let mut model: Vec<u64> = Vec::new();
        let mut state = 42u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let oid = (state >> 33) % 40;
            match (state >> 20) % 3 {
                0 => {
                    put(&mut cache, oid, 1);
                    model.retain(|&o| o != oid);
                    model.insert(0, oid);
                    model.truncate(16);
                }
                1 => {
                    let hit = cache.get(Oid(oid)).is_some();
                    assert_eq!(hit, model.contains(&oid));
                    if hit {
                        model.retain(|&o| o != oid);
                        model.insert(0, oid);
                    }
                }
                _ => {
                    cache.remove(Oid(oid));
                    model.retain(|&o| o != oid);
                }
            }
            assert_eq!(cache.stats().objects, model.len());
        }
        // Walk the use list from the newest end.
        let mut order = Vec::new();
        let mut i = cache.newest;
        while i != NIL {
            let slot = cache.slots[i as usize].as_ref().unwrap();
            order.push(slot.oid.0);
            i = slot.older;
        }
        assert_eq!(order, model);
    }

    #[test]
    fn invalidation_drops_only_older_revisions() {
        let mut cache = Cache::new(10, 1000);
        cache.insert(Oid(1), Tid(5), "t", Arc::new(1u8), 1);
        cache.invalidate(Oid(1), Tid(5));
        assert!(cache.get(Oid(1)).is_some());
        cache.invalidate(Oid(1), Tid(6));
        assert!(cache.get(Oid(1)).is_none());
        assert_eq!(cache.stats().invalidations, 1);
        assert_eq!(cache.stats().objects, 0);
    }
}
