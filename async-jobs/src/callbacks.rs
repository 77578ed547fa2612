//! Adding callbacks to a job, in the caller's transaction: plain ones, and one
//! with a success and a failure branch. Running them is `crate::run`'s.
//!
//! Invariants:
//! - A callback is NEW when added and located at its parent
//!   (`Location::CallbackOf`); a parent has at most `CALLBACKS_MAX` of them.
//! - A callback left at the default failure level (ERROR) is raised to CRITICAL.
//! - Adding a callback writes the parent, so an addition racing the parent's
//!   completion conflicts with it.

use zodiac_objects::{PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::job::{CALLBACKS_MAX, FailureLevel, Job, Location};
use crate::model::status::Status;
/// Adds `callback` (a NEW job) to `parent`'s callbacks in the caller's transaction;
/// it runs, with the parent's result, when the parent's result is stored. A
/// COMPLETED parent is refused: use [`Runner::add_callback`](crate::Runner::add_callback), which runs it at once.
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

pub(crate) fn add_callback_unchecked(
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
    if count >= CALLBACKS_MAX {
        return Err(Error::LimitExceeded {
            what: "the callbacks of a job",
            len: count + 1,
            max: CALLBACKS_MAX,
        });
    }
    callback.set_location(Location::CallbackOf { parent: *parent });
    // Failed callbacks are logged at CRITICAL unless their level was lowered.
    if callback.failure_level() == FailureLevel::Error {
        callback.set_failure_level(FailureLevel::Critical);
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
pub(crate) struct Branch {
    pub(crate) on_success: Option<(String, Vec<u8>)>,
    pub(crate) on_failure: Option<(String, Vec<u8>)>,
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
