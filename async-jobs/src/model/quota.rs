//! Quotas: named limits on how many jobs of a queue are held (claimed, not yet
//! finished) at once.
//!
//! Invariants:
//! - A quota's `held` set names the jobs that count against it: a job joins when a
//!   claim takes it and leaves when its result is stored, when it is put back for
//!   a later retry, when it is pulled or removed, or when it fails before running.
//!   A job put back at the front of its queue (retry now) keeps its places, so the
//!   jobs waiting for them keep waiting. A claim takes a job only if every quota it
//!   names has fewer than `size` held jobs or already holds it.
//! - Concurrent joins and leaves merge (conflict resolution) as long as the merged
//!   set still fits `size`; a merge that would overfill the quota is refused, so the
//!   retry sees the quota full. Shrinking `size` below `held` blocks new claims
//!   until enough jobs leave.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use zodiac_objects::{PRef, Persistent};

use crate::model::job::Job;

/// Most quotas one queue holds, and most quota names one job lists.
pub const QUOTAS_MAX: usize = 64;

/// A named limit on concurrently held jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub(crate) name: String,
    pub(crate) size: u32,
    /// References, so pack and GC keep every job a quota counts (an id kept as a
    /// plain number is invisible to them).
    pub(crate) held: BTreeSet<PRef<Job>>,
}

impl Persistent for Quota {
    const TYPE_NAME: &'static str = "zodiac.async.Quota";
    const MERGES: bool = true;

    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        if committed.size != old.size || mine.size != old.size {
            return None; // a resize: let the retry see it
        }
        let mut held = committed.held.clone();
        for added in mine.held.difference(&old.held) {
            held.insert(*added);
        }
        for removed in old.held.difference(&mine.held) {
            held.remove(removed);
        }
        let joined = mine.held.difference(&old.held).next().is_some();
        if joined && held.len() > old.size as usize {
            return None; // both took the last places
        }
        Some(Quota {
            name: old.name.clone(),
            size: old.size,
            held,
        })
    }
}

impl Quota {
    pub(crate) fn new(name: &str, size: u32) -> Quota {
        Quota {
            name: name.to_string(),
            size,
            held: BTreeSet::new(),
        }
    }

    /// The quota's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many held jobs it allows.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The held jobs.
    pub fn held(&self) -> &BTreeSet<PRef<Job>> {
        &self.held
    }

    /// Whether another job may join.
    pub fn has_room(&self) -> bool {
        self.held.len() < self.size as usize
    }

    pub(crate) fn set_size(&mut self, size: u32) {
        self.size = size;
    }

    pub(crate) fn join(&mut self, job: PRef<Job>) {
        self.held.insert(job);
    }

    pub(crate) fn leave(&mut self, job: PRef<Job>) -> bool {
        self.held.remove(&job)
    }
}

/// Removes `job` from the quotas it counts against, in the queue its location
/// names (a claimed job's); does nothing for a job without quotas.
#[cfg(test)]
mod tests {
    use super::*;

    fn quota(size: u32, held: &[u64]) -> Quota {
        Quota {
            name: "q".into(),
            size,
            held: held
                .iter()
                .map(|&oid| PRef::from_oid(zodiac_storage::Oid(oid)))
                .collect(),
        }
    }

    #[test]
    fn joins_and_leaves_merge_while_the_quota_fits() {
        let old = quota(3, &[1]);
        // One side took job 2, the other released 1 and took 3.
        let merged = Quota::resolve_conflict(&old, &quota(3, &[1, 2]), &quota(3, &[3]));
        assert_eq!(merged, Some(quota(3, &[2, 3])));
        // Both took the last place.
        let full = quota(2, &[1]);
        assert_eq!(
            Quota::resolve_conflict(&full, &quota(2, &[1, 2]), &quota(2, &[1, 3])),
            None
        );
        // A resize never merges.
        assert_eq!(
            Quota::resolve_conflict(&old, &quota(5, &[1]), &quota(3, &[1, 2])),
            None
        );
    }
}
