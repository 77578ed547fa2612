//! How a worker polls: its options and the intervals derived from them.
use std::time::Duration;

use zodiac_objects::PRef;

use crate::dispatcher::{
    AGENT_SIZE_DEFAULT, DEATH_INTERVAL_DEFAULT, PING_INTERVAL_DEFAULT, RETENTION_DEFAULT,
};
use crate::model::job::Job;

use super::AGENT_NAME;
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
