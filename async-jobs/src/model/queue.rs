//! The stored queues: the directory of queues, a queue and its pending tree's
//! keys and entries (the operations on them are in `crate::queue`).
//!
//! Layout: the root entry [`QUEUES_ROOT_KEY`] names a [`QueueDirectory`] (queue name
//! → [`Queue`]). A queue holds its pending jobs in a `BTree` keyed by
//! [`QueueKey`] `(lane, time, job oid)`; its size is the tree's entry counter.
//! Two lanes per priority (0 highest, see `queue_key`): for priority 0,
//! - lane [`LANE_PUT_BACK`]: jobs put back to be retried at once, by put-back time;
//! - lane [`LANE_SCHEDULED`]: every other job, by the time it may start;
//!
//! and likewise lanes 2 and 3 for priority 1, and so on.
//!
//! Key order is claim order: by priority; within one, put-back jobs first
//! (FIFO), then due jobs by `begin_after`, ties by job oid (creation order).
//!
//! Invariants:
//! - A job is PENDING iff it has exactly one entry in its queue's tree, under the key
//!   stored in its `Location::Queue`.
//! - Queue keys name their job's oid only to order entries; the entry's value
//!   holds the reference (see `crate::references`).
//! - Queues are never removed, so the directory's merge refuses a removal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zodiac_objects::{BTree, Counter, PRef, Persistent};

use crate::model::attempt_limit::AttemptLimit;
use crate::model::dispatcher::DispatcherRecord;
use crate::model::ended::Ended;
use crate::model::job::Job;
use crate::model::quota::Quota;
use crate::model::unique::UniqueEntry;

pub use crate::model::queue_key::{LANE_PUT_BACK, LANE_SCHEDULED, QueueKey};
use crate::time::Timestamp;
/// The root entry holding the queue directory (reserved for this crate).
pub const QUEUES_ROOT_KEY: &str = "zodiac.async.queues";
/// Most bytes of a queue name.
pub const QUEUE_NAME_BYTES_MAX: usize = 255;

/// A pending job, with what a claim needs without loading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The job.
    pub job: PRef<Job>,
    /// The time after which it must not start.
    pub deadline: Option<Timestamp>,
    /// The quotas the job counts against once claimed.
    pub quota_names: Vec<String>,
}

/// Every queue of the database, by name (the default queue is `""`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDirectory {
    pub(crate) queues: BTreeMap<String, PRef<Queue>>,
}

impl Persistent for QueueDirectory {
    const TYPE_NAME: &'static str = "zodiac.async.QueueDirectory";
    const MERGES: bool = true;

    /// Queues created concurrently under different names merge.
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let mut queues = committed.queues.clone();
        for (name, q) in &mine.queues {
            match (old.queues.get(name), committed.queues.get(name)) {
                (None, None) => {
                    queues.insert(name.clone(), *q);
                }
                (Some(o), Some(c)) if o == c && o == q => {}
                _ => return None,
            }
        }
        if old.queues.keys().any(|n| !mine.queues.contains_key(n)) {
            return None; // queues are never removed by this crate; refuse to guess
        }
        Some(QueueDirectory { queues })
    }
}

/// A named queue of pending jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub(crate) name: String,
    pub(crate) pending: PRef<BTree<QueueKey, Entry>>,
    /// No longer written: the pending tree counts its entries itself, and a
    /// second counter made every put and claim write one more contended object.
    /// Kept so that stored queues decode (and stays 0 in new ones).
    pub(crate) size: PRef<Counter>,
    pub(crate) quotas: BTreeMap<String, PRef<Quota>>,
    pub(crate) dispatchers: BTreeMap<String, PRef<DispatcherRecord>>,
    /// The jobs that ended here without an agent running them (cancelled,
    /// expired), created by the first one. Added after the first version of the
    /// type: older queues read it as `None`.
    #[serde(default)]
    pub(crate) ended: Option<PRef<Ended>>,
    /// Whether an operator paused the queue: no claim takes its jobs (puts are
    /// still accepted, running jobs finish). Added after `ended`: older queues
    /// read it as `false`.
    #[serde(default)]
    pub(crate) paused: bool,
    /// The attempt limit of the jobs put here that name none. Added after
    /// `paused`: older queues read it as `None`.
    #[serde(default)]
    pub(crate) attempt_limit: Option<AttemptLimit>,
    /// The unique keys of its jobs ([`crate::queue`]'s unique puts), created by
    /// the first such put. Added after `attempt_limit`: older queues read it as
    /// `None`.
    #[serde(default)]
    pub(crate) unique: Option<PRef<BTree<String, UniqueEntry>>>,
    /// The quota every job of the queue counts against (the queue's global
    /// concurrency): a claim adds it to the job's quota names. Added after
    /// `unique`: older queues read it as `None`.
    #[serde(default)]
    pub(crate) every_job_quota: Option<String>,
}

impl Persistent for Queue {
    const TYPE_NAME: &'static str = "zodiac.async.Queue";
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the queue is paused (no claims; see [`Queue::pause`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The attempt limit given to the jobs put here that name none.
    pub fn attempt_limit(&self) -> Option<&AttemptLimit> {
        self.attempt_limit.as_ref()
    }

    /// The quota every job of the queue counts against, if one is set
    /// ([`Queue::set_every_job_quota`]).
    pub fn every_job_quota(&self) -> Option<&str> {
        self.every_job_quota.as_deref()
    }

    /// The jobs that ended in this queue without a run, if any did.
    pub(crate) fn ended(&self) -> Option<PRef<Ended>> {
        self.ended
    }

    /// The tree of pending jobs.
    #[cfg(test)]
    pub(crate) fn pending_tree(&self) -> PRef<BTree<QueueKey, Entry>> {
        self.pending
    }

    /// The dispatcher registry, without cloning it.
    pub(crate) fn dispatchers_ref(&self) -> &BTreeMap<String, PRef<DispatcherRecord>> {
        &self.dispatchers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use zodiac_storage::Oid;

    fn dir(entries: &[(&str, u64)]) -> QueueDirectory {
        let mut queues = BTreeMap::new();
        for (name, oid) in entries {
            queues.insert(name.to_string(), PRef::from_oid(Oid(*oid)));
        }
        QueueDirectory { queues }
    }

    #[test]
    fn the_directory_merges_queues_created_under_different_names() {
        let old = dir(&[("", 1)]);
        assert_eq!(
            QueueDirectory::resolve_conflict(
                &old,
                &dir(&[("", 1), ("a", 2)]),
                &dir(&[("", 1), ("b", 3)])
            ),
            Some(dir(&[("", 1), ("a", 2), ("b", 3)]))
        );
        // The same name created twice is a real conflict: the retry finds the winner.
        assert_eq!(
            QueueDirectory::resolve_conflict(
                &old,
                &dir(&[("", 1), ("a", 2)]),
                &dir(&[("", 1), ("a", 4)])
            ),
            None
        );
    }

    /// Queues stored before `ended` existed read as queues without ended jobs
    /// (nor any field added after it).
    #[test]
    fn a_queue_record_without_ended_reads_as_none() {
        let queue = Queue {
            name: "q".into(),
            pending: PRef::from_oid(Oid(2)),
            size: PRef::from_oid(Oid(3)),
            quotas: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
            ended: None,
            paused: false,
            attempt_limit: None,
            unique: None,
            every_job_quota: None,
        };
        let mut payload = postcard::to_allocvec(&queue).unwrap();
        assert_eq!(
            payload.pop(),
            Some(0),
            "every_job_quota None is the last byte"
        );
        assert_eq!(payload.pop(), Some(0), "unique None is the byte before");
        assert_eq!(
            payload.pop(),
            Some(0),
            "attempt_limit None is the byte before"
        );
        assert_eq!(payload.pop(), Some(0), "paused false is the byte before");
        assert_eq!(payload.pop(), Some(0), "ended None is the byte before");
        let old = zodiac_objects::record::encode(Queue::TYPE_NAME, &[Oid(2), Oid(3)], &payload);
        let read = zodiac_objects::decode_value::<Queue>(&old)
            .unwrap()
            .unwrap();
        assert_eq!(read, queue);
    }

    /// Queues stored before `paused` existed (with ended jobs) read as running.
    #[test]
    fn a_queue_record_without_paused_reads_as_not_paused() {
        let queue = Queue {
            name: "q".into(),
            pending: PRef::from_oid(Oid(2)),
            size: PRef::from_oid(Oid(3)),
            quotas: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
            ended: Some(PRef::from_oid(Oid(4))),
            paused: false,
            attempt_limit: None,
            unique: None,
            every_job_quota: None,
        };
        let mut payload = postcard::to_allocvec(&queue).unwrap();
        assert_eq!(
            payload.pop(),
            Some(0),
            "every_job_quota None is the last byte"
        );
        assert_eq!(payload.pop(), Some(0), "unique None is the byte before");
        assert_eq!(
            payload.pop(),
            Some(0),
            "attempt_limit None is the byte before"
        );
        assert_eq!(payload.pop(), Some(0), "paused false is the byte before");
        let old =
            zodiac_objects::record::encode(Queue::TYPE_NAME, &[Oid(2), Oid(3), Oid(4)], &payload);
        let read = zodiac_objects::decode_value::<Queue>(&old)
            .unwrap()
            .unwrap();
        assert_eq!(read, queue);
        let paused = Queue {
            paused: true,
            ..queue
        };
        let bytes = postcard::to_allocvec(&paused).unwrap();
        assert_eq!(bytes[bytes.len() - 4..], [1, 0, 0, 0]);
    }

    #[test]
    fn keys_order_put_backs_first_then_by_time_then_by_job() {
        let k = |lane, at, job| QueueKey {
            lane,
            at: Timestamp(at),
            job,
        };
        let mut keys = vec![
            k(1, 5, 1),
            k(1, 3, 9),
            k(0, 100, 4),
            k(1, 3, 2),
            k(0, 50, 7),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                k(0, 50, 7),
                k(0, 100, 4),
                k(1, 3, 2),
                k(1, 3, 9),
                k(1, 5, 1)
            ]
        );
    }
}
