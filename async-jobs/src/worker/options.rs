//! How a worker polls: its options, the intervals derived from them, and the
//! builder that sets them one by one.
use std::sync::Arc;
use std::time::Duration;

use zodiac_objects::{Database, PRef};

use crate::dispatcher::{
    AGENT_SIZE_DEFAULT, DEATH_INTERVAL_DEFAULT, PING_INTERVAL_DEFAULT, RETENTION_DEFAULT,
};
use crate::model::job::Job;

use crate::run::Runner;
use crate::time::Clock;
use crate::wake::{Invalidations, WakeSource};

use super::{AGENT_NAME, Worker};
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
    /// How often the dispatcher pings (30 s).
    pub ping_interval: Duration,
    /// How old a sibling's last ping must be for it to be dead (60 s).
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
    /// Jobs put by the due ticks of recurring-job schedules.
    pub scheduled: Vec<PRef<Job>>,
}

/// How often a worker checks a queue for dead siblings and drops old completed
/// jobs: a quarter of the ping interval, at most every second (so a dead sibling is
/// cleaned up at most that long after its death interval has passed).
pub fn housekeeping_interval(options: &WorkerOptions) -> Duration {
    (options.ping_interval / 4).min(Duration::from_secs(1))
}

/// Builds a [`Worker`]: its options one by one from the defaults, a wake-up
/// source and a clock. Options added later get a method here, so code built on
/// it keeps compiling.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use zodiac_async::{Handlers, Policies, Runner, Worker};
/// use zodiac_objects::Database;
/// use zodiac_storage::MemoryStorage;
///
/// let db = Database::open(Arc::new(MemoryStorage::new()))?;
/// let runner = Runner::new(db.clone(), Handlers::new(), Policies::new());
/// let worker = Worker::builder(db, "worker-1", runner)
///     .queues(["mail", "reports"])
///     .agent_size(8)
///     .poll_interval(Duration::from_secs(1))
///     .build();
/// assert_eq!(worker.id(), "worker-1");
/// # Ok::<(), zodiac_async::Error>(())
/// ```
pub struct WorkerBuilder {
    db: Database,
    id: String,
    runner: Runner,
    options: WorkerOptions,
    wake: Option<Box<dyn WakeSource>>,
}

impl WorkerBuilder {
    pub(super) fn new(db: Database, id: String, runner: Runner) -> WorkerBuilder {
        WorkerBuilder {
            db,
            id,
            runner,
            options: WorkerOptions::default(),
            wake: None,
        }
    }

    /// All options at once (replacing those set so far).
    pub fn options(mut self, options: WorkerOptions) -> WorkerBuilder {
        self.options = options;
        self
    }

    /// The queues to poll (default: the default queue `""`).
    pub fn queues<Q: Into<String>>(mut self, queues: impl IntoIterator<Item = Q>) -> WorkerBuilder {
        self.options.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// The agent's name in each queue ([`AGENT_NAME`]).
    pub fn agent(mut self, name: impl Into<String>) -> WorkerBuilder {
        self.options.agent = name.into();
        self
    }

    /// Jobs the agent holds at once ([`AGENT_SIZE_DEFAULT`]).
    pub fn agent_size(mut self, n: u32) -> WorkerBuilder {
        self.options.agent_size = n;
        self
    }

    /// Jobs a run thread claims, runs and completes together (1).
    pub fn batch_size(mut self, n: u32) -> WorkerBuilder {
        self.options.batch_size = n;
        self
    }

    /// Longest wait between polls (5 s).
    pub fn poll_interval(mut self, d: Duration) -> WorkerBuilder {
        self.options.poll_interval = d;
        self
    }

    /// How often the dispatcher pings ([`PING_INTERVAL_DEFAULT`]).
    pub fn ping_interval(mut self, d: Duration) -> WorkerBuilder {
        self.options.ping_interval = d;
        self
    }

    /// How old a sibling's last ping must be for it to be dead
    /// ([`DEATH_INTERVAL_DEFAULT`]).
    pub fn death_interval(mut self, d: Duration) -> WorkerBuilder {
        self.options.death_interval = d;
        self
    }

    /// How long completed jobs are kept ([`RETENTION_DEFAULT`]).
    pub fn retention(mut self, d: Duration) -> WorkerBuilder {
        self.options.retention = d;
        self
    }

    /// How long a stopping worker lets running jobs finish (30 s).
    pub fn grace_period(mut self, d: Duration) -> WorkerBuilder {
        self.options.grace_period = d;
        self
    }

    /// Whether this process holds the id's identity lock after an earlier use
    /// of it ([`WorkerOptions::restarted`]).
    pub fn restarted(mut self, restarted: bool) -> WorkerBuilder {
        self.options.restarted = restarted;
        self
    }

    /// Wakes the worker early by `wake` instead of by commit notifications
    /// ([`Invalidations`]).
    pub fn wake_source(mut self, wake: Box<dyn WakeSource>) -> WorkerBuilder {
        self.wake = Some(wake);
        self
    }

    /// Reads the time from `clock` (the runner does too).
    pub fn clock(mut self, clock: impl Clock + 'static) -> WorkerBuilder {
        self.runner = self.runner.with_clock(clock);
        self
    }

    /// The worker.
    pub fn build(self) -> Worker {
        let wake = match self.wake {
            Some(wake) => wake,
            None => Box::new(Invalidations::new(Arc::clone(self.db.storage()))),
        };
        Worker::with_wake_source(self.db, self.id, self.runner, self.options, wake)
    }
}
