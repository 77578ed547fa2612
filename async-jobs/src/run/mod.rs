//! Running one job: mark it ACTIVE, call its handler in a transaction, commit the
//! handler's writes together with the result, and let the retry policy decide
//! what happens on errors.
//!
//! Invariants:
//! - The handler's writes and the job's result commit in one transaction: if that
//!   commit happens, both are in; on any error both are out (the transaction is
//!   dropped, which aborts it) and the policy decides.
//! - Before every state change the runner checks, in the same transaction, that the
//!   job is still ACTIVE in *this* run (same attempt number) and held by the claimer
//!   it runs for; if not (a sibling recovered it, and perhaps it was claimed and
//!   started again since), it stores nothing and reports [`RunOutcome::Abandoned`].
//!   It checks the same before calling the handler again for a retry, so a run taken
//!   over (a false death) does not repeat the handler's work.
//! - The run's own state changes (start, put back, failure, callbacks) wait out a
//!   lost storage connection (retried after 5 s, 10 s, … capped at 60 s): one that
//!   gave up would leave its job ACTIVE or ASSIGNED with a live agent that no longer
//!   runs it, for no sibling to recover.
//! - A panic in a handler is caught and becomes a `panic` failure; an unknown
//!   handler name becomes an `unknown handler` failure; neither reaches the caller.
//! - A parent moves from CALLBACKS to COMPLETED only in a transaction that found no
//!   NEW callback; adding a callback writes the parent too, so an addition racing
//!   the completion conflicts with it and is either run by the completing runner or
//!   sees the parent COMPLETED and is run at once by [`Runner::add_callback`]. The
//!   result of a parent's last callback commits the parent's completion with it.
//! - Callbacks run under the callback policy (`forever` unless they name one).
//! - A handler that awaits job J commits its writes, leaves its job ACTIVE with
//!   `awaiting = J`, and adds a resume callback to J; the resume stores J's result
//!   as the job's only while it still awaits J. An awaiting job holds no agent slot
//!   and is not recovered as interrupted (no process runs it).
//! - A batch ([`Runner::run_batch`]) runs each handler after a savepoint of the
//!   batch's one transaction: a failure rolls back to it (only that job's writes
//!   go), and the policy's decision is acted on after the batch's commit, in
//!   transactions of their own; a batch commit that fails is each job's commit
//!   failure. A batch's transaction takes further jobs for at most
//!   [`BATCH_SPAN_MAX`], and a job whose run is no longer its own in that
//!   transaction's snapshot is not called.
//! - Retries decided by the policy happen at once in this run ([`Decision::Retry`]);
//!   a retry later puts a queue job back in its queue at that time, and sleeps for
//!   a job run outside a queue. The job's deadline bounds every retry.

mod attempt;
mod await_job;
mod batch;
mod callbacks;
mod chain;
mod panic_trace;

use std::sync::Arc;

use zodiac_objects::{Database, PRef, Transaction};

use crate::error::{Error, Result};
use crate::handler::{HandlerError, Handlers};
use crate::model::failure::{Failure, FailureKind};
use crate::model::job::{Job, Location, Outcome};
use crate::model::status::Status;
use crate::queue::Claimer;
use crate::retry::{Policies, RetryData};
use crate::time::{Clock, SystemClock, Timestamp};
use crate::traced::TracedError;
use crate::transact::{poll_backoff, transact};

pub use await_job::RESUME_HANDLER;
pub use batch::BATCH_SPAN_MAX;
use chain::Chain;
pub(crate) use chain::Claimed;
/// What a run ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The result (value or final failure) is stored: the job is COMPLETED, or in
    /// CALLBACKS when it has callbacks to run.
    Finished(Outcome),
    /// The policy asked for a retry later: the job is PENDING in its queue again.
    PutBack {
        /// When it may run again.
        retry_at: Timestamp,
    },
    /// The job is no longer held by this claimer; nothing was stored.
    Abandoned,
    /// The handler asked to await this job: the job stays ACTIVE and takes that
    /// job's result when it completes.
    Awaiting(PRef<Job>),
}

/// A job marked ACTIVE in a committed transaction, as it left it.
pub(crate) type Started = (PRef<Job>, std::sync::Arc<Job>);

/// Runs jobs with a set of handlers and retry policies.
#[derive(Clone)]
pub struct Runner {
    db: Database,
    handlers: Handlers,
    policies: Policies,
    /// Where runs, retries and callbacks read the time.
    clock: Arc<dyn Clock>,
}

/// Whether `job` is held by `claimer` (or, with no claimer, by no agent).
fn held_by(job: &Job, claimer: Option<&Claimer>) -> bool {
    match (job.location(), claimer) {
        (Location::Agent { .. }, None) => false,
        (_, None) => true,
        (
            Location::Agent {
                dispatcher, agent, ..
            },
            Some(c),
        ) => *dispatcher == c.dispatcher && *agent == c.agent,
        (_, Some(_)) => false,
    }
}

fn objects_kind(e: &zodiac_objects::Error, other: FailureKind) -> FailureKind {
    match e {
        zodiac_objects::Error::Conflict(_) | zodiac_objects::Error::RetriesExhausted { .. } => {
            FailureKind::Conflict
        }
        zodiac_objects::Error::Storage(e) if e.is_disconnected() => FailureKind::Disconnected,
        zodiac_objects::Error::Storage(_) => FailureKind::Storage,
        _ => other,
    }
}

/// The failure record of a handler error: conflicts and storage errors are
/// recognised, anything else is a user error.
fn handler_failure(e: HandlerError) -> Failure {
    let kind = if let Some(oe) = e.downcast_ref::<zodiac_objects::Error>() {
        objects_kind(oe, FailureKind::UserError)
    } else if let Some(Error::Objects(oe)) = e.downcast_ref::<Error>() {
        objects_kind(oe, FailureKind::UserError)
    } else {
        FailureKind::UserError
    };
    match e.downcast_ref::<TracedError>() {
        Some(traced) => {
            Failure::from_error(kind, traced.error()).with_backtrace(traced.backtrace().to_string())
        }
        None => Failure::from_error(kind, e.as_ref()),
    }
}

/// The failure record of a failed commit of the result.
fn commit_failure(e: Error) -> Failure {
    let kind = match &e {
        Error::Objects(oe) => objects_kind(oe, FailureKind::Storage),
        _ => FailureKind::Storage,
    };
    Failure::from_error(kind, &e).with_context("phase", "commit")
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_string());
    format!("the handler panicked: {text}")
}

/// Whether this run (`run`, the job's attempt number when it started) is still the
/// job's current run, held by `claimer`: a sibling may have recovered the job, and
/// it may even have been claimed and started again since.
fn still_running(
    tx: &mut Transaction<'_>,
    job: &PRef<Job>,
    claimer: Option<&Claimer>,
    run: u32,
) -> Result<bool> {
    let j = tx.get(job)?;
    Ok(j.status() == Status::Active && j.attempts() == run && held_by(&j, claimer))
}

/// Whether `e` is a lost connection to the shared storage (a server, PostgreSQL).
fn is_disconnected(e: &Error) -> bool {
    matches!(e, Error::Objects(zodiac_objects::Error::Storage(s)) if s.is_disconnected())
}

/// [`transact`], retrying a lost storage connection after a growing wait (5 s,
/// 10 s, … capped at 60 s) until the storage answers: a run's state changes (start,
/// put back, failure, callbacks) must land, or its job would stay stuck with an
/// agent that no longer runs it.
pub(crate) fn transact_through_outages<R>(
    db: &Database,
    mut f: impl FnMut(&mut Transaction<'_>) -> Result<R>,
) -> Result<R> {
    let mut failures = 0u32;
    loop {
        match transact(db, &mut f) {
            Err(e) if is_disconnected(&e) => {
                failures = failures.saturating_add(1);
                let wait = poll_backoff(failures);
                log::error!(
                    target: "zodiac_async::events",
                    "a job's state change could not reach the storage ({failures} time(s) in a \
                     row); retrying in {wait:?}: {e}"
                );
                std::thread::sleep(wait);
            }
            other => return other,
        }
    }
}

/// The queue a job was claimed from (`None`: it runs outside any queue).
fn queue_of(job: &Job) -> Option<String> {
    match job.location() {
        Location::Agent { queue, .. } => Some(queue.clone()),
        _ => None,
    }
}

/// What the run learned that the stored job must keep.
struct RunLog {
    /// The run: the job's attempt number when it started.
    run: u32,
    data: RetryData,
    errors: Vec<(Timestamp, Failure)>,
}

impl RunLog {
    /// The log of a new run of `job` (as it was marked ACTIVE).
    fn of(job: &Job) -> RunLog {
        RunLog {
            run: job.attempts(),
            data: job.retry_data().clone(),
            errors: Vec::new(),
        }
    }

    fn apply(&self, j: &mut Job) {
        *j.retry_data_mut() = self.data.clone();
        for (time, failure) in &self.errors {
            j.record_error(*time, failure);
        }
    }
}

impl Runner {
    /// A runner of the jobs of `db` with `handlers`, under `policies`, reading
    /// the system clock.
    pub fn new(db: Database, handlers: Handlers, policies: Policies) -> Runner {
        Runner {
            db,
            handlers,
            policies,
            clock: Arc::new(SystemClock),
        }
    }

    /// This runner reading the time from `clock` (a worker built with it reads it
    /// too).
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Runner {
        self.clock = Arc::new(clock);
        self
    }

    /// The clock this runner reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The handlers it calls.
    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// The retry policies it asks.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The database its runs commit to.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `job` for `claimer` (the agent that claimed it; `None` for a NEW job run
    /// outside any queue). A job not in NEW or ASSIGNED is refused with
    /// [`Error::IllegalTransition`] and left unchanged; so is a job whose retry
    /// policy is not registered here ([`Error::NoSuchPolicy`]).
    ///
    /// When the job has callbacks, they run next, in order, each as its own job
    /// (callbacks added meanwhile included), and then the job becomes COMPLETED.
    pub fn run(&self, job: &PRef<Job>, claimer: Option<&Claimer>) -> Result<RunOutcome> {
        let mut unused = Vec::new();
        let mut chain = Chain {
            claim: None,
            claimed: &mut unused,
        };
        let (outcome, first_callback) = self.run_one(job, claimer, &mut chain)?;
        self.after_run(job, &outcome, first_callback, &mut chain)?;
        Ok(outcome)
    }

    /// After a run: its callbacks (`first_callback` already started by the
    /// result's commit), and those of a job a resume callback completed.
    fn after_run(
        &self,
        job: &PRef<Job>,
        outcome: &RunOutcome,
        first_callback: Option<Started>,
        chain: &mut Chain<'_>,
    ) -> Result<()> {
        if let Some((callback, started)) = first_callback {
            let (outcome, first) = self.run_from(&callback, None, started, chain)?;
            self.after_run(&callback, &outcome, first, chain)?;
        }
        if matches!(outcome, RunOutcome::Finished(_)) {
            self.finish_callbacks(job)?;
            // A resume callback completed the job that awaited: run its callbacks.
            let j = self.load(job)?;
            if j.handler() == RESUME_HANDLER {
                let waiting = PRef::<Job>::from_oid(zodiac_storage::Oid(j.arguments(job.oid())?));
                if self.load(&waiting)?.status() == Status::Callbacks {
                    self.finish_callbacks(&waiting)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn policy_for(
        &self,
        job: &Job,
    ) -> Result<std::sync::Arc<dyn crate::retry::RetryPolicy>> {
        match job.location() {
            Location::CallbackOf { .. } => self.policies.for_callback(job.retry_policy()),
            _ => self.policies.for_job(job.retry_policy()),
        }
    }

    /// The first step of a run, in the caller's transaction: if `job` is held by
    /// `claimer` and its retry policy is registered here, marks it ACTIVE (a new
    /// attempt, `active_start`) and returns the job as started; otherwise changes
    /// nothing and returns `None`. A worker calls it in the transaction of the claim
    /// itself, then [`Runner::run_chain`]: one durable commit fewer per job.
    pub(crate) fn start_in(
        &self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
    ) -> Result<Option<std::sync::Arc<Job>>> {
        let id = job.oid();
        let j = tx.get(job)?;
        if !held_by(&j, claimer) || self.policy_for(&j).is_err() {
            return Ok(None);
        }
        let now = self.clock.now();
        tx.modify(job, |j| j.transition(id, Status::Active, now))??;
        Ok(Some(tx.get(job)?))
    }

    pub(super) fn load(&self, job: &PRef<Job>) -> Result<std::sync::Arc<Job>> {
        transact_through_outages(&self.db, |tx| Ok(tx.get(job)?))
    }

    /// The outcome of `job`, whose result a committed transaction of this run
    /// stored.
    pub(super) fn finished(&self, job: &PRef<Job>) -> Result<RunOutcome> {
        let j = self.load(job)?;
        Ok(match j.outcome() {
            Some(outcome) => RunOutcome::Finished(outcome.clone()),
            // A stored result is never taken back; nothing else reaches here.
            None => self.abandon(job, "after storing its result"),
        })
    }

    pub(super) fn abandon(&self, job: &PRef<Job>, when: &str) -> RunOutcome {
        log::error!(
            target: "zodiac_async::events",
            "job {} is no longer held by this agent ({when}); another dispatcher took it over; \
             abandoning it without storing anything",
            job.oid().0
        );
        RunOutcome::Abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_server_connection_is_a_disconnected_failure() {
        let lost = zodiac_objects::Error::Storage(zodiac_storage::Error::Disconnected {
            address: "tcp://127.0.0.1:8100".into(),
            reason: "connection reset".into(),
        });
        assert_eq!(
            objects_kind(&lost, FailureKind::UserError),
            FailureKind::Disconnected
        );
        let failure = commit_failure(Error::Objects(lost));
        assert_eq!(failure.kind, FailureKind::Disconnected);
        let other = zodiac_objects::Error::Storage(zodiac_storage::Error::ReadOnly);
        assert_eq!(
            objects_kind(&other, FailureKind::UserError),
            FailureKind::Storage
        );
    }
}
