//! The claim a run makes in the commit that ends its work: the hook, and what it
//! took.
//!
//! Invariant: the hook is used at most once per run, after a savepoint, so a
//! claim that fails is rolled back and the result commits alone.

use zodiac_objects::{PRef, Transaction};

use crate::error::Result;
use crate::model::job::{Job, Location};
use crate::model::status::Status;
use crate::run::Started;

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
pub(super) struct Chain<'a> {
    pub(super) claim: Option<ClaimNext<'a>>,
    pub(super) claimed: &'a mut Vec<Started>,
}

impl Chain<'_> {
    /// In `tx`, which stores `job`'s result: when that ends the run's work (`job`
    /// is COMPLETED, and so is its parent if it is a callback) and the hook was not
    /// used yet, a savepoint and then the claim. A claim that fails is rolled back
    /// (the result commits without it) and logged.
    pub(super) fn claim_in(
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
                    job.oid().0
                );
                tx.rollback_to(&savepoint)?;
                Ok(None)
            }
        }
    }
}

/// A savepoint in `tx` and then `claim`; a claim that fails is rolled back (the
/// results commit without it) and logged.
pub(super) fn claim_after_savepoint(
    tx: &mut Transaction<'_>,
    claim: ClaimNext<'_>,
) -> Result<Option<(zodiac_objects::Savepoint, Claimed)>> {
    let savepoint = tx.savepoint();
    match claim(tx) {
        Ok(c) => Ok(Some((savepoint, c))),
        Err(e) => {
            log::debug!(
                target: "zodiac_async::events",
                "claiming the next jobs with a batch's results failed: {e}"
            );
            tx.rollback_to(&savepoint)?;
            Ok(None)
        }
    }
}

/// Whether `job`'s run has no work left in `tx`: it is COMPLETED, and so is its
/// parent when it is a callback.
pub(super) fn work_done(tx: &mut Transaction<'_>, job: &PRef<Job>) -> Result<bool> {
    let j = tx.get(job)?;
    if j.status() != Status::Completed {
        return Ok(false);
    }
    if let Location::CallbackOf { parent } = j.location() {
        return Ok(tx.get(parent)?.status() == Status::Completed);
    }
    Ok(true)
}
