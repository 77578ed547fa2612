//! The completed jobs an agent keeps for inspection, and their retention.
//!
//! Invariant: a job leaves an agent's `completed` tree only when dropped after the
//! retention period; dropped, it is no longer reachable and pack reclaims it.

use zodiac_objects::{BTree, PRef, Transaction};

use crate::dispatcher::{Dispatchers, at_agent};
use crate::error::Result;
use crate::model::job::Job;
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::time::Timestamp;
impl Dispatchers {
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
        for (key, job) in &old {
            BTree::remove(tx, &completed, key)?;
            crate::queue::release_unique(tx, queue, *job)?;
        }
        Ok(old.len())
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
}
