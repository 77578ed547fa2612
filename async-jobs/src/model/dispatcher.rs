//! The stored dispatchers and agents of a queue (the operations on them are in
//! `crate::dispatcher` and `crate::recovery`).
//!
//! Each queue keeps a registry (dispatcher id → [`DispatcherRecord`]); a record
//! names its agents ([`Agent`], one object each, holding the ids of the jobs it
//! claimed).
//!
//! Invariants:
//! - A dispatcher is *alive* while activated and its last ping (or activation) is
//!   at most the death interval old.
//! - A dispatcher that stopped leaving jobs to its siblings has its last ping at
//!   the epoch ([`DispatcherRecord::left_to_siblings`]), dead to every sibling.
//! - An agent's `held` and `completed` name jobs by reference, so pack and GC see
//!   them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zodiac_objects::{BTree, PRef, Persistent};

use crate::model::job::Job;
use crate::time::Timestamp;
/// The last ping of a dispatcher that stopped leaving jobs to its siblings'
/// cleanup ([`Dispatchers::leave_to_siblings`]): the epoch, older than any death
/// interval.
pub(crate) const LEFT_TO_SIBLINGS_PING: Timestamp = Timestamp::from_micros(0);

/// A dispatcher as registered in one queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherRecord {
    pub(crate) id: String,
    pub(crate) activated: Option<Timestamp>,
    pub(crate) last_ping: Option<Timestamp>,
    pub(crate) agents: BTreeMap<String, PRef<Agent>>,
}

impl Persistent for DispatcherRecord {
    const TYPE_NAME: &'static str = "zodiac.async.Dispatcher";
}

impl DispatcherRecord {
    /// The dispatcher id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// When it was activated (`None`: deactivated).
    pub fn activated(&self) -> Option<Timestamp> {
        self.activated
    }
    /// Its last ping.
    pub fn last_ping(&self) -> Option<Timestamp> {
        self.last_ping
    }
    /// Its agents, by name.
    pub fn agents(&self) -> &BTreeMap<String, PRef<Agent>> {
        &self.agents
    }

    /// Whether it stopped leaving jobs to its siblings' cleanup
    /// ([`Dispatchers::leave_to_siblings`](crate::Dispatchers::leave_to_siblings)): activated, last ping at the epoch
    /// (its real last ping is not kept).
    pub fn left_to_siblings(&self) -> bool {
        self.activated.is_some() && self.last_ping == Some(LEFT_TO_SIBLINGS_PING)
    }

    /// Whether it is activated and pinged (or activated) within `death_interval`.
    pub fn is_alive(&self, now: Timestamp, death_interval: Duration) -> bool {
        match (self.activated, self.last_ping.or(self.activated)) {
            (Some(_), Some(seen)) => now.since(seen) <= death_interval,
            _ => false,
        }
    }
}

/// An agent: a name, how many jobs it holds at once, and the jobs it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub(crate) name: String,
    pub(crate) size: u32,
    /// References, so pack and GC keep every job an agent holds (an id kept as a
    /// plain number is invisible to them, and GC deleted the jobs a worker ran).
    pub(crate) held: BTreeSet<PRef<Job>>,
    /// Jobs it ran to completion, by (completion time, job id), kept for the
    /// retention period. The id in the key only orders (keys are copied into the
    /// tree's separators, which outlive the entry); the value is the reference.
    pub(crate) completed: PRef<BTree<(Timestamp, u64), PRef<Job>>>,
}

impl Persistent for Agent {
    const TYPE_NAME: &'static str = "zodiac.async.Agent";
}

impl Agent {
    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// How many jobs it holds at once.
    pub fn size(&self) -> u32 {
        self.size
    }
    /// The jobs it holds.
    pub fn held(&self) -> &BTreeSet<PRef<Job>> {
        &self.held
    }

    /// The tree of jobs it completed.
    #[cfg(test)]
    pub(crate) fn completed_tree(&self) -> PRef<BTree<(Timestamp, u64), PRef<Job>>> {
        self.completed
    }
}
