//! Cancelling many jobs at once: by id, or every pending job of a queue or a
//! handler, in bounded batches.
//!
//! Invariants:
//! - Each call cancels all the jobs it is given or none ([`cancel_jobs`] refuses
//!   a job that has started, with [`Error::Refused`], and the caller's
//!   transaction is then not committed); one call cancels at most
//!   [`CANCEL_BATCH_JOBS_MAX`] jobs, so a transaction stays bounded however many
//!   jobs match: callers repeat [`cancel_matching`] until it returns fewer.
//! - A cancelled job is failed with the given failure exactly as [`fail`] fails
//!   one: it leaves its queue, its callbacks run, and it is kept among its
//!   queue's ended jobs.

use std::collections::BTreeSet;

use zodiac_objects::{PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::failure::Failure;
use crate::model::job::Job;
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::queue::fail;

/// Most jobs one call of [`cancel_jobs`] or [`cancel_matching`] cancels.
pub const CANCEL_BATCH_JOBS_MAX: usize = 1000;

/// Which pending jobs [`cancel_matching`] cancels; `None` fields match every job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CancelFilter {
    /// Only the jobs of this queue.
    pub queue: Option<String>,
    /// Only the jobs of this handler.
    pub handler: Option<String>,
}

/// Cancels the jobs `jobs` (NEW or PENDING), all or none, failing each with
/// `failure`. Refused ([`Error::Refused`]) if one has started; returns how many
/// were cancelled (duplicates count once).
pub fn cancel_jobs(
    tx: &mut Transaction<'_>,
    jobs: &[PRef<Job>],
    failure: &Failure,
) -> Result<usize> {
    let jobs: BTreeSet<PRef<Job>> = jobs.iter().copied().collect();
    if jobs.len() > CANCEL_BATCH_JOBS_MAX {
        return Err(Error::LimitExceeded {
            what: "the jobs of one cancel",
            len: jobs.len(),
            max: CANCEL_BATCH_JOBS_MAX,
        });
    }
    for job in &jobs {
        let status = tx.get(job)?.status();
        if !matches!(status, Status::New | Status::Pending) {
            return Err(Error::Refused {
                job: job.oid(),
                action: "cancelled",
                why: format!("it is {status}; only a job that has not started (NEW or PENDING) is"),
            });
        }
    }
    for job in &jobs {
        fail(tx, job, Some(failure.clone()))?;
    }
    Ok(jobs.len())
}

/// Cancels up to `limit` (at most [`CANCEL_BATCH_JOBS_MAX`]) PENDING jobs
/// matching `filter`, in claim order per queue, failing each with `failure`;
/// returns them. Fewer than `limit`: no other pending job matched.
pub fn cancel_matching(
    tx: &mut Transaction<'_>,
    filter: &CancelFilter,
    failure: &Failure,
    limit: usize,
) -> Result<Vec<PRef<Job>>> {
    let limit = limit.min(CANCEL_BATCH_JOBS_MAX);
    let mut chosen = Vec::new();
    'queues: for name in Queue::names(tx)? {
        if filter.queue.as_ref().is_some_and(|q| *q != name) {
            continue;
        }
        let Some(queue) = Queue::get(tx, &name)? else {
            continue;
        };
        for (_, job) in Queue::pending(tx, &queue, usize::MAX)? {
            if chosen.len() >= limit {
                break 'queues;
            }
            let j = tx.get(&job)?;
            if filter.handler.as_ref().is_none_or(|h| h == j.handler()) {
                chosen.push(job);
            }
        }
    }
    for job in &chosen {
        fail(tx, job, Some(failure.clone()))?;
    }
    Ok(chosen)
}
