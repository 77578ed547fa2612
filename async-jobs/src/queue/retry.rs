//! An operator's actions on completed jobs: retrying failed ones (COMPLETED with
//! a failure → PENDING) and discarding completed ones from their queue's
//! retained jobs.
//!
//! Invariants:
//! - Each call changes all the jobs it is given or none: any job it refuses
//!   fails the whole call with [`Error::Refused`] (the caller's transaction is
//!   then not committed), and one call changes at most [`RETRY_BATCH_JOBS_MAX`]
//!   jobs.
//! - A retried job leaves every retained collection of its queue (so retention
//!   never drops it and listings show it once) and is PENDING in that queue, with
//!   one entry under the key its location names, a fresh attempt count, the
//!   failure in its error history and a fresh schedule: it may start now, with
//!   its deadline (`begin_by`) counted from now. Its callbacks ran with the
//!   failure and do not run again; callbacks added later run at its next
//!   completion.
//! - A discarded job leaves every retained collection of its queue: nothing holds
//!   it any more, so pack's garbage collection reclaims it (and its callbacks).

use std::collections::{BTreeMap, BTreeSet};

use zodiac_objects::{PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::job::{Ending, Job, Location};
use crate::model::queue::{Entry, Queue, QueueKey};
use crate::model::status::Status;
use crate::queue::retained::{self, Kept};
use crate::time::Timestamp;

/// Most jobs one retry, retry of all failed jobs or discard changes (one
/// transaction's worth; run it again for more).
pub const RETRY_BATCH_JOBS_MAX: usize = 10_000;

/// Retries the failed (or cancelled, or timed-out) COMPLETED jobs `jobs`, all or
/// none: each goes back to PENDING in the queue that kept it (see the module
/// docs). Refused ([`Error::Refused`]) if one is not COMPLETED with a failure,
/// or is not kept by a queue (a callback, or a job run outside any queue).
/// Returns how many were retried (duplicates count once).
pub fn retry_jobs(tx: &mut Transaction<'_>, jobs: &[PRef<Job>]) -> Result<usize> {
    let jobs = distinct(jobs)?;
    for job in &jobs {
        let j = tx.get(job)?;
        match j.outcome() {
            Some(outcome) if j.status() == Status::Completed && outcome.is_failure() => {}
            _ => {
                // The reason `reopen` gives, without changing anything.
                let mut copy = (*j).clone();
                return Err(copy
                    .reopen(job.oid(), Timestamp::now())
                    .expect_err("only a failed COMPLETED job reopens"));
            }
        }
    }
    let found = retained::find(tx, None, &mut |_, job| Ok(jobs.contains(&job)))?;
    let now = Timestamp::now();
    for job in &jobs {
        let kept = kept_or_refuse(&found, *job, "retried")?;
        retained::forget(tx, *job, kept)?;
        requeue(tx, job, &kept.queue, now)?;
    }
    Ok(jobs.len())
}

/// Retries up to [`RETRY_BATCH_JOBS_MAX`] COMPLETED jobs that *failed* (ending
/// [`Ending::Failed`]: not cancelled, not timed out) kept by queue `queue`
/// (every queue when `None`), as [`retry_jobs`] does; returns them.
pub fn retry_failed(tx: &mut Transaction<'_>, queue: Option<&str>) -> Result<Vec<PRef<Job>>> {
    let mut taken = 0usize;
    let found = retained::find(tx, queue, &mut |tx, job| {
        if taken >= RETRY_BATCH_JOBS_MAX {
            return Ok(false);
        }
        let failed = tx
            .get(&job)?
            .outcome()
            .is_some_and(|o| o.ending() == Ending::Failed);
        taken += usize::from(failed);
        Ok(failed)
    })?;
    let now = Timestamp::now();
    for (job, kept) in &found {
        retained::forget(tx, *job, kept)?;
        requeue(tx, job, &kept.queue, now)?;
    }
    Ok(found.into_keys().collect())
}

/// Discards the COMPLETED jobs `jobs`, all or none: they leave their queue's
/// retained jobs, and the next pack's garbage collection reclaims them. Refused
/// ([`Error::Refused`]) if one is not COMPLETED or not kept by a queue. Returns
/// how many were discarded (duplicates count once).
pub fn discard_jobs(tx: &mut Transaction<'_>, jobs: &[PRef<Job>]) -> Result<usize> {
    let jobs = distinct(jobs)?;
    for job in &jobs {
        let status = tx.get(job)?.status();
        if status != Status::Completed {
            return Err(Error::Refused {
                job: job.oid(),
                action: "discarded",
                why: format!(
                    "it is {status}; only a COMPLETED job is discarded (cancel a job that has not \
                     started first)"
                ),
            });
        }
    }
    let found = retained::find(tx, None, &mut |_, job| Ok(jobs.contains(&job)))?;
    for job in &jobs {
        let kept = kept_or_refuse(&found, *job, "discarded")?;
        retained::forget(tx, *job, kept)?;
        let queue = Queue::named(tx, &kept.queue)?;
        crate::queue::release_unique(tx, &queue, *job)?;
    }
    Ok(jobs.len())
}

/// `jobs` without duplicates, refused beyond [`RETRY_BATCH_JOBS_MAX`].
fn distinct(jobs: &[PRef<Job>]) -> Result<BTreeSet<PRef<Job>>> {
    let jobs: BTreeSet<PRef<Job>> = jobs.iter().copied().collect();
    if jobs.len() > RETRY_BATCH_JOBS_MAX {
        return Err(Error::LimitExceeded {
            what: "the jobs of one retry or discard",
            len: jobs.len(),
            max: RETRY_BATCH_JOBS_MAX,
        });
    }
    Ok(jobs)
}

fn kept_or_refuse<'k>(
    found: &'k BTreeMap<PRef<Job>, Kept>,
    job: PRef<Job>,
    action: &'static str,
) -> Result<&'k Kept> {
    found.get(&job).ok_or_else(|| Error::Refused {
        job: job.oid(),
        action,
        why: "no queue keeps it (a callback, or a job run outside any queue, or one already \
              discarded or dropped after the retention period)"
            .into(),
    })
}

/// Reopens the failed `job` and puts it in queue `name`, claimable from `now`.
fn requeue(tx: &mut Transaction<'_>, job: &PRef<Job>, name: &str, now: Timestamp) -> Result<()> {
    let id = job.oid();
    let queue = Queue::named(tx, name)?;
    let key = QueueKey {
        lane: QueueKey::lane_of(tx.get(job)?.priority(), true),
        at: now,
        job: id.0,
    };
    let (deadline, quota_names) = tx.modify(job, |j| {
        j.reopen(id, now)?;
        j.set_schedule(now, j.begin_by());
        j.set_location(Location::Queue {
            queue: name.to_string(),
            key,
        });
        Ok::<_, Error>((j.deadline(), j.quota_names().to_vec()))
    })??;
    let entry = Entry {
        job: *job,
        deadline,
        quota_names,
    };
    Queue::insert(tx, &queue, key, entry)
}
