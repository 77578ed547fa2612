//! A worker: one dispatcher polling its queues on the calling thread and running
//! the jobs it claims on threads of their own (kept in a pool between jobs:
//! starting a thread costs more than a short job).
//!
//! Each poll first puts the due ticks of the recurring-job schedules of its
//! queues (reading them at most once per poll interval, and when a tick it knows
//! of is due; see `crate::schedule`). Then, for each watched queue: activate on the first visit (a live
//! dispatcher with the same id makes this worker skip that queue, with an error
//! log), ping when due, clean up dead siblings and drop completed jobs older than
//! the retention period (both at most every [`housekeeping_interval`], not at
//! every poll of a busy worker), then claim jobs until the agent holds `agent_size` or nothing
//! is claimable, running each on a thread of its own. That thread goes on with
//! the job its run claims in its last commit (see below) for as long as the queue
//! has work. Between polls the worker waits for the poll interval, or until the
//! next scheduled job's start time or its next ping or housekeeping is due,
//! whichever is soonest (so a worker kept busy by its run threads still pings
//! and cleans up dead siblings in time), or less: a run thread
//! that ends wakes it at once (a slot is free), and so does its [`WakeSource`]
//! while it has room for another job (by default [`Invalidations`]: a commit
//! that writes a watched queue's size counter, as a put or put-back does).
//!
//! Invariants:
//! - A claim is one transaction; conflicts are retried at most
//!   `claim_conflict_retries` times and never fail the poll.
//! - A run also claims (and starts) the agent's next job in the commit that ends
//!   its work, after a savepoint ([`Runner::run_chain`]): one durable commit per
//!   job instead of two. A conflict on that claim rolls it back and the result
//!   commits alone, so a lost claim never calls a handler twice; the thread then
//!   ends and the poll claims. The claim writes the agent like any claim, so the
//!   agent's size holds against the poll's own claims.
//! - With `batch_size` n > 1 a claim takes up to n jobs and starts them all in its
//!   commit, and a run thread runs them in one transaction whose commit stores all
//!   their results and claims the next batch ([`Runner::run_batch`]): every job
//!   is durably ACTIVE before any handler of its batch runs. The agent runs
//!   `agent_size / batch_size` threads (rounded up). The first callbacks a batch
//!   starts run as a batch of their own next.
//! - A claim prefers the jobs of the worker's lane, its rotating rank among the
//!   queue's live dispatchers ([`Dispatchers::claim_lane`], [`Spread`](crate::Spread)), so
//!   concurrent workers take distinct jobs rather than all meet at the head of
//!   the queue (each meeting is a conflict: the loser's claim is rolled back and
//!   retried), even while their snapshots lag each other's claims (over a server
//!   they usually do); a lone live worker claims in strict order.
//! - A claimed job is started (ASSIGNED → ACTIVE, a new attempt) in the claim's
//!   own transaction, so a job costs one durable commit fewer; its run then goes
//!   straight to the handler. A worker that dies after that commit leaves the job
//!   ACTIVE, and cleanup recovers it through its policy's `on_interrupted`, as for
//!   any interrupted run. A job that cannot be started there (its retry policy is
//!   not registered in this worker) stays ASSIGNED and its run reports why.
//! - A poll that fails (e.g. a storage error) is retried after a backoff of
//!   5 s, 10 s, … capped at 60 s ([`poll_backoff`]), never ending [`Worker::run`].
//! - At most `agent_size` jobs run at once: the agent claims only while it holds
//!   fewer jobs that are not COMPLETED.
//! - Jobs a cleanup (of a dead sibling, or of this id's previous incarnation)
//!   finds in CALLBACKS have their callbacks resumed on a thread of their own, like
//!   a claimed job, so a long callback never stalls polls and pings; the dead
//!   agent then releases them.
//! - [`Worker::shutdown`] stops claiming (its run threads take no next job), gives
//!   running jobs the grace period, then hands what the
//!   agent still holds to recovery and deactivates the dispatcher, so nothing stays
//!   assigned to a stopped worker. A job whose callbacks are still running has them
//!   interrupted (their policy decides) and stays held: the dispatcher then stays
//!   activated without pinging, so a sibling cleans it up after the death interval
//!   and resumes those callbacks, as after a crash.
//! - A cleanup of a dead sibling adopts its jobs in CALLBACKS into this worker's
//!   agent ([`Dispatchers::cleanup_adopting`]) before resuming their callbacks: if
//!   this worker dies meanwhile, its own cleanup finds them.

mod failed_run;
mod options;
mod poll;
mod shutdown;
mod slots;
mod ticks;
mod wait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zodiac_objects::{Database, PRef};
use zodiac_storage::{Oid, ThreadPool};

use crate::error::Result;
use crate::model::job::Job;
use crate::run::Runner;
use crate::time::Timestamp;
use crate::wake::{Invalidations, WakeSource};

use crate::transact::poll_backoff;
pub use options::{PollReport, WorkerBuilder, WorkerOptions, housekeeping_interval};
use slots::{Slot, SlotFreed};
/// The name of a worker's agent in each queue unless [`WorkerOptions::agent`] names another.
pub const AGENT_NAME: &str = "main";

/// How long a thread that ran a job waits for the next before it ends.
const JOB_THREAD_IDLE_EXIT: Duration = Duration::from_secs(60);
/// One dispatcher: an id, a runner, and the queues it polls.
pub struct Worker {
    db: Database,
    id: String,
    runner: Runner,
    options: WorkerOptions,
    /// Queues this worker activated, with its last ping there.
    active: BTreeMap<String, Timestamp>,
    /// The last dead-sibling check and completed-job drop, per queue.
    housekept: BTreeMap<String, Timestamp>,
    wake: Box<dyn WakeSource>,
    /// Jobs being run, each on its own thread (a slot: its thread goes on with
    /// the jobs it claims in their runs' last commits).
    running: Vec<Slot>,
    /// The jobs of `running` that only run callbacks (of a job a cleanup found in
    /// CALLBACKS, or of an expired job): not claimed, they take no place in this
    /// worker's agents.
    callbacks_only: BTreeSet<Oid>,
    /// The threads jobs run on.
    pool: ThreadPool,
    /// Rung by every run thread as it ends.
    slot_freed: Arc<SlotFreed>,
    /// Set when the worker starts stopping: its run threads claim no more jobs.
    stopping: Arc<AtomicBool>,
    /// When this worker last read the schedules of its queues, and the earliest
    /// tick it found not yet due.
    ticks: ticks::TickCheck,
}

impl Worker {
    /// A worker with dispatcher id `id` running `runner`'s jobs of `db` with
    /// `options`, woken by commit notifications ([`Invalidations`]). See
    /// [`Worker::builder`] to set options one by one.
    pub fn new(
        db: Database,
        id: impl Into<String>,
        runner: Runner,
        options: WorkerOptions,
    ) -> Worker {
        let wake = Box::new(Invalidations::new(std::sync::Arc::clone(db.storage())));
        Worker::with_wake_source(db, id, runner, options, wake)
    }

    /// A builder of a worker with dispatcher id `id` running `runner`'s jobs of
    /// `db`, from the default options.
    pub fn builder(db: Database, id: impl Into<String>, runner: Runner) -> WorkerBuilder {
        WorkerBuilder::new(db, id.into(), runner)
    }

    /// A worker woken early by `wake` instead of by commit notifications.
    pub fn with_wake_source(
        db: Database,
        id: impl Into<String>,
        runner: Runner,
        options: WorkerOptions,
        wake: Box<dyn WakeSource>,
    ) -> Worker {
        Worker {
            db,
            id: id.into(),
            runner,
            options,
            active: BTreeMap::new(),
            housekept: BTreeMap::new(),
            wake,
            running: Vec::new(),
            callbacks_only: BTreeSet::new(),
            pool: ThreadPool::new("zodiac-job", JOB_THREAD_IDLE_EXIT),
            slot_freed: Arc::default(),
            stopping: Arc::default(),
            ticks: ticks::TickCheck::default(),
        }
    }

    /// Its dispatcher id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One poll of every queue (see the module docs).
    pub fn poll_once(&mut self) -> Result<PollReport> {
        self.reap(false);
        let mut report = PollReport::default();
        self.put_due_ticks(&mut report)?;
        for name in self.options.queues.clone() {
            if !self.visit(&name, &mut report)? {
                continue;
            }
            self.claim_and_run(&name, &mut report)?;
        }
        Ok(report)
    }

    /// Jobs being run now.
    pub fn running(&self) -> Vec<PRef<Job>> {
        self.running.iter().map(Slot::job).collect()
    }

    /// Waits for every running job to finish.
    pub fn wait_idle(&mut self) {
        self.reap(true);
    }

    /// Polls until `stop` is set, then shuts down. Failed polls back off
    /// ([`poll_backoff`]) and never end the loop.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut failures = 0u32;
        while !stop.load(Ordering::SeqCst) {
            // Forget commits from before this poll: the poll sees them.
            self.wake.reset();
            match self.poll_once().and_then(|_| self.watched_if_room()) {
                Ok((watched, next_start)) => {
                    failures = 0;
                    self.wait(stop, &watched, next_start);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = poll_backoff(failures);
                    log::error!(
                        target: "zodiac_async::events",
                        "poll of dispatcher {} failed ({failures} in a row); retrying in \
                         {wait:?}: {e}",
                        self.id
                    );
                    let until = Instant::now() + wait;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        self.shutdown()
    }
}
