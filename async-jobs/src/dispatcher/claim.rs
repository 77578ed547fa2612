//! Claims for an agent: at most its size of held jobs, spread over the live
//! dispatchers of a queue; and the adoption of ended jobs whose callbacks no one
//! runs.
//!
//! Invariants:
//! - An agent claims only while it holds fewer than `size` jobs not yet COMPLETED
//!   (a job awaiting another does not count); the finished ones leave `held` first,
//!   those it ran to its `completed` tree.
//! - The expired jobs a claim finds are kept at the claiming agent, like the jobs
//!   it ran; the ended jobs it adopts are held there until their callbacks ran.

use std::time::Duration;

use zodiac_objects::{BTree, PRef, Transaction};

use crate::dispatcher::{CLAIM_SPREAD_ROTATION, Dispatchers, at_agent};
use crate::error::{Error, Result};
use crate::model::dispatcher::Agent;
use crate::model::job::{Job, Location};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::queue::{Claim, Claimer, Spread};
use crate::time::Timestamp;
impl Dispatchers {
    /// Claims one job for agent `agent` of dispatcher `id`, if the agent has room
    /// (after dropping its COMPLETED jobs). Expired jobs met on the way complete as
    /// in [`Queue::claim_at`].
    pub fn claim_for_agent(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
        now: Timestamp,
    ) -> Result<Option<PRef<Job>>> {
        Ok(Dispatchers::claim_for_agent_reporting(tx, queue, id, agent, now)?.job)
    }

    /// [`Dispatchers::claim_for_agent`], also reporting the jobs found past their
    /// deadline (completed with a timeout, or left in CALLBACKS for a runner's
    /// `finish_callbacks` when they have callbacks).
    pub fn claim_for_agent_reporting(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
        now: Timestamp,
    ) -> Result<Claim> {
        Dispatchers::claim_for_agent_spread(tx, queue, id, agent, now, Spread::NONE)
    }

    /// The lane dispatcher `id` claims from `queue` at `now` ([`Spread`], for
    /// [`Queue::claim_spread`]): one lane per live dispatcher of the queue (itself
    /// and those alive within `death_interval`), its own being its rank, rotated
    /// every [`CLAIM_SPREAD_ROTATION`], so that concurrent dispatchers take
    /// distinct jobs and a lane whose dispatcher is busy is soon another's.
    /// [`Spread::NONE`] when it is the only live one: a lone worker claims in
    /// strict order, whatever dead or stopped dispatchers' records remain.
    pub fn claim_lane(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        now: Timestamp,
        death_interval: Duration,
    ) -> Result<Spread> {
        let q = tx.get(queue)?;
        let mut live = Vec::new();
        for (other, record) in q.dispatchers_ref() {
            if other == id || tx.get(record)?.is_alive(now, death_interval) {
                live.push(other.as_str());
            }
        }
        let n = live.len().max(1);
        let rank = live.iter().position(|d| *d == id).unwrap_or(0);
        let turn = now.as_micros() / CLAIM_SPREAD_ROTATION.as_micros() as u64;
        Ok(Spread::new((rank + (turn % n as u64) as usize) % n, n))
    }

    /// [`Dispatchers::claim_for_agent_reporting`], preferring the jobs of
    /// `spread`'s lane as [`Queue::claim_spread`] does.
    pub fn claim_for_agent_spread(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
        now: Timestamp,
        spread: Spread,
    ) -> Result<Claim> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        let agent_ref =
            *tx.get(&record)?
                .agents
                .get(agent)
                .ok_or_else(|| Error::NoSuchDispatcher {
                    id: format!("{id} (agent {agent})"),
                })?;
        let a = tx.get(&agent_ref)?;
        let mut finished = Vec::new();
        for &job in &a.held {
            let j = tx.get(&job)?;
            let here = at_agent(&j, id, agent);
            if j.status() == Status::Completed && here {
                let at = j.active_end().unwrap_or(now);
                BTree::insert(tx, &a.completed, (at, job.oid().0), job)?;
            }
            // A job awaiting another releases its slot.
            if j.status() == Status::Completed || !here || j.awaiting().is_some() {
                finished.push(job);
            }
        }
        let room = a.held.len() - finished.len() < a.size as usize;
        if !finished.is_empty() {
            tx.modify(&agent_ref, |a| {
                for job in &finished {
                    a.held.remove(job);
                }
            })?;
        }
        if !room {
            return Ok(Claim::default());
        }
        let claimer = Claimer {
            dispatcher: id.to_string(),
            agent: agent.to_string(),
        };
        let claim = Queue::claim_unrecorded(tx, queue, &claimer, now, spread)?;
        if let Some(job) = claim.job {
            tx.modify(&agent_ref, |a| a.held.insert(job))?;
        }
        // The expired jobs it found: this agent completed them, so it keeps them
        // like the jobs it ran (held while their callbacks run, so a death of
        // this worker is recovered; then among its completed jobs).
        if !claim.expired.is_empty() {
            let queue_name = tx.get(queue)?.name().to_string();
            for job in &claim.expired {
                Dispatchers::keep_at(tx, &queue_name, &agent_ref, &claimer, *job, now)?;
            }
        }
        Ok(claim)
    }

    /// Makes agent `agent_ref` (of `claimer`, in queue `queue`) keep `job`, which
    /// ended without a run: among its completed jobs when COMPLETED, held while in
    /// CALLBACKS (for its worker to run the callbacks and `release_finished`).
    fn keep_at(
        tx: &mut Transaction<'_>,
        queue: &str,
        agent_ref: &PRef<Agent>,
        claimer: &Claimer,
        job: PRef<Job>,
        now: Timestamp,
    ) -> Result<()> {
        let location = Location::Agent {
            queue: queue.to_string(),
            dispatcher: claimer.dispatcher.clone(),
            agent: claimer.agent.clone(),
        };
        let j = tx.modify(&job, |j| {
            j.set_location(location);
            j.status()
        })?;
        if j == Status::Completed {
            let completed = tx.get(agent_ref)?.completed;
            BTree::insert(tx, &completed, (now, job.oid().0), job)?;
        } else {
            tx.modify(agent_ref, |a| a.held.insert(job))?;
        }
        Ok(())
    }

    /// Adopts jobs of `queue` that ended without a run and whose callbacks no one
    /// has taken (cancelled or failed with callbacks, see [`crate::ended`]):
    /// `claimer`'s agent holds them, located there, for its worker to run their
    /// callbacks and then [`Dispatchers::release_finished`]. Returns them (at most
    /// [`crate::ended::ADOPT_ENDED_MAX`]); two adopters conflict.
    pub fn adopt_ended(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        claimer: &Claimer,
    ) -> Result<Vec<PRef<Job>>> {
        Dispatchers::adopt_ended_at(tx, queue, claimer, Timestamp::now())
    }

    /// [`Dispatchers::adopt_ended`] at `now`.
    pub(crate) fn adopt_ended_at(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        claimer: &Claimer,
        now: Timestamp,
    ) -> Result<Vec<PRef<Job>>> {
        let jobs = crate::ended::take_callbacks_due(tx, queue, now)?;
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let agent = Dispatchers::agent(tx, queue, &claimer.dispatcher, &claimer.agent)?;
        let name = tx.get(queue)?.name().to_string();
        for job in &jobs {
            Dispatchers::keep_at(tx, &name, &agent, claimer, *job, now)?;
        }
        Ok(jobs)
    }
}
