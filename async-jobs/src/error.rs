//! The job layer's error type. `Display` says what happened, to which job or queue,
//! and what to do.

use zodiac_storage::Oid;

use crate::model::status::Status;

/// Result with the job layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the job layer reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The objects layer failed (conflict, storage error, damaged record, ...).
    #[error(transparent)]
    Objects(#[from] zodiac_objects::Error),

    /// A status change the status machine does not allow.
    #[error(
        "job {job}: cannot go from {from} to {to}: {}",
        crate::model::status::why_illegal(*from, *to)
    )]
    IllegalTransition { job: Oid, from: Status, to: Status },

    /// A job was put while not NEW.
    #[error("job {job} is {status}, only a NEW job can be put in a queue; put a new job instead")]
    NotNew { job: Oid, status: Status },

    /// An operation needs the job in a queue, and it is elsewhere.
    #[error("job {job} is not pending in a queue (it is {status}); nothing to pull")]
    NotInQueue { job: Oid, status: Status },

    /// An operation needs a job claimed from a queue, and it is not.
    #[error("job {job} is {status} and not held by an agent of a queue; only claimed jobs go back")]
    NotClaimed { job: Oid, status: Status },

    #[error(
        "job {job} is COMPLETED; add the callback through Runner::add_callback, which runs it at once"
    )]
    ParentCompleted { job: Oid },

    #[error("a callback of job {parent} must be a NEW job, not a {status} one; add a new job")]
    CallbackNotNew { parent: Oid, status: Status },

    #[error(
        "{path}: this worker identity is already activated by another process (or another \
         worker in this one); two live workers must not share a UUID: give each its own file"
    )]
    IdentityInUse { path: std::path::PathBuf },

    #[error(
        "{path} does not hold a worker UUID (it starts {content:?}); remove it to get a new \
         identity, or restore the right file"
    )]
    BadIdentityFile {
        path: std::path::PathBuf,
        content: String,
    },

    #[error("{path}: {action} failed: {source}")]
    Io {
        path: std::path::PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "dispatcher {id} is already activated and alive (pinged within the death interval): \
         is another process running with this id?"
    )]
    AlreadyActive { id: String },

    #[error("no dispatcher {id} is registered in this queue; activate it first")]
    NoSuchDispatcher { id: String },

    #[error("no retry policy named {name:?} is registered in this process; register it first")]
    NoSuchPolicy { name: String },

    #[error("queue {queue:?} has no quota named {name:?}; create it with Queue::set_quota")]
    NoSuchQuota { queue: String, name: String },

    #[error("no queue named {name:?}; create it with Queue::get_or_create")]
    NoSuchQueue { name: String },

    #[error("the arguments of job {job} do not decode as the handler's type: {source}")]
    Arguments {
        job: Oid,
        #[source]
        source: postcard::Error,
    },

    #[error("cannot encode the arguments: {0}")]
    EncodeArguments(#[source] postcard::Error),

    /// A named limit was exceeded (annotations, queue and handler names, ...).
    #[error("{what} is {len}, over the limit of {max}")]
    LimitExceeded {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl Error {
    /// Whether this is a write conflict (which a retry may cure).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Objects(
                zodiac_objects::Error::Conflict(_) | zodiac_objects::Error::RetriesExhausted { .. }
            )
        )
    }
}
