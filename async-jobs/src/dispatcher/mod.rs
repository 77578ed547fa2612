//! Dispatchers and agents as stored in a queue: registration, activation, pings,
//! death detection; per-agent claims ([`claim`]) and the completed jobs agents keep
//! ([`retention`]). The cleanup of a dead dispatcher is `crate::recovery`; the
//! process side (polling, wake-ups, threads) is [`crate::Worker`].
//!
//! Invariants:
//! - A dispatcher is *alive* while activated and its last ping (or activation) is
//!   at most the death interval old; activating a dispatcher that is alive is
//!   refused (another process with the same id).
//! - An agent holds at most `size` jobs not yet COMPLETED; finished jobs leave
//!   `held` at its next claim, and those it ran go to its `completed` tree, kept
//!   until dropped after the retention period.
//! - A dispatcher that stops while callbacks of jobs it holds still run cannot
//!   deactivate (its siblings only clean up activated dispatchers): it stays
//!   activated with its last ping at the epoch ([`Dispatchers::leave_to_siblings`]),
//!   dead to every sibling at once, so the next sibling's housekeeping cleans it
//!   up and resumes those callbacks instead of waiting out the death interval.

mod claim;
mod retention;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use zodiac_objects::{BTree, PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::dispatcher::{Agent, DispatcherRecord, LEFT_TO_SIBLINGS_PING};
use crate::model::job::{Job, Location};
use crate::model::queue::Queue;
use crate::time::Timestamp;
/// How often a live dispatcher pings (30 s).
pub const PING_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// How old a last ping must be for its dispatcher to be dead (60 s).
pub const DEATH_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// Most agents of one dispatcher in one queue.
pub const AGENTS_MAX: usize = 64;
/// Most bytes of an agent's name.
pub const AGENT_NAME_BYTES_MAX: usize = 255;
/// Most bytes of a dispatcher id (a worker's is a 36-character UUID).
pub const DISPATCHER_ID_BYTES_MAX: usize = 255;

/// Refuses a name of `what` longer than `max` bytes.
fn check_name_len(what: &'static str, name: &str, max: usize) -> Result<()> {
    if name.len() > max {
        return Err(Error::LimitExceeded {
            what,
            len: name.len(),
            max,
        });
    }
    Ok(())
}
/// How often the claim spread of a queue's dispatchers rotates
/// ([`Dispatchers::claim_lane`]).
pub const CLAIM_SPREAD_ROTATION: Duration = Duration::from_millis(100);

/// How long an agent keeps its completed jobs for inspection (7 days).
pub const RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most completed jobs dropped in one call of `drop_completed_before`.
pub const RETENTION_DROPS_MAX: usize = 64;
/// Jobs an agent holds at once unless told otherwise.
pub const AGENT_SIZE_DEFAULT: u32 = 3;
/// Operations on the dispatcher registry of a queue.
pub struct Dispatchers;

impl Dispatchers {
    pub(crate) fn record(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
    ) -> Result<Option<PRef<DispatcherRecord>>> {
        Ok(Queue::dispatchers(tx, queue)?.get(id).copied())
    }

    pub(crate) fn record_or_err(
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
                check_name_len("a dispatcher id (bytes)", id, DISPATCHER_ID_BYTES_MAX)?;
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
        check_name_len("an agent name (bytes)", name, AGENT_NAME_BYTES_MAX)?;
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

    pub(crate) fn agent(
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
}

pub(crate) fn at_agent(job: &Job, id: &str, agent: &str) -> bool {
    matches!(job.location(), Location::Agent { dispatcher, agent: a, .. } if dispatcher == id && a == agent)
}
