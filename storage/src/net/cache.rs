//! The client's object cache: current revisions, bounded in bytes.
//!
//! An entry `oid -> (tid, data)` claims: "as of `last_tid`, the newest revision of
//! `oid` is `tid`". The ordering contract (docs/protocol.md, "Cache ordering"):
//! - Invalidations are applied in commit order; applying the one of tid T removes
//!   its oids and then sets `last_tid = T`.
//! - A load answered at snapshot S enters the cache only if no invalidation of its
//!   oid with `S < tid <= last_tid` has been applied, which the log of recent
//!   invalidations decides; when S is older than the log, the load is not cached.
//! - Dropping the cache (catch-up too far, server restored) bumps `epoch`, so a
//!   load issued before it is never cached after it.
//! - Eviction is CLOCK (second chance) over insertion order: an entry read since its
//!   last turn is kept for another round; the bytes held never exceed the limit
//!   once an insert returns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::ids::{Oid, Tid};
use crate::meta::Revision;

/// How many recent transactions' invalidations the cache remembers for loads in flight.
pub(crate) const RECENT_INVALIDATIONS_MAX: usize = 1024;
/// Bytes an entry costs beyond its data (map slot, queue slot, headers).
const ENTRY_OVERHEAD_BYTES: usize = 64;

struct Entry {
    tid: Tid,
    data: Arc<[u8]>,
    stamp: u64,
    /// Read since it last came up for eviction: it gets a second chance.
    referenced: bool,
}

pub(crate) struct Cache {
    bytes_max: usize,
    bytes: usize,
    entries: HashMap<Oid, Entry>,
    /// Insertion order for eviction: `(oid, stamp)`; stale pairs are skipped.
    order: VecDeque<(Oid, u64)>,
    next_stamp: u64,
    /// The newest tid whose invalidations were applied.
    pub(crate) last_tid: Tid,
    /// Invalidations with `floor < tid <= last_tid`, oldest first.
    recent: VecDeque<(Tid, Arc<[Oid]>)>,
    floor: Tid,
    pub(crate) epoch: u64,
}

impl Cache {
    pub(crate) fn new(bytes_max: usize) -> Cache {
        Cache {
            bytes_max,
            bytes: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            last_tid: Tid::ZERO,
            recent: VecDeque::new(),
            floor: Tid::ZERO,
            epoch: 0,
        }
    }

    /// The cached newest revision of `oid` if it is also the newest at `snapshot`
    /// (`snapshot <= last_tid`).
    pub(crate) fn get(&mut self, oid: Oid, snapshot: Tid) -> Option<Revision> {
        debug_assert!(snapshot <= self.last_tid);
        let e = self.entries.get_mut(&oid)?;
        if e.tid > snapshot {
            return None;
        }
        e.referenced = true;
        Some(Revision {
            tid: e.tid,
            data: e.data.to_vec(),
        })
    }

    /// Whether [`Cache::get`] would find `oid` at `snapshot` (without marking the
    /// entry as read).
    pub(crate) fn holds(&self, oid: Oid, snapshot: Tid) -> bool {
        self.entries.get(&oid).is_some_and(|e| e.tid <= snapshot)
    }

    /// Caches `revision`, the answer of a load of `oid` at `snapshot` issued in
    /// `epoch`, unless a later invalidation of `oid` makes it stale. Returns whether
    /// it was cached.
    pub(crate) fn insert_loaded(
        &mut self,
        oid: Oid,
        snapshot: Tid,
        epoch: u64,
        revision: &Revision,
    ) -> bool {
        if epoch != self.epoch || snapshot < self.floor || revision.tid > snapshot {
            return false;
        }
        if self
            .recent
            .iter()
            .rev()
            .take_while(|(tid, _)| *tid > snapshot)
            .any(|(_, oids)| oids.contains(&oid))
        {
            return false;
        }
        if let Some(e) = self.entries.get(&oid)
            && e.tid >= revision.tid
        {
            return false;
        }
        let cost = revision.data.len() + ENTRY_OVERHEAD_BYTES;
        if cost > self.bytes_max {
            return false;
        }
        self.remove(oid);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.entries.insert(
            oid,
            Entry {
                tid: revision.tid,
                data: revision.data.as_slice().into(),
                stamp,
                referenced: false,
            },
        );
        self.order.push_back((oid, stamp));
        self.bytes += cost;
        while self.bytes > self.bytes_max {
            let Some((victim, stamp)) = self.order.pop_front() else {
                break;
            };
            match self.entries.get_mut(&victim) {
                Some(e) if e.stamp == stamp && e.referenced => {
                    // Second chance (CLOCK): read since its last turn, so it stays.
                    e.referenced = false;
                    self.order.push_back((victim, stamp));
                }
                Some(e) if e.stamp == stamp => self.remove(victim),
                _ => {}
            }
        }
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(oid, stamp)| entries.get(oid).is_some_and(|e| e.stamp == *stamp));
        }
        true
    }

    fn remove(&mut self, oid: Oid) {
        if let Some(e) = self.entries.remove(&oid) {
            self.bytes -= e.data.len() + ENTRY_OVERHEAD_BYTES;
        }
    }

    /// Applies the invalidation of transaction `tid` like [`Cache::invalidate`],
    /// then caches the new revision (at `tid`) of each object in `data` that was
    /// cached before: the revision is the newest as of `tid`, so the entry stays
    /// current without a load. Objects not cached are not added (the data is for
    /// keeping hot objects current, not for filling the cache with every commit),
    /// nor are objects the invalidation does not name.
    pub(crate) fn invalidate_updating(
        &mut self,
        tid: Tid,
        oids: Arc<[Oid]>,
        data: Vec<(u64, Vec<u8>)>,
    ) {
        let cached: Vec<(Oid, Vec<u8>)> = if data.is_empty() {
            Vec::new()
        } else {
            let named: HashSet<Oid> = oids.iter().copied().collect();
            data.into_iter()
                .map(|(oid, d)| (Oid(oid), d))
                .filter(|(oid, _)| self.entries.contains_key(oid) && named.contains(oid))
                .collect()
        };
        self.invalidate(tid, oids);
        let epoch = self.epoch;
        for (oid, data) in cached {
            self.insert_loaded(oid, tid, epoch, &Revision { tid, data });
        }
    }

    /// Applies the invalidation of transaction `tid` (the next in commit order).
    pub(crate) fn invalidate(&mut self, tid: Tid, oids: Arc<[Oid]>) {
        for &oid in oids.iter() {
            self.remove(oid);
        }
        self.recent.push_back((tid, oids));
        while self.recent.len() > RECENT_INVALIDATIONS_MAX {
            let (tid, _) = self.recent.pop_front().expect("not empty");
            self.floor = tid;
        }
        self.last_tid = self.last_tid.max(tid);
    }

    /// Forgets everything: the cache restarts as current at `last_tid`.
    pub(crate) fn reset(&mut self, last_tid: Tid) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
        self.recent.clear();
        self.floor = last_tid;
        self.last_tid = last_tid;
        self.epoch += 1;
    }

    /// Every entry, for saving: each is the newest revision as of `last_tid`.
    pub(crate) fn entries(&self) -> Vec<(Oid, Tid, Vec<u8>)> {
        self.entries
            .iter()
            .map(|(oid, e)| (*oid, e.tid, e.data.to_vec()))
            .collect()
    }

    /// Starts from saved entries, current as of `last_tid` (an empty cache's only
    /// use: before the first connection); entries beyond the byte limit are left out.
    pub(crate) fn preload(&mut self, last_tid: Tid, entries: Vec<(Oid, Tid, Vec<u8>)>) {
        self.reset(last_tid);
        for (oid, tid, data) in entries {
            self.insert_loaded(oid, last_tid, self.epoch, &Revision { tid, data });
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(tid: u64, data: &[u8]) -> Revision {
        Revision {
            tid: Tid(tid),
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_load_racing_an_invalidation_is_not_cached() {
        let mut c = Cache::new(1 << 20);
        c.invalidate(Tid(10), Arc::from([Oid(9)]));
        // A load issued at 10; before its answer arrives, oid 1 changes at 11.
        let epoch = c.epoch;
        c.invalidate(Tid(11), Arc::from([Oid(1)]));
        assert!(!c.insert_loaded(Oid(1), Tid(10), epoch, &rev(5, b"old")));
        assert_eq!(c.get(Oid(1), Tid(11)), None);
        // Another oid's load at 10 is still current at 11.
        assert!(c.insert_loaded(Oid(2), Tid(10), epoch, &rev(7, b"two")));
        assert_eq!(c.get(Oid(2), Tid(11)), Some(rev(7, b"two")));
        // The entry does not serve a snapshot older than its revision.
        assert_eq!(c.get(Oid(2), Tid(6)), None);
    }

    /// An invalidation carrying new data keeps cached objects current; it adds
    /// nothing uncached, nor data for objects it does not name; a load in flight
    /// from before it is still refused.
    #[test]
    fn an_invalidation_with_data_updates_only_what_was_cached() {
        let mut c = Cache::new(1 << 20);
        c.invalidate(Tid(10), Arc::from([Oid(9)]));
        let epoch = c.epoch;
        assert!(c.insert_loaded(Oid(1), Tid(10), epoch, &rev(5, b"one@5")));
        assert!(c.insert_loaded(Oid(3), Tid(10), epoch, &rev(6, b"three@6")));
        c.invalidate_updating(
            Tid(11),
            Arc::from([Oid(1), Oid(2)]),
            vec![
                (1, b"one@11".to_vec()),
                (2, b"two@11".to_vec()),
                (3, b"three@11".to_vec()),
            ],
        );
        assert_eq!(c.get(Oid(1), Tid(11)), Some(rev(11, b"one@11")));
        assert_eq!(c.get(Oid(1), Tid(10)), None, "not the revision at 10");
        assert_eq!(c.get(Oid(2), Tid(11)), None, "was not cached");
        assert_eq!(
            c.get(Oid(3), Tid(11)),
            Some(rev(6, b"three@6")),
            "not named"
        );
        assert!(!c.insert_loaded(Oid(1), Tid(10), epoch, &rev(5, b"one@5")));
        assert_eq!(c.get(Oid(1), Tid(11)), Some(rev(11, b"one@11")));
    }

    #[test]
    fn loads_older_than_the_log_or_from_an_old_epoch_are_not_cached() {
        let mut c = Cache::new(1 << 20);
        for t in 1..=(RECENT_INVALIDATIONS_MAX as u64 + 5) {
            c.invalidate(Tid(t), Arc::from([Oid(100 + t)]));
        }
        let epoch = c.epoch;
        assert!(!c.insert_loaded(Oid(1), Tid(2), epoch, &rev(1, b"x")));
        assert!(c.insert_loaded(Oid(1), c.last_tid, epoch, &rev(1, b"x")));
        c.reset(Tid(5000));
        assert_eq!(c.get(Oid(1), Tid(5000)), None);
        assert!(!c.insert_loaded(Oid(3), Tid(5000), epoch, &rev(1, b"x")));
        assert!(c.insert_loaded(Oid(3), Tid(5000), c.epoch, &rev(1, b"x")));
    }

    #[test]
    fn cache_stays_within_its_byte_limit() {
        let limit = 10 * (100 + ENTRY_OVERHEAD_BYTES);
        let mut c = Cache::new(limit);
        c.invalidate(Tid(1), Arc::from([]));
        for oid in 0..100 {
            c.insert_loaded(Oid(oid), Tid(1), c.epoch, &rev(1, &[0; 100]));
            assert!(c.bytes() <= limit);
        }
        assert_eq!(c.len(), 10);
        // The newest entries stay.
        assert!(c.get(Oid(99), Tid(1)).is_some());
        assert!(c.get(Oid(0), Tid(1)).is_none());
        // An entry read between inserts survives churn (CLOCK's second chance).
        for oid in 1000..1100 {
            assert!(
                c.get(Oid(99), Tid(1)).is_some(),
                "hot entry evicted at {oid}"
            );
            c.insert_loaded(Oid(oid), Tid(1), c.epoch, &rev(1, &[0; 100]));
            assert!(c.bytes() <= limit);
        }
        // At the boundary: one entry of exactly the limit fits; one byte more does not.
        assert!(c.insert_loaded(Oid(500), Tid(1), c.epoch, &rev(1, &vec![0; limit - 64])));
        assert!(!c.insert_loaded(Oid(501), Tid(1), c.epoch, &rev(1, &vec![0; limit - 63])));
    }
}
