//! The stored record of a queue's ended jobs: the jobs that ended without an agent
//! running them (the operations on it are in `crate::ended`).
//!
//! Invariant: `completed` keys name a job's id only to order; the value is the
//! reference, so pack and GC see it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use zodiac_objects::{BTree, PRef, Persistent};

use crate::model::job::Job;
use crate::time::Timestamp;
/// The ended jobs of one queue (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub(crate) completed: PRef<BTree<(Timestamp, u64), PRef<Job>>>,
    pub(crate) callbacks_due: BTreeSet<PRef<Job>>,
}

impl Persistent for Ended {
    const TYPE_NAME: &'static str = "zodiac.async.Ended";
}

impl Ended {
    /// The jobs in CALLBACKS no agent has taken yet.
    pub fn callbacks_due(&self) -> &BTreeSet<PRef<Job>> {
        &self.callbacks_due
    }

    /// The tree of COMPLETED ones.
    #[cfg(test)]
    pub(crate) fn completed_tree(&self) -> PRef<BTree<(Timestamp, u64), PRef<Job>>> {
        self.completed
    }
}
