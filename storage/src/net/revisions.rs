//! Revisions a client learned from conflict replies (protocol 3), kept so that a
//! conflict can be merged without loading them.
//!
//! Invariants:
//! - An entry `(oid, tid) -> data` is the record of `oid` at `tid`, as the server
//!   read it. Revisions never change, so an entry never goes stale (a pack may
//!   remove the revision from the server; the entry is still its content).
//! - At most [`STASH_ENTRIES_MAX`] entries and [`STASH_BYTES_MAX`] bytes of data;
//!   the oldest entries go first.

use std::collections::{BTreeMap, VecDeque};

use crate::ids::{Oid, Tid};

/// Most revisions kept.
pub(crate) const STASH_ENTRIES_MAX: usize = 512;
/// Most bytes of revision data kept.
pub(crate) const STASH_BYTES_MAX: usize = 8 << 20;

#[derive(Default)]
pub(crate) struct RevisionStash {
    /// By (oid, tid): the newest kept revision of an oid is one range lookup.
    data: BTreeMap<(Oid, Tid), Vec<u8>>,
    order: VecDeque<(Oid, Tid)>,
    bytes: usize,
}

impl RevisionStash {
    /// Keeps the record of `oid` at `tid` (unless it alone is over
    /// [`STASH_BYTES_MAX`], or it is kept already), dropping the oldest entries
    /// past the bounds.
    pub fn insert(&mut self, oid: Oid, tid: Tid, data: Vec<u8>) {
        if data.len() > STASH_BYTES_MAX || self.data.contains_key(&(oid, tid)) {
            return;
        }
        self.bytes += data.len();
        self.data.insert((oid, tid), data);
        self.order.push_back((oid, tid));
        while self.order.len() > STASH_ENTRIES_MAX || self.bytes > STASH_BYTES_MAX {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.data.remove(&key) {
                self.bytes -= gone.len();
            }
        }
    }

    /// The record of `oid` at `tid`, if a conflict reply carried it.
    pub fn get(&self, oid: Oid, tid: Tid) -> Option<Vec<u8>> {
        self.data.get(&(oid, tid)).cloned()
    }

    /// The newest revision of `oid` kept, if it is newer than `than`.
    pub fn newer(&self, oid: Oid, than: Tid) -> Option<Tid> {
        self.data
            .range((oid, than)..=(oid, Tid::MAX))
            .next_back()
            .map(|(&(_, tid), _)| tid)
            .filter(|&tid| tid > than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_within_its_bounds() {
        let mut stash = RevisionStash::default();
        for i in 0..(STASH_ENTRIES_MAX as u64 + 10) {
            stash.insert(Oid(1), Tid(i + 1), vec![i as u8]);
        }
        assert_eq!(stash.data.len(), STASH_ENTRIES_MAX);
        assert_eq!(stash.get(Oid(1), Tid(1)), None, "the oldest went first");
        let last = Tid(STASH_ENTRIES_MAX as u64 + 10);
        assert_eq!(stash.get(Oid(1), last), Some(vec![(last.0 - 1) as u8]));
        assert_eq!(stash.newer(Oid(1), Tid(5)), Some(last));
        assert_eq!(stash.newer(Oid(1), last), None);
        assert_eq!(stash.newer(Oid(2), Tid::ZERO), None);
        stash.insert(Oid(3), Tid(1), vec![0; STASH_BYTES_MAX]);
        assert_eq!(stash.bytes, STASH_BYTES_MAX);
        assert_eq!(stash.data.len(), 1, "bytes bound the stash too");
    }
}
