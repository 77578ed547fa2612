//! A worker: one dispatcher polling its queues on the calling thread and running
//! the jobs it claims on threads of their own (kept in a pool between jobs:
//! starting a thread costs more than a short job).
//!
//! Each poll, for each watched queue: activate on the first visit (a live
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use zodiac_objects::{Database, PRef, Transaction};
use zodiac_storage::{Oid, PoolTask, ThreadPool};

use crate::dispatcher::{
    AGENT_SIZE_DEFAULT, Cleanup, DEATH_INTERVAL_DEFAULT, Dispatchers, PING_INTERVAL_DEFAULT,
    RETENTION_DEFAULT, RETENTION_DROPS_MAX,
};
use crate::error::{Error, Result};
use crate::job::{Job, Location};
use crate::queue::{Claimer, Queue};
use crate::run::{Claimed, Runner, Started};
use crate::status::Status;
use crate::time::Timestamp;
use crate::transact::transact;
use crate::wake::{Invalidations, WakeSource};

/// The name of a worker's agent in each queue unless [`WorkerOptions::agent`] names another.
pub const AGENT_NAME: &str = "main";

/// How long a thread that ran a job waits for the next before it ends.
const JOB_THREAD_IDLE_EXIT: Duration = Duration::from_secs(60);

/// How a worker polls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Queues to poll (default: the default queue `""`).
    pub queues: Vec<String>,
    /// The agent's name in each queue ([`AGENT_NAME`]).
    pub agent: String,
    /// Jobs the agent holds at once (3).
    pub agent_size: u32,
    /// Jobs a run thread claims at once, starts together (one commit), runs one
    /// after another, and completes together (one commit, which claims the next
    /// batch): a job then costs a fraction of a durable commit
    /// ([`Runner::run_batch`](crate::Runner)). 1 (the default): one job per
    /// thread and per commit. The agent runs `agent_size / batch_size` threads
    /// (rounded up); `agent_size` still bounds the jobs it holds.
    pub batch_size: u32,
    /// Longest wait between polls (5 s).
    pub poll_interval: Duration,
    pub ping_interval: Duration,
    pub death_interval: Duration,
    /// Conflicts retried per claim (5).
    pub claim_conflict_retries: u32,
    /// How long completed jobs are kept (7 days).
    pub retention: Duration,
    /// How long a stopping worker lets running jobs finish (30 s).
    pub grace_period: Duration,
    /// This process holds the dispatcher id's identity lock and the id was used
    /// before (`WorkerIdentity::restarted`): the previous incarnation is gone, so
    /// its jobs are recovered at the first visit of each queue, without waiting
    /// for the death interval (default `false`).
    pub restarted: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            queues: vec![String::new()],
            agent: AGENT_NAME.to_string(),
            agent_size: AGENT_SIZE_DEFAULT,
            batch_size: 1,
            poll_interval: Duration::from_secs(5),
            ping_interval: PING_INTERVAL_DEFAULT,
            death_interval: DEATH_INTERVAL_DEFAULT,
            claim_conflict_retries: 5,
            retention: RETENTION_DEFAULT,
            grace_period: Duration::from_secs(30),
            restarted: false,
        }
    }
}

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Jobs claimed and started, each on its own thread.
    pub started: Vec<PRef<Job>>,
    /// Dead siblings cleaned up.
    pub cleaned: Vec<String>,
    /// Queues skipped because a live dispatcher has this worker's id.
    pub skipped: Vec<String>,
}

/// How often a worker checks a queue for dead siblings and drops old completed
/// jobs: a quarter of the ping interval, at most every second (so a dead sibling is
/// cleaned up at most that long after its death interval has passed).
pub fn housekeeping_interval(options: &WorkerOptions) -> Duration {
    (options.ping_interval / 4).min(Duration::from_secs(1))
}

/// The wait before retrying after the `n`th failed poll in a row (n ≥ 1).
pub fn poll_backoff(n: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(n)
        .min(Duration::from_secs(60))
}

/// One dispatcher: an id, a runner, and the queues it polls.
pub struct Worker {
    db: Database,
    id: String,
    runner: Runner,
    options: WorkerOptions,
    /// Queues this worker activated, with its last ping there.
    active: BTreeMap<String, Instant>,
    /// The last dead-sibling check and completed-job drop, per queue.
    housekept: BTreeMap<String, Instant>,
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
}

/// A thread running jobs: the job it runs now, whether it ended, and its task.
struct Slot {
    job: Arc<Mutex<PRef<Job>>>,
    ended: Arc<AtomicBool>,
    task: PoolTask<Result<()>>,
}

impl Slot {
    fn job(&self) -> PRef<Job> {
        *self.job.lock()
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// How a worker whose agents are full waits for a run thread to end (it has no
/// commit to watch for that: a thread that claimed no further job ends after a
/// commit of a job it took itself).
#[derive(Default)]
struct SlotFreed {
    ended: Mutex<u64>,
    rung: Condvar,
}

impl SlotFreed {
    fn count(&self) -> u64 {
        *self.ended.lock()
    }

    fn ring(&self) {
        *self.ended.lock() += 1;
        self.rung.notify_all();
    }

    /// Waits until the count passes `seen`, or for `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) -> bool {
        let mut ended = self.ended.lock();
        if *ended == seen {
            self.rung.wait_for(&mut ended, timeout);
        }
        *ended != seen
    }
}

/// Marks its slot ended and rings [`SlotFreed`] when the run thread ends,
/// however it ends.
struct RingOnDrop {
    ended: Arc<AtomicBool>,
    freed: Arc<SlotFreed>,
}

impl Drop for RingOnDrop {
    fn drop(&mut self) {
        // The flag first: a waiter that read the count before the ring sees it.
        self.ended.store(true, Ordering::SeqCst);
        self.freed.ring();
    }
}

/// What the claims of one transaction took: the jobs claimed and started, a
/// job claimed that cannot be started here (its retry policy is not
/// registered; the claims stop there), and the expired jobs they completed.
#[derive(Default)]
struct Claims {
    started: Vec<Started>,
    unstartable: Option<PRef<Job>>,
    expired: Vec<PRef<Job>>,
}

/// Up to `n` claims for agent `claimer` in `queue` (see the module docs), in the
/// transaction `tx`, each claimed job started there too.
fn claim_in(
    tx: &mut Transaction<'_>,
    queue: &str,
    claimer: &Claimer,
    death_interval: Duration,
    runner: &Runner,
    n: u32,
) -> Result<Claims> {
    let q = Queue::get_or_create(tx, queue)?;
    let now = Timestamp::now();
    let mut spread = Dispatchers::claim_lane(tx, &q, &claimer.dispatcher, now, death_interval)?;
    if n > 1 {
        // The rest of this batch and the next one: the next batch's claims then
        // find their jobs cached.
        spread.ahead = 2 * n as usize;
    }
    let mut claims = Claims::default();
    for _ in 0..n.max(1) {
        let claim = Dispatchers::claim_for_agent_spread(
            tx,
            &q,
            &claimer.dispatcher,
            &claimer.agent,
            now,
            spread,
        )?;
        claims.expired.extend(claim.expired);
        let Some(job) = claim.job else {
            break;
        };
        // A batch's later claims take only its lane's jobs.
        spread.fallback = false;
        match runner.start_in(tx, &job, Some(claimer))? {
            Some(started) => {
                // Its result's commit starts its first callback: a client storage
                // fetches them meanwhile.
                tx.prefetch(started.callbacks());
                claims.started.push((job, started));
            }
            None => {
                claims.unstartable = Some(job);
                break;
            }
        }
    }
    Ok(claims)
}

/// The claim a run makes in its last commit ([`Runner::run_chain`],
/// [`Runner::run_batch`]): a job that cannot be started here fails it, so it is
/// rolled back and left to the poll.
fn claim_next(
    tx: &mut Transaction<'_>,
    queue: &str,
    claimer: &Claimer,
    death_interval: Duration,
    runner: &Runner,
    n: u32,
) -> Result<Claimed> {
    let claims = claim_in(tx, queue, claimer, death_interval, runner, n)?;
    if let Some(job) = claims.unstartable {
        return Err(Error::NoSuchPolicy {
            name: tx
                .get(&job)?
                .retry_policy()
                .unwrap_or("(the default)")
                .to_string(),
        });
    }
    Ok(Claimed {
        next: claims.started,
        expired: claims.expired,
    })
}

impl Worker {
    pub fn new(
        db: Database,
        id: impl Into<String>,
        runner: Runner,
        options: WorkerOptions,
    ) -> Worker {
        let wake = Box::new(Invalidations::new(std::sync::Arc::clone(db.storage())));
        Worker::with_wake_source(db, id, runner, options, wake)
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
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// One poll of every queue (see the module docs).
    pub fn poll_once(&mut self) -> Result<PollReport> {
        self.reap(false);
        let mut report = PollReport::default();
        for name in self.options.queues.clone() {
            if !self.visit(&name, &mut report)? {
                continue;
            }
            self.claim_and_run(&name, &mut report)?;
        }
        Ok(report)
    }

    /// Activates on the first visit, pings when due, cleans up dead siblings.
    /// Returns whether this worker may claim from the queue.
    fn visit(&mut self, name: &str, report: &mut PollReport) -> Result<bool> {
        let (id, options) = (self.id.clone(), self.options.clone());
        let now = Timestamp::now();
        match self.active.get(name) {
            None => {
                let policies = self.runner.policies().clone();
                let activated = transact(&self.db, |tx| {
                    let q = Queue::get_or_create(tx, name)?;
                    let previous = if options.restarted {
                        Dispatchers::cleanup_previous_incarnation(tx, &q, &id, &policies)?
                    } else if Dispatchers::dead(tx, &q, now, options.death_interval)?.contains(&id)
                    {
                        // This id's dead dispatcher (e.g. on another host): its jobs
                        // were never handed back.
                        let death = options.death_interval;
                        Dispatchers::cleanup(tx, &q, &id, &policies, now, death)?
                    } else {
                        Cleanup::default()
                    };
                    match Dispatchers::activate(tx, &q, &id, now, options.death_interval) {
                        Ok(_) => {}
                        Err(Error::AlreadyActive { .. }) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                    Dispatchers::set_agent(tx, &q, &id, &options.agent, options.agent_size)?;
                    Ok(Some(previous))
                })?;
                let Some(previous) = activated else {
                    log::error!(
                        target: "zodiac_async::events",
                        "dispatcher {id} is already activated in queue {name:?} by another \
                         process? not polling that queue"
                    );
                    report.skipped.push(name.to_string());
                    return Ok(false);
                };
                self.active.insert(name.to_string(), Instant::now());
                self.resume_callbacks(name, &id, &previous.in_callbacks);
            }
            Some(last) if last.elapsed() >= options.ping_interval => {
                let was_active = transact(&self.db, |tx| {
                    let q = Queue::get_or_create(tx, name)?;
                    Dispatchers::ping(tx, &q, &id, now)
                })?;
                if !was_active {
                    log::error!(
                        target: "zodiac_async::events",
                        "critical: dispatcher {id} had been declared dead in queue {name:?} \
                         (a stall?); re-activated; its jobs were handed to recovery"
                    );
                }
                self.active.insert(name.to_string(), Instant::now());
            }
            Some(_) => {}
        }
        self.adopt_ended(name)?;
        let due = self
            .housekept
            .get(name)
            .is_none_or(|last| last.elapsed() >= housekeeping_interval(&options));
        if !due {
            return Ok(true);
        }
        self.housekept.insert(name.to_string(), Instant::now());
        let dead = transact(&self.db, |tx| {
            let q = Queue::get_or_create(tx, name)?;
            Dispatchers::dead(tx, &q, now, options.death_interval)
        })?;
        let me = Claimer {
            dispatcher: id.clone(),
            agent: options.agent.clone(),
        };
        for sibling in dead.into_iter().filter(|d| *d != id) {
            let policies = self.runner.policies().clone();
            let cleaned = transact(&self.db, |tx| {
                let q = Queue::get_or_create(tx, name)?;
                let death = options.death_interval;
                match Dispatchers::cleanup_adopting(tx, &q, &sibling, &policies, now, death, &me) {
                    Ok(c) => Ok(Some(c)),
                    // It pinged meanwhile, or another sibling got there first.
                    Err(Error::AlreadyActive { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            if let Some(cleanup) = cleaned {
                // Adopted: held by this worker's agent now.
                self.resume_callbacks(name, &id, &cleanup.in_callbacks);
                report.cleaned.push(sibling);
            }
        }
        let cutoff = Timestamp::from_micros(
            now.as_micros()
                .saturating_sub(u64::try_from(options.retention.as_micros()).unwrap_or(u64::MAX)),
        );
        transact(&self.db, |tx| {
            let q = Queue::get_or_create(tx, name)?;
            Dispatchers::drop_completed_before(
                tx,
                &q,
                &id,
                &options.agent,
                cutoff,
                RETENTION_DROPS_MAX,
            )?;
            crate::ended::drop_completed_before(tx, &q, cutoff, RETENTION_DROPS_MAX)
        })?;
        Ok(true)
    }

    /// Takes the jobs of queue `name` that ended without a run with callbacks no
    /// one took (cancelled with callbacks) and runs their callbacks, as for jobs a
    /// cleanup found in CALLBACKS. Reads one cached object when there are none.
    fn adopt_ended(&mut self, name: &str) -> Result<()> {
        let me = Claimer {
            dispatcher: self.id.clone(),
            agent: self.options.agent.clone(),
        };
        let adopted = transact(&self.db, |tx| {
            let Some(q) = Queue::get(tx, name)? else {
                return Ok(Vec::new());
            };
            match crate::ended::of(tx, &q)? {
                Some(ended) if !ended.callbacks_due().is_empty() => {
                    Dispatchers::adopt_ended(tx, &q, &me)
                }
                _ => Ok(Vec::new()),
            }
        })?;
        let id = self.id.clone();
        self.resume_callbacks(name, &id, &adopted);
        Ok(())
    }

    /// Runs the remaining callbacks of `jobs`, which a cleanup found in CALLBACKS
    /// and left held by dispatcher `owner`'s agents (this worker's: adopted from a
    /// dead sibling, or kept from its own previous incarnation), each on a thread
    /// of its own like a claimed job (a callback may take long: polls and pings go
    /// on meanwhile); then `owner`'s agents release the job.
    fn resume_callbacks(&mut self, queue: &str, owner: &str, jobs: &[PRef<Job>]) {
        for &job in jobs {
            let release = Some((queue.to_string(), owner.to_string()));
            self.spawn_callbacks(job, release);
        }
    }

    /// Runs the callbacks of `job` (finished: in CALLBACKS or COMPLETED) on a
    /// thread of its own, in a slot that takes no place in the agents; then, with
    /// `release` (queue, owner), that dispatcher's agents release the job.
    fn spawn_callbacks(&mut self, job: PRef<Job>, release: Option<(String, String)>) {
        let (db, runner) = (self.db.clone(), self.runner.clone());
        self.callbacks_only.insert(job.oid());
        self.spawn_slot(job, move |_| {
            runner.finish_callbacks(&job)?;
            transact(&db, |tx| {
                if let Some((queue, owner)) = &release {
                    let q = Queue::get_or_create(tx, queue)?;
                    Dispatchers::release_finished(tx, &q, owner)?;
                }
                Ok(())
            })
        });
    }

    /// Whether the agents hold as many jobs as they may: the jobs of `running`
    /// that were claimed (not those running callbacks only) fill `agent_size` places in
    /// each queue this worker polls.
    fn full(&self) -> bool {
        let claimed = self
            .running
            .iter()
            .filter(|s| !s.ended() && !self.callbacks_only.contains(&s.job().oid()))
            .count();
        let threads = self
            .options
            .agent_size
            .div_ceil(self.options.batch_size.max(1));
        claimed >= threads as usize * self.active.len().max(1)
    }

    fn claim_and_run(&mut self, name: &str, report: &mut PollReport) -> Result<()> {
        let claimer = Claimer {
            dispatcher: self.id.clone(),
            agent: self.options.agent.clone(),
        };
        let death_interval = self.options.death_interval;
        let batch_size = self.options.batch_size;
        while !self.full() {
            let mut claimed = None;
            for attempt in 0..=self.options.claim_conflict_retries {
                let runner = &self.runner;
                let result = crate::helpers::attempt(&self.db, &mut |tx| {
                    claim_in(tx, name, &claimer, death_interval, runner, batch_size)
                });
                match result {
                    Ok(claims) => {
                        claimed = Some(claims);
                        break;
                    }
                    Err(e) if e.is_conflict() => {
                        log::debug!(target: "zodiac_async::events", "claim attempt {} conflicted", attempt + 1);
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(claims) = claimed else {
                return Ok(());
            };
            // Expired jobs met by the claims: their callbacks run now, on threads
            // of their own (a long callback must not hold up polls and pings).
            for &job in &claims.expired {
                self.spawn_callbacks(job, None);
            }
            if claims.started.is_empty() && claims.unstartable.is_none() {
                return Ok(());
            }
            report
                .started
                .extend(claims.started.iter().map(|(job, _)| *job));
            if !claims.started.is_empty() {
                self.spawn_run(name, &claimer, claims.started);
            }
            if let Some(job) = claims.unstartable {
                // Not startable here (e.g. its retry policy is unknown): the
                // ordinary run reports why.
                let (runner, claimer) = (self.runner.clone(), claimer.clone());
                self.spawn_slot(job, move |_| runner.run(&job, Some(&claimer)).map(|_| ()));
                report.started.push(job);
            }
        }
        Ok(())
    }

    /// Runs `batch` (claimed and started by `claimer` from `queue`) on a thread of
    /// the pool, which goes on with every job its runs claim in their last
    /// commits ([`Runner::run_chain`], [`Runner::run_batch`]) until a run claims
    /// none.
    fn spawn_run(&mut self, queue: &str, claimer: &Claimer, batch: Vec<Started>) {
        let (runner, claimer, queue) = (self.runner.clone(), claimer.clone(), queue.to_string());
        let death_interval = self.options.death_interval;
        let batch_size = self.options.batch_size;
        let stopping = Arc::clone(&self.stopping);
        self.spawn_slot(batch[0].0, move |current| {
            let next = |tx: &mut Transaction<'_>| {
                if stopping.load(Ordering::SeqCst) {
                    return Ok(Claimed::default());
                }
                claim_next(tx, &queue, &claimer, death_interval, &runner, batch_size)
            };
            let mut batch = batch;
            loop {
                *current.lock() = batch[0].0;
                let mut claimed = Vec::new();
                let result = match batch.len() {
                    1 => {
                        let (job, started) = batch.pop().expect("one job");
                        runner
                            .run_chain(&job, &claimer, started, &next, &mut claimed)
                            .map(|_| ())
                    }
                    _ => runner.run_batch(batch, &claimer, &next, &mut claimed),
                };
                if claimed.is_empty() {
                    return result;
                }
                if let Err(e) = &result {
                    log::error!(
                        target: "zodiac_async::events",
                        "running job {} failed: {e}",
                        current.lock().oid()
                    );
                }
                batch = claimed;
            }
        });
    }

    /// Runs `f` on a thread of the pool as a new slot starting with `job`; `f`
    /// keeps the slot's current job up to date.
    fn spawn_slot(
        &mut self,
        job: PRef<Job>,
        f: impl FnOnce(&Mutex<PRef<Job>>) -> Result<()> + Send + 'static,
    ) {
        let current = Arc::new(Mutex::new(job));
        let ended = Arc::new(AtomicBool::new(false));
        let ring = RingOnDrop {
            ended: Arc::clone(&ended),
            freed: Arc::clone(&self.slot_freed),
        };
        let job = Arc::clone(&current);
        let task = self.pool.spawn(move || {
            let _ring = ring;
            f(&current)
        });
        self.running.push(Slot { job, ended, task });
    }

    /// Joins the threads of finished runs (all of them with `all`), logging what
    /// failed. A run's own failures are in its job; these are the runner's errors.
    fn reap(&mut self, all: bool) {
        let (mut done, mut running) = (Vec::new(), Vec::new());
        for mut slot in std::mem::take(&mut self.running) {
            // An ended slot's result is on its way: joining it waits microseconds.
            if all || slot.ended() || slot.task.is_finished() {
                done.push(slot);
            } else {
                running.push(slot);
            }
        }
        self.running = running;
        for slot in done {
            let job = slot.job();
            self.callbacks_only.remove(&job.oid());
            match slot.task.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => log::error!(
                    target: "zodiac_async::events",
                    "running job {} failed: {e}",
                    job.oid()
                ),
                Err(_) => log::error!(
                    target: "zodiac_async::events",
                    "the thread running job {} panicked",
                    job.oid()
                ),
            }
        }
    }

    /// Jobs being run now.
    pub fn running(&self) -> Vec<PRef<Job>> {
        self.running.iter().map(Slot::job).collect()
    }

    /// Waits for every running job to finish.
    pub fn wait_idle(&mut self) {
        self.reap(true);
    }

    /// What [`Worker::watched`] returns while this worker has room for another
    /// job; nothing while it runs as many as its agents hold, so that it wakes
    /// only when one of them ends, not at every change of a busy queue (other
    /// workers' claims and puts would wake it for a poll that cannot claim).
    fn watched_if_room(&self) -> Result<(BTreeSet<Oid>, Option<Timestamp>)> {
        if self.full() {
            return Ok((BTreeSet::new(), None));
        }
        self.watched()
    }

    /// The size-counter oids of the queues this worker polls, and the earliest
    /// time a job pending in them becomes claimable later (scheduled, or put back
    /// for a later retry).
    fn watched(&self) -> Result<(BTreeSet<Oid>, Option<Timestamp>)> {
        let queues = self.active.keys().cloned().collect::<Vec<_>>();
        let now = Timestamp::now();
        transact(&self.db, |tx| {
            let mut oids = BTreeSet::new();
            let mut next: Option<Timestamp> = None;
            for name in &queues {
                if let Some(q) = Queue::get(tx, name)? {
                    oids.insert(Queue::size_oid(tx, &q)?);
                    if let Some(at) = Queue::next_start(tx, &q, now)? {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
            }
            Ok((oids, next))
        })
    }

    /// Waits up to the poll interval, or until the next scheduled start if that
    /// is sooner; returns early when a run thread ends (a slot is free), when a
    /// commit changes a watched queue while the agents have room, or when `stop`
    /// is set. A full worker waits for its run threads only: other workers' claims
    /// and puts would wake it for a poll that cannot claim.
    fn wait(&mut self, stop: &AtomicBool, watched: &BTreeSet<Oid>, next_start: Option<Timestamp>) {
        let mut deadline = Instant::now() + self.options.poll_interval;
        if let Some(at) = next_start {
            deadline = deadline.min(Instant::now() + at.since(Timestamp::now()));
        }
        // Pings and housekeeping are due however busy the run threads keep the
        // agents (a run thread going on with the next job frees no slot).
        if let Some(due) = self.next_housekeeping() {
            deadline = deadline.min(due);
        }
        while !stop.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Read before the flags: a thread ending after this rings past it.
            let seen = self.slot_freed.count();
            if self.running.iter().any(Slot::ended) {
                return; // a slot is free: claim more
            }
            let slice = left.min(Duration::from_millis(20));
            let woken = if self.full() {
                self.slot_freed.wait(seen, slice)
            } else {
                self.wake.wait(watched, slice)
            };
            if woken {
                return;
            }
        }
    }

    /// When the next ping or housekeeping (dead siblings, retention) of a queue
    /// this worker polls is due.
    fn next_housekeeping(&self) -> Option<Instant> {
        let pings = self
            .active
            .values()
            .map(|last| *last + self.options.ping_interval);
        let housekeeping = housekeeping_interval(&self.options);
        let house = self.housekept.values().map(|last| *last + housekeeping);
        pings.chain(house).min()
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

    /// Stops: lets running jobs finish for up to the grace period, then hands what
    /// the agent still holds to recovery (ASSIGNED jobs back to the queue, ACTIVE
    /// ones through their policy's `on_interrupted`; their runs then store
    /// nothing), and deactivates this dispatcher in every queue it activated; in a
    /// queue where jobs in CALLBACKS remain (their running callbacks interrupted),
    /// it stays activated, dead to its siblings, for the next one's cleanup (see
    /// [`Dispatchers::leave_to_siblings`]).
    pub fn shutdown(&mut self) -> Result<()> {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.options.grace_period;
        while !self.running.is_empty() && Instant::now() < deadline {
            self.reap(false);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reap(false);
        if !self.running.is_empty() {
            log::warn!(
                target: "zodiac_async::events",
                "dispatcher {} stopping with {} job(s) still running after the grace period; \
                 handing them to recovery",
                self.id,
                self.running.len()
            );
        }
        let id = self.id.clone();
        let policies = self.runner.policies().clone();
        for name in std::mem::take(&mut self.active).into_keys() {
            // Jobs whose policy gave up on them here, with callbacks to run.
            let mut in_callbacks = Vec::new();
            // Jobs whose callbacks were still running: left for a sibling.
            let mut left = 0;
            transact(&self.db, |tx| {
                in_callbacks.clear();
                left = 0;
                let q = Queue::get_or_create(tx, &name)?;
                let record = Queue::dispatchers(tx, &q)?.get(&id).copied();
                if let Some(record) = record {
                    let agents = tx.get(&record)?.agents().clone();
                    for agent in agents.values() {
                        for &job in tx.get(agent)?.held() {
                            let j = tx.get(&job)?;
                            let mine = matches!(j.location(), Location::Agent { dispatcher, .. } if *dispatcher == id);
                            match j.status() {
                                Status::Assigned if mine => Queue::put_back(tx, &job, None)?,
                                Status::Active if mine && j.awaiting().is_none() => {
                                    crate::run::recover_interrupted(tx, &job, &policies)?;
                                    if tx.get(&job)?.status() == Status::Callbacks {
                                        in_callbacks.push(job);
                                    }
                                }
                                Status::Callbacks if mine => {
                                    Dispatchers::interrupt_callbacks(tx, &job, &policies)?;
                                    left += 1;
                                }
                                _ => {}
                            }
                        }
                    }
                }
                if left > 0 {
                    // Still activated but dead to its siblings: the next one's
                    // cleanup adopts these jobs and resumes their callbacks, as
                    // after a crash (a restart with this id does it too).
                    return Dispatchers::leave_to_siblings(tx, &q, &id);
                }
                Dispatchers::deactivate(tx, &q, &id)
            })?;
            if left > 0 {
                log::warn!(
                    target: "zodiac_async::events",
                    "dispatcher {id} stopping with the callbacks of {left} job(s) in queue \
                     {name:?} still running; leaving them to the next sibling's cleanup (or to \
                     this dispatcher's restart)"
                );
            }
            for job in &in_callbacks {
                self.runner.finish_callbacks(job)?;
            }
        }
        // Runs still going find their job taken back and store nothing.
        self.running.clear();
        self.callbacks_only.clear();
        Ok(())
    }
}
