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
        "job {}: cannot go from {from} to {to}: {}",
        job.0,
        crate::model::status::why_illegal(*from, *to)
    )]
    IllegalTransition {
        /// The job.
        job: Oid,
        /// Its status.
        from: Status,
        /// The status it was to enter.
        to: Status,
    },

    /// An operator's action on a job (retry, discard, cancel) refused because of the
    /// job's state; nothing was changed.
    #[error("job {} cannot be {action}: {why}", job.0)]
    Refused {
        /// The job.
        job: Oid,
        /// What was asked, as a past participle (`retried`, `discarded`, `cancelled`).
        action: &'static str,
        /// Why not, and what to do.
        why: String,
    },

    /// A job was put while not NEW.
    #[error("job {} is {status}, only a NEW job can be put in a queue; put a new job instead", job.0)]
    NotNew {
        /// The job.
        job: Oid,
        /// Its status.
        status: Status,
    },

    /// An operation needs the job in a queue, and it is elsewhere.
    #[error("job {} is not pending in a queue (it is {status}); nothing to pull", job.0)]
    NotInQueue {
        /// The job.
        job: Oid,
        /// Its status.
        status: Status,
    },

    /// An operation needs a job claimed from a queue, and it is not.
    #[error(
        "job {} is {status} and not held by an agent of a queue; only claimed jobs go back",
        job.0
    )]
    NotClaimed {
        /// The job.
        job: Oid,
        /// Its status.
        status: Status,
    },

    /// A callback was added in a transaction to a job already COMPLETED.
    #[error(
        "job {} is COMPLETED; add the callback through Runner::add_callback, which runs it at once",
        job.0
    )]
    ParentCompleted {
        /// The parent job.
        job: Oid,
    },

    /// A callback must be a NEW job.
    #[error(
        "a callback of job {} must be a NEW job, not a {status} one; add a new job",
        parent.0
    )]
    CallbackNotNew {
        /// The parent job.
        parent: Oid,
        /// The callback's status.
        status: Status,
    },

    /// Another live worker holds this worker identity's lock.
    #[error(
        "{path}: this worker identity is already activated by another process (or another \
         worker in this one); two live workers must not share a UUID: give each its own file"
    )]
    IdentityInUse {
        /// The identity file.
        path: std::path::PathBuf,
    },

    /// The identity file holds something else than a worker UUID.
    #[error(
        "{path} does not hold a worker UUID (it starts {content:?}); remove it to get a new \
         identity, or restore the right file"
    )]
    BadIdentityFile {
        /// The identity file.
        path: std::path::PathBuf,
        /// The start of what it holds.
        content: String,
    },

    /// A file operation on a worker's identity failed.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What was done to it.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// A dispatcher with this id is activated and alive.
    #[error(
        "dispatcher {id} is already activated and alive (pinged within the death interval): \
         is another process running with this id?"
    )]
    AlreadyActive {
        /// The dispatcher id.
        id: String,
    },

    /// No dispatcher (or agent) with this id is registered in the queue.
    #[error("no dispatcher {id} is registered in this queue; activate it first")]
    NoSuchDispatcher {
        /// The dispatcher id (and agent name).
        id: String,
    },

    /// A job names a retry policy this process did not register.
    #[error("no retry policy named {name:?} is registered in this process; register it first")]
    NoSuchPolicy {
        /// The policy name.
        name: String,
    },

    /// A job names a quota its queue does not have.
    #[error(
        "queue {queue:?} has no quota named {name:?}; create it with Queue::set_quota (`zodiac jobs quota STORE QUEUE NAME SIZE`)"
    )]
    NoSuchQuota {
        /// The queue name.
        queue: String,
        /// The quota name.
        name: String,
    },

    /// No queue has this name.
    #[error("no queue named {name:?}; create it with Queue::get_or_create")]
    NoSuchQueue {
        /// The queue name.
        name: String,
    },

    /// A job's arguments do not decode as the type asked for.
    #[error(
        "the arguments of job {} do not decode as the handler's type: {source}",
        job.0
    )]
    Arguments {
        /// The job.
        job: Oid,
        /// Why they do not decode.
        #[source]
        source: postcard::Error,
    },

    /// Arguments could not be encoded.
    #[error("cannot encode the arguments: {0}")]
    EncodeArguments(#[source] postcard::Error),

    /// A cron expression does not parse.
    #[error(
        "cron expression {expression:?} is not valid: {why}; give five fields (minute hour \
         day-of-month month day-of-week), six with seconds first, or @hourly, @daily, ..."
    )]
    BadCron {
        /// The expression.
        expression: String,
        /// What the parser found wrong.
        why: String,
    },

    /// No recurring-job schedule has this name.
    #[error("no schedule named {name:?}; `zodiac jobs cron list` shows the schedules")]
    NoSuchSchedule {
        /// The name.
        name: String,
    },

    /// A schedule with this name exists already.
    #[error(
        "a schedule named {name:?} exists already; remove it first, or replace it (`zodiac jobs cron add --replace`)"
    )]
    ScheduleExists {
        /// The name.
        name: String,
    },

    /// A named limit was exceeded (annotations, queue and handler names, ...).
    #[error("{what} is {len}, over the limit of {max}")]
    LimitExceeded {
        /// What grew.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
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
