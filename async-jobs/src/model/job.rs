//! The persistent job.
//!
//! Invariants:
//! - A job's status changes only through [`Job::transition`], which asks the status
//!   machine ([`crate::status`]); an illegal change is refused and leaves the job as
//!   it was.
//! - `location` is kept in step with `status` by the operations that move jobs
//!   (queue put/claim/pull/put-back/fail): PENDING ⇔ `Location::Queue`; ASSIGNED and
//!   ACTIVE jobs claimed from a queue are at `Location::Agent`, and stay there once
//!   run to a result (the agent keeps its finished jobs); so are the jobs an
//!   agent's claim found past their deadline; a job failed before it ran (or
//!   expired in a claim no agent made) is at `Location::None`, kept among its
//!   queue's ended jobs ([`crate::ended`]).
//! - A job's result lives in its [`State`]: CALLBACKS and COMPLETED carry the
//!   [`Outcome`], the other states none, so a finished job without a result
//!   cannot be built. It is set when the job enters CALLBACKS and never changes.
//! - The stored record keeps the layout of the first version of the type
//!   (`status`, `location`, `result: Option<Outcome>`, ... in that order):
//!   [`Job`] is written through a borrowed view of its fields (no copy per
//!   store) and read through an owned record checked on the way in, so a record
//!   whose status and result disagree is a decode error, never a panic.
//! - Growing parts are bounded: [`ANNOTATIONS_MAX`] annotations of at most
//!   [`ANNOTATION_BYTES_MAX`] bytes each, at most [`CALLBACKS_MAX`] callbacks, the
//!   last [`ERROR_HISTORY_MAX`] error entries
//!   (older ones are counted in `errors_dropped`), a handler name of at most
//!   [`HANDLER_NAME_BYTES_MAX`] bytes.
//!
//! - The error history's backtraces (one per entry, `None` when the failure had
//!   none) are stored after every other field, in step with the entries (a
//!   record written before they existed reads as entries without one); each is
//!   at most [`ERROR_BACKTRACE_CHARS_MAX`] characters.
//!
//! Arguments are bytes. The typed helpers ([`Job::with_arguments`],
//! [`Job::arguments`]) encode them with postcard: compact, and the same encoding the
//! objects layer uses; it is not self-describing, so a handler must decode with the
//! type the producer encoded (add fields only at the end, with defaults).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zodiac_objects::{PRef, Persistent};
use zodiac_storage::Oid;

use crate::error::{Error, Result};
use crate::model::attempt_limit::AttemptLimit;
use crate::model::failure::{Failure, FailureKind};
use crate::model::retry_data::RetryData;
use crate::model::status::{self, Status};
use crate::time::Timestamp;

mod record;
mod state;

#[cfg(test)]
use self::record::{JobRecordRef, StoredBacktraces, StoredErrors};

pub use self::state::{Ending, FailureLevel, Location, Outcome, State};

/// Most bytes of a handler name.
pub const HANDLER_NAME_BYTES_MAX: usize = 255;
/// Most annotations on one job.
pub const ANNOTATIONS_MAX: usize = 64;
/// Most bytes of one annotation's key plus value.
pub const ANNOTATION_BYTES_MAX: usize = 4096;
/// Most callbacks of one job.
pub const CALLBACKS_MAX: usize = 1024;
/// Most entries kept in a job's error history (the newest are kept).
pub const ERROR_HISTORY_MAX: usize = 100;
/// Most characters of the backtrace kept with one error history entry (the
/// final failure keeps a longer one, within its own text limit).
pub const ERROR_BACKTRACE_CHARS_MAX: usize = 4_000;

/// One failed attempt in a job's error history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// When the attempt failed.
    pub time: Timestamp,
    /// The run attempt (1 for the first run).
    pub attempt: u32,
    /// `kind: message` of the failure.
    pub summary: String,
    /// Where it failed, for a panic or an error that carried a backtrace.
    pub backtrace: Option<String>,
}

/// A durable unit of work: a handler name, its arguments, and its whole story.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    handler: String,
    arguments: Vec<u8>,
    state: State,
    location: Location,
    created: Timestamp,
    /// Set at put: not claimable before.
    begin_after: Option<Timestamp>,
    /// With `begin_after`, the deadline: not started after `begin_after + begin_by`.
    begin_by: Option<Duration>,
    active_start: Option<Timestamp>,
    active_end: Option<Timestamp>,
    /// Runs started so far.
    attempts: u32,
    /// `None`: the process default for its kind of job.
    retry_policy: Option<String>,
    retry_data: RetryData,
    failure_level: FailureLevel,
    quota_names: Vec<String>,
    callbacks: Vec<PRef<Job>>,
    annotations: BTreeMap<String, Vec<u8>>,
    errors: Vec<ErrorEntry>,
    errors_dropped: u64,
    /// While ACTIVE: the job whose result this one waits for and will take.
    awaiting: Option<PRef<Job>>,
    /// The object an internal handler works on, as a reference: the waiting job
    /// of a resume callback, the composite of a join callback or of a postprocess
    /// job. Their arguments (or annotation) name it too, but as numbers, which pack
    /// and GC cannot see: without this, GC deleted the composite of every
    /// composite job and the job that awaited another. Added after version 1 of
    /// the type (old records read it as `None`).
    subject: Option<PRef<()>>,
    /// How many runs its handler's own errors get, and the wait between them
    /// (`None`: as its retry policy decides). Added after `subject`.
    attempt_limit: Option<AttemptLimit>,
    /// 0 (the highest, the default) to `PRIORITY_MAX`. Added after the error
    /// backtraces.
    priority: u8,
    /// The unique key it was put with, so that dropping it frees the key's
    /// entry in its queue's unique index. Added after `priority`.
    unique_key: Option<String>,
}

impl Persistent for Job {
    const TYPE_NAME: &'static str = "zodiac.async.Job";
}

impl Job {
    /// A NEW job that will call `handler` with `arguments` (bytes as the handler's
    /// registration decodes them).
    pub fn new(handler: impl Into<String>, arguments: Vec<u8>) -> Result<Job> {
        let handler = handler.into();
        if handler.len() > HANDLER_NAME_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "a handler name (bytes)",
                len: handler.len(),
                max: HANDLER_NAME_BYTES_MAX,
            });
        }
        Ok(Job {
            handler,
            arguments,
            state: State::New,
            location: Location::None,
            created: Timestamp::now(),
            begin_after: None,
            begin_by: None,
            active_start: None,
            active_end: None,
            attempts: 0,
            retry_policy: None,
            retry_data: RetryData::default(),
            failure_level: FailureLevel::default(),
            quota_names: Vec::new(),
            callbacks: Vec::new(),
            annotations: BTreeMap::new(),
            errors: Vec::new(),
            errors_dropped: 0,
            awaiting: None,
            subject: None,
            attempt_limit: None,
            priority: 0,
            unique_key: None,
        })
    }

    /// A NEW job whose arguments are `arguments` encoded with postcard.
    pub fn with_arguments<A: Serialize>(handler: impl Into<String>, arguments: &A) -> Result<Job> {
        let bytes = postcard::to_stdvec(arguments).map_err(Error::EncodeArguments)?;
        Job::new(handler, bytes)
    }

    /// The arguments decoded (postcard) as an `A`; `id` names the job in the error.
    pub fn arguments<A: DeserializeOwned>(&self, id: Oid) -> Result<A> {
        postcard::from_bytes(&self.arguments).map_err(|source| Error::Arguments { job: id, source })
    }

    /// The handler name.
    pub fn handler(&self) -> &str {
        &self.handler
    }
    /// The arguments as stored.
    pub fn argument_bytes(&self) -> &[u8] {
        &self.arguments
    }
    /// The status, as the state names it.
    pub fn status(&self) -> Status {
        self.state.status()
    }
    /// The state, with the result once there is one.
    pub fn state(&self) -> &State {
        &self.state
    }
    /// The result: `Some` exactly when the job is in CALLBACKS or COMPLETED.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.state.outcome()
    }
    /// Where the job is held.
    pub fn location(&self) -> &Location {
        &self.location
    }
    /// The result, as [`Job::outcome`].
    pub fn result(&self) -> Option<&Outcome> {
        self.state.outcome()
    }
    /// When the job was created.
    pub fn created(&self) -> Timestamp {
        self.created
    }
    /// Not claimable before (set at put).
    pub fn begin_after(&self) -> Option<Timestamp> {
        self.begin_after
    }
    /// With `begin_after`, how long after it the job may still start.
    pub fn begin_by(&self) -> Option<Duration> {
        self.begin_by
    }
    /// The time after which the job must not start: `begin_after + begin_by`.
    pub fn deadline(&self) -> Option<Timestamp> {
        Some(self.begin_after?.plus(self.begin_by?))
    }
    /// When its last run started.
    pub fn active_start(&self) -> Option<Timestamp> {
        self.active_start
    }
    /// When its last run ended.
    pub fn active_end(&self) -> Option<Timestamp> {
        self.active_end
    }
    /// Runs started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// The retry policy name (`None`: the process default for its kind).
    pub fn retry_policy(&self) -> Option<&str> {
        self.retry_policy.as_deref()
    }
    /// The retry policy's memory.
    pub fn retry_data(&self) -> &RetryData {
        &self.retry_data
    }
    /// The retry policy's memory, to change.
    pub fn retry_data_mut(&mut self) -> &mut RetryData {
        &mut self.retry_data
    }
    /// The level its final failure is logged at.
    pub fn failure_level(&self) -> FailureLevel {
        self.failure_level
    }
    /// The quotas it counts against while held.
    pub fn quota_names(&self) -> &[String] {
        &self.quota_names
    }
    /// Callbacks, in the order they run.
    pub fn callbacks(&self) -> &[PRef<Job>] {
        &self.callbacks
    }
    /// Its annotations.
    pub fn annotations(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.annotations
    }
    /// The newest error entries, oldest first.
    pub fn errors(&self) -> &[ErrorEntry] {
        &self.errors
    }
    /// Error entries dropped to keep the history at [`ERROR_HISTORY_MAX`].
    pub fn errors_dropped(&self) -> u64 {
        self.errors_dropped
    }
    /// The job this ACTIVE job waits for (its handler returned "await job").
    pub fn awaiting(&self) -> Option<PRef<Job>> {
        self.awaiting
    }

    /// The object this job's internal handler works on (see the field's docs).
    pub fn subject(&self) -> Option<PRef<()>> {
        self.subject
    }

    pub(crate) fn set_subject<T>(&mut self, subject: PRef<T>) {
        self.subject = Some(subject.cast());
    }

    pub(crate) fn set_awaiting(&mut self, job: Option<PRef<Job>>) {
        self.awaiting = job;
    }

    /// How many runs its handler's own errors get (`None`: as its policy decides).
    pub fn attempt_limit(&self) -> Option<&AttemptLimit> {
        self.attempt_limit.as_ref()
    }

    /// Gives its handler `limit`'s attempts, beside its retry policy.
    pub fn set_attempt_limit(&mut self, limit: Option<AttemptLimit>) {
        self.attempt_limit = limit;
    }

    /// Its priority: 0 (the highest) to [`PRIORITY_MAX`](crate::limits::PRIORITY_MAX).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The unique key it was put with, if any.
    pub fn unique_key(&self) -> Option<&str> {
        self.unique_key.as_deref()
    }

    pub(crate) fn set_unique_key(&mut self, key: Option<String>) {
        self.unique_key = key;
    }

    pub(crate) fn set_priority(&mut self, priority: u8) {
        debug_assert!(priority <= crate::model::queue_key::PRIORITY_MAX);
        self.priority = priority;
    }

    /// Uses the retry policy registered as `name` instead of the process default.
    pub fn set_retry_policy(&mut self, name: impl Into<String>) {
        self.retry_policy = Some(name.into());
    }

    /// Logs its final failure at `level`.
    pub fn set_failure_level(&mut self, level: FailureLevel) {
        self.failure_level = level;
    }

    /// Sets annotation `key` (a small key/value map for applications and tools).
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        let bytes = key.len() + value.len();
        if bytes > ANNOTATION_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "an annotation (key and value bytes)",
                len: bytes,
                max: ANNOTATION_BYTES_MAX,
            });
        }
        if !self.annotations.contains_key(&key) && self.annotations.len() >= ANNOTATIONS_MAX {
            return Err(Error::LimitExceeded {
                what: "the number of annotations",
                len: self.annotations.len() + 1,
                max: ANNOTATIONS_MAX,
            });
        }
        self.annotations.insert(key, value);
        Ok(())
    }

    /// Moves the job to `to` if the status machine allows it; `id` names the job in
    /// the error. Entering ACTIVE starts a run (attempt count, `active_start`, the
    /// per-run retry counters); leaving ACTIVE sets `active_end`. COMPLETED keeps
    /// the result of CALLBACKS; CALLBACKS itself needs one ([`Job::finish`]).
    pub(crate) fn transition(&mut self, id: Oid, to: Status, now: Timestamp) -> Result<()> {
        let from = self.status();
        status::check(from, to).map_err(|_| Error::IllegalTransition { job: id, from, to })?;
        // Leaving COMPLETED is an operator's retry of a failure: `Job::reopen` only.
        if from == Status::Completed {
            return Err(Error::IllegalTransition { job: id, from, to });
        }
        let state = match to {
            Status::New => State::New,
            Status::Pending => State::Pending,
            Status::Assigned => State::Assigned,
            Status::Active => State::Active,
            Status::Completed => match std::mem::replace(&mut self.state, State::New) {
                State::Callbacks(outcome) => State::Completed(outcome),
                // The status machine reaches COMPLETED from CALLBACKS only.
                other => unreachable!("{from} -> COMPLETED from state {other:?}"),
            },
            Status::Callbacks => panic!("entering CALLBACKS stores a result: Job::finish"),
        };
        self.enter(state, now);
        Ok(())
    }

    /// Stores `outcome` as the result (→ CALLBACKS, and → COMPLETED when the job
    /// has no callbacks) if the status machine allows it; `id` names the job in
    /// the error, which leaves the job as it was.
    pub(crate) fn finish(&mut self, id: Oid, outcome: Outcome, now: Timestamp) -> Result<()> {
        let from = self.status();
        let to = Status::Callbacks;
        status::check(from, to).map_err(|_| Error::IllegalTransition { job: id, from, to })?;
        if self.callbacks.is_empty() {
            debug_assert!(status::is_legal(to, Status::Completed));
            self.enter(State::Completed(outcome), now);
        } else {
            self.enter(State::Callbacks(outcome), now);
        }
        Ok(())
    }

    /// Reopens a job that completed with a failure, for an operator's retry
    /// (COMPLETED → PENDING; the caller puts it in its queue in the same
    /// transaction): the failure is kept in its error history (appended unless it
    /// already is its last entry), and the attempt count and the retry policy's
    /// memory start afresh. Its callbacks, which ran with the failure, stay
    /// listed and do not run again. Refused, leaving the job as it was, unless it
    /// is COMPLETED with a failure.
    pub(crate) fn reopen(&mut self, id: Oid, now: Timestamp) -> Result<()> {
        let from = self.status();
        let State::Completed(Outcome::Failure(failure)) = &self.state else {
            return Err(Error::Refused {
                job: id,
                action: "retried",
                why: match from {
                    Status::Completed => "it succeeded; only a failed job is retried".into(),
                    other => format!("it is {other}; only a COMPLETED job that failed is retried"),
                },
            });
        };
        status::check(from, Status::Pending).map_err(|_| Error::IllegalTransition {
            job: id,
            from,
            to: Status::Pending,
        })?;
        let failure = failure.clone();
        let summary = failure.summary();
        let recorded = self
            .errors
            .last()
            .is_some_and(|e| e.summary == summary && e.attempt == self.attempts);
        if !recorded {
            self.record_error(now, &failure);
        }
        self.attempts = 0;
        self.retry_data = RetryData::default();
        self.state = State::Pending;
        Ok(())
    }

    fn enter(&mut self, state: State, now: Timestamp) {
        if state == State::Active {
            self.attempts += 1;
            self.active_start = Some(now);
            self.active_end = None;
            self.retry_data.start_run();
        }
        if self.state == State::Active {
            self.active_end = Some(now);
        }
        self.state = state;
    }

    pub(crate) fn push_callback(&mut self, callback: PRef<Job>) {
        self.callbacks.push(callback);
    }

    pub(crate) fn set_location(&mut self, location: Location) {
        self.location = location;
    }

    pub(crate) fn set_schedule(&mut self, begin_after: Timestamp, begin_by: Option<Duration>) {
        self.begin_after = Some(begin_after);
        self.begin_by = begin_by;
    }

    pub(crate) fn set_quota_names(&mut self, names: Vec<String>) {
        self.quota_names = names;
    }

    /// Appends a failed attempt to the error history, dropping the oldest entry
    /// beyond [`ERROR_HISTORY_MAX`].
    pub fn record_error(&mut self, time: Timestamp, failure: &Failure) {
        if self.errors.len() >= ERROR_HISTORY_MAX {
            self.errors.remove(0);
            self.errors_dropped += 1;
        }
        self.errors.push(ErrorEntry {
            time,
            attempt: self.attempts,
            summary: failure.summary(),
            backtrace: failure
                .backtrace
                .as_ref()
                .map(|b| b.chars().take(ERROR_BACKTRACE_CHARS_MAX).collect()),
        });
    }
}

/// Logs a job's final failure on the events target at the job's failure level;
/// CRITICAL is `error!` with a `critical:` marker. A cancel is an operator's
/// decision, not an error: it is logged at INFO whatever the level.
pub(crate) fn log_failure(id: Oid, job: &Job, failure: &Failure) {
    let target = "zodiac_async::events";
    let handler = job.handler();
    // Decimal, as the command line prints job ids, so a log can be searched for one.
    let id = id.0;
    if failure.kind == FailureKind::Cancelled {
        log::info!(target: target, "job {id} ({handler}) cancelled: {}", failure.message);
        return;
    }
    match job.failure_level() {
        FailureLevel::Info => log::info!(target: target, "job {id} ({handler}) failed: {failure}"),
        FailureLevel::Warning => {
            log::warn!(target: target, "job {id} ({handler}) failed: {failure}")
        }
        FailureLevel::Error => {
            log::error!(target: target, "job {id} ({handler}) failed: {failure}")
        }
        FailureLevel::Critical => {
            log::error!(target: target, "critical: job {id} ({handler}) failed: {failure}")
        }
    }
}

#[cfg(test)]
mod tests;
