//! Durable jobs for Zodiac: jobs, queues and workers stored in a
//! [`zodiac_objects`] database and changed in its ordinary transactions, after
//! zc.async's model.
//!
//! A job is a handler name and its arguments. A producer puts it in a [`Queue`]; a
//! [`Worker`] (one *dispatcher*, with one *agent* per queue) claims it and runs
//! its handler in a transaction that also stores the job's result: the handler's
//! writes and the result commit together, or neither does, so a job whose whole
//! effect is in the database takes effect exactly once, whatever crashes. Errors,
//! panics and lost commits go to the job's [`RetryPolicy`] (retry now, later, or
//! give up with a [`Failure`]); a worker that dies leaves its jobs to recovery by
//! its restart or by a sibling after the death interval.
//!
//! # The model
//!
//! - [`Job`]: handler, arguments (postcard), [`State`] (the [`Status`] with the
//!   [`Outcome`] once there is one), [`Location`], schedule (`begin_after`,
//!   `begin_by`), retry data, error history, annotations, callbacks.
//! - [`Queue`]: pending jobs in claim order (put-back first, then by start time);
//!   [`Quota`]s limit how many of its jobs are held at once.
//! - [`Dispatchers`] and [`Agent`]s: who holds which job; pings, death and the
//!   recovery of a dead dispatcher's jobs ([`Cleanup`]).
//! - [`Runner`]: runs one job with [`Handlers`] and [`Policies`]; callbacks
//!   ([`add_callback`]), awaiting another job ([`JobContext::await_job`]),
//!   composite jobs ([`serial`], [`parallel`]).
//! - [`Worker`] ([`Worker::builder`]): polls its queues, claims up to its agent's
//!   size and runs each job on a thread of its own.
//! - Operator actions: [`retry_jobs`] and [`retry_failed`] put failed jobs back,
//!   [`discard_jobs`] lets pack reclaim completed ones, [`cancel_jobs`] and
//!   [`cancel_matching`] cancel in bounded batches, [`Queue::pause`] and
//!   [`Queue::resume`] stop and restart a queue's claims.
//! - Time is read from a [`Clock`] ([`SystemClock`] by default; tests advance a
//!   [`ManualClock`]). Limits, defaults and reserved names are in [`limits`].
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
//! | COMPLETED (with a failure) | PENDING | retried ([`retry_jobs`], [`retry_failed`]): fresh attempt count, the failure kept in its error history | an operator |
//!
//! COMPLETED is terminal but for an operator's retry of a failure; a job is run
//! only from NEW or ASSIGNED. CALLBACKS and
//! COMPLETED carry the job's outcome ([`State::Completed`]).
//!
//! # Example
//!
//! A deposit that changes an account exactly once: a producer puts the job, a
//! worker runs it, and the handler's write commits with the job's result.
//!
//! ```
//! use std::sync::Arc;
//! use zodiac_async::{Handlers, Job, Outcome, Policies, PutOptions, Queue, Runner, Status, Worker,
//!                    transact};
//! use zodiac_objects::{Database, PRef};
//! use zodiac_storage::MemoryStorage;
//!
//! #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
//! struct Account { balance: i64, deposits: u32 }
//! zodiac_objects::persistent!(Account = "bank.Account");
//!
//! let db = Database::open(Arc::new(MemoryStorage::new()))?;
//! let account = transact(&db, |tx| Ok(tx.add(Account::default())?))?;
//!
//! // A producer puts a job: one transaction.
//! let job = transact(&db, |tx| {
//!     let queue = Queue::get_or_create(tx, "")?;
//!     let job = Job::with_arguments("bank.deposit", &(account, 100i64))?;
//!     Queue::put_job(tx, &queue, job, PutOptions::new())
//! })?;
//!
//! // A worker runs it.
//! let mut handlers = Handlers::new();
//! handlers.register("bank.deposit", |ctx, (account, amount): (PRef<Account>, i64)| {
//!     ctx.tx().modify(&account, |a| { a.balance += amount; a.deposits += 1; })?;
//!     Ok(amount)
//! });
//! let runner = Runner::new(db.clone(), handlers, Policies::new());
//! let mut worker = Worker::builder(db.clone(), "worker-1", runner).agent_size(4).build();
//! worker.poll_once()?; // `worker.run(&stop)` polls until `stop` is set
//! worker.wait_idle();
//! worker.shutdown()?;
//!
//! let (status, outcome) = transact(&db, |tx| {
//!     let j = tx.get(&job)?;
//!     Ok((j.status(), j.outcome().cloned()))
//! })?;
//! assert_eq!(status, Status::Completed);
//! assert_eq!(outcome, Some(Outcome::Value(postcard::to_stdvec(&100i64).unwrap())));
//! assert_eq!(transact(&db, |tx| Ok(tx.get(&account)?.balance))?, 100);
//! # Ok::<(), zodiac_async::Error>(())
//! ```
//!
//! # Where to read more
//!
//! `docs/jobs.md` describes every status, policy, limit and the worker's
//! machinery; the guide (`docs/guide.md`, "Jobs") says what a transactional and
//! a non-transactional job can rely on. The `zodiac worker` and `zodiac jobs`
//! commands run and inspect jobs from the shell.

#![warn(missing_docs)]

mod callbacks;
mod composite;
mod dispatcher;
pub mod ended;
mod error;
mod handler;
mod helpers;
mod identity;
pub mod inspect;
pub mod limits;
mod model;
mod queue;
mod recovery;
mod references;
pub mod retry;
mod run;
mod schedule;
mod time;
mod traced;
mod transact;
mod wake;
mod worker;

pub use callbacks::{add_callback, add_callbacks};
pub use composite::{Composite, parallel, part_results, serial};
pub use dispatcher::Dispatchers;
pub use error::{Error, Result};
pub use handler::{HandlerError, Handlers, JobContext};
pub use helpers::{NeverFail, never_fail, never_fail_with, try_n_times};
pub use identity::WorkerIdentity;
pub use model::dispatcher::{Agent, DispatcherRecord};
pub use model::failure::{Failure, FailureKind};
pub use model::job::{Ending, ErrorEntry, FailureLevel, Job, Location, Outcome, State};
pub use model::merges::merges;
pub use model::queue::{Entry, Queue, QueueDirectory, QueueKey};
pub use model::quota::Quota;
pub use model::schedule::Schedule;
pub use model::status;
pub use model::status::Status;
pub use queue::{
    CANCEL_BATCH_JOBS_MAX, CancelFilter, Claim, Claimer, PutOptions, Queued, RETRY_BATCH_JOBS_MAX,
    Spread, Unique, cancel_jobs, cancel_matching, discard_jobs, fail, retry_failed, retry_jobs,
};
pub use recovery::{Cleanup, recover_interrupted};
pub use references::named_ids;
pub use retry::{AttemptLimit, Backoff, Decision, Policies, RetryData, RetryPolicy};
pub use run::{RunOutcome, Runner};
pub use schedule::{
    CronExpr, ScheduleSpec, Tick, add_schedule, due_in, put_due, remove_schedule, schedule,
    scheduled_by, schedules,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use traced::TracedError;
pub use transact::{poll_backoff, transact};
pub use wake::{Invalidations, Polling, WakeSource};
pub use worker::{PollReport, Worker, WorkerBuilder, WorkerOptions, housekeeping_interval};
