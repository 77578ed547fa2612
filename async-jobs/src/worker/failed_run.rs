//! A run thread whose own work failed (a state change of its job could not be
//! committed, for a reason other than a lost connection, which the run waits
//! out): its jobs are handed to recovery at once, as a stopping worker hands
//! back what it holds, instead of staying ACTIVE under a live agent until the
//! worker restarts.
//!
//! Invariant: only a job still ACTIVE, held by this run's claimer and not
//! waiting on a callback is handed back, in one transaction; nothing the failed
//! run committed is undone (its failed commit committed nothing).

use zodiac_objects::PRef;

use crate::model::job::{Job, Location};
use crate::model::status::Status;
use crate::queue::Claimer;
use crate::run::Runner;
use crate::run::transact_through_outages;

/// Hands each job of `jobs` that `claimer` still holds ACTIVE to recovery (its
/// policy's `on_interrupted` decides: back in the queue, or given up); logs
/// what it did. A lost connection to the storage is waited out (the hand-back
/// lands once it answers); another failure is logged: the jobs are then
/// recovered when the worker restarts or is found dead, as after a crash.
pub(super) fn hand_back(runner: &Runner, claimer: &Claimer, jobs: &[PRef<Job>]) {
    let now = runner.clock().now();
    let mut handed = Vec::new();
    let done = transact_through_outages(runner.database(), |tx| {
        handed.clear();
        for job in jobs {
            let j = tx.get(job)?;
            let held = matches!(
                j.location(),
                Location::Agent { dispatcher, agent, .. }
                    if *dispatcher == claimer.dispatcher && *agent == claimer.agent
            );
            if j.status() == Status::Active && held && j.awaiting().is_none() {
                crate::recovery::recover_interrupted_at(tx, job, runner.policies(), now)?;
                handed.push(job.oid().0);
            }
        }
        Ok(())
    });
    match done {
        Ok(()) if handed.is_empty() => {}
        Ok(()) => log::warn!(
            target: "zodiac_async::events",
            "handed job(s) {handed:?} to recovery after their run failed"
        ),
        Err(e) => log::error!(
            target: "zodiac_async::events",
            "could not hand the jobs of a failed run to recovery ({e}); they stay ACTIVE \
             until this worker restarts or is found dead"
        ),
    }
}
