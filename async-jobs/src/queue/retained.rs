//! Where a queue keeps its COMPLETED jobs, for the operator's actions on them
//! (retry, discard): its ended jobs' completed tree ([`crate::ended`]), each
//! agent's completed tree, and the COMPLETED jobs an agent still holds (moved to
//! its completed tree at its next claim).
//!
//! Invariants:
//! - [`find`] reads those collections only (never the whole database) and writes
//!   nothing; [`forget`] removes a job from every collection it was found in, in
//!   the caller's transaction, so a job found twice leaves no reference behind.

use std::collections::BTreeMap;

use zodiac_objects::{BTree, PRef, Transaction};

use crate::error::Result;
use crate::model::dispatcher::Agent;
use crate::model::job::{Job, Location};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::time::Timestamp;

/// A tree of completed jobs by (completion time, job id).
type CompletedTree = PRef<BTree<(Timestamp, u64), PRef<Job>>>;

/// One place a completed job is kept.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keeper {
    /// A completed tree (the queue's ended jobs, or an agent's), under this key.
    Tree(CompletedTree, (Timestamp, u64)),
    /// The held set of an agent that has not yet moved the job to its tree.
    Held(PRef<Agent>),
}

/// A COMPLETED job, the queue keeping it and where.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    /// The queue's name.
    pub(crate) queue: String,
    /// Every place the job was found.
    pub(crate) keepers: Vec<Keeper>,
}

/// A predicate on kept jobs, reading them in the transaction if it needs to.
pub(crate) type Want<'w> = dyn FnMut(&mut Transaction<'_>, PRef<Job>) -> Result<bool> + 'w;

/// The COMPLETED jobs kept by queue `only` (every queue when `None`) for which
/// `want` holds, by job.
pub(crate) fn find(
    tx: &mut Transaction<'_>,
    only: Option<&str>,
    want: &mut Want<'_>,
) -> Result<BTreeMap<PRef<Job>, Kept>> {
    let mut found: BTreeMap<PRef<Job>, Kept> = BTreeMap::new();
    for name in Queue::names(tx)? {
        if only.is_some_and(|q| q != name) {
            continue;
        }
        let Some(queue) = Queue::get(tx, &name)? else {
            continue;
        };
        let mut keep = |job: PRef<Job>, keeper: Keeper| {
            found
                .entry(job)
                .or_insert_with(|| Kept {
                    queue: name.clone(),
                    keepers: Vec::new(),
                })
                .keepers
                .push(keeper);
        };
        let mut trees = Vec::new();
        if let Some(ended) = crate::ended::of(tx, &queue)? {
            trees.push(ended.completed);
        }
        for (id, record) in Queue::dispatchers(tx, &queue)? {
            for (agent_name, agent_ref) in tx.get(&record)?.agents.clone() {
                let agent = tx.get(&agent_ref)?;
                trees.push(agent.completed);
                for &job in &agent.held {
                    let j = tx.get(&job)?;
                    let here = matches!(j.location(), Location::Agent { dispatcher, agent: a, .. }
                        if *dispatcher == id && *a == agent_name);
                    if here && j.status() == Status::Completed && want(tx, job)? {
                        keep(job, Keeper::Held(agent_ref));
                    }
                }
            }
        }
        for tree in trees {
            for (key, job) in BTree::range(tx, &tree, .., usize::MAX)? {
                if want(tx, job)? {
                    keep(job, Keeper::Tree(tree, key));
                }
            }
        }
    }
    Ok(found)
}

/// Removes `job` from every place `kept` names.
pub(crate) fn forget(tx: &mut Transaction<'_>, job: PRef<Job>, kept: &Kept) -> Result<()> {
    for keeper in &kept.keepers {
        match keeper {
            Keeper::Tree(tree, key) => {
                BTree::remove(tx, tree, key)?;
            }
            Keeper::Held(agent) => {
                tx.modify(agent, |a| a.held.remove(&job))?;
            }
        }
    }
    Ok(())
}
