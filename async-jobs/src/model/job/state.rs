//! Where a job is and what came of it: its [`Location`], its [`State`] (the
//! status with the result once there is one), the [`Outcome`] and its
//! [`Ending`], and the level a failure is logged at.
//!
//! Invariant: a [`State`] carries an [`Outcome`] exactly in CALLBACKS and
//! COMPLETED (`State::from_stored` refuses any other pairing).

use serde::{Deserialize, Serialize};
use zodiac_objects::PRef;

use super::Job;
use crate::model::failure::{Failure, FailureKind};
use crate::model::queue_key::QueueKey;
use crate::model::status::Status;

/// Where a job is held. Stored explicitly: nothing is found by walking parents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    /// Not held by anything (NEW, or finished outside an agent).
    #[default]
    None,
    /// Pending in the queue `queue` under `key`.
    Queue {
        /// The queue.
        queue: String,
        /// Its key in the queue's pending tree.
        key: QueueKey,
    },
    /// Held by agent `agent` of dispatcher `dispatcher`, claimed from `queue`.
    Agent {
        /// The queue.
        queue: String,
        /// The dispatcher.
        dispatcher: String,
        /// The agent.
        agent: String,
    },
    /// A callback of `parent`.
    CallbackOf {
        /// The job whose result it runs with.
        parent: PRef<Job>,
    },
}

/// What a finished job produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The handler's value, encoded by the handler's registration.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A failure record.
    Failure(Failure),
}

impl Outcome {
    /// Whether this is a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failure(_))
    }

    /// How the job ended, as operators sort completed jobs.
    pub fn ending(&self) -> Ending {
        match self {
            Outcome::Value(_) => Ending::Succeeded,
            Outcome::Failure(f) if f.kind == FailureKind::Cancelled => Ending::Cancelled,
            Outcome::Failure(f) if f.kind == FailureKind::Timeout => Ending::Timeout,
            Outcome::Failure(_) => Ending::Failed,
        }
    }
}

/// How a completed job ended ([`Outcome::ending`]): `zodiac jobs list --status
/// failed` lists the [`Ending::Failed`] ones, `jobs status` counts each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Ending {
    /// With a value.
    Succeeded,
    /// With a failure other than a cancellation or a timeout.
    Failed,
    /// Cancelled by an operator ([`FailureKind::Cancelled`]).
    Cancelled,
    /// Past its deadline, or failed without a cause ([`FailureKind::Timeout`]).
    Timeout,
}

impl Ending {
    /// Every ending, in the order tools show them.
    pub const ALL: [Ending; 4] = [
        Ending::Succeeded,
        Ending::Failed,
        Ending::Cancelled,
        Ending::Timeout,
    ];

    /// The lower-case name tools use, e.g. `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Failed => "failed",
            Ending::Cancelled => "cancelled",
            Ending::Timeout => "timeout",
        }
    }
}

/// The level a job's final failure is logged at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FailureLevel {
    /// Logged with `info!`.
    Info,
    /// Logged with `warn!`.
    Warning,
    /// The default for queue jobs.
    #[default]
    Error,
    /// Callbacks and recovery jobs: logged with `error!` and a `critical` marker.
    Critical,
}

/// Where a job is in its life, with the result once it has one (see the status
/// table in the crate docs; [`State::status`] names it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Created, not in any queue.
    New,
    /// In a queue, waiting to be claimed.
    Pending,
    /// Claimed by an agent, not started.
    Assigned,
    /// Running.
    Active,
    /// Result stored, callbacks running.
    Callbacks(Outcome),
    /// Result stored and every callback ran.
    Completed(Outcome),
}

impl State {
    /// The status this state is in.
    pub fn status(&self) -> Status {
        match self {
            State::New => Status::New,
            State::Pending => Status::Pending,
            State::Assigned => Status::Assigned,
            State::Active => Status::Active,
            State::Callbacks(_) => Status::Callbacks,
            State::Completed(_) => Status::Completed,
        }
    }

    /// The result: `Some` exactly in CALLBACKS and COMPLETED.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            State::Callbacks(outcome) | State::Completed(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// The state of a stored `status` and `result`, if they agree.
    pub(super) fn from_stored(status: Status, result: Option<Outcome>) -> Option<State> {
        Some(match (status, result) {
            (Status::New, None) => State::New,
            (Status::Pending, None) => State::Pending,
            (Status::Assigned, None) => State::Assigned,
            (Status::Active, None) => State::Active,
            (Status::Callbacks, Some(outcome)) => State::Callbacks(outcome),
            (Status::Completed, Some(outcome)) => State::Completed(outcome),
            _ => return None,
        })
    }
}
