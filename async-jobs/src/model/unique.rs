//! The stored record of a unique job: which job holds a unique key of its queue,
//! and until when the key stays held after that job completed.
//!
//! Invariants:
//! - A queue's unique index maps each key to at most one holder (it is a B-tree
//!   keyed by the key), so two producers putting the same key in one queue write
//!   the same entry and conflict: one commits, the other's retry finds the holder.
//! - The holder is a reference ([`PRef`]), so pack and GC see it; the entry is
//!   removed when its job is dropped (retention, discard), so the index never
//!   keeps a dropped job alive.
//! - A key is at most [`UNIQUE_KEY_BYTES_MAX`] bytes.

use serde::{Deserialize, Serialize};
use zodiac_objects::PRef;

use crate::model::job::Job;
use crate::model::status::Status;
use crate::time::Timestamp;

/// Most bytes of a unique key.
pub const UNIQUE_KEY_BYTES_MAX: usize = 255;

/// The job holding a unique key of its queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueEntry {
    /// The job put with the key.
    pub job: PRef<Job>,
    /// With `--unique-for`: the key stays held until then, whatever the job's
    /// status.
    pub until: Option<Timestamp>,
}

impl UniqueEntry {
    /// Whether the key is still held at `now` by a job in `status`: while the job
    /// is queued, claimed, running or running its callbacks, or before `until`.
    /// A job pulled back to NEW or COMPLETED lets the key go (after `until`).
    pub fn holds(&self, status: Status, now: Timestamp) -> bool {
        let in_flight = matches!(
            status,
            Status::Pending | Status::Assigned | Status::Active | Status::Callbacks
        );
        in_flight || self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodiac_storage::Oid;

    #[test]
    fn a_key_is_held_while_the_job_is_in_flight_or_within_its_period() {
        let entry = |until| UniqueEntry {
            job: PRef::from_oid(Oid(1)),
            until,
        };
        let now = Timestamp(100);
        for status in [
            Status::Pending,
            Status::Assigned,
            Status::Active,
            Status::Callbacks,
        ] {
            assert!(entry(None).holds(status, now), "{status}");
        }
        assert!(!entry(None).holds(Status::Completed, now));
        assert!(!entry(None).holds(Status::New, now));
        assert!(entry(Some(Timestamp(101))).holds(Status::Completed, now));
        assert!(!entry(Some(Timestamp(100))).holds(Status::Completed, now));
    }
}
