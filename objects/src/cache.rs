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
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use zodiac_storage::{Oid, Tid};

/// Counters of one connection's cache, plus its current size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Entries dropped because another transaction committed a newer revision.
    pub invalidations: u64,
    pub objects: usize,
    pub bytes: usize,
}

pub(crate) type Value = Arc<dyn Any + Send + Sync>;

pub(crate) struct Entry {
    /// The revision this value is.
    pub tid: Tid,
    pub type_name: Box<str>,
    pub value: Value,
    pub bytes: usize,
    stamp: u64,
}

pub(crate) struct Cache {
    entries: HashMap<Oid, Entry>,
    /// Use stamp → oid, oldest first.
    order: BTreeMap<u64, Oid>,
    next_stamp: u64,
    objects_max: usize,
    bytes_max: usize,
    stats: CacheStats,
}

impl Cache {
    pub fn new(objects_max: usize, bytes_max: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            objects_max,
            bytes_max,
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The entry for `oid`, marked as most recently used; counts a hit or a miss.
    pub fn get(&mut self, oid: Oid) -> Option<&Entry> {
        let Some(entry) = self.entries.get_mut(&oid) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        self.order.remove(&entry.stamp);
        entry.stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.insert(entry.stamp, oid);
        Some(entry)
    }

    pub fn insert(&mut self, oid: Oid, tid: Tid, type_name: &str, value: Value, bytes: usize) {
        self.remove(oid);
        if bytes > self.bytes_max || self.objects_max == 0 {
            return;
        }
        while self.stats.objects >= self.objects_max || self.stats.bytes + bytes > self.bytes_max {
            let (_, victim) = self
                .order
                .pop_first()
                .expect("non-empty while over a bound");
            self.take(victim);
            self.stats.evictions += 1;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.insert(stamp, oid);
        self.entries.insert(
            oid,
            Entry {
                tid,
                type_name: type_name.into(),
                value,
                bytes,
                stamp,
            },
        );
        self.stats.objects += 1;
        self.stats.bytes += bytes;
        debug_assert!(self.stats.objects <= self.objects_max && self.stats.bytes <= self.bytes_max);
    }

    fn take(&mut self, oid: Oid) -> Option<Entry> {
        let entry = self.entries.remove(&oid)?;
        self.order.remove(&entry.stamp);
        self.stats.objects -= 1;
        self.stats.bytes -= entry.bytes;
        Some(entry)
    }

    /// Drops every entry (the connection can no longer tell which are current).
    pub fn clear(&mut self) {
        self.stats.invalidations += self.entries.len() as u64;
        self.entries.clear();
        self.order.clear();
        self.stats.objects = 0;
        self.stats.bytes = 0;
    }

    pub fn remove(&mut self, oid: Oid) {
        self.take(oid);
    }

    /// Drops `oid` if its cached revision is older than `tid` (a commit that
    /// changed it); a revision at or after `tid` is already current.
    pub fn invalidate(&mut self, oid: Oid, tid: Tid) {
        if self.entries.get(&oid).is_some_and(|e| e.tid < tid) {
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
