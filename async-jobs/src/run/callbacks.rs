//! Running a job's callbacks after its result is stored, and completing it.

use zodiac_objects::{PRef, Transaction};

use crate::callbacks::add_callback_unchecked;
use crate::error::Result;
use crate::model::job::{Job, Location};
use crate::model::status::Status;
use crate::run::{Runner, Started, transact_through_outages};
use crate::time::Timestamp;
use crate::transact::transact;
impl Runner {
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
                    let now = self.clock.now();
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

    /// When `job` is in CALLBACKS (its result just stored in `tx`), starts its first
    /// NEW callback in the same transaction, as a claim starts its job: one durable
    /// commit fewer per callback. A process dying after that commit leaves the
    /// callback ACTIVE under a parent in CALLBACKS, which cleanup recovers like any
    /// interrupted callback.
    pub(super) fn start_first_callback(
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
}

/// When `callback` (just COMPLETED in `tx`) is a callback whose parent is in
/// CALLBACKS and no other callback of that parent is NEW, completes the parent in
/// the same transaction: one durable commit fewer per job with callbacks. The
/// parent is written, so a callback added to it concurrently conflicts with this
/// transaction (and the retry sees the addition), as with
/// [`Runner::finish_callbacks`], whose own completion then finds nothing to do.
pub(super) fn complete_parent_after_last_callback(
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
