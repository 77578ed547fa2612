//! Recovery: the cleanup of a dead dispatcher and the recovery of runs it
//! interrupted.
//!
//! Invariants:
//! - Cleanup of a dead dispatcher runs in one transaction that writes its record,
//!   so two siblings cleaning up at once conflict and it happens once. It puts
//!   ASSIGNED jobs back, applies `on_interrupted` to ACTIVE ones (and to the
//!   running callback of a job in CALLBACKS), moves COMPLETED ones (including those
//!   whose policy just gave up) to the agent's completed collection, and
//!   deactivates the record; a job in CALLBACKS stays held, for a runner's
//!   `finish_callbacks` and then `release_finished`, so a restart that dies again
//!   while resuming them finds it again. A cleanup by a sibling that resumes them
//!   ([`Dispatchers::cleanup_adopting`]) moves them to its own agent instead, for
//!   the same reason.
//! - An interrupted run is recovered through its job's policy, bounded by its
//!   deadline, and the interruption is recorded in its error history.

use std::collections::BTreeSet;
use std::time::Duration;

use zodiac_objects::{BTree, PRef, Transaction};

use crate::dispatcher::{Dispatchers, at_agent};
use crate::error::{Error, Result};
use crate::model::dispatcher::DispatcherRecord;
use crate::model::failure::{Failure, FailureKind};
use crate::model::job::{Job, Location, Outcome, log_failure};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::queue::Claimer;
use crate::retry::{Decision, Policies, bounded};
use crate::time::Timestamp;
/// What a cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// ASSIGNED jobs put back in their queue.
    pub put_back: Vec<PRef<Job>>,
    /// ACTIVE jobs recovered through their policy.
    pub recovered: Vec<PRef<Job>>,
    /// Jobs in CALLBACKS (including recovered jobs whose policy gave up and
    /// which have callbacks), left for a runner's `finish_callbacks`; like the
    /// COMPLETED ones, they are listed among the agent's completed jobs.
    pub in_callbacks: Vec<PRef<Job>>,
}
impl Dispatchers {
    /// Cleans up the dead dispatcher `id`: ASSIGNED jobs go back to the queue,
    /// ACTIVE ones get their policy's `on_interrupted` decision, the record is
    /// deactivated. Refused with [`Error::AlreadyActive`] if it is alive. Jobs in
    /// CALLBACKS stay held by `id`'s agents for the caller to resume (see
    /// [`Dispatchers::cleanup_adopting`], which a worker uses).
    pub fn cleanup(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
        death_interval: Duration,
    ) -> Result<Cleanup> {
        Dispatchers::cleanup_dead(tx, queue, id, policies, now, death_interval, None)
    }

    /// [`Dispatchers::cleanup`] by a live dispatcher that resumes the callbacks of
    /// the jobs found in CALLBACKS: they move to `adopter`'s agent (held there,
    /// located there), so that if the adopter dies while resuming them its own
    /// cleanup finds them, and they are resumed by one dispatcher only. While held
    /// they take places of that agent, as the adopter runs their callbacks.
    pub fn cleanup_adopting(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
        death_interval: Duration,
        adopter: &Claimer,
    ) -> Result<Cleanup> {
        let adopter = Some(adopter);
        Dispatchers::cleanup_dead(tx, queue, id, policies, now, death_interval, adopter)
    }

    fn cleanup_dead(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
        death_interval: Duration,
        adopter: Option<&Claimer>,
    ) -> Result<Cleanup> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        if tx.get(&record)?.is_alive(now, death_interval) {
            return Err(Error::AlreadyActive { id: id.to_string() });
        }
        Dispatchers::hand_back(tx, queue, &record, id, policies, adopter, now)
    }

    /// Cleans up the previous incarnation of dispatcher `id` at once, alive or
    /// not: for a process that holds `id`'s identity lock (see
    /// `WorkerIdentity::restarted`), which proves the previous holder is gone.
    pub fn cleanup_previous_incarnation(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
    ) -> Result<Cleanup> {
        Dispatchers::cleanup_previous_incarnation_at(tx, queue, id, policies, Timestamp::now())
    }

    /// [`Dispatchers::cleanup_previous_incarnation`] at `now`.
    pub(crate) fn cleanup_previous_incarnation_at(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
    ) -> Result<Cleanup> {
        match Dispatchers::record(tx, queue, id)? {
            Some(record) => Dispatchers::hand_back(tx, queue, &record, id, policies, None, now),
            None => Ok(Cleanup::default()),
        }
    }

    /// Applies `on_interrupted` to the callbacks of `job` (in CALLBACKS) that were
    /// running (ACTIVE, not awaiting another job): their runner is gone.
    pub(crate) fn interrupt_callbacks(
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        policies: &Policies,
        now: Timestamp,
    ) -> Result<()> {
        for cb in tx.get(job)?.callbacks() {
            let c = tx.get(cb)?;
            if c.status() == Status::Active && c.awaiting().is_none() {
                recover_interrupted_at(tx, cb, policies, now)?;
            }
        }
        Ok(())
    }

    /// Moves `job` (in CALLBACKS, held by a gone dispatcher's agent) to `adopter`'s
    /// agent in `queue`.
    fn adopt(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        job: &PRef<Job>,
        adopter: &Claimer,
    ) -> Result<()> {
        let agent = Dispatchers::agent(tx, queue, &adopter.dispatcher, &adopter.agent)?;
        let queue_name = tx.get(queue)?.name().to_string();
        tx.modify(job, |j| {
            j.set_location(Location::Agent {
                queue: queue_name,
                dispatcher: adopter.dispatcher.clone(),
                agent: adopter.agent.clone(),
            })
        })?;
        tx.modify(&agent, |a| a.held.insert(*job))?;
        Ok(())
    }

    fn hand_back(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        record: &PRef<DispatcherRecord>,
        id: &str,
        policies: &Policies,
        adopter: Option<&Claimer>,
        now: Timestamp,
    ) -> Result<Cleanup> {
        let r = tx.get(record)?;
        let mut report = Cleanup::default();
        for (name, agent_ref) in &r.agents {
            let a = tx.get(agent_ref)?;
            let held = a.held.clone();
            let mut kept = BTreeSet::new();
            for job in held {
                let j = tx.get(&job)?;
                if !at_agent(&j, id, name) {
                    continue;
                }
                match j.status() {
                    Status::Assigned => {
                        Queue::put_back_at(tx, &job, None, now)?;
                        report.put_back.push(job);
                    }
                    // Waiting for another job, it is not running anywhere.
                    Status::Active if j.awaiting().is_some() => {}
                    Status::Active => {
                        recover_interrupted_at(tx, &job, policies, now)?;
                        report.recovered.push(job);
                    }
                    Status::Callbacks => {
                        // A callback that was running is retried by its policy.
                        Dispatchers::interrupt_callbacks(tx, &job, policies, now)?;
                    }
                    _ => {}
                }
                // Finished here (or given up on just now): COMPLETED to the
                // completed jobs; CALLBACKS goes to the adopter, or stays held until
                // the caller has resumed its callbacks (`release_finished`).
                let finished = tx.get(&job)?;
                match finished.status() {
                    Status::Callbacks => {
                        match adopter {
                            Some(a) if a.dispatcher != id => {
                                Dispatchers::adopt(tx, queue, &job, a)?;
                            }
                            _ => {
                                kept.insert(job);
                            }
                        }
                        report.in_callbacks.push(job);
                    }
                    Status::Completed => {
                        let at = finished.active_end().unwrap_or(now);
                        BTree::insert(tx, &a.completed, (at, job.oid().0), job)?;
                    }
                    _ => {}
                }
            }
            tx.modify(agent_ref, |a| a.held = kept)?;
        }
        tx.modify(record, |r| r.activated = None)?;
        log_cleanup(id, &report);
        Ok(report)
    }
}

/// Logs what the cleanup of dispatcher `id` did: at CRITICAL when it held jobs.
fn log_cleanup(id: &str, report: &Cleanup) {
    if report.put_back.is_empty() && report.recovered.is_empty() && report.in_callbacks.is_empty() {
        // A clean stop (or a crash while idle) leaves nothing to recover.
        log::info!(
            target: "zodiac_async::events",
            "dispatcher {id} is gone; it held no jobs"
        );
    } else {
        log::error!(
            target: "zodiac_async::events",
            "critical: dispatcher {id} is gone; put back {} job(s), recovered {} interrupted \
             job(s), resuming the callbacks of {}",
            report.put_back.len(),
            report.recovered.len(),
            report.in_callbacks.len()
        );
    }
}

/// Recovers a queue job whose run was interrupted (its process died while it was
/// ACTIVE), in the caller's transaction: asks the job's policy (`on_interrupted`,
/// bounded by the deadline) and puts the job back in its queue (at the front, or
/// scheduled), or gives up and stores the policy's failure as the result. A
/// callback is recovered the same way under the callback policy, except that a
/// retry makes it NEW again, to run when its parent's callbacks are resumed. The
/// interruption is recorded in the error history. A job not ACTIVE, or neither
/// claimed from a queue nor a callback, is refused and left unchanged.
pub fn recover_interrupted(
    tx: &mut Transaction<'_>,
    job: &PRef<Job>,
    policies: &Policies,
) -> Result<Decision> {
    recover_interrupted_at(tx, job, policies, Timestamp::now())
}

/// [`recover_interrupted`] at `now` (the interruption's time, the retry's base).
pub(crate) fn recover_interrupted_at(
    tx: &mut Transaction<'_>,
    job: &PRef<Job>,
    policies: &Policies,
    now: Timestamp,
) -> Result<Decision> {
    let id = job.oid();
    let j = tx.get(job)?;
    if j.status() != Status::Active {
        return Err(Error::IllegalTransition {
            job: id,
            from: j.status(),
            to: Status::Pending,
        });
    }
    let callback = matches!(j.location(), Location::CallbackOf { .. });
    if !callback && !matches!(j.location(), Location::Agent { .. }) {
        return Err(Error::NotClaimed {
            job: id,
            status: j.status(),
        });
    }
    let policy = if callback {
        policies.for_callback(j.retry_policy())?
    } else {
        policies.for_job(j.retry_policy())?
    };
    let mut data = j.retry_data().clone();
    let decision = bounded(policy.on_interrupted(&mut data), j.deadline(), now);
    let interruption = Failure::new(
        FailureKind::Reassigned,
        "the run was interrupted: the process running it stopped",
    );
    tx.modify(job, |j| {
        *j.retry_data_mut() = data;
        j.record_error(now, &interruption);
    })?;
    match &decision {
        // A callback is not in a queue: it runs again when its parent's callbacks
        // are resumed.
        d if callback && d.is_retry() => {
            tx.modify(job, |j| j.transition(id, Status::New, now))??
        }
        Decision::Retry => Queue::put_back_at(tx, job, None, now)?,
        Decision::RetryAfter(d) => Queue::put_back_at(tx, job, Some(now.plus(*d)), now)?,
        Decision::RetryAt(t) => Queue::put_back_at(tx, job, Some(*t), now)?,
        Decision::GiveUp(failure) => {
            crate::queue::release(tx, job)?;
            tx.modify(job, |j| {
                j.finish(id, Outcome::Failure(failure.clone()), now)?;
                log_failure(id, j, failure);
                Ok::<_, Error>(())
            })??;
        }
    }
    Ok(decision)
}
