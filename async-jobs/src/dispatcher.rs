//! Dispatchers and agents as stored in a queue: registration, activation, pings,
//! death detection, per-agent claims, and the cleanup of a dead dispatcher.
//!
//! Each queue keeps a registry (dispatcher id → [`DispatcherRecord`]); a record
//! names its agents ([`Agent`], one object each, holding the ids of the jobs it
//! claimed). The process side (polling, wake-ups, threads) is [`crate::Worker`].
//!
//! Invariants:
//! - A dispatcher is *alive* while activated and its last ping (or activation) is
//!   at most the death interval old; activating a dispatcher that is alive is
//!   refused (another process with the same id).
//! - An agent holds at most `size` jobs not yet COMPLETED; finished jobs leave
//!   `held` at its next claim, and those it ran go to its `completed` tree, kept
//!   until dropped after the retention period.
//! - Cleanup of a dead dispatcher runs in one transaction that writes its record,
//!   so two siblings cleaning up at once conflict and it happens once. It puts
//!   ASSIGNED jobs back, applies `on_interrupted` to ACTIVE ones (and to the
//!   running callback of a job in CALLBACKS), moves COMPLETED ones (including those
//!   whose policy just gave up) to the agent's completed collection, and
//!   deactivates the record; a job in CALLBACKS stays held, for a runner's
//!   `finish_callbacks` and then `release_finished`, so a restart that dies again
//!   while resuming them finds it again. A cleanup by a sibling that resumes them
//!   ([`Dispatchers::cleanup_adopting`]) moves them to its own agent instead, for
//!   the same reason.
//! - A dispatcher that stops while callbacks of jobs it holds still run cannot
//!   deactivate (its siblings only clean up activated dispatchers): it stays
//!   activated with its last ping at the epoch ([`Dispatchers::leave_to_siblings`]),
//!   dead to every sibling at once, so the next sibling's housekeeping cleans it
//!   up and resumes those callbacks instead of waiting out the death interval.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zodiac_objects::{BTree, PRef, Persistent, Transaction};

use crate::error::{Error, Result};
use crate::job::{Job, Location};
use crate::queue::{Claimer, Queue, Spread};
use crate::retry::Policies;
use crate::status::Status;
use crate::time::Timestamp;

/// How often a live dispatcher pings (30 s).
pub const PING_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// How old a last ping must be for its dispatcher to be dead (60 s).
pub const DEATH_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// Most agents of one dispatcher in one queue.
pub const AGENTS_MAX: usize = 64;
/// The last ping of a dispatcher that stopped leaving jobs to its siblings'
/// cleanup ([`Dispatchers::leave_to_siblings`]): the epoch, older than any death
/// interval.
const LEFT_TO_SIBLINGS_PING: Timestamp = Timestamp::from_micros(0);

/// How often the claim spread of a queue's dispatchers rotates
/// ([`Dispatchers::claim_lane`]).
pub const CLAIM_SPREAD_ROTATION: Duration = Duration::from_millis(100);

/// How long an agent keeps its completed jobs for inspection (7 days).
pub const RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most completed jobs dropped in one call of `drop_completed_before`.
pub const RETENTION_DROPS_MAX: usize = 64;
/// Jobs an agent holds at once unless told otherwise.
pub const AGENT_SIZE_DEFAULT: u32 = 3;

/// A dispatcher as registered in one queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherRecord {
    id: String,
    activated: Option<Timestamp>,
    last_ping: Option<Timestamp>,
    agents: BTreeMap<String, PRef<Agent>>,
}

impl Persistent for DispatcherRecord {
    const TYPE_NAME: &'static str = "zodiac.async.Dispatcher";
}

impl DispatcherRecord {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn activated(&self) -> Option<Timestamp> {
        self.activated
    }
    pub fn last_ping(&self) -> Option<Timestamp> {
        self.last_ping
    }
    pub fn agents(&self) -> &BTreeMap<String, PRef<Agent>> {
        &self.agents
    }

    /// Whether it stopped leaving jobs to its siblings' cleanup
    /// ([`Dispatchers::leave_to_siblings`]): activated, last ping at the epoch
    /// (its real last ping is not kept).
    pub fn left_to_siblings(&self) -> bool {
        self.activated.is_some() && self.last_ping == Some(LEFT_TO_SIBLINGS_PING)
    }

    /// Whether it is activated and pinged (or activated) within `death_interval`.
    pub fn is_alive(&self, now: Timestamp, death_interval: Duration) -> bool {
        match (self.activated, self.last_ping.or(self.activated)) {
            (Some(_), Some(seen)) => now.since(seen) <= death_interval,
            _ => false,
        }
    }
}

/// An agent: a name, how many jobs it holds at once, and the jobs it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    name: String,
    size: u32,
    /// References, so pack and GC keep every job an agent holds (an id kept as a
    /// plain number is invisible to them, and GC deleted the jobs a worker ran).
    held: BTreeSet<PRef<Job>>,
    /// Jobs it ran to completion, by (completion time, job id), kept for the
    /// retention period. The id in the key only orders (keys are copied into the
    /// tree's separators, which outlive the entry); the value is the reference.
    completed: PRef<BTree<(Timestamp, u64), PRef<Job>>>,
}

impl Persistent for Agent {
    const TYPE_NAME: &'static str = "zodiac.async.Agent";
}

impl Agent {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn size(&self) -> u32 {
        self.size
    }
    pub fn held(&self) -> &BTreeSet<PRef<Job>> {
        &self.held
    }

    /// The tree of jobs it completed.
    #[cfg(test)]
    pub(crate) fn completed_tree(&self) -> PRef<BTree<(Timestamp, u64), PRef<Job>>> {
        self.completed
    }
}

/// What a cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub put_back: Vec<PRef<Job>>,
    pub recovered: Vec<PRef<Job>>,
    /// Jobs in CALLBACKS (including recovered jobs whose policy gave up and
    /// which have callbacks), left for a runner's `finish_callbacks`; like the
    /// COMPLETED ones, they are listed among the agent's completed jobs.
    pub in_callbacks: Vec<PRef<Job>>,
}

/// Operations on the dispatcher registry of a queue.
pub struct Dispatchers;

impl Dispatchers {
    fn record(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
    ) -> Result<Option<PRef<DispatcherRecord>>> {
        Ok(Queue::dispatchers(tx, queue)?.get(id).copied())
    }

    fn record_or_err(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
    ) -> Result<PRef<DispatcherRecord>> {
        Dispatchers::record(tx, queue, id)?
            .ok_or_else(|| Error::NoSuchDispatcher { id: id.to_string() })
    }

    /// Registers (if needed) and activates dispatcher `id` in `queue`. Refused
    /// with [`Error::AlreadyActive`] while a live dispatcher has this id.
    pub fn activate(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        now: Timestamp,
        death_interval: Duration,
    ) -> Result<PRef<DispatcherRecord>> {
        let record = match Dispatchers::record(tx, queue, id)? {
            Some(r) => r,
            None => {
                let r = tx.add(DispatcherRecord {
                    id: id.to_string(),
                    activated: None,
                    last_ping: None,
                    agents: BTreeMap::new(),
                })?;
                Queue::add_dispatcher(tx, queue, id, r)?;
                r
            }
        };
        if tx.get(&record)?.is_alive(now, death_interval) {
            return Err(Error::AlreadyActive { id: id.to_string() });
        }
        tx.modify(&record, |r| {
            r.activated = Some(now);
            r.last_ping = Some(now);
        })?;
        Ok(record)
    }

    /// Records a ping of `id`. Returns `false` if the dispatcher had been
    /// deactivated (a sibling declared it dead and cleaned it up): it is then
    /// activated again, and the caller should log that at CRITICAL.
    pub fn ping(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        let was_active = tx.get(&record)?.activated.is_some();
        tx.modify(&record, |r| {
            if r.activated.is_none() {
                r.activated = Some(now);
            }
            r.last_ping = Some(now);
        })?;
        Ok(was_active)
    }

    /// Deactivates `id` (a graceful stop, after its jobs are handed back).
    pub fn deactivate(tx: &mut Transaction<'_>, queue: &PRef<Queue>, id: &str) -> Result<()> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        tx.modify(&record, |r| r.activated = None)?;
        Ok(())
    }

    /// Leaves `id` activated, with its last ping at the epoch: dead to every
    /// sibling from now on, whatever its death interval. For a graceful stop that
    /// leaves jobs in CALLBACKS held (their callbacks were still running): the
    /// next sibling's cleanup adopts them and resumes their callbacks, as after a
    /// crash but without waiting out the death interval.
    pub fn leave_to_siblings(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
    ) -> Result<()> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        tx.modify(&record, |r| r.last_ping = Some(LEFT_TO_SIBLINGS_PING))?;
        Ok(())
    }

    /// Adds agent `name` (holding up to `size` jobs) to dispatcher `id`, or
    /// resizes it.
    pub fn set_agent(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        name: &str,
        size: u32,
    ) -> Result<PRef<Agent>> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        let r = tx.get(&record)?;
        if let Some(agent) = r.agents.get(name) {
            if tx.get(agent)?.size != size {
                tx.modify(agent, |a| a.size = size)?;
            }
            return Ok(*agent);
        }
        if r.agents.len() >= AGENTS_MAX {
            return Err(Error::LimitExceeded {
                what: "the agents of a dispatcher",
                len: r.agents.len() + 1,
                max: AGENTS_MAX,
            });
        }
        let completed = BTree::create(tx)?;
        let agent = tx.add(Agent {
            name: name.to_string(),
            size,
            held: BTreeSet::new(),
            completed,
        })?;
        tx.modify(&record, |r| r.agents.insert(name.to_string(), agent))?;
        Ok(agent)
    }

    /// Ids of the dispatchers of `queue` that are activated but dead at `now`.
    pub fn dead(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        now: Timestamp,
        death_interval: Duration,
    ) -> Result<Vec<String>> {
        let mut dead = Vec::new();
        for (id, record) in Queue::dispatchers(tx, queue)? {
            let r = tx.get(&record)?;
            if r.activated.is_some() && !r.is_alive(now, death_interval) {
                dead.push(id);
            }
        }
        Ok(dead)
    }

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
    ) -> Result<crate::queue::Claim> {
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
    ) -> Result<crate::queue::Claim> {
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
            return Ok(crate::queue::Claim::default());
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
        let now = Timestamp::now();
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

    /// Records `job`, which agent `agent` of dispatcher `id` claimed from `queue`
    /// and which finished without being held there (a job that awaited another:
    /// it let its slot go while waiting), among that agent's completed jobs, so
    /// inspection lists it and retention drops it. Nothing if the agent is gone.
    pub(crate) fn record_finished_elsewhere(
        tx: &mut Transaction<'_>,
        queue: &str,
        id: &str,
        agent: &str,
        at: Timestamp,
        job: PRef<Job>,
    ) -> Result<()> {
        let Some(queue) = Queue::get(tx, queue)? else {
            return Ok(());
        };
        let Some(record) = Dispatchers::record(tx, &queue, id)? else {
            return Ok(());
        };
        let Some(agent_ref) = tx.get(&record)?.agents.get(agent).copied() else {
            return Ok(());
        };
        let completed = tx.get(&agent_ref)?.completed;
        BTree::insert(tx, &completed, (at, job.oid().0), job)?;
        Ok(())
    }

    /// Up to `limit` jobs agent `agent` of dispatcher `id` completed, oldest
    /// first, with their completion times.
    pub fn completed(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
        limit: usize,
    ) -> Result<Vec<(Timestamp, PRef<Job>)>> {
        let agent_ref = Dispatchers::agent(tx, queue, id, agent)?;
        let completed = tx.get(&agent_ref)?.completed;
        let entries = BTree::range(tx, &completed, .., limit)?;
        Ok(entries
            .into_iter()
            .map(|((at, _), job)| (at, job))
            .collect())
    }

    /// How many completed jobs agent `agent` of dispatcher `id` keeps.
    pub fn completed_count(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
    ) -> Result<u64> {
        let agent_ref = Dispatchers::agent(tx, queue, id, agent)?;
        let completed = tx.get(&agent_ref)?.completed;
        Ok(BTree::len(tx, &completed)?)
    }

    /// Drops up to `limit` completed jobs of the agent that completed before
    /// `cutoff` (now minus the retention period); returns how many. A dropped job is
    /// no longer reachable, so pack reclaims it.
    pub fn drop_completed_before(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<usize> {
        let agent_ref = Dispatchers::agent(tx, queue, id, agent)?;
        let completed = tx.get(&agent_ref)?.completed;
        let old = BTree::range(tx, &completed, ..(cutoff, 0), limit)?;
        for (key, _) in &old {
            BTree::remove(tx, &completed, key)?;
        }
        Ok(old.len())
    }

    fn agent(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        agent: &str,
    ) -> Result<PRef<Agent>> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        tx.get(&record)?
            .agents
            .get(agent)
            .copied()
            .ok_or_else(|| Error::NoSuchDispatcher {
                id: format!("{id} (agent {agent})"),
            })
    }

    /// Moves the COMPLETED jobs the agents of dispatcher `id` hold to their
    /// completed collections and drops the jobs no longer at them: for a dead
    /// dispatcher whose jobs in CALLBACKS a sibling finished, so its agents end
    /// empty.
    pub fn release_finished(tx: &mut Transaction<'_>, queue: &PRef<Queue>, id: &str) -> Result<()> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        let now = Timestamp::now();
        for (name, agent_ref) in tx.get(&record)?.agents.clone() {
            let a = tx.get(&agent_ref)?;
            let mut gone = Vec::new();
            for &job in &a.held {
                let j = tx.get(&job)?;
                let here = at_agent(&j, id, &name);
                if here && j.status() == Status::Completed {
                    let at = j.active_end().unwrap_or(now);
                    BTree::insert(tx, &a.completed, (at, job.oid().0), job)?;
                }
                if !here || j.status() == Status::Completed {
                    gone.push(job);
                }
            }
            if !gone.is_empty() {
                tx.modify(&agent_ref, |a| {
                    for job in &gone {
                        a.held.remove(job);
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Cleans up the dead dispatcher `id`: ASSIGNED jobs go back to the queue,
    /// ACTIVE ones get their policy's `on_interrupted` decision, the record is
    /// deactivated. Refused with [`Error::AlreadyActive`] if it is alive. Jobs in
    /// CALLBACKS stay held by `id`'s agents for the caller to resume (see
    /// [`Dispatchers::cleanup_adopting`], which a worker uses).
    pub fn cleanup(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
        death_interval: Duration,
    ) -> Result<Cleanup> {
        Dispatchers::cleanup_dead(tx, queue, id, policies, now, death_interval, None)
    }

    /// [`Dispatchers::cleanup`] by a live dispatcher that resumes the callbacks of
    /// the jobs found in CALLBACKS: they move to `adopter`'s agent (held there,
    /// located there), so that if the adopter dies while resuming them its own
    /// cleanup finds them, and they are resumed by one dispatcher only. While held
    /// they take places of that agent, as the adopter runs their callbacks.
    pub fn cleanup_adopting(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
        death_interval: Duration,
        adopter: &Claimer,
    ) -> Result<Cleanup> {
        let adopter = Some(adopter);
        Dispatchers::cleanup_dead(tx, queue, id, policies, now, death_interval, adopter)
    }

    fn cleanup_dead(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
        now: Timestamp,
        death_interval: Duration,
        adopter: Option<&Claimer>,
    ) -> Result<Cleanup> {
        let record = Dispatchers::record_or_err(tx, queue, id)?;
        if tx.get(&record)?.is_alive(now, death_interval) {
            return Err(Error::AlreadyActive { id: id.to_string() });
        }
        Dispatchers::hand_back(tx, queue, &record, id, policies, adopter)
    }

    /// Cleans up the previous incarnation of dispatcher `id` at once, alive or
    /// not: for a process that holds `id`'s identity lock (see
    /// `WorkerIdentity::restarted`), which proves the previous holder is gone.
    pub fn cleanup_previous_incarnation(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        policies: &Policies,
    ) -> Result<Cleanup> {
        match Dispatchers::record(tx, queue, id)? {
            Some(record) => Dispatchers::hand_back(tx, queue, &record, id, policies, None),
            None => Ok(Cleanup::default()),
        }
    }

    /// Applies `on_interrupted` to the callbacks of `job` (in CALLBACKS) that were
    /// running (ACTIVE, not awaiting another job): their runner is gone.
    pub(crate) fn interrupt_callbacks(
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        policies: &Policies,
    ) -> Result<()> {
        for cb in tx.get(job)?.callbacks() {
            let c = tx.get(cb)?;
            if c.status() == Status::Active && c.awaiting().is_none() {
                crate::run::recover_interrupted(tx, cb, policies)?;
            }
        }
        Ok(())
    }

    /// Moves `job` (in CALLBACKS, held by a gone dispatcher's agent) to `adopter`'s
    /// agent in `queue`.
    fn adopt(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        job: &PRef<Job>,
        adopter: &Claimer,
    ) -> Result<()> {
        let agent = Dispatchers::agent(tx, queue, &adopter.dispatcher, &adopter.agent)?;
        let queue_name = tx.get(queue)?.name().to_string();
        tx.modify(job, |j| {
            j.set_location(Location::Agent {
                queue: queue_name,
                dispatcher: adopter.dispatcher.clone(),
                agent: adopter.agent.clone(),
            })
        })?;
        tx.modify(&agent, |a| a.held.insert(*job))?;
        Ok(())
    }

    fn hand_back(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        record: &PRef<DispatcherRecord>,
        id: &str,
        policies: &Policies,
        adopter: Option<&Claimer>,
    ) -> Result<Cleanup> {
        let r = tx.get(record)?;
        let mut report = Cleanup::default();
        let now = Timestamp::now();
        for (name, agent_ref) in &r.agents {
            let a = tx.get(agent_ref)?;
            let held = a.held.clone();
            let mut kept = BTreeSet::new();
            for job in held {
                let j = tx.get(&job)?;
                if !at_agent(&j, id, name) {
                    continue;
                }
                match j.status() {
                    Status::Assigned => {
                        Queue::put_back(tx, &job, None)?;
                        report.put_back.push(job);
                    }
                    // Waiting for another job, it is not running anywhere.
                    Status::Active if j.awaiting().is_some() => {}
                    Status::Active => {
                        crate::run::recover_interrupted(tx, &job, policies)?;
                        report.recovered.push(job);
                    }
                    Status::Callbacks => {
                        // A callback that was running is retried by its policy.
                        Dispatchers::interrupt_callbacks(tx, &job, policies)?;
                    }
                    _ => {}
                }
                // Finished here (or given up on just now): COMPLETED to the
                // completed jobs; CALLBACKS goes to the adopter, or stays held until
                // the caller has resumed its callbacks (`release_finished`).
                let finished = tx.get(&job)?;
                match finished.status() {
                    Status::Callbacks => {
                        match adopter {
                            Some(a) if a.dispatcher != id => {
                                Dispatchers::adopt(tx, queue, &job, a)?;
                            }
                            _ => {
                                kept.insert(job);
                            }
                        }
                        report.in_callbacks.push(job);
                    }
                    Status::Completed => {
                        let at = finished.active_end().unwrap_or(now);
                        BTree::insert(tx, &a.completed, (at, job.oid().0), job)?;
                    }
                    _ => {}
                }
            }
            tx.modify(agent_ref, |a| a.held = kept)?;
        }
        tx.modify(record, |r| r.activated = None)?;
        if report.put_back.is_empty()
            && report.recovered.is_empty()
            && report.in_callbacks.is_empty()
        {
            // A clean stop (or a crash while idle) leaves nothing to recover.
            log::info!(
                target: "zodiac_async::events",
                "dispatcher {id} is gone; it held no jobs"
            );
        } else {
            log::error!(
                target: "zodiac_async::events",
                "critical: dispatcher {id} is gone; put back {} job(s), recovered {} interrupted \
                 job(s), resuming the callbacks of {}",
                report.put_back.len(),
                report.recovered.len(),
                report.in_callbacks.len()
            );
        }
        Ok(report)
    }
}

fn at_agent(job: &Job, id: &str, agent: &str) -> bool {
    matches!(job.location(), Location::Agent { dispatcher, agent: a, .. } if dispatcher == id && a == agent)
}
