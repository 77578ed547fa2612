//! Failing a job that has not run to a result: cancelled by an operator, or
//! found past its deadline by a claim.
//!
//! Invariant: a failed job's failure is its result, recorded in its error history
//! and logged at its failure level, in the transaction that fails it; a job
//! [`fail`] ends outside an agent is kept among its queue's ended jobs.

use zodiac_objects::{PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::failure::Failure;
use crate::model::job::{Job, Location, Outcome};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::time::Timestamp;
/// Fails a job that has not run to a result (NEW, PENDING or ASSIGNED → CALLBACKS):
/// a pending job leaves its queue; the failure (default: a timeout) becomes its
/// result; with no callbacks to run it is COMPLETED at once, otherwise it stays in
/// CALLBACKS until a worker adopts it and runs them
/// ([`crate::Dispatchers::adopt_ended`]) or the caller runs them
/// (`Runner::finish_callbacks`). It is kept among the ended jobs of its queue (the
/// default queue for a NEW job outside any queue; see [`crate::ended`]).
pub fn fail(tx: &mut Transaction<'_>, job: &PRef<Job>, failure: Option<Failure>) -> Result<()> {
    let id = job.oid();
    let j = tx.get(job)?;
    let queue_name = crate::ended::queue_of(j.location()).map(str::to_string);
    if let (Status::Pending, Location::Queue { queue, key }) = (j.status(), j.location()) {
        let queue = Queue::named(tx, queue)?;
        crate::queue::release(tx, job)?;
        Queue::take(tx, &queue, key)?;
    } else if j.status() == Status::Assigned {
        crate::queue::release(tx, job)?;
    } else if j.status() != Status::New {
        return Err(Error::IllegalTransition {
            job: id,
            from: j.status(),
            to: Status::Callbacks,
        });
    }
    let failure = failure.unwrap_or_else(|| Failure::timeout("failed without an error"));
    let now = Timestamp::now();
    finish_failed(tx, job, failure, now)?;
    // Kept where inspection finds it and pack keeps it; its callbacks are run by
    // the worker that adopts it.
    if let Some(name) = queue_name {
        crate::ended::record(tx, &name, *job, now)?;
    }
    Ok(())
}

/// Stores `failure` as the result (→ CALLBACKS, → COMPLETED when there are no
/// callbacks), records it in the error history and logs it at the job's level.
pub(crate) fn finish_failed(
    tx: &mut Transaction<'_>,
    job: &PRef<Job>,
    failure: Failure,
    now: Timestamp,
) -> Result<()> {
    let id = job.oid();
    tx.modify(job, |j| {
        j.finish(id, Outcome::Failure(failure.clone()), now)?;
        j.record_error(now, &failure);
        j.set_location(Location::None);
        crate::model::job::log_failure(id, j, &failure);
        Ok::<_, Error>(())
    })?
}
