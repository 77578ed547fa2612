//! The threads a worker runs jobs on: one slot per thread, which goes on with the
//! jobs its runs claim, and the signal a full worker waits on.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use zodiac_objects::{PRef, Transaction};
use zodiac_storage::PoolTask;

use crate::dispatcher::Dispatchers;
use crate::error::Result;
use crate::model::job::Job;
use crate::model::queue::Queue;
use crate::queue::Claimer;
use crate::run::{Claimed, Started};
use crate::transact::transact;

use super::Worker;
use super::poll::claim_next;
/// A thread running jobs: the job it runs now, whether it ended, and its task.
pub(super) struct Slot {
    job: Arc<Mutex<PRef<Job>>>,
    ended: Arc<AtomicBool>,
    task: PoolTask<Result<()>>,
}

impl Slot {
    pub(super) fn job(&self) -> PRef<Job> {
        *self.job.lock()
    }

    pub(super) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// How a worker whose agents are full waits for a run thread to end (it has no
/// commit to watch for that: a thread that claimed no further job ends after a
/// commit of a job it took itself).
#[derive(Default)]
pub(super) struct SlotFreed {
    ended: Mutex<u64>,
    rung: Condvar,
}

impl SlotFreed {
    pub(super) fn count(&self) -> u64 {
        *self.ended.lock()
    }

    pub(super) fn ring(&self) {
        *self.ended.lock() += 1;
        self.rung.notify_all();
    }

    /// Waits until the count passes `seen`, or for `timeout`.
    pub(super) fn wait(&self, seen: u64, timeout: Duration) -> bool {
        let mut ended = self.ended.lock();
        if *ended == seen {
            self.rung.wait_for(&mut ended, timeout);
        }
        *ended != seen
    }
}

/// Marks its slot ended and rings [`SlotFreed`] when the run thread ends,
/// however it ends.
pub(super) struct RingOnDrop {
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

impl Worker {
    /// Runs the remaining callbacks of `jobs`, which a cleanup found in CALLBACKS
    /// and left held by dispatcher `owner`'s agents (this worker's: adopted from a
    /// dead sibling, or kept from its own previous incarnation), each on a thread
    /// of its own like a claimed job (a callback may take long: polls and pings go
    /// on meanwhile); then `owner`'s agents release the job.
    pub(super) fn resume_callbacks(&mut self, queue: &str, owner: &str, jobs: &[PRef<Job>]) {
        for &job in jobs {
            let release = Some((queue.to_string(), owner.to_string()));
            self.spawn_callbacks(job, release);
        }
    }

    /// Runs the callbacks of `job` (finished: in CALLBACKS or COMPLETED) on a
    /// thread of its own, in a slot that takes no place in the agents; then, with
    /// `release` (queue, owner), that dispatcher's agents release the job.
    pub(super) fn spawn_callbacks(&mut self, job: PRef<Job>, release: Option<(String, String)>) {
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
    pub(super) fn full(&self) -> bool {
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

    /// Runs `batch` (claimed and started by `claimer` from `queue`) on a thread of
    /// the pool, which goes on with every job its runs claim in their last
    /// commits ([`Runner::run_chain`], [`Runner::run_batch`]) until a run claims
    /// none.
    pub(super) fn spawn_run(&mut self, queue: &str, claimer: &Claimer, batch: Vec<Started>) {
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
                let jobs: Vec<PRef<Job>> = batch.iter().map(|started| started.0).collect();
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
                if result.is_err() {
                    super::failed_run::hand_back(&runner, &claimer, &jobs);
                }
                if claimed.is_empty() {
                    return result;
                }
                if let Err(e) = &result {
                    log::error!(
                        target: "zodiac_async::events",
                        "running job {} failed: {e}",
                        current.lock().oid().0
                    );
                }
                batch = claimed;
            }
        });
    }

    /// Runs `f` on a thread of the pool as a new slot starting with `job`; `f`
    /// keeps the slot's current job up to date.
    pub(super) fn spawn_slot(
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
    pub(super) fn reap(&mut self, all: bool) {
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
                    job.oid().0
                ),
                Err(_) => log::error!(
                    target: "zodiac_async::events",
                    "the thread running job {} panicked",
                    job.oid().0
                ),
            }
        }
    }
}
