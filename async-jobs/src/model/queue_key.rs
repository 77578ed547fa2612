//! The key of a pending job in its queue's tree: (lane, time, job oid), ordered as
//! claims take them. A job's `Location::Queue` names it, so it sits below both
//! the job and the queue records.
//!
//! The lane holds the job's priority and whether it was put back for an
//! immediate retry: `lane = 2 × priority + (0 put back | 1 scheduled)`. Priority
//! 0 (the default, and every job stored before priorities existed) keeps the
//! lanes [`LANE_PUT_BACK`] and [`LANE_SCHEDULED`], so stored keys keep their
//! meaning.
//!
//! Invariants:
//! - The job oid in a key only orders entries; the entry's value holds the
//!   reference.
//! - Key order is claim order: a higher priority (a smaller number) first; within
//!   one priority, put-back jobs first (FIFO), then jobs by start time.
//! - A lane's priority is at most [`PRIORITY_MAX`]: [`QueueKey::lane_of`] asserts
//!   it (the put checks a job's priority first).

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The lane of priority-0 jobs put back for an immediate retry: claimed first.
pub const LANE_PUT_BACK: u8 = 0;
/// The lane of priority-0 jobs waiting for their start time.
pub const LANE_SCHEDULED: u8 = 1;
/// The lowest priority (0 is the highest, and the default).
pub const PRIORITY_MAX: u8 = 9;
/// The number of lanes: two per priority.
pub const LANES: u8 = 2 * (PRIORITY_MAX + 1);

/// Where a pending job sits in its queue's tree; ordered as claims take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    /// `2 × priority`, plus 1 unless the job was put back for an immediate retry.
    pub lane: u8,
    /// The put-back time, or the time the job may start.
    pub at: Timestamp,
    /// The job's oid, to order ties.
    pub job: u64,
}

impl QueueKey {
    /// The lane of a job of `priority`, put back (`scheduled` false) or scheduled.
    pub fn lane_of(priority: u8, scheduled: bool) -> u8 {
        assert!(
            priority <= PRIORITY_MAX,
            "priority {priority} > {PRIORITY_MAX}"
        );
        2 * priority + u8::from(scheduled)
    }

    /// The priority of the job under this key.
    pub fn priority(&self) -> u8 {
        self.lane / 2
    }

    /// Whether the job was put back for an immediate retry.
    pub fn is_put_back(&self) -> bool {
        self.lane % 2 == LANE_PUT_BACK
    }

    /// Whether the job may start at `now` (only scheduled jobs wait for their time).
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.is_put_back() || self.at <= now
    }

    /// The first key of the lane after this key's.
    pub fn next_lane_start(&self) -> QueueKey {
        QueueKey {
            lane: self.lane.saturating_add(1),
            at: Timestamp(0),
            job: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_priority_then_put_back_then_time() {
        let k = |priority, scheduled, at| QueueKey {
            lane: QueueKey::lane_of(priority, scheduled),
            at: Timestamp(at),
            job: 1,
        };
        let mut keys = vec![
            k(1, false, 1),
            k(0, true, 9),
            k(9, true, 0),
            k(0, false, 50),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                k(0, false, 50),
                k(0, true, 9),
                k(1, false, 1),
                k(9, true, 0)
            ]
        );
        assert_eq!(k(0, false, 0).lane, LANE_PUT_BACK);
        assert_eq!(k(0, true, 0).lane, LANE_SCHEDULED);
        assert_eq!(k(7, true, 0).priority(), 7);
        assert!(k(7, false, 100).is_due(Timestamp(0)));
        assert!(!k(7, true, 100).is_due(Timestamp(99)));
        assert_eq!(QueueKey::lane_of(PRIORITY_MAX, true), LANES - 1);
    }

    #[test]
    #[should_panic(expected = "priority 10 > 9")]
    fn a_priority_past_the_lowest_is_a_programmer_error() {
        QueueKey::lane_of(PRIORITY_MAX + 1, true);
    }
}
