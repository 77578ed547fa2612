//! The merge functions of the job layer's types, for a storage server.

use zodiac_objects::{Merges, PRef};

use crate::model::job::Job;
use crate::model::queue::{Entry, QueueDirectory, QueueKey};
use crate::model::quota::Quota;
use crate::model::schedule::ScheduleDirectory;
use crate::time::Timestamp;

/// The merge functions of every merging type the job layer stores, with the
/// built-in ones: the pending trees' and the completed trees' buckets, the queue
/// directory, the schedule directory and quotas (counters and the root are built in). A storage server
/// serving job queues runs them (`ServerOptions::merge`, as `zodiac server` does),
/// so concurrent claims and puts on a queue's head bucket and counter merge at
/// commit instead of costing each worker a round trip per conflict.
pub fn merges() -> Merges {
    let mut merges = Merges::new();
    merges
        .btree::<QueueKey, Entry>()
        .btree::<(Timestamp, u64), PRef<Job>>()
        .register::<QueueDirectory>()
        .register::<Quota>()
        .register::<ScheduleDirectory>();
    merges
}
