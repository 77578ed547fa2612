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

use std::panic::{AssertUnwindSafe, catch_unwind};

use zodiac_objects::{Database, PRef, Transaction};

use crate::error::{Error, Result};
use crate::failure::{Failure, FailureKind};
use crate::handler::{HandlerError, Handlers, JobContext};
use crate::job::{Job, Location, Outcome, log_failure};
use crate::queue::{Claimer, Queue};
use crate::retry::{Decision, Policies, RetryData, bounded};
use crate::status::Status;
use crate::time::Timestamp;
use crate::transact::transact;

/// What a run ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The result (value or final failure) is stored: the job is COMPLETED, or in
    /// CALLBACKS when it has callbacks to run.
    Finished(Outcome),
    /// The policy asked for a retry later: the job is PENDING in its queue again.
    PutBack { retry_at: Timestamp },
    /// The job is no longer held by this claimer; nothing was stored.
    Abandoned,
    /// The handler asked to await this job: the job stays ACTIVE and takes that
    /// job's result when it completes.
    Awaiting(PRef<Job>),
}

/// A job marked ACTIVE in a committed transaction, as it left it.
pub(crate) type Started = (PRef<Job>, std::sync::Arc<Job>);

/// What a claim made in the commit of a run's last result took: the agent's next
/// jobs (one, or up to a worker's batch size), claimed and started
/// ([`Runner::start_in`]), and the expired jobs the claim completed (their
/// callbacks are run after the commit).
#[derive(Default)]
pub(crate) struct Claimed {
    pub next: Vec<Started>,
    pub expired: Vec<PRef<Job>>,
}

/// Claims the agent's next job in the given transaction (see [`Runner::run_chain`]).
pub(crate) type ClaimNext<'a> = &'a dyn Fn(&mut Transaction<'_>) -> Result<Claimed>;

/// A run's claim hook and what it claimed: the hook is used at most once per run,
/// in the commit that ends the run's work (the job's result with no callback
/// left, or the result of its last callback).
struct Chain<'a> {
    claim: Option<ClaimNext<'a>>,
    claimed: &'a mut Vec<Started>,
}

impl Chain<'_> {
    /// In `tx`, which stores `job`'s result: when that ends the run's work (`job`
    /// is COMPLETED, and so is its parent if it is a callback) and the hook was not
    /// used yet, a savepoint and then the claim. A claim that fails is rolled back
    /// (the result commits without it) and logged.
    fn claim_in(
        &mut self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
    ) -> Result<Option<(zodiac_objects::Savepoint, Claimed)>> {
        let Some(claim) = self.claim else {
            return Ok(None);
        };
        if !work_done(tx, job)? {
            return Ok(None);
        }
        self.claim = None;
        let savepoint = tx.savepoint();
        match claim(tx) {
            // Also when nothing was taken: what the claim tidied (the agent's
            // finished jobs) rides on this commit, after the savepoint, instead of
            // costing the next poll a commit of its own.
            Ok(claimed) => Ok(Some((savepoint, claimed))),
            Err(e) => {
                log::debug!(
                    target: "zodiac_async::events",
                    "claiming the next job with job {}'s result failed: {e}",
                    job.oid()
                );
                tx.rollback_to(&savepoint)?;
                Ok(None)
            }
        }
    }
}

/// Whether `job`'s run has no work left in `tx`: it is COMPLETED, and so is its
/// parent when it is a callback.
fn work_done(tx: &mut Transaction<'_>, job: &PRef<Job>) -> Result<bool> {
    let j = tx.get(job)?;
    if j.status() != Status::Completed {
        return Ok(false);
    }
    if let Location::CallbackOf { parent } = j.location() {
        return Ok(tx.get(parent)?.status() == Status::Completed);
    }
    Ok(true)
}

/// Runs jobs with a set of handlers and retry policies.
#[derive(Clone)]
pub struct Runner {
    db: Database,
    handlers: Handlers,
    policies: Policies,
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
        zodiac_objects::Error::Storage(zodiac_storage::Error::Disconnected { .. }) => {
            FailureKind::Disconnected
        }
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
    Failure::from_error(kind, e.as_ref())
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

/// Whether `e` is a lost storage server connection.
fn is_disconnected(e: &Error) -> bool {
    matches!(
        e,
        Error::Objects(zodiac_objects::Error::Storage(
            zodiac_storage::Error::Disconnected { .. }
        ))
    )
}

/// [`transact`], retrying a lost storage connection after a growing wait (5 s,
/// 10 s, … capped at 60 s) until the storage answers: a run's state changes (start,
/// put back, failure, callbacks) must land, or its job would stay stuck with an
/// agent that no longer runs it.
fn transact_through_outages<R>(
    db: &Database,
    mut f: impl FnMut(&mut Transaction<'_>) -> Result<R>,
) -> Result<R> {
    let mut failures = 0u32;
    loop {
        match transact(db, &mut f) {
            Err(e) if is_disconnected(&e) => {
                failures = failures.saturating_add(1);
                let wait = std::time::Duration::from_secs(5)
                    .saturating_mul(failures)
                    .min(std::time::Duration::from_secs(60));
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

/// What became of one job of a batch in the batch's transaction
/// ([`Runner::run_batch`]).
enum BatchStep {
    /// Its result is stored; the commit also starts its first callback, if any.
    Stored {
        first_callback: Option<Started>,
        /// The handler's value (`None`: the result of a job it awaited).
        succeeded: Option<Vec<u8>>,
    },
    /// It awaits a job, as stored.
    Awaiting,
    /// Its attempt failed: nothing of it is stored.
    Failed(Failed),
    /// It is no longer this run's: nothing of it is stored.
    Abandoned,
}

/// How long a batch's transaction takes further jobs: a later job of the batch
/// goes to a new transaction, whose fresher snapshot shows whether a sibling
/// recovered it meanwhile (after a false death), before its handler runs.
pub const BATCH_SPAN_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// A failed attempt and its policy's decision, not acted on yet.
struct Failed {
    failure: Failure,
    decision: Decision,
    /// The handler's value, when only committing it failed.
    succeeded: Option<Vec<u8>>,
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
    pub fn new(db: Database, handlers: Handlers, policies: Policies) -> Runner {
        Runner {
            db,
            handlers,
            policies,
        }
    }

    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
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

    /// Runs the callbacks of `parent` (in CALLBACKS or COMPLETED) that have not run,
    /// in order, picking up callbacks added meanwhile; then moves a parent in
    /// CALLBACKS to COMPLETED, in a transaction that conflicts with a concurrent
    /// [`Runner::add_callback`], so no callback is left behind.
    pub fn finish_callbacks(&self, parent: &PRef<Job>) -> Result<()> {
        let id = parent.oid();
        loop {
            let next = transact_through_outages(&self.db, |tx| {
                let p = tx.get(parent)?;
                let mut running = false;
                for cb in p.callbacks() {
                    match tx.get(cb)?.status() {
                        Status::New => return Ok(Some(*cb)),
                        Status::Active => running = true,
                        _ => {}
                    }
                }
                // A callback running elsewhere (a runner that lost its job to a
                // cleanup's adopter, or the adopter) completes the parent with its
                // result (`complete_parent_after_last_callback`): not before.
                if running {
                    return Ok(None);
                }
                if p.status() == Status::Callbacks {
                    let now = Timestamp::now();
                    tx.modify(parent, |p| p.transition(id, Status::Completed, now))??;
                }
                Ok(None)
            })?;
            match next {
                Some(callback) => {
                    self.run(&callback, None)?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Adds `callback` (a NEW job) to `parent`'s callbacks; if `parent` is already
    /// COMPLETED, runs it at once. A parent completing at the same time conflicts
    /// with the addition, and the retry sees it completed, so the callback is never
    /// lost.
    pub fn add_callback(&self, parent: &PRef<Job>, callback: Job) -> Result<PRef<Job>> {
        let (cb, completed) = transact(&self.db, |tx| {
            let cb = add_callback_unchecked(tx, parent, callback.clone())?;
            Ok((cb, tx.get(parent)?.status() == Status::Completed))
        })?;
        if completed {
            self.run(&cb, None)?;
        }
        Ok(cb)
    }

    fn policy_for(&self, job: &Job) -> Result<std::sync::Arc<dyn crate::retry::RetryPolicy>> {
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
        let now = Timestamp::now();
        tx.modify(job, |j| j.transition(id, Status::Active, now))??;
        Ok(Some(tx.get(job)?))
    }

    /// Runs `job`, which [`Runner::start_in`] marked ACTIVE for `claimer` in a
    /// committed transaction (`started` is the job as it left it), as
    /// [`Runner::run`] does from its second step on (the handler, the result, the
    /// callbacks), and takes the agent's next job in the run's last commit: when
    /// the run's work ends in a commit (its result with no callback to run, or the
    /// result of its last callback, which completes it), `claim` claims and starts
    /// the next job in that same transaction, after a savepoint:
    /// a conflict on the claim (another claimer took that job) rolls the claim
    /// back and commits the result alone, so it never costs the handler a second
    /// call. One durable commit per job instead of two while the queue has work.
    ///
    /// The claimed jobs are in `claimed`, also when this returns an error: they
    /// are ACTIVE, held by `claimer`, and the caller must run them (with this
    /// method or [`Runner::run_batch`]) or leave them to recovery.
    pub(crate) fn run_chain(
        &self,
        job: &PRef<Job>,
        claimer: &Claimer,
        started: std::sync::Arc<Job>,
        claim: ClaimNext<'_>,
        claimed: &mut Vec<Started>,
    ) -> Result<RunOutcome> {
        let mut chain = Chain {
            claim: Some(claim),
            claimed,
        };
        let (outcome, first_callback) = self.run_from(job, Some(claimer), started, &mut chain)?;
        self.after_run(job, &outcome, first_callback, &mut chain)?;
        Ok(outcome)
    }

    /// Runs `batch`: jobs [`Runner::start_in`] marked ACTIVE for `claimer` in one
    /// committed transaction (each as it left it), one after another in **one**
    /// transaction, which commits all their results together: one durable commit
    /// for the batch instead of one per job. Each handler runs after a savepoint
    /// of that transaction: its failure rolls back its own writes only, and its
    /// policy's decision is acted on after the commit, as in a run of its own
    /// (a retry now calls the handler again in a transaction of its own). When
    /// every job of the batch completed, `claim` takes the agent's next jobs in
    /// that commit after a savepoint, as in [`Runner::run_chain`]; they are in
    /// `claimed`, also when this returns an error.
    ///
    /// A batch commit that fails (a conflict no type merges, a lost connection)
    /// is every job's commit failure: each job's policy decides
    /// (`on_commit_error`), as for a run of its own. The jobs were ACTIVE
    /// before any handler ran, so a worker dying during a batch leaves all of
    /// them to recovery, which asks each job's `on_interrupted`.
    pub(crate) fn run_batch(
        &self,
        batch: Vec<Started>,
        claimer: &Claimer,
        claim: ClaimNext<'_>,
        claimed: &mut Vec<Started>,
    ) -> Result<()> {
        self.run_batch_of(batch, Some(claimer), Some(claim), claimed)
    }

    /// [`Runner::run_batch`] for jobs held by `claimer`, or for callbacks
    /// (`None`): the first callbacks a batch's commit started run as a batch of
    /// their own next, whose commit completes their parents (and takes the
    /// claim when the batch's could not).
    fn run_batch_of(
        &self,
        batch: Vec<Started>,
        claimer: Option<&Claimer>,
        claim: Option<ClaimNext<'_>>,
        claimed: &mut Vec<Started>,
    ) -> Result<()> {
        let mut conn = self.db.connection();
        let mut tx = conn.begin();
        let began = std::time::Instant::now();
        let mut steps = Vec::with_capacity(batch.len());
        let mut completed = true;
        // Jobs left for a transaction of their own: this one grew too old.
        let mut leftover = Vec::new();
        for (job, snapshot) in batch {
            if !steps.is_empty() && began.elapsed() > BATCH_SPAN_MAX {
                completed = false;
                leftover.push((job, snapshot));
                continue;
            }
            let step = self.batch_step(&mut tx, &job, claimer, &snapshot)?;
            completed &= match &step.1 {
                BatchStep::Stored { first_callback, .. } => {
                    first_callback.is_none()
                        && snapshot.handler() != RESUME_HANDLER
                        // Unknown (a failed read): not done, no claim.
                        && work_done(&mut tx, &job).unwrap_or(false)
                }
                _ => false,
            };
            steps.push((job, snapshot, step));
        }
        let mut claim_taken = None;
        if let (true, Some(claim)) = (completed, claim) {
            let savepoint = tx.savepoint();
            match claim(&mut tx) {
                Ok(c) => claim_taken = Some((savepoint, c)),
                Err(e) => {
                    log::debug!(
                        target: "zodiac_async::events",
                        "claiming the next jobs with a batch's results failed: {e}"
                    );
                    tx.rollback_to(&savepoint)?;
                }
            }
        }
        let claim = claim.filter(|_| claim_taken.is_none());
        let committed = match &claim_taken {
            Some((savepoint, _)) => tx.commit_or_rollback_to(savepoint).map(|(_, all)| all),
            None => tx.commit().map(|_| false),
        };
        // What is left of one job failing does not stop the others': the first
        // error is returned once they are done.
        let mut failed = None;
        let commit_failure = match committed {
            Ok(all) => {
                if let (true, Some((_, c))) = (all, claim_taken) {
                    *claimed = c.next;
                    for expired in &c.expired {
                        if let Err(e) = self.finish_callbacks(expired) {
                            failed.get_or_insert(e);
                        }
                    }
                }
                None
            }
            Err(e) => Some(commit_failure(Error::from(e))),
        };
        let mut no_claim = Vec::new();
        // Jobs whose committed result started their first callback, and those
        // callbacks: they run as a batch next.
        let (mut parents, mut callbacks) = (Vec::new(), Vec::new());
        for (job, snapshot, (log, step)) in steps {
            if let (BatchStep::Stored { first_callback, .. }, None) = (&step, &commit_failure)
                && let Some(callback) = first_callback
            {
                callbacks.push(callback.clone());
                parents.push(job);
                continue;
            }
            let mut chain = Chain {
                claim: None,
                claimed: &mut no_claim,
            };
            let step = (log, step);
            let after = self.after_batch(
                &job,
                claimer,
                snapshot,
                step,
                commit_failure.as_ref(),
                &mut chain,
            );
            if let Err(e) = after {
                failed.get_or_insert(e);
            }
        }
        // The claim goes to the batch that runs last.
        if !leftover.is_empty() {
            let claim = claim.filter(|_| callbacks.is_empty());
            if let Err(e) = self.run_batch_of(leftover, claimer, claim, claimed) {
                failed.get_or_insert(e);
            }
        }
        if !callbacks.is_empty()
            && let Err(e) = self.run_batch_of(callbacks, None, claim, claimed)
        {
            failed.get_or_insert(e);
        }
        for parent in parents {
            let mut chain = Chain {
                claim: None,
                claimed: &mut no_claim,
            };
            let after = self.load(&parent).and_then(|j| {
                let outcome = RunOutcome::Finished(j.result().cloned().expect("stored above"));
                self.after_run(&parent, &outcome, None, &mut chain)
            });
            if let Err(e) = after {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// One job of a batch, in the batch's transaction `tx` (see
    /// [`Runner::run_batch`]): calls its handler after a savepoint and stores
    /// what came of it, or rolls back to the savepoint and says what failed.
    fn batch_step(
        &self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: &Job,
    ) -> Result<(RunLog, BatchStep)> {
        let id = job.oid();
        let policy = self.policy_for(snapshot)?;
        let log = RunLog::of(snapshot);
        // A sibling may have recovered it meanwhile (a false death): its handler
        // must not run again here. The batch's snapshot is at most
        // `BATCH_SPAN_MAX` old. (A failed read is the handler's to meet.)
        if matches!(still_running(tx, job, claimer, log.run), Ok(false)) {
            return Ok((log, BatchStep::Abandoned));
        }
        let mut log = log;
        let savepoint = tx.savepoint();
        // What the call left in `tx`; `Ok(None)`: the job is no longer this run's.
        let (stored, succeeded) = match self.call(tx, snapshot, id, queue_of(snapshot), claimer) {
            Ok((value, None)) => {
                let stored = match self.store(tx, job, claimer, &log, Outcome::Value(value.clone()))
                {
                    Ok(true) => self.start_first_callback(tx, job).map(|first_callback| {
                        Some(BatchStep::Stored {
                            first_callback,
                            succeeded: Some(value.clone()),
                        })
                    }),
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                };
                (stored, Some(value))
            }
            Ok((_, Some(awaited))) => {
                let stored = match self.start_awaiting(tx, job, claimer, &log, awaited) {
                    Ok(Some(false)) => Ok(Some(BatchStep::Awaiting)),
                    // The awaited job had completed: its result is stored as ours.
                    Ok(Some(true)) => Ok(Some(BatchStep::Stored {
                        first_callback: None,
                        succeeded: None,
                    })),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                (stored, None)
            }
            Err(failure) => {
                tx.rollback_to(&savepoint)?; // drops the handler's writes
                let decision = policy.on_job_error(&mut log.data, &failure);
                let failed = Failed {
                    failure,
                    decision,
                    succeeded: None,
                };
                return Ok((log, BatchStep::Failed(failed)));
            }
        };
        match stored {
            Ok(Some(step)) => Ok((log, step)),
            Ok(None) => {
                tx.rollback_to(&savepoint)?;
                Ok((log, BatchStep::Abandoned))
            }
            Err(e) => {
                // As when committing a run's result fails.
                tx.rollback_to(&savepoint)?;
                let failure = commit_failure(e);
                let decision = policy.on_commit_error(&mut log.data, &failure);
                let failed = Failed {
                    failure,
                    decision,
                    succeeded,
                };
                Ok((log, BatchStep::Failed(failed)))
            }
        }
    }

    /// After a batch's commit (`commit_failure`: why it failed), what is left of
    /// one of its jobs: its callbacks, or acting on a failed attempt (which may
    /// call its handler again, in a run of its own).
    fn after_batch(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: std::sync::Arc<Job>,
        (mut log, step): (RunLog, BatchStep),
        commit_failure: Option<&Failure>,
        chain: &mut Chain<'_>,
    ) -> Result<()> {
        let id = job.oid();
        let failed = match (step, commit_failure) {
            (BatchStep::Abandoned, _) => {
                self.abandon(job, "in its batch");
                return Ok(());
            }
            (BatchStep::Awaiting, None) => return Ok(()),
            (BatchStep::Stored { first_callback, .. }, None) => {
                log::info!(
                    target: "zodiac_async::trace",
                    "job {id} ({}) completed on attempt {} in a batch",
                    snapshot.handler(),
                    snapshot.attempts()
                );
                let j = self.load(job)?;
                let outcome = RunOutcome::Finished(j.result().cloned().expect("stored above"));
                return self.after_run(job, &outcome, first_callback, chain);
            }
            (BatchStep::Failed(failed), _) => failed,
            // Its result (or its wait) did not commit: as for a run's own commit.
            (stored, Some(failure)) => Failed {
                decision: self
                    .policy_for(&snapshot)?
                    .on_commit_error(&mut log.data, failure),
                failure: failure.clone(),
                succeeded: match stored {
                    BatchStep::Stored { succeeded, .. } => succeeded,
                    _ => None,
                },
            },
        };
        let mut first_callback = None;
        let outcome = match self.decide(job, claimer, &snapshot, &mut log, failed)? {
            Some(outcome) => outcome,
            None => self.run_attempts(job, claimer, snapshot, log, &mut first_callback, chain)?,
        };
        self.after_run(job, &outcome, first_callback, chain)
    }

    fn run_one(
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
            let now = Timestamp::now();
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
    fn run_from(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: std::sync::Arc<Job>,
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
    fn run_attempts(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: std::sync::Arc<Job>,
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
            // The value the handler returned, when only committing it failed.
            let mut succeeded: Option<Vec<u8>> = None;
            let failure = match self.call(&mut tx, &snapshot, id, queue.clone(), claimer) {
                Ok((_, Some(awaited))) => {
                    let stored = self.start_awaiting(&mut tx, job, claimer, &log, awaited);
                    let committed = match stored {
                        Ok(Some(taken)) => tx.commit().map(|_| Some(taken)).map_err(Error::from),
                        other => other,
                    };
                    match committed {
                        Ok(Some(false)) => return Ok(RunOutcome::Awaiting(awaited)),
                        Ok(Some(true)) => {
                            // The awaited job had completed: its result is ours now.
                            let j = self.load(job)?;
                            let outcome = j.result().cloned().expect("stored above");
                            return Ok(RunOutcome::Finished(outcome));
                        }
                        Ok(None) => return Ok(self.abandon(job, "while starting to await")),
                        Err(e) => {
                            let failure = commit_failure(e);
                            let decision = policy.on_commit_error(&mut log.data, &failure);
                            (failure, decision)
                        }
                    }
                }
                Ok((value, None)) => {
                    let mut callback = None;
                    let mut claim = None;
                    let stored = self
                        .store(&mut tx, job, claimer, &log, Outcome::Value(value.clone()))
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
                        Ok(true) => {
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
                                snapshot.attempts()
                            );
                            let j = self.load(job)?;
                            let outcome = j.result().cloned().expect("stored above");
                            return Ok(RunOutcome::Finished(outcome));
                        }
                        Ok(false) => return Ok(self.abandon(job, "with its result")),
                        Err(e) => {
                            succeeded = Some(value);
                            let failure = commit_failure(e);
                            let decision = policy.on_commit_error(&mut log.data, &failure);
                            (failure, decision)
                        }
                    }
                }
                Err(failure) => {
                    drop(tx); // aborts the handler's writes
                    let decision = policy.on_job_error(&mut log.data, &failure);
                    (failure, decision)
                }
            };
            let (failure, decision) = failure;
            let failed = Failed {
                failure,
                decision,
                succeeded,
            };
            if let Some(outcome) = self.decide(job, claimer, &snapshot, &mut log, failed)? {
                return Ok(outcome);
            }
        }
    }

    /// Acts on a failed attempt of `job`'s run (`log`, its failures so far, gains
    /// this one): puts the job back for a retry later, or stores the failure the
    /// policy gave up with (logging a lost result value), and returns that
    /// outcome; or returns `None` when the handler is to be called again now (a job
    /// outside any queue first sleeps out a delayed retry).
    fn decide(
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
        let now = Timestamp::now();
        log::debug!(target: "zodiac_async::trace", "job {id}: attempt failed: {failure}");
        log.errors.push((now, failure));
        match bounded(decision, snapshot.deadline(), now) {
            Decision::Retry => {}
            Decision::RetryAfter(d) if queue.is_none() => std::thread::sleep(d),
            Decision::RetryAt(t) if queue.is_none() => {
                std::thread::sleep(t.since(Timestamp::now()))
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
                        log.errors.last().map_or(String::new(), |(_, f)| f.to_string())
                    );
                }
                return self.give_up(job, claimer, log, f).map(Some);
            }
        }
        Ok(None)
    }

    /// Calls the job's handler in `tx`; any failure (error, panic, no handler) is
    /// returned as a failure record.
    fn call(
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
            return resume(tx, job, id, parent_result)
                .map(|()| (postcard::to_stdvec(&()).expect("unit encodes"), None))
                .map_err(|e| Failure::from_error(FailureKind::Storage, &e));
        }
        let (name, arguments) = if job.handler() == BRANCH_HANDLER {
            let branch: Branch = postcard::from_bytes(job.argument_bytes()).map_err(|e| {
                Failure::from_error(
                    FailureKind::UserError,
                    &Error::Arguments { job: id, source: e },
                )
            })?;
            let failed = parent_result.as_ref().is_some_and(Outcome::is_failure);
            match if failed {
                branch.on_failure
            } else {
                branch.on_success
            } {
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
        match catch_unwind(AssertUnwindSafe(|| handler(&mut ctx, &arguments))) {
            Ok(Ok(value)) => Ok((value, ctx.awaited())),
            Ok(Err(e)) => Err(handler_failure(e)),
            Err(payload) => Err(Failure::new(FailureKind::Panic, panic_message(&*payload))),
        }
    }

    /// Makes `job` await `awaited` in `tx`: if `awaited` is COMPLETED, takes its
    /// result at once (`Some(true)`); otherwise records the wait and adds a resume
    /// callback to `awaited` (`Some(false)`). `None` if the job is no longer this
    /// run's.
    fn start_awaiting(
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
        if a.status() == Status::Completed {
            let outcome = a.result().cloned().expect("a COMPLETED job has a result");
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

    /// When `job` is in CALLBACKS (its result just stored in `tx`), starts its first
    /// NEW callback in the same transaction, as a claim starts its job: one durable
    /// commit fewer per callback. A process dying after that commit leaves the
    /// callback ACTIVE under a parent in CALLBACKS, which cleanup recovers like any
    /// interrupted callback.
    fn start_first_callback(
        &self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
    ) -> Result<Option<Started>> {
        let j = tx.get(job)?;
        if j.status() != Status::Callbacks {
            return Ok(None);
        }
        for cb in j.callbacks() {
            if tx.get(cb)?.status() == Status::New {
                return Ok(self.start_in(tx, cb, None)?.map(|started| (*cb, started)));
            }
        }
        Ok(None)
    }

    /// Stores `outcome` as the result in `tx` (→ CALLBACKS, → COMPLETED without
    /// callbacks) if the job is still held by `claimer`; returns whether it was.
    fn store(
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
        crate::quota::release(tx, job)?;
        let now = Timestamp::now();
        let completed = tx.modify(job, |j| {
            log.apply(j);
            j.set_result(outcome);
            j.transition(id, Status::Callbacks, now)?;
            if j.callbacks().is_empty() {
                j.transition(id, Status::Completed, now)?;
            }
            Ok::<_, Error>(j.status() == Status::Completed)
        })??;
        if completed {
            complete_parent_after_last_callback(tx, job, now)?;
        }
        Ok(true)
    }

    fn give_up(
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

    fn put_back(
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
            Queue::put_back(tx, job, Some(retry_at))?;
            Ok(true)
        })?;
        if !held {
            return Ok(self.abandon(job, "before its retry"));
        }
        Ok(RunOutcome::PutBack { retry_at })
    }

    fn load(&self, job: &PRef<Job>) -> Result<std::sync::Arc<Job>> {
        transact_through_outages(&self.db, |tx| Ok(tx.get(job)?))
    }

    fn abandon(&self, job: &PRef<Job>, when: &str) -> RunOutcome {
        log::error!(
            target: "zodiac_async::events",
            "job {} is no longer held by this agent ({when}); another dispatcher took it over; \
             abandoning it without storing anything",
            job.oid()
        );
        RunOutcome::Abandoned
    }
}

/// When `callback` (just COMPLETED in `tx`) is a callback whose parent is in
/// CALLBACKS and no other callback of that parent is NEW, completes the parent in
/// the same transaction: one durable commit fewer per job with callbacks. The
/// parent is written, so a callback added to it concurrently conflicts with this
/// transaction (and the retry sees the addition), as with
/// [`Runner::finish_callbacks`], whose own completion then finds nothing to do.
fn complete_parent_after_last_callback(
    tx: &mut Transaction<'_>,
    callback: &PRef<Job>,
    now: Timestamp,
) -> Result<()> {
    let Location::CallbackOf { parent } = *tx.get(callback)?.location() else {
        return Ok(());
    };
    let p = tx.get(&parent)?;
    if p.status() != Status::Callbacks {
        return Ok(());
    }
    for cb in p.callbacks() {
        if cb != callback && tx.get(cb)?.status() == Status::New {
            return Ok(()); // more to run: finish_callbacks completes it later
        }
    }
    let pid = parent.oid();
    tx.modify(&parent, |p| p.transition(pid, Status::Completed, now))??;
    Ok(())
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
    let now = Timestamp::now();
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
        Decision::Retry => Queue::put_back(tx, job, None)?,
        Decision::RetryAfter(d) => Queue::put_back(tx, job, Some(now.plus(*d)))?,
        Decision::RetryAt(t) => Queue::put_back(tx, job, Some(*t))?,
        Decision::GiveUp(failure) => {
            crate::quota::release(tx, job)?;
            tx.modify(job, |j| {
                j.set_result(Outcome::Failure(failure.clone()));
                j.transition(id, Status::Callbacks, now)?;
                if j.callbacks().is_empty() {
                    j.transition(id, Status::Completed, now)?;
                }
                log_failure(id, j, failure);
                Ok::<_, Error>(())
            })??;
        }
    }
    Ok(decision)
}

/// Adds `callback` (a NEW job) to `parent`'s callbacks in the caller's transaction;
/// it runs, with the parent's result, when the parent's result is stored. A
/// COMPLETED parent is refused: use [`Runner::add_callback`], which runs it at once.
/// A callback left at the default failure level (ERROR) is raised to CRITICAL.
pub fn add_callback(
    tx: &mut Transaction<'_>,
    parent: &PRef<Job>,
    callback: Job,
) -> Result<PRef<Job>> {
    let status = tx.get(parent)?.status();
    if status == Status::Completed {
        return Err(Error::ParentCompleted { job: parent.oid() });
    }
    add_callback_unchecked(tx, parent, callback)
}

fn add_callback_unchecked(
    tx: &mut Transaction<'_>,
    parent: &PRef<Job>,
    mut callback: Job,
) -> Result<PRef<Job>> {
    if callback.status() != Status::New {
        return Err(Error::CallbackNotNew {
            parent: parent.oid(),
            status: callback.status(),
        });
    }
    let count = tx.get(parent)?.callbacks().len();
    if count >= crate::job::CALLBACKS_MAX {
        return Err(Error::LimitExceeded {
            what: "the callbacks of a job",
            len: count + 1,
            max: crate::job::CALLBACKS_MAX,
        });
    }
    callback.set_location(Location::CallbackOf { parent: *parent });
    // Failed callbacks are logged at CRITICAL unless their level was lowered.
    if callback.failure_level() == crate::job::FailureLevel::Error {
        callback.set_failure_level(crate::job::FailureLevel::Critical);
    }
    let cb = tx.add(callback)?;
    tx.modify(parent, |p| p.push_callback(cb))?;
    Ok(cb)
}

/// The handler name of a callback made by [`add_callbacks`]: it runs the success
/// or the failure job's handler, by the parent's result.
pub const BRANCH_HANDLER: &str = "zodiac.async.branch";

/// The arguments of a [`BRANCH_HANDLER`] callback: handler name and argument bytes
/// of each branch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Branch {
    on_success: Option<(String, Vec<u8>)>,
    on_failure: Option<(String, Vec<u8>)>,
}

/// Adds one callback to `parent` that runs `on_success`'s handler and arguments if
/// the parent's result is a value, `on_failure`'s if it is a failure (either may
/// be `None`: then that case does nothing). Like [`add_callback`], it refuses a
/// COMPLETED parent.
pub fn add_callbacks(
    tx: &mut Transaction<'_>,
    parent: &PRef<Job>,
    on_success: Option<Job>,
    on_failure: Option<Job>,
) -> Result<PRef<Job>> {
    let branch = Branch {
        on_success: on_success.map(|j| (j.handler().to_string(), j.argument_bytes().to_vec())),
        on_failure: on_failure.map(|j| (j.handler().to_string(), j.argument_bytes().to_vec())),
    };
    add_callback(tx, parent, Job::with_arguments(BRANCH_HANDLER, &branch)?)
}

/// The handler name of the callback that completes a job awaiting another: it
/// stores the awaited job's result as the waiting job's.
pub const RESUME_HANDLER: &str = "zodiac.async.resume";

/// Completes the job a resume callback names with the awaited job's result, if it
/// is still waiting for it.
fn resume(
    tx: &mut Transaction<'_>,
    callback: &Job,
    id: zodiac_storage::Oid,
    result: Option<Outcome>,
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
    crate::quota::release(tx, &waiting)?;
    let now = Timestamp::now();
    let wid = waiting.oid();
    tx.modify(&waiting, |j| {
        j.set_awaiting(None);
        j.set_result(result);
        j.transition(wid, Status::Callbacks, now)?;
        if j.callbacks().is_empty() {
            j.transition(wid, Status::Completed, now)?;
        }
        Ok::<_, Error>(())
    })??;
    // Its agent let it go while it waited: list it among that agent's completed
    // jobs now, for inspection and retention.
    if let Location::Agent {
        queue,
        dispatcher,
        agent,
    } = w.location()
    {
        crate::dispatcher::Dispatchers::record_finished_elsewhere(
            tx, queue, dispatcher, agent, now, waiting,
        )?;
    }
    Ok(())
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
