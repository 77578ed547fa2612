//! Operations on stored queues: finding and creating them, reading their pending
//! jobs, their quotas and their dispatcher registries. Putting, claiming and
//! failing jobs are in the submodules.
//!
//! Why this rarely conflicts: the queue object itself is never written by put or
//! claim. A put inserts one key and a claim removes one; the tree writes only the
//! bucket holding that key, and concurrent changes to different keys of one bucket
//! merge (bucket conflict resolution); the tree's counter merges too. What still
//! conflicts: two claimers taking the *same* job (the job object is written by both,
//! which is exactly what makes a claim exclusive), and a put that splits a bucket
//! another transaction changed at the same time. Both are retried.
//!
//! The tree detaches buckets that claims empty, so a claim reads the path to the
//! first pending job however many jobs the queue has seen.

mod attempt_default;
mod cancel;
mod claim;
mod fail;
mod pause;
mod put;
pub(crate) mod retained;
mod retry;
mod unique;

use std::collections::BTreeMap;

use zodiac_objects::{BTree, Counter, PRef, Transaction};
use zodiac_storage::Oid;

use crate::error::{Error, Result};
use crate::model::dispatcher::DispatcherRecord;
use crate::model::ended::Ended;
use crate::model::job::{Job, Location};
use crate::model::queue::{
    Entry, QUEUE_NAME_BYTES_MAX, QUEUES_ROOT_KEY, Queue, QueueDirectory, QueueKey,
};
use crate::model::queue_key::LANES;
use crate::model::quota::{QUOTAS_MAX, Quota};
use crate::time::Timestamp;

pub use cancel::{CANCEL_BATCH_JOBS_MAX, CancelFilter, cancel_jobs, cancel_matching};
pub use claim::{CLAIM_SCAN_ENTRIES_MAX, Claim, Claimer, SPREAD_WINDOW_PER_LANE, Spread};
pub use fail::fail;
pub(crate) use fail::finish_failed;
pub use put::{PutOptions, Queued};
pub use retry::{RETRY_BATCH_JOBS_MAX, discard_jobs, retry_failed, retry_jobs};
pub use unique::Unique;
pub(crate) use unique::release as release_unique;
fn directory(tx: &mut Transaction<'_>) -> Result<Option<PRef<QueueDirectory>>> {
    Ok(tx.root_entry(QUEUES_ROOT_KEY)?)
}

impl Queue {
    /// The queue `name`, if it exists.
    pub fn get(tx: &mut Transaction<'_>, name: &str) -> Result<Option<PRef<Queue>>> {
        let Some(dir) = directory(tx)? else {
            return Ok(None);
        };
        Ok(tx.get(&dir)?.queues.get(name).copied())
    }

    /// The queue `name`, created (with the directory) if missing.
    pub fn get_or_create(tx: &mut Transaction<'_>, name: &str) -> Result<PRef<Queue>> {
        if name.len() > QUEUE_NAME_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "a queue name (bytes)",
                len: name.len(),
                max: QUEUE_NAME_BYTES_MAX,
            });
        }
        if let Some(q) = Queue::get(tx, name)? {
            return Ok(q);
        }
        let dir = match directory(tx)? {
            Some(dir) => dir,
            None => {
                let dir = tx.add(QueueDirectory::default())?;
                tx.set_root_entry(QUEUES_ROOT_KEY, dir)?;
                dir
            }
        };
        let pending = BTree::create(tx)?;
        let size = tx.add(Counter::new(0))?;
        let queue = tx.add(Queue {
            name: name.to_string(),
            pending,
            size,
            quotas: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
            ended: None,
            paused: false,
            attempt_limit: None,
            unique: None,
            every_job_quota: None,
        })?;
        tx.modify(&dir, |d| d.queues.insert(name.to_string(), queue))?;
        Ok(queue)
    }

    /// Every queue name, in order.
    pub fn names(tx: &mut Transaction<'_>) -> Result<Vec<String>> {
        let Some(dir) = directory(tx)? else {
            return Ok(Vec::new());
        };
        Ok(tx.get(&dir)?.queues.keys().cloned().collect())
    }

    fn named(tx: &mut Transaction<'_>, name: &str) -> Result<PRef<Queue>> {
        Queue::get(tx, name)?.ok_or_else(|| Error::NoSuchQueue { name: name.into() })
    }

    /// The object of the pending tree's entry counter: every put, put-back, claim
    /// and removal writes it, so a commit naming it tells a watcher the queue
    /// changed.
    pub fn size_oid(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<Oid> {
        let pending = tx.get(queue)?.pending;
        Ok(BTree::len_oid(tx, &pending)?)
    }

    /// Pending jobs (claimed jobs are not counted).
    pub fn len(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<u64> {
        let pending = tx.get(queue)?.pending;
        Ok(BTree::len(tx, &pending)?)
    }

    /// Up to `limit` pending jobs in claim order, with their keys.
    pub fn pending(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, PRef<Job>)>> {
        let pending = tx.get(queue)?.pending;
        let entries = BTree::range(tx, &pending, .., limit)?;
        Ok(entries.into_iter().map(|(k, e)| (k, e.job)).collect())
    }

    /// The earliest time after `now` at which a job pending in `queue` becomes
    /// claimable (a scheduled job, or one put back for a later retry), if any.
    pub fn next_start(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let pending = tx.get(queue)?.pending;
        let mut next: Option<Timestamp> = None;
        for lane in 0..LANES {
            let from = QueueKey {
                lane,
                at: Timestamp(now.0.saturating_add(1)),
                job: 0,
            };
            let to = QueueKey {
                lane,
                at: Timestamp(u64::MAX),
                job: u64::MAX,
            };
            if let Some((key, _)) = BTree::range(tx, &pending, from..=to, 1)?.first() {
                next = Some(next.map_or(key.at, |n| n.min(key.at)));
            }
        }
        Ok(next)
    }

    fn insert(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        key: QueueKey,
        entry: Entry,
    ) -> Result<()> {
        let q = tx.get(queue)?;
        let previous = BTree::insert(tx, &q.pending, key, entry)?;
        debug_assert!(previous.is_none(), "a job has one entry");
        Ok(())
    }

    fn take(tx: &mut Transaction<'_>, queue: &PRef<Queue>, key: &QueueKey) -> Result<bool> {
        let q = tx.get(queue)?;
        Ok(BTree::remove(tx, &q.pending, key)?.is_some())
    }

    /// Creates the quota `name` of `queue` with room for `size` held jobs, or
    /// resizes it.
    pub fn set_quota(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        name: &str,
        size: u32,
    ) -> Result<PRef<Quota>> {
        if let Some(quota) = Queue::quota(tx, queue, name)? {
            if tx.get(&quota)?.size() != size {
                tx.modify(&quota, |q| q.set_size(size))?;
            }
            return Ok(quota);
        }
        let count = tx.get(queue)?.quotas.len();
        if count >= QUOTAS_MAX {
            return Err(Error::LimitExceeded {
                what: "the quotas of a queue",
                len: count + 1,
                max: QUOTAS_MAX,
            });
        }
        let quota = tx.add(Quota::new(name, size))?;
        tx.modify(queue, |q| q.quotas.insert(name.to_string(), quota))?;
        Ok(quota)
    }

    /// Makes every job of `queue` count against its quota `name` (which must
    /// exist), or (`None`) only the jobs that name it: the queue's global
    /// concurrency, across all workers. A claim adds the quota to the job's
    /// names, so jobs put before this count too once claimed; jobs already held
    /// do not. The name stays with a job once claimed: put back for a retry
    /// after this is undone, it still counts against the quota.
    pub fn set_every_job_quota(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        name: Option<&str>,
    ) -> Result<()> {
        let q = tx.get(queue)?;
        if let Some(name) = name
            && !q.quotas.contains_key(name)
        {
            return Err(Error::NoSuchQuota {
                queue: q.name.clone(),
                name: name.to_string(),
            });
        }
        if q.every_job_quota.as_deref() != name {
            tx.modify(queue, |q| q.every_job_quota = name.map(str::to_string))?;
        }
        Ok(())
    }

    /// The dispatchers registered in `queue`, by id.
    pub fn dispatchers(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
    ) -> Result<BTreeMap<String, PRef<DispatcherRecord>>> {
        Ok(tx.get(queue)?.dispatchers.clone())
    }

    pub(crate) fn set_ended(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        ended: PRef<Ended>,
    ) -> Result<()> {
        tx.modify(queue, |q| q.ended = Some(ended))?;
        Ok(())
    }

    pub(crate) fn add_dispatcher(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        record: PRef<DispatcherRecord>,
    ) -> Result<()> {
        tx.modify(queue, |q| q.dispatchers.insert(id.to_string(), record))?;
        Ok(())
    }

    /// The quota `name` of `queue`.
    pub fn quota(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        name: &str,
    ) -> Result<Option<PRef<Quota>>> {
        Ok(tx.get(queue)?.quotas.get(name).copied())
    }
}

/// Lets go of the quota places `job` holds in the queue its location names.
pub(crate) fn release(tx: &mut Transaction<'_>, job: &PRef<Job>) -> Result<()> {
    let j = tx.get(job)?;
    if j.quota_names().is_empty() {
        return Ok(());
    }
    // A held job, or one put back at the front of its queue (it keeps its places).
    let (Location::Agent { queue, .. } | Location::Queue { queue, .. }) = j.location() else {
        return Ok(());
    };
    let Some(queue) = Queue::get(tx, queue)? else {
        return Ok(());
    };
    for name in j.quota_names() {
        if let Some(quota) = Queue::quota(tx, &queue, name)?
            && tx.get(&quota)?.held.contains(job)
        {
            tx.modify(&quota, |q| q.leave(*job))?;
        }
    }
    Ok(())
}
