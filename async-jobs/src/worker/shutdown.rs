//! A worker's graceful stop: the grace period, then the jobs it still holds handed
//! to recovery, and its dispatcher deactivated (or left to its siblings).
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::dispatcher::Dispatchers;
use crate::error::Result;
use zodiac_objects::PRef;

use crate::model::job::{Job, Location};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::retry::Policies;
use crate::transact::transact;

use super::Worker;
impl Worker {
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
            let (in_callbacks, left) = self.hand_back_held(&name, &policies)?;
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

    /// Hands what this dispatcher's agents hold in queue `name` to recovery and
    /// deactivates it there, or leaves it to its siblings when callbacks of jobs it
    /// holds were still running. Returns the jobs whose policy gave up on them
    /// here (their callbacks are to run) and how many were left to siblings.
    fn hand_back_held(&self, name: &str, policies: &Policies) -> Result<(Vec<PRef<Job>>, usize)> {
        let id = self.id.as_str();
        // Jobs whose policy gave up on them here, with callbacks to run.
        let mut in_callbacks = Vec::new();
        // Jobs whose callbacks were still running: left for a sibling.
        let mut left = 0;
        let now = self.runner.clock().now();
        transact(&self.db, |tx| {
            in_callbacks.clear();
            left = 0;
            let q = Queue::get_or_create(tx, name)?;
            let record = Queue::dispatchers(tx, &q)?.get(id).copied();
            if let Some(record) = record {
                let agents = tx.get(&record)?.agents().clone();
                for agent in agents.values() {
                    for &job in tx.get(agent)?.held() {
                        let j = tx.get(&job)?;
                        let mine = matches!(j.location(), Location::Agent { dispatcher, .. } if *dispatcher == id);
                        match j.status() {
                            Status::Assigned if mine => Queue::put_back_at(tx, &job, None, now)?,
                            Status::Active if mine && j.awaiting().is_none() => {
                                crate::recovery::recover_interrupted_at(tx, &job, policies, now)?;
                                if tx.get(&job)?.status() == Status::Callbacks {
                                    in_callbacks.push(job);
                                }
                            }
                            Status::Callbacks if mine => {
                                Dispatchers::interrupt_callbacks(tx, &job, policies, now)?;
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
                return Dispatchers::leave_to_siblings(tx, &q, id);
            }
            Dispatchers::deactivate(tx, &q, id)
        })?;
        Ok((in_callbacks, left))
    }
}
