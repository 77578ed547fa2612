//! Read-only queries for tools: jobs by status, queue, dispatcher, agent, handler
//! and time window, and the dispatchers with their liveness and load.
//!
//! Invariants: nothing here writes; every walk is bounded by the caller's `limit`
//! (jobs returned) and reads only the queues' pending trees and ended jobs
//! ([`crate::ended`]: cancelled, expired) and the agents' held sets and completed
//! trees, so it sees every job a queue or an agent holds.
//! Jobs run outside any queue, and callbacks, are not listed (they hang off their
//! parent).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use zodiac_objects::{PRef, Transaction};
use zodiac_storage::Oid;

use crate::dispatcher::Dispatchers;
use crate::error::Result;
use crate::model::job::{Ending, Job, Location, Outcome};
use crate::model::queue::Queue;
use crate::model::status::Status;
use crate::time::Timestamp;

mod handler_stats;
pub use handler_stats::{HandlerStats, handler_stats};

/// Which jobs to list; `None` fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<Status>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs held by this dispatcher.
    pub dispatcher: Option<String>,
    /// Only jobs held by this agent.
    pub agent: Option<String>,
    /// Only jobs of this handler.
    pub handler: Option<String>,
    /// Only COMPLETED jobs that ended this way (succeeded, failed, cancelled,
    /// timed out).
    pub ending: Option<Ending>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_until: Option<Timestamp>,
}

/// One job, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    /// The job's oid.
    pub id: u64,
    /// The queue.
    pub queue: String,
    /// The handler name.
    pub handler: String,
    /// The status.
    pub status: Status,
    /// `dispatcher/agent` for a job an agent holds or completed.
    pub holder: Option<String>,
    /// When the job was created.
    pub created: Timestamp,
    /// Not claimable before.
    pub begin_after: Option<Timestamp>,
    /// When its last run started.
    pub active_start: Option<Timestamp>,
    /// When its last run ended.
    pub active_end: Option<Timestamp>,
    /// Runs started so far.
    pub attempts: u32,
    /// Its priority (0 highest).
    pub priority: u8,
    /// Entries in its error history.
    pub errors: usize,
    /// `value` or the failure summary.
    pub result: Option<String>,
    /// How it ended, once COMPLETED.
    pub ending: Option<Ending>,
}

/// One dispatcher in one queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DispatcherSummary {
    /// The queue.
    pub queue: String,
    /// The dispatcher id.
    pub id: String,
    /// When it was activated (`None`: not activated).
    pub activated: Option<Timestamp>,
    /// Its last ping.
    pub last_ping: Option<Timestamp>,
    /// Whether it is alive at the time of the query.
    pub alive: bool,
    /// It stopped leaving jobs to its siblings' cleanup (dead to them at once).
    pub left_to_siblings: bool,
    /// Agent name, size, jobs held.
    pub agents: Vec<(String, u32, usize)>,
}

fn summary(id: Oid, queue: &str, job: &Job) -> JobSummary {
    let holder = match job.location() {
        Location::Agent {
            dispatcher, agent, ..
        } => Some(format!("{dispatcher}/{agent}")),
        _ => None,
    };
    JobSummary {
        id: id.0,
        queue: queue.to_string(),
        handler: job.handler().to_string(),
        status: job.status(),
        holder,
        created: job.created(),
        begin_after: job.begin_after(),
        active_start: job.active_start(),
        active_end: job.active_end(),
        attempts: job.attempts(),
        priority: job.priority(),
        errors: job.errors().len(),
        result: job.result().map(|r| match r {
            Outcome::Value(_) => "value".to_string(),
            Outcome::Failure(f) => f.summary(),
        }),
        ending: ending_of(job),
    }
}

fn matches(f: &JobFilter, s: &JobSummary) -> bool {
    let holder = s.holder.as_deref().and_then(|h| h.split_once('/'));
    f.status.is_none_or(|st| st == s.status)
        && f.ending.is_none_or(|e| s.ending == Some(e))
        && f.queue.as_ref().is_none_or(|q| *q == s.queue)
        && f.handler.as_ref().is_none_or(|h| *h == s.handler)
        && f.dispatcher
            .as_ref()
            .is_none_or(|d| holder.is_some_and(|(hd, _)| hd == d))
        && f.agent
            .as_ref()
            .is_none_or(|a| holder.is_some_and(|(_, ha)| ha == a))
        && f.created_from.is_none_or(|t| s.created >= t)
        && f.created_until.is_none_or(|t| s.created < t)
}

/// Up to `limit` jobs matching `filter`: per queue, pending jobs in claim order,
/// the jobs that ended without a run, then each agent's held and completed jobs.
pub fn jobs(tx: &mut Transaction<'_>, filter: &JobFilter, limit: usize) -> Result<Vec<JobSummary>> {
    let mut out = Vec::new();
    let consider = |tx: &mut Transaction<'_>, queue: &str, job: PRef<Job>, out: &mut Vec<_>| {
        let j = tx.get(&job)?;
        let s = summary(job.oid(), queue, &j);
        if matches(filter, &s) {
            out.push(s);
        }
        Ok::<_, crate::error::Error>(())
    };
    for name in Queue::names(tx)? {
        if filter.queue.as_ref().is_some_and(|q| *q != name) {
            continue;
        }
        let Some(queue) = Queue::get(tx, &name)? else {
            continue;
        };
        for (_, job) in Queue::pending(tx, &queue, usize::MAX)? {
            if out.len() >= limit {
                return Ok(out);
            }
            consider(tx, &name, job, &mut out)?;
        }
        // Jobs that ended without a run (cancelled, expired): callbacks first.
        let due: Vec<PRef<Job>> = crate::ended::of(tx, &queue)?
            .map(|e| e.callbacks_due().iter().copied().collect())
            .unwrap_or_default();
        let ended = crate::ended::completed(tx, &queue, usize::MAX)?;
        for job in due.into_iter().chain(ended.into_iter().map(|(_, j)| j)) {
            if out.len() >= limit {
                return Ok(out);
            }
            consider(tx, &name, job, &mut out)?;
        }
        for (id, record) in Queue::dispatchers(tx, &queue)? {
            for agent_name in tx
                .get(&record)?
                .agents()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
            {
                let agent = tx.get(&record)?.agents()[&agent_name];
                let held: Vec<PRef<Job>> = tx.get(&agent)?.held().iter().copied().collect();
                let mut seen = std::collections::BTreeSet::new();
                for job in held {
                    if out.len() >= limit {
                        return Ok(out);
                    }
                    seen.insert(job.oid().0);
                    // A job failed or taken over since (its agent drops it at its
                    // next claim) is listed where it is now.
                    if held_here(&*tx.get(&job)?, &id, &agent_name) {
                        consider(tx, &name, job, &mut out)?;
                    }
                }
                let completed = Dispatchers::completed(tx, &queue, &id, &agent_name, usize::MAX)?;
                for (_, job) in completed {
                    if out.len() >= limit {
                        return Ok(out);
                    }
                    if seen.insert(job.oid().0) {
                        consider(tx, &name, job, &mut out)?;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The jobs of queue `name` by status, as [`jobs`] would count them, without
/// reading every job: pending jobs are the pending tree's count, each agent's
/// completed jobs its completed tree's count; only the jobs agents hold (a few
/// per agent) are read. `None` if there is no such queue.
pub fn counts(tx: &mut Transaction<'_>, name: &str) -> Result<Option<BTreeMap<Status, u64>>> {
    let Some(queue) = Queue::get(tx, name)? else {
        return Ok(None);
    };
    let mut counts = BTreeMap::new();
    let pending = Queue::len(tx, &queue)?;
    if pending > 0 {
        counts.insert(Status::Pending, pending);
    }
    if let Some(ended) = crate::ended::of(tx, &queue)? {
        for job in ended.callbacks_due() {
            let status = tx.get(job)?.status();
            *counts.entry(status).or_insert(0) += 1;
        }
    }
    let ended = crate::ended::completed_count(tx, &queue)?;
    if ended > 0 {
        *counts.entry(Status::Completed).or_insert(0) += ended;
    }
    for (id, record) in Queue::dispatchers(tx, &queue)? {
        let agents: Vec<(String, PRef<crate::model::dispatcher::Agent>)> = tx
            .get(&record)?
            .agents()
            .iter()
            .map(|(n, a)| (n.clone(), *a))
            .collect();
        for (agent_name, agent) in agents {
            let held: Vec<PRef<Job>> = tx.get(&agent)?.held().iter().copied().collect();
            for job in held {
                let j = tx.get(&job)?;
                if held_here(&j, &id, &agent_name) {
                    *counts.entry(j.status()).or_insert(0) += 1;
                }
            }
            let completed = Dispatchers::completed_count(tx, &queue, &id, &agent_name)?;
            if completed > 0 {
                *counts.entry(Status::Completed).or_insert(0) += completed;
            }
        }
    }
    Ok(Some(counts))
}

/// How `job` ended, if it is COMPLETED.
fn ending_of(job: &Job) -> Option<Ending> {
    match job.state() {
        crate::model::job::State::Completed(outcome) => Some(outcome.ending()),
        _ => None,
    }
}

/// Most COMPLETED jobs [`endings`] reads per queue.
pub const ENDINGS_JOBS_MAX: usize = 100_000;

/// The COMPLETED jobs of queue `name` by how they ended, read from the queue's
/// and its agents' retained jobs only (not its pending jobs), at most
/// [`ENDINGS_JOBS_MAX`] of them: the flag says whether every one was counted.
/// `None` if there is no such queue.
pub fn endings(
    tx: &mut Transaction<'_>,
    name: &str,
) -> Result<Option<(BTreeMap<Ending, u64>, bool)>> {
    let Some((handlers, all)) = handler_stats(tx, name)? else {
        return Ok(None);
    };
    Ok(Some((sum_endings(handlers.values()), all)))
}

/// The endings of every handler's stats added up: a queue's completed jobs by
/// how they ended.
pub fn sum_endings<'s>(stats: impl IntoIterator<Item = &'s HandlerStats>) -> BTreeMap<Ending, u64> {
    let mut counts = BTreeMap::new();
    for s in stats {
        for (ending, n) in &s.endings {
            *counts.entry(*ending).or_insert(0) += n;
        }
    }
    counts
}

/// Whether queue `name` is paused ([`Queue::pause`]); `None` if there is no such
/// queue.
pub fn paused(tx: &mut Transaction<'_>, name: &str) -> Result<Option<bool>> {
    match Queue::get(tx, name)? {
        Some(queue) => Ok(Some(tx.get(&queue)?.is_paused())),
        None => Ok(None),
    }
}

/// The quotas of queue `name`, with how many jobs each holds now; `None` when
/// there is no such queue.
pub fn quotas(tx: &mut Transaction<'_>, name: &str) -> Result<Option<Vec<QuotaSummary>>> {
    let Some(queue) = Queue::get(tx, name)? else {
        return Ok(None);
    };
    let q = tx.get(&queue)?;
    let (refs, every_job) = (q.quotas.clone(), q.every_job_quota.clone());
    let mut out = Vec::with_capacity(refs.len());
    for (name, quota) in refs {
        let q = tx.get(&quota)?;
        out.push(QuotaSummary {
            every_job: every_job.as_ref() == Some(&name),
            size: q.size(),
            held: q.held().len(),
            name,
        });
    }
    Ok(Some(out))
}

/// A quota of a queue, as `jobs status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaSummary {
    /// Its name.
    pub name: String,
    /// Jobs it holds at most.
    pub size: u32,
    /// Jobs it holds.
    pub held: usize,
    /// Every job of the queue counts against it ([`Queue::set_every_job_quota`]).
    pub every_job: bool,
}

/// Whether `job`, in the held set of agent `agent` of dispatcher `id`, is still
/// located there.
fn held_here(job: &Job, id: &str, agent: &str) -> bool {
    matches!(job.location(), Location::Agent { dispatcher, agent: a, .. } if dispatcher == id && a == agent)
}

/// Every dispatcher of every queue, with liveness at `now` and its agents' load.
pub fn dispatchers(
    tx: &mut Transaction<'_>,
    now: Timestamp,
    death_interval: Duration,
) -> Result<Vec<DispatcherSummary>> {
    let mut out = Vec::new();
    for name in Queue::names(tx)? {
        let Some(queue) = Queue::get(tx, &name)? else {
            continue;
        };
        for (id, record) in Queue::dispatchers(tx, &queue)? {
            let r = tx.get(&record)?;
            let mut agents = Vec::new();
            for (agent_name, agent) in r.agents() {
                let a = tx.get(agent)?;
                agents.push((agent_name.clone(), a.size(), a.held().len()));
            }
            out.push(DispatcherSummary {
                queue: name.clone(),
                id,
                activated: r.activated(),
                last_ping: r.last_ping(),
                alive: r.is_alive(now, death_interval),
                left_to_siblings: r.left_to_siblings(),
                agents,
            });
        }
    }
    Ok(out)
}
