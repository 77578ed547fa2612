//! The key of a pending job in its queue's tree: (lane, time, job oid), ordered as
//! claims take them. A job's `Location::Queue` names it, so it sits below both
//! the job and the queue records.
//!
//! Invariant: the job oid in a key only orders entries; the entry's value holds
//! the reference.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The lane of jobs put back for an immediate retry: claimed first.
pub const LANE_PUT_BACK: u8 = 0;
/// The lane of jobs waiting for their start time.
pub const LANE_SCHEDULED: u8 = 1;

/// Where a pending job sits in its queue's tree; ordered as claims take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    /// [`LANE_PUT_BACK`] or [`LANE_SCHEDULED`].
    pub lane: u8,
    /// The put-back time, or the time the job may start.
    pub at: Timestamp,
    /// The job's oid, to order ties.
    pub job: u64,
}

impl QueueKey {
    /// Whether the job may start at `now` (only scheduled jobs wait for their time).
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.lane != LANE_SCHEDULED || self.at <= now
    }
}
