//! The hint `zodiac jobs put --wait` gives a user who forgot the worker.
//!
//! Invariant: at most one line, to stderr, only while the job is PENDING and its
//! queue is paused or no live dispatcher serves it; it never ends the wait.

use std::time::{Duration, Instant};

use anyhow::Result;
use zodiac_async::limits::DEATH_INTERVAL_DEFAULT;
use zodiac_async::{Status, Timestamp, inspect, transact};
use zodiac_objects::Database;
use zodiac_storage::Oid;

use crate::jobs::load;

/// How long `--wait` waits for a PENDING job before saying no worker serves its
/// queue, when none does.
const NO_WORKER_HINT_AFTER: Duration = Duration::from_secs(3);
/// How often, after that, `--wait` looks again for a worker on the queue.
const NO_WORKER_RECHECK: Duration = Duration::from_secs(1);

/// The one line `--wait` prints to stderr when its job stays PENDING with no live
/// dispatcher on its queue: a user who forgot the worker learns it, and the wait
/// goes on (a worker started later still runs the job).
pub struct NoWorkerHint {
    /// The store as the suggested commands name it (with `--token-file F`).
    store: String,
    queue: String,
    id: Oid,
    due: Instant,
    given: bool,
}

impl NoWorkerHint {
    /// The hint for job `id` of `queue` in `store`, reached with `token_file`
    /// (named in the commands the hint suggests).
    pub fn new(
        store: &str,
        token_file: Option<&std::path::Path>,
        queue: &str,
        id: Oid,
    ) -> NoWorkerHint {
        let token = token_file.map_or(String::new(), |f| format!(" --token-file {}", f.display()));
        NoWorkerHint {
            store: format!("{}{token}", zodiac_storage::url_without_password(store)),
            queue: queue.to_string(),
            id,
            due: Instant::now() + NO_WORKER_HINT_AFTER,
            given: false,
        }
    }

    /// Prints the hint once, when it is due and true of `db`.
    pub fn check(&mut self, db: &Database) -> Result<()> {
        if self.given || Instant::now() < self.due {
            return Ok(());
        }
        self.due = Instant::now() + NO_WORKER_RECHECK;
        if load(db, self.id)?.status() != Status::Pending {
            return Ok(());
        }
        let now = Timestamp::now();
        let (paused, dispatchers) = transact(db, |tx| {
            Ok((
                inspect::paused(tx, &self.queue)?.unwrap_or(false),
                inspect::dispatchers(tx, now, DEATH_INTERVAL_DEFAULT)?,
            ))
        })?;
        if paused {
            // Workers or none, nothing claims from a paused queue.
            eprintln!(
                "hint: job {} is still PENDING and {} is paused: no worker claims from it until \
                 `zodiac jobs resume {} {:?}` (still waiting)",
                self.id.0,
                self.queue_name(),
                self.store,
                self.queue
            );
            self.given = true;
            return Ok(());
        }
        if dispatchers.iter().any(|d| d.alive && d.queue == self.queue) {
            return Ok(());
        }
        let queue = self.queue_name();
        let option = if self.queue.is_empty() {
            String::new()
        } else {
            format!(" --queue {}", self.queue)
        };
        eprintln!(
            "hint: job {} is still PENDING and no worker is running on {queue}; start one with \
             `zodiac worker {}{option}` (still waiting)",
            self.id.0, self.store
        );
        self.given = true;
        Ok(())
    }

    /// The job's queue as a sentence names it.
    fn queue_name(&self) -> String {
        if self.queue.is_empty() {
            "the default queue".to_string()
        } else {
            format!("queue {:?}", self.queue)
        }
    }
}
