//! The durable job layer of Zodiac: persistent jobs, queues and retry policies in a
//! [`zodiac_objects`] database, following zc.async's model (see `docs/jobs.md`).
//!
//! Built so far:
//! - [`Job`]: a handler name, serialized arguments (postcard), an explicit
//!   [`Status`] and [`Location`], result ([`Outcome`]: value bytes or a
//!   [`Failure`] record), `begin_after`/`begin_by`, run timing, retry policy name
//!   and [`RetryData`], failure level, annotations, error history, callbacks.
//! - The status machine ([`status`]): every status change is checked; the table of
//!   legal transitions and who performs each is below.
//! - Retry policies ([`retry`]): `default`, `forever`, `never` and custom ones
//!   through the [`RetryPolicy`] trait, found by name in [`Policies`].
//! - Queues ([`Queue`]): put, claim (ordered, scheduled, deadline-checked), pull,
//!   remove, put back, fail, quotas ([`Quota`]); designed so producers and
//!   claimers rarely conflict.
//! - Running one job ([`Runner`]): handlers registered by name with typed
//!   arguments ([`Handlers`], [`JobContext`]); the handler's writes and the result
//!   commit in one transaction; handler errors roll back and go to the retry
//!   policy; panics and unknown handlers become failures, never crashes.
//!   [`recover_interrupted`] applies a job's `on_interrupted` decision to a run
//!   whose process died.
//! - Callbacks: [`add_callback`] / [`Runner::add_callback`]; after a job's result
//!   is stored its callbacks run in order with that result
//!   ([`JobContext::parent_result`]), each as its own job under the callback
//!   policy (`forever` by default), then the job becomes COMPLETED.
//!   [`add_callbacks`] adds one callback with a success and a failure branch.
//! - "Await job": a handler calls [`JobContext::await_job`]; its job stays ACTIVE
//!   without holding an agent slot and takes the awaited job's result when that
//!   completes.
//! - Helpers for work that must commit: [`never_fail`] and [`try_n_times`];
//!   composite jobs [`serial`] and [`parallel`] with a postprocess job that runs
//!   once with the parts' results ([`part_results`]).
//! - A worker's identity ([`WorkerIdentity`]): its dispatcher UUID in a file held
//!   with an OS lock, so a second process with the same UUID is refused and a
//!   restart knows its previous incarnation is gone.
//!
//! - The stored side of dispatchers ([`Dispatchers`]): registration and activation
//!   per queue (a live id is refused), pings, death detection, agents that claim up
//!   to their size, and the one-transaction cleanup of a dead dispatcher (ASSIGNED
//!   jobs put back, ACTIVE ones recovered through their policy).
//!
//! - A [`Worker`]: one dispatcher polling its queues (activate, ping, clean up
//!   dead siblings, drop old completed jobs, claim) and running up to its agent's
//!   size of jobs at once, each on its own thread; woken at once by a commit that
//!   changes a watched queue or by a finished run; backing off after failed polls;
//!   on stop, giving running jobs a grace period and then handing what it holds to
//!   recovery.
//!
//! - Read-only queries for tools ([`inspect`]): jobs by status, queue, dispatcher,
//!   agent, handler and creation time; dispatchers with liveness and load.
//!
//! - Jobs that end without a run (cancelled, expired) are kept in their queue's
//!   [`ended`] jobs, listed, counted and retained; their callbacks run in a worker
//!   that adopts them.
//! - Every link between stored objects is a reference (`PRef`), so pack's GC and
//!   `zodiac refs` see it; a unit test audits every stored type for oids outside
//!   references, and [`named_ids`] reads the ids a stored value names.
//!
//! The `zodiac worker` and `zodiac jobs` commands (in the `zodiac` binary) run and
//! inspect jobs with built-in handlers. Not built: recovery *jobs* (cleanup
//! recovers in its own transaction).
//!
//! # Status transitions
//!
//! | from | to | event | performed by |
//! |---|---|---|---|
//! | NEW | PENDING | put in a queue ([`Queue::put`]) | a producer, in its own transaction |
//! | PENDING | NEW | pulled/removed ([`Queue::pull`], [`Queue::remove`]) | a producer or operator |
//! | PENDING | ASSIGNED | claimed ([`Queue::claim`]) | an agent of a dispatcher |
//! | ASSIGNED | PENDING | put back ([`Queue::put_back`]): its dispatcher died or stopped before running it | the cleanup of that dispatcher |
//! | NEW, ASSIGNED | ACTIVE | a run starts | the worker running it |
//! | ACTIVE | PENDING | retry now or later ([`Queue::put_back`]), or an interrupted run retried | the worker, or a recovery job |
//! | ACTIVE | NEW | an interrupted callback is retried (its process died) | the cleanup of that dispatcher |
//! | ACTIVE | CALLBACKS | the result is stored | the worker |
//! | NEW, PENDING, ASSIGNED | CALLBACKS | [`fail`], or a deadline found passed by a claim | whoever fails it; the claiming agent |
//! | CALLBACKS | COMPLETED | every callback ran (at once when there are none) | whoever stored the result |
//!
//! COMPLETED is terminal; a job is run only from NEW or ASSIGNED.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use zodiac_async::{transact, Claimer, Job, PutOptions, Queue, Status};
//! use zodiac_objects::Database;
//! use zodiac_storage::MemoryStorage;
//!
//! let db = Database::open(Arc::new(MemoryStorage::new()))?;
//! let job = transact(&db, |tx| {
//!     let queue = Queue::get_or_create(tx, "")?;
//!     Queue::put_job(tx, &queue, Job::with_arguments("mail.send", &"ann")?, PutOptions::new())
//! })?;
//! let claimer = Claimer { dispatcher: "d1".into(), agent: "main".into() };
//! let claimed = transact(&db, |tx| {
//!     let queue = Queue::get(tx, "")?.expect("created above");
//!     Ok(Queue::claim(tx, &queue, &claimer)?.job)
//! })?;
//! assert_eq!(claimed, Some(job));
//! let status = transact(&db, |tx| Ok(tx.get(&job)?.status()))?;
//! assert_eq!(status, Status::Assigned);
//! # Ok::<(), zodiac_async::Error>(())
//! ```

mod callbacks;
mod composite;
mod dispatcher;
pub mod ended;
mod error;
mod handler;
mod helpers;
mod identity;
pub mod inspect;
mod model;
mod queue;
mod recovery;
mod references;
pub mod retry;
mod run;
mod time;
mod transact;
mod wake;
mod worker;

pub use callbacks::{BRANCH_HANDLER, add_callback, add_callbacks};
pub use composite::{
    COMPOSITE_ANNOTATION, Composite, JOIN_HANDLER, parallel, part_results, serial,
};
pub use dispatcher::{
    AGENT_SIZE_DEFAULT, AGENTS_MAX, CLAIM_SPREAD_ROTATION, DEATH_INTERVAL_DEFAULT, Dispatchers,
    PING_INTERVAL_DEFAULT, RETENTION_DEFAULT, RETENTION_DROPS_MAX,
};
pub use error::{Error, Result};
pub use handler::{HandlerError, Handlers, JobContext};
pub use helpers::{NeverFail, never_fail, never_fail_with, try_n_times};
pub use identity::{WORKER_ID_FILE_BYTES_MAX, WORKER_ID_PATH_DEFAULT, WorkerIdentity};
pub use model::dispatcher::{Agent, DispatcherRecord};
pub use model::failure::{FAILURE_TEXT_CHARS_MAX, Failure, FailureKind};
pub use model::job::{
    ANNOTATION_BYTES_MAX, ANNOTATIONS_MAX, CALLBACKS_MAX, ERROR_HISTORY_MAX, ErrorEntry,
    FailureLevel, HANDLER_NAME_BYTES_MAX, Job, Location, Outcome,
};
pub use model::merges::merges;
pub use model::queue::{
    Entry, LANE_PUT_BACK, LANE_SCHEDULED, QUEUE_NAME_BYTES_MAX, QUEUES_ROOT_KEY, Queue,
    QueueDirectory, QueueKey,
};
pub use model::quota::{QUOTAS_MAX, Quota};
pub use model::status;
pub use model::status::Status;
pub use queue::{
    CLAIM_SCAN_ENTRIES_MAX, Claim, Claimer, PutOptions, SPREAD_WINDOW_PER_LANE, Spread, fail,
};
pub use recovery::{Cleanup, recover_interrupted};
pub use references::named_ids;
pub use retry::{Decision, Policies, RetryData, RetryPolicy};
pub use run::{BATCH_SPAN_MAX, RESUME_HANDLER, RunOutcome, Runner};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use transact::transact;
pub use wake::{Invalidations, Polling, WakeSource};
pub use worker::{
    AGENT_NAME, PollReport, Worker, WorkerOptions, housekeeping_interval, poll_backoff,
};
