//! The jobs of a queue that ended without an agent running them: cancelled
//! (`zodiac jobs cancel`, [`crate::fail`]) or found past their deadline by a claim
//! that no agent made.
//!
//! Without this collection such a job was held by nothing: not listed, not
//! counted, and deleted by the next pack's garbage collection; and the callbacks
//! of a job cancelled with callbacks never ran.
//!
//! Invariants:
//! - A job [`crate::fail`] ends is recorded in the [`Ended`] of its queue (the
//!   queue its location names; the default queue for a NEW job outside any queue)
//!   in the same transaction: COMPLETED ones in `completed` by (time, id), ones
//!   left in CALLBACKS in `callbacks_due`. A job failed while a callback of another
//!   (location `CallbackOf`) stays reachable through its parent and is not recorded.
//! - A job leaves `callbacks_due` only in a transaction that makes an agent hold it
//!   ([`crate::Dispatchers::adopt_ended`]), or records it in `completed` when
//!   someone else already ran its callbacks; so it is always held by something, its
//!   callbacks run through the agent machinery (and a worker's death is recovered
//!   like any job in CALLBACKS), and two adopters conflict on the `Ended` object.
//! - `completed` keeps its jobs for the retention period, like an agent's
//!   completed jobs ([`drop_completed_before`]); the id in its keys only orders,
//!   the value is the reference.
//! - The `Ended` object is written only when `callbacks_due` changes; recording a
//!   COMPLETED job writes one bucket of its tree.

use std::collections::BTreeSet;
use std::sync::Arc;

use zodiac_objects::{BTree, PRef, Transaction};

use crate::error::Result;
use crate::model::job::{Job, Location};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::time::Timestamp;

pub use crate::model::ended::Ended;

/// Most jobs in CALLBACKS one adoption takes ([`crate::Dispatchers::adopt_ended`]).
pub const ADOPT_ENDED_MAX: usize = 16;

/// The `Ended` of `queue`, created (and named by the queue) if missing.
fn get_or_create(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<PRef<Ended>> {
    if let Some(ended) = tx.get(queue)?.ended() {
        return Ok(ended);
    }
    let completed = BTree::create(tx)?;
    let ended = tx.add(Ended {
        completed,
        callbacks_due: BTreeSet::new(),
    })?;
    Queue::set_ended(tx, queue, ended)?;
    Ok(ended)
}

/// The queue a job that `fail` just ended belongs to, by the location it had
/// before: `None` for a callback (its parent holds it).
pub(crate) fn queue_of(location: &Location) -> Option<&str> {
    match location {
        Location::Queue { queue, .. } | Location::Agent { queue, .. } => Some(queue),
        Location::None => Some(""),
        Location::CallbackOf { .. } => None,
    }
}

/// Records `job`, which just ended without an agent running it, in the `Ended` of
/// queue `queue` (created if missing).
pub(crate) fn record(
    tx: &mut Transaction<'_>,
    queue: &str,
    job: PRef<Job>,
    now: Timestamp,
) -> Result<()> {
    let queue = Queue::get_or_create(tx, queue)?;
    let ended = get_or_create(tx, &queue)?;
    if tx.get(&job)?.status() == Status::Completed {
        let completed = tx.get(&ended)?.completed;
        BTree::insert(tx, &completed, (now, job.oid().0), job)?;
    } else {
        tx.modify(&ended, |e| e.callbacks_due.insert(job))?;
    }
    Ok(())
}

/// The `Ended` of `queue`, if anything ended there.
pub fn of(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<Option<Arc<Ended>>> {
    match tx.get(queue)?.ended() {
        Some(ended) => Ok(Some(tx.get(&ended)?)),
        None => Ok(None),
    }
}

/// Takes up to [`ADOPT_ENDED_MAX`] jobs out of `callbacks_due`: those still in
/// CALLBACKS are returned for the caller to hold in the same transaction; those
/// whose callbacks someone already ran (COMPLETED) move to `completed`.
pub(crate) fn take_callbacks_due(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    now: Timestamp,
) -> Result<Vec<PRef<Job>>> {
    let Some(ended_ref) = tx.get(queue)?.ended() else {
        return Ok(Vec::new());
    };
    let ended = tx.get(&ended_ref)?;
    if ended.callbacks_due.is_empty() {
        return Ok(Vec::new());
    }
    let taken: Vec<PRef<Job>> = ended
        .callbacks_due
        .iter()
        .copied()
        .take(ADOPT_ENDED_MAX)
        .collect();
    let mut adopt = Vec::new();
    for job in &taken {
        if tx.get(job)?.status() == Status::Completed {
            BTree::insert(tx, &ended.completed, (now, job.oid().0), *job)?;
        } else {
            adopt.push(*job);
        }
    }
    tx.modify(&ended_ref, |e| {
        for job in &taken {
            e.callbacks_due.remove(job);
        }
    })?;
    Ok(adopt)
}

/// Up to `limit` COMPLETED jobs of `queue` that ended without a run, oldest first,
/// with the time they ended.
pub fn completed(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    limit: usize,
) -> Result<Vec<(Timestamp, PRef<Job>)>> {
    let Some(ended) = tx.get(queue)?.ended() else {
        return Ok(Vec::new());
    };
    let completed = tx.get(&ended)?.completed;
    let entries = BTree::range(tx, &completed, .., limit)?;
    Ok(entries
        .into_iter()
        .map(|((at, _), job)| (at, job))
        .collect())
}

/// How many COMPLETED jobs of `queue` that ended without a run are kept.
pub fn completed_count(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<u64> {
    let Some(ended) = tx.get(queue)?.ended() else {
        return Ok(0);
    };
    let completed = tx.get(&ended)?.completed;
    Ok(BTree::len(tx, &completed)?)
}

/// Drops up to `limit` of them that ended before `cutoff`; returns how many. A
/// dropped job is no longer reachable, so pack reclaims it.
pub fn drop_completed_before(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    cutoff: Timestamp,
    limit: usize,
) -> Result<usize> {
    let Some(ended) = tx.get(queue)?.ended() else {
        return Ok(0);
    };
    let completed = tx.get(&ended)?.completed;
    let old = BTree::range(tx, &completed, ..(cutoff, 0), limit)?;
    for (key, job) in &old {
        BTree::remove(tx, &completed, key)?;
        crate::queue::release_unique(tx, queue, *job)?;
    }
    Ok(old.len())
}
