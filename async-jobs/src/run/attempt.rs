//! One run of a job: mark it ACTIVE, call its handler, store its result or act on
//! its policy's decision, attempt after attempt.

use crate::run::panic_trace::catch_with_backtrace;

use std::sync::Arc;

use zodiac_objects::{PRef, Transaction};

use crate::callbacks::{BRANCH_HANDLER, Branch};
use crate::error::{Error, Result};
use crate::handler::JobContext;
use crate::model::failure::{Failure, FailureKind};
use crate::model::job::{Job, Location, Outcome, log_failure};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::queue::Claimer;
use crate::retry::{Decision, bounded, on_handler_failure};
use crate::run::await_job::{RESUME_HANDLER, resume};
use crate::run::callbacks::complete_parent_after_last_callback;
use crate::run::chain::Chain;
use crate::run::{
    RunLog, RunOutcome, Runner, Started, commit_failure, handler_failure, held_by, panic_message,
    queue_of, still_running, transact_through_outages,
};
use crate::time::Timestamp;
/// A failed attempt and its policy's decision, not acted on yet.
pub(super) struct Failed {
    pub(super) failure: Failure,
    pub(super) decision: Decision,
    /// The handler's value, when only committing it failed.
    pub(super) succeeded: Option<Vec<u8>>,
}

/// The run an attempt belongs to: its job, claimer, the job as marked ACTIVE, and
/// the run's log so far.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    job: &'a PRef<Job>,
    claimer: Option<&'a Claimer>,
    snapshot: &'a Job,
    log: &'a RunLog,
}

impl Runner {
    pub(super) fn run_one(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        chain: &mut Chain<'_>,
    ) -> Result<(RunOutcome, Option<Started>)> {
        let id = job.oid();
        let started = transact_through_outages(&self.db, |tx| {
            let j = tx.get(job)?;
            if !held_by(&j, claimer) {
                return Ok(None);
            }
            self.policy_for(&j)?;
            let now = self.clock.now();
            tx.modify(job, |j| j.transition(id, Status::Active, now))??;
            Ok(Some(tx.get(job)?))
        })?;
        let Some(snapshot) = started else {
            return Ok((self.abandon(job, "before it started"), None));
        };
        self.run_from(job, claimer, snapshot, chain)
    }

    /// A run from its second step: `snapshot` is the job as marked ACTIVE. With
    /// the outcome, the job's first callback when the result's commit started it.
    pub(super) fn run_from(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: Arc<Job>,
        chain: &mut Chain<'_>,
    ) -> Result<(RunOutcome, Option<Started>)> {
        let mut first_callback = None;
        let log = RunLog::of(&snapshot);
        let outcome = self.run_attempts(job, claimer, snapshot, log, &mut first_callback, chain)?;
        Ok((outcome, first_callback))
    }

    /// The attempts of a run (see [`Runner::run_from`]); sets `first_callback` when
    /// the committed result started it. `log` holds the run's failed attempts so
    /// far (none for a new run): with some, the first call here is a retry.
    pub(super) fn run_attempts(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: Arc<Job>,
        mut log: RunLog,
        first_callback: &mut Option<Started>,
        chain: &mut Chain<'_>,
    ) -> Result<RunOutcome> {
        let id = job.oid();
        let policy = self.policy_for(&snapshot)?;
        let queue = queue_of(&snapshot);
        let mut conn = self.db.connection();
        let mut retrying = !log.errors.is_empty();
        loop {
            let mut tx = conn.begin();
            // A retry calls the handler again only while the job is still this run's.
            if retrying && matches!(still_running(&mut tx, job, claimer, log.run), Ok(false)) {
                return Ok(self.abandon(job, "before a retry"));
            }
            retrying = true;
            let failed = match self.call(&mut tx, &snapshot, id, queue.clone(), claimer) {
                Ok((_, Some(awaited))) => {
                    match self.commit_awaiting(tx, job, claimer, &log, awaited)? {
                        Ok(outcome) => return Ok(outcome),
                        Err(e) => {
                            let failure = commit_failure(e);
                            let decision = policy.on_commit_error(&mut log.data, &failure);
                            Failed {
                                failure,
                                decision,
                                succeeded: None,
                            }
                        }
                    }
                }
                Ok((value, None)) => {
                    let attempt = Attempt {
                        job,
                        claimer,
                        snapshot: &snapshot,
                        log: &log,
                    };
                    match self.commit_value(tx, &attempt, &value, first_callback, chain)? {
                        Ok(outcome) => return Ok(outcome),
                        Err(e) => {
                            let failure = commit_failure(e);
                            let decision = policy.on_commit_error(&mut log.data, &failure);
                            Failed {
                                failure,
                                decision,
                                // The value the handler returned: only committing it failed.
                                succeeded: Some(value),
                            }
                        }
                    }
                }
                Err(failure) => {
                    drop(tx); // aborts the handler's writes
                    let decision = on_handler_failure(&*policy, &mut log.data, &failure, &snapshot);
                    Failed {
                        failure,
                        decision,
                        succeeded: None,
                    }
                }
            };
            if let Some(outcome) = self.decide(job, claimer, &snapshot, &mut log, failed)? {
                return Ok(outcome);
            }
        }
    }

    /// Commits `tx`, in which the handler asked to await `awaited`: the run's
    /// outcome, or (inner `Err`) why the wait did not commit.
    fn commit_awaiting(
        &self,
        mut tx: Transaction<'_>,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        log: &RunLog,
        awaited: PRef<Job>,
    ) -> Result<Result<RunOutcome, Error>> {
        let stored = self.start_awaiting(&mut tx, job, claimer, log, awaited);
        let committed = match stored {
            Ok(Some(taken)) => tx.commit().map(|_| Some(taken)).map_err(Error::from),
            other => other,
        };
        Ok(match committed {
            Ok(Some(false)) => Ok(RunOutcome::Awaiting(awaited)),
            Ok(Some(true)) => {
                // The awaited job had completed: its result is ours now.
                Ok(self.finished(job)?)
            }
            Ok(None) => Ok(self.abandon(job, "while starting to await")),
            Err(e) => Err(e),
        })
    }

    /// Stores the handler's `value` in `tx` with the first callback's start or the
    /// agent's next claim, and commits while the job is still held: the run's
    /// outcome, or (inner `Err`) why the result did not commit.
    fn commit_value(
        &self,
        mut tx: Transaction<'_>,
        attempt: &Attempt<'_>,
        value: &[u8],
        first_callback: &mut Option<Started>,
        chain: &mut Chain<'_>,
    ) -> Result<Result<RunOutcome, Error>> {
        let Attempt {
            job,
            claimer,
            snapshot,
            log,
        } = *attempt;
        let id = job.oid();
        let mut callback = None;
        let mut claim = None;
        let stored = self
            .store(&mut tx, job, claimer, log, Outcome::Value(value.to_vec()))
            .and_then(|held| {
                if held {
                    callback = self.start_first_callback(&mut tx, job)?;
                    if callback.is_none() && snapshot.handler() != RESUME_HANDLER {
                        claim = chain.claim_in(&mut tx, job)?;
                    }
                }
                Ok(held)
            });
        // Commit only while still held: otherwise drop (abort) it all.
        let committed = match (stored, &claim) {
            (Ok(true), Some((savepoint, _))) => tx
                .commit_or_rollback_to(savepoint)
                .map(|(_, all)| {
                    if !all {
                        claim = None;
                    }
                    true
                })
                .map_err(Error::from),
            (Ok(true), None) => tx.commit().map(|_| true).map_err(Error::from),
            (other, _) => other,
        };
        match committed {
            Ok(true) => {}
            Ok(false) => return Ok(Ok(self.abandon(job, "with its result"))),
            Err(e) => return Ok(Err(e)),
        }
        *first_callback = callback;
        if let Some((_, claimed)) = claim {
            *chain.claimed = claimed.next;
            for expired in &claimed.expired {
                self.finish_callbacks(expired)?;
            }
        }
        log::info!(
            target: "zodiac_async::trace",
            "job {id} ({}) completed on attempt {}",
            snapshot.handler(),
            snapshot.attempts(),
            id = id.0
        );
        Ok(Ok(self.finished(job)?))
    }

    /// Acts on a failed attempt of `job`'s run (`log`, its failures so far, gains
    /// this one): puts the job back for a retry later, or stores the failure the
    /// policy gave up with (logging a lost result value), and returns that
    /// outcome; or returns `None` when the handler is to be called again now (a job
    /// outside any queue first sleeps out a delayed retry).
    pub(super) fn decide(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: &Job,
        log: &mut RunLog,
        failed: Failed,
    ) -> Result<Option<RunOutcome>> {
        let id = job.oid();
        let Failed {
            failure,
            decision,
            succeeded,
        } = failed;
        let queue = queue_of(snapshot);
        let now = self.clock.now();
        log::debug!(target: "zodiac_async::trace", "job {}: attempt failed: {failure}", id.0);
        log.errors.push((now, failure));
        match bounded(decision, snapshot.deadline(), now) {
            Decision::Retry => {}
            Decision::RetryAfter(d) if queue.is_none() => std::thread::sleep(d),
            Decision::RetryAt(t) if queue.is_none() => {
                std::thread::sleep(t.since(self.clock.now()))
            }
            Decision::RetryAfter(d) => {
                return self.put_back(job, claimer, log, now.plus(d)).map(Some);
            }
            Decision::RetryAt(t) => return self.put_back(job, claimer, log, t).map(Some),
            Decision::GiveUp(f) => {
                if let Some(value) = succeeded {
                    // The outcome the failure replaces must not vanish silently.
                    log::error!(
                        target: "zodiac_async::events",
                        "job {id} ({}) had succeeded with its result value {value:?} \
                         (postcard bytes) but committing it failed; storing the commit \
                         failure as its result: {}",
                        snapshot.handler(),
                        log.errors.last().map_or(String::new(), |(_, f)| f.to_string()),
                        id = id.0
                    );
                }
                return self.give_up(job, claimer, log, f).map(Some);
            }
        }
        Ok(None)
    }

    /// Calls the job's handler in `tx`; any failure (error, panic, no handler) is
    /// returned as a failure record.
    pub(super) fn call(
        &self,
        tx: &mut Transaction<'_>,
        job: &Job,
        id: zodiac_storage::Oid,
        queue: Option<String>,
        claimer: Option<&Claimer>,
    ) -> Result<(Vec<u8>, Option<PRef<Job>>), Failure> {
        let parent_result = match job.location() {
            Location::CallbackOf { parent } => match tx.get(parent) {
                Ok(p) => p.result().cloned(),
                Err(e) => return Err(Failure::from_error(FailureKind::Storage, &e)),
            },
            _ => None,
        };
        if job.handler() == crate::composite::JOIN_HANDLER {
            return crate::composite::join(tx, job, id)
                .map(|()| (postcard::to_stdvec(&()).expect("unit encodes"), None))
                .map_err(|e| {
                    let kind = match &e {
                        Error::Objects(zodiac_objects::Error::Conflict(_)) => FailureKind::Conflict,
                        _ => FailureKind::Storage,
                    };
                    Failure::from_error(kind, &e)
                });
        }
        if job.handler() == RESUME_HANDLER {
            return resume(tx, job, id, parent_result, self.clock.now())
                .map(|()| (postcard::to_stdvec(&()).expect("unit encodes"), None))
                .map_err(|e| Failure::from_error(FailureKind::Storage, &e));
        }
        let (name, arguments) = if job.handler() == BRANCH_HANDLER {
            match chosen_branch(job, id, parent_result.as_ref())? {
                Some(chosen) => chosen,
                // No job for this branch: nothing to do, an empty value.
                None => return Ok((postcard::to_stdvec(&()).expect("unit encodes"), None)),
            }
        } else {
            (job.handler().to_string(), job.argument_bytes().to_vec())
        };
        let Some(handler) = self.handlers.get(&name) else {
            return Err(Failure::new(
                FailureKind::UnknownHandler,
                format!("no handler named {name:?} is registered in this worker"),
            ));
        };
        let mut ctx = JobContext::new(
            id,
            queue,
            claimer.map(|c| c.agent.clone()),
            claimer.map(|c| c.dispatcher.clone()),
            job.attempts(),
            parent_result,
            tx,
        );
        match catch_with_backtrace(|| handler(&mut ctx, &arguments)) {
            Ok(Ok(value)) => Ok((value, ctx.awaited())),
            Ok(Err(e)) => Err(handler_failure(e)),
            Err(panic) => {
                let failure = Failure::new(FailureKind::Panic, panic_message(&*panic.payload));
                Err(match panic.backtrace {
                    Some(trace) => failure.with_backtrace(trace),
                    None => failure,
                })
            }
        }
    }

    /// Stores `outcome` as the result in `tx` (→ CALLBACKS, → COMPLETED without
    /// callbacks) if the job is still held by `claimer`; returns whether it was.
    pub(super) fn store(
        &self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        log: &RunLog,
        outcome: Outcome,
    ) -> Result<bool> {
        let id = job.oid();
        if !still_running(tx, job, claimer, log.run)? {
            return Ok(false);
        }
        crate::queue::release(tx, job)?;
        let now = self.clock.now();
        let completed = tx.modify(job, |j| {
            log.apply(j);
            j.finish(id, outcome, now)?;
            Ok::<_, Error>(j.status() == Status::Completed)
        })??;
        if completed {
            complete_parent_after_last_callback(tx, job, now)?;
        }
        Ok(true)
    }

    pub(super) fn give_up(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        log: &RunLog,
        failure: Failure,
    ) -> Result<RunOutcome> {
        let outcome = Outcome::Failure(failure.clone());
        let held = transact_through_outages(&self.db, |tx| {
            self.store(tx, job, claimer, log, outcome.clone())
        })?;
        if !held {
            return Ok(self.abandon(job, "with its failure"));
        }
        let j = self.load(job)?;
        log_failure(job.oid(), &j, &failure);
        Ok(RunOutcome::Finished(outcome))
    }

    pub(super) fn put_back(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        log: &RunLog,
        retry_at: Timestamp,
    ) -> Result<RunOutcome> {
        let held = transact_through_outages(&self.db, |tx| {
            if !still_running(tx, job, claimer, log.run)? {
                return Ok(false);
            }
            tx.modify(job, |j| log.apply(j))?;
            Queue::put_back_at(tx, job, Some(retry_at), self.clock.now())?;
            Ok(true)
        })?;
        if !held {
            return Ok(self.abandon(job, "before its retry"));
        }
        Ok(RunOutcome::PutBack { retry_at })
    }
}

/// The handler and arguments a branch callback `job` runs, by its parent's result
/// (`None`: that branch has no job).
fn chosen_branch(
    job: &Job,
    id: zodiac_storage::Oid,
    parent_result: Option<&Outcome>,
) -> Result<Option<(String, Vec<u8>)>, Failure> {
    let branch: Branch = postcard::from_bytes(job.argument_bytes()).map_err(|e| {
        Failure::from_error(
            FailureKind::UserError,
            &Error::Arguments { job: id, source: e },
        )
    })?;
    if parent_result.is_some_and(Outcome::is_failure) {
        Ok(branch.on_failure)
    } else {
        Ok(branch.on_success)
    }
}
