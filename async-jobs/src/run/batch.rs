//! Runs that take the agent's next jobs in their last commit, and batches of jobs
//! run in one transaction.

use std::sync::Arc;

use zodiac_objects::{PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::failure::Failure;
use crate::model::job::{Job, Outcome};
use crate::queue::Claimer;
use crate::run::attempt::Failed;
use crate::run::await_job::RESUME_HANDLER;
use crate::run::chain::{Chain, ClaimNext, claim_after_savepoint, work_done};
use crate::run::{RunLog, RunOutcome, Runner, Started, commit_failure, queue_of, still_running};
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

impl Runner {
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
        let (steps, leftover, completed) = self.batch_steps(&mut tx, batch, claimer)?;
        let claim_taken = match claim {
            Some(claim) if completed => claim_after_savepoint(&mut tx, claim)?,
            _ => None,
        };
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
        let (parents, callbacks) =
            self.after_batch_steps(steps, claimer, commit_failure.as_ref(), &mut failed);
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
            let mut no_claim = Vec::new();
            let mut chain = Chain {
                claim: None,
                claimed: &mut no_claim,
            };
            let after = self
                .finished(&parent)
                .and_then(|outcome| self.after_run(&parent, &outcome, None, &mut chain));
            if let Err(e) = after {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The steps of a batch in its transaction `tx`, the jobs left for a
    /// transaction of their own (this one grew older than [`BATCH_SPAN_MAX`]),
    /// and whether every step ended its job's work (so the claim may ride on the
    /// commit).
    #[allow(clippy::type_complexity)]
    fn batch_steps(
        &self,
        tx: &mut Transaction<'_>,
        batch: Vec<Started>,
        claimer: Option<&Claimer>,
    ) -> Result<(
        Vec<(PRef<Job>, Arc<Job>, (RunLog, BatchStep))>,
        Vec<Started>,
        bool,
    )> {
        let began = std::time::Instant::now();
        let mut steps = Vec::with_capacity(batch.len());
        let mut completed = true;
        let mut leftover = Vec::new();
        for (job, snapshot) in batch {
            if !steps.is_empty() && began.elapsed() > BATCH_SPAN_MAX {
                completed = false;
                leftover.push((job, snapshot));
                continue;
            }
            let step = self.batch_step(tx, &job, claimer, &snapshot)?;
            completed &= match &step.1 {
                BatchStep::Stored { first_callback, .. } => {
                    first_callback.is_none()
                        && snapshot.handler() != RESUME_HANDLER
                        // Unknown (a failed read): not done, no claim.
                        && work_done(tx, &job).unwrap_or(false)
                }
                _ => false,
            };
            steps.push((job, snapshot, step));
        }
        Ok((steps, leftover, completed))
    }

    /// After a batch's commit, what is left of each of its jobs
    /// ([`Runner::after_batch`]), errors kept in `failed`; returns the jobs whose
    /// committed result started their first callback, and those callbacks: they
    /// run as a batch next.
    #[allow(clippy::type_complexity)]
    fn after_batch_steps(
        &self,
        steps: Vec<(PRef<Job>, Arc<Job>, (RunLog, BatchStep))>,
        claimer: Option<&Claimer>,
        commit_failure: Option<&Failure>,
        failed: &mut Option<Error>,
    ) -> (Vec<PRef<Job>>, Vec<Started>) {
        let mut no_claim = Vec::new();
        let (mut parents, mut callbacks) = (Vec::new(), Vec::new());
        for (job, snapshot, (log, step)) in steps {
            if let (BatchStep::Stored { first_callback, .. }, None) = (&step, commit_failure)
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
            let after = self.after_batch(
                &job,
                claimer,
                snapshot,
                (log, step),
                commit_failure,
                &mut chain,
            );
            if let Err(e) = after {
                failed.get_or_insert(e);
            }
        }
        (parents, callbacks)
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
                let stored = self.store_value_in_batch(tx, job, claimer, &log, &value);
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
                let decision =
                    crate::retry::on_handler_failure(&*policy, &mut log.data, &failure, snapshot);
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

    /// Stores the handler's `value` as `job`'s result in the batch's transaction
    /// and starts its first callback; `Ok(None)`: the job is no longer this run's.
    fn store_value_in_batch(
        &self,
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        log: &RunLog,
        value: &[u8],
    ) -> Result<Option<BatchStep>> {
        if !self.store(tx, job, claimer, log, Outcome::Value(value.to_vec()))? {
            return Ok(None);
        }
        let first_callback = self.start_first_callback(tx, job)?;
        Ok(Some(BatchStep::Stored {
            first_callback,
            succeeded: Some(value.to_vec()),
        }))
    }

    /// After a batch's commit (`commit_failure`: why it failed), what is left of
    /// one of its jobs: its callbacks, or acting on a failed attempt (which may
    /// call its handler again, in a run of its own).
    fn after_batch(
        &self,
        job: &PRef<Job>,
        claimer: Option<&Claimer>,
        snapshot: Arc<Job>,
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
                    snapshot.attempts(),
                    id = id.0
                );
                let outcome = self.finished(job)?;
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
}
