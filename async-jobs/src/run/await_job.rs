//! "Await job": a handler's job waiting, ACTIVE without an agent slot, for
//! another job's result, and the resume callback that hands it over.

use zodiac_objects::{PRef, Transaction};

use crate::callbacks::add_callback_unchecked;
use crate::dispatcher::Dispatchers;
use crate::error::Result;
use crate::model::job::{Job, Location, Outcome, State};
use crate::model::status::Status;
use crate::queue::Claimer;
use crate::run::{RunLog, Runner, still_running};
use crate::time::Timestamp;
/// The handler name of the callback that completes a job awaiting another: it
/// stores the awaited job's result as the waiting job's.
pub const RESUME_HANDLER: &str = "zodiac.async.resume";

impl Runner {
    /// Makes `job` await `awaited` in `tx`: if `awaited` is COMPLETED, takes its
    /// result at once (`Some(true)`); otherwise records the wait and adds a resume
    /// callback to `awaited` (`Some(false)`). `None` if the job is no longer this
    /// run's.
    pub(super) fn start_awaiting(
        &self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        log: &RunLog,
        awaited: PRef<Job>,
    ) -> Result<Option<bool>> {
        if !still_running(tx, job, claimer, log.run)? {
            return Ok(None);
        }
        let a = tx.get(&awaited)?;
        if let State::Completed(outcome) = a.state() {
            let outcome = outcome.clone();
            return Ok(self.store(tx, job, claimer, log, outcome)?.then_some(true));
        }
        let mut resume = Job::with_arguments(RESUME_HANDLER, &job.oid().0)?;
        // The waiting job holds no agent slot: this reference is what keeps it.
        resume.set_subject(*job);
        add_callback_unchecked(tx, &awaited, resume)?;
        tx.modify(job, |j| {
            log.apply(j);
            j.set_awaiting(Some(awaited));
        })?;
        Ok(Some(false))
    }
}

/// Completes the job a resume callback names with the awaited job's result, if it
/// is still waiting for it.
pub(super) fn resume(
    tx: &mut Transaction<'_>,
    callback: &Job,
    id: zodiac_storage::Oid,
    result: Option<Outcome>,
    now: Timestamp,
) -> Result<()> {
    let waiting = PRef::<Job>::from_oid(zodiac_storage::Oid(callback.arguments::<u64>(id)?));
    let Location::CallbackOf { parent: awaited } = callback.location().clone() else {
        return Ok(());
    };
    let w = tx.get(&waiting)?;
    if w.status() != Status::Active || w.awaiting() != Some(awaited) {
        return Ok(()); // no longer waiting (recovered, failed): nothing to take
    }
    let result = result.expect("a callback runs after its parent's result is stored");
    crate::queue::release(tx, &waiting)?;
    let wid = waiting.oid();
    tx.modify(&waiting, |j| {
        j.set_awaiting(None);
        j.finish(wid, result, now)
    })??;
    // Its agent let it go while it waited: list it among that agent's completed
    // jobs now, for inspection and retention.
    if let Location::Agent {
        queue,
        dispatcher,
        agent,
    } = w.location()
    {
        Dispatchers::record_finished_elsewhere(tx, queue, dispatcher, agent, now, waiting)?;
    }
    Ok(())
}
