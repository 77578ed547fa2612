//! Putting jobs in a queue, taking them out again (pull, remove), and putting
//! claimed jobs back.
//!
//! Invariants:
//! - A put moves a NEW job to PENDING with exactly one entry in its queue's tree,
//!   under the key its `Location::Queue` names; pull and remove take that entry
//!   and move the job back to NEW.
//! - A put back keeps the job's deadline: a job put back to run after its
//!   deadline keeps its schedule and is expired by the claim that meets it.
//! - A job's priority (checked at put, at most `PRIORITY_MAX`) is kept in the job
//!   and in the lane of every key it is queued under (put, put back, retried).
//! - A job put back at the front keeps its quota places until claimed again; one
//!   scheduled later lets them go.

use std::time::Duration;

use zodiac_objects::{BTree, PRef, Transaction};
use zodiac_storage::Oid;

use crate::error::{Error, Result};
use crate::model::attempt_limit::AttemptLimit;
use crate::model::job::{FailureLevel, Job, Location};
use crate::model::queue::{Entry, Queue, QueueKey};
use crate::model::queue_key::PRIORITY_MAX;
use crate::model::quota::QUOTAS_MAX;
use crate::model::status::Status;
use crate::queue::unique::{self, Unique};
use crate::time::Timestamp;
/// How to put a job: start time, deadline, retry policy and failure level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Not claimable before (default: the time of the put).
    pub begin_after: Option<Timestamp>,
    /// Must start within this long after `begin_after` (default: no deadline).
    pub begin_by: Option<Duration>,
    /// A retry policy name overriding the process default.
    pub retry_policy: Option<String>,
    /// The level the final failure is logged at (default: ERROR).
    pub failure_level: Option<FailureLevel>,
    /// Quotas of the queue the job counts against while held (each must exist).
    pub quota_names: Vec<String>,
    /// 0 (the highest, the default) to [`PRIORITY_MAX`]: claims take a queue's
    /// due jobs of a higher priority first.
    pub priority: u8,
    /// A unique key: while a job put with it in the queue holds it, the put
    /// queues nothing and returns that job ([`Queue::put_job_unique`]).
    pub unique: Option<Unique>,
    /// How many runs the handler's own errors get (default: the queue's
    /// default, [`Queue::set_attempt_limit`], else as the retry policy decides).
    pub attempt_limit: Option<AttemptLimit>,
}

impl PutOptions {
    /// The defaults: now, no deadline, the default policy.
    pub fn new() -> PutOptions {
        PutOptions::default()
    }
    /// Not claimable before `t`.
    pub fn begin_after(mut self, t: Timestamp) -> PutOptions {
        self.begin_after = Some(t);
        self
    }
    /// Must start within `d` after `begin_after`.
    pub fn begin_by(mut self, d: Duration) -> PutOptions {
        self.begin_by = Some(d);
        self
    }
    /// Uses the retry policy registered as `name`.
    pub fn retry_policy(mut self, name: impl Into<String>) -> PutOptions {
        self.retry_policy = Some(name.into());
        self
    }
    /// Logs the final failure at `level`.
    pub fn failure_level(mut self, level: FailureLevel) -> PutOptions {
        self.failure_level = Some(level);
        self
    }
    /// Claimed before the due jobs of a lower priority (a larger number, up to
    /// [`PRIORITY_MAX`]; 0 is the default and the highest).
    pub fn priority(mut self, priority: u8) -> PutOptions {
        self.priority = priority;
        self
    }
    /// Puts the job only if no job of the queue holds `unique`'s key.
    pub fn unique(mut self, unique: Unique) -> PutOptions {
        self.unique = Some(unique);
        self
    }
    /// Gives the handler `limit`'s attempts (see [`crate::retry::with_attempt_limit`]).
    pub fn attempt_limit(mut self, limit: AttemptLimit) -> PutOptions {
        self.attempt_limit = Some(limit);
        self
    }
    /// Counts against quota `name` of the queue while held.
    pub fn quota(mut self, name: impl Into<String>) -> PutOptions {
        self.quota_names.push(name.into());
        self
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The job now pending for the put: the one put, or the holder of its
    /// unique key.
    pub job: PRef<Job>,
    /// Whether `job` is the holder of the put's unique key (nothing was queued).
    pub existing: bool,
}

impl Queue {
    /// Puts the NEW job `job` in `queue` (NEW → PENDING); returns its id. With a
    /// unique key ([`PutOptions::unique`]) held by another job of the queue,
    /// `job` stays NEW and that job's id is returned.
    pub fn put(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        job: &PRef<Job>,
        options: PutOptions,
    ) -> Result<Oid> {
        let id = job.oid();
        let status = tx.get(job)?.status();
        if status != Status::New {
            return Err(Error::NotNew { job: id, status });
        }
        if let Some(unique) = &options.unique {
            unique.check()?;
            if let Some(holder) = unique::holder(tx, queue, &unique.key, Timestamp::now())? {
                return Ok(holder.oid());
            }
        }
        if options.priority > PRIORITY_MAX {
            return Err(Error::LimitExceeded {
                what: "a job's priority (0 is the highest)",
                len: options.priority as usize,
                max: PRIORITY_MAX as usize,
            });
        }
        let now = Timestamp::now();
        let begin_after = options.begin_after.unwrap_or(now);
        let key = QueueKey {
            lane: QueueKey::lane_of(options.priority, true),
            at: begin_after,
            job: id.0,
        };
        let q = tx.get(queue)?;
        let name = q.name.clone();
        let mut quota_names = options.quota_names.clone();
        quota_names.sort();
        quota_names.dedup();
        if quota_names.len() > QUOTAS_MAX {
            return Err(Error::LimitExceeded {
                what: "the quota names of a job",
                len: quota_names.len(),
                max: QUOTAS_MAX,
            });
        }
        if let Some(missing) = quota_names.iter().find(|n| !q.quotas.contains_key(*n)) {
            return Err(Error::NoSuchQuota {
                queue: name,
                name: missing.clone(),
            });
        }
        let entry_quotas = quota_names.clone();
        let attempt_limit = options.attempt_limit.or(q.attempt_limit);
        let deadline = tx.modify(job, |j| {
            j.transition(id, Status::Pending, now)?;
            j.set_quota_names(quota_names);
            j.set_schedule(begin_after, options.begin_by);
            j.set_attempt_limit(attempt_limit);
            j.set_priority(options.priority);
            j.set_unique_key(options.unique.as_ref().map(|u| u.key.clone()));
            if let Some(p) = options.retry_policy {
                j.set_retry_policy(p);
            }
            if let Some(level) = options.failure_level {
                j.set_failure_level(level);
            }
            j.set_location(Location::Queue { queue: name, key });
            Ok::<_, Error>(j.deadline())
        })??;
        let entry = Entry {
            job: *job,
            deadline,
            quota_names: entry_quotas,
        };
        Queue::insert(tx, queue, key, entry)?;
        if let Some(unique) = &options.unique {
            unique::hold(tx, queue, unique, *job, now)?;
        }
        Ok(id)
    }

    /// Adds `job` to the database and puts it in `queue`.
    pub fn put_job(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        job: Job,
        options: PutOptions,
    ) -> Result<PRef<Job>> {
        Ok(Queue::put_job_unique(tx, queue, job, options)?.job)
    }

    /// [`Queue::put_job`], saying whether the put's unique key was held by a job
    /// of the queue (then `job` is not added, and that job is returned).
    pub fn put_job_unique(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        job: Job,
        options: PutOptions,
    ) -> Result<Queued> {
        if let Some(unique) = &options.unique {
            unique.check()?;
            if let Some(holder) = unique::holder(tx, queue, &unique.key, Timestamp::now())? {
                return Ok(Queued {
                    job: holder,
                    existing: true,
                });
            }
        }
        let job = tx.add(job)?;
        Queue::put(tx, queue, &job, options)?;
        Ok(Queued {
            job,
            existing: false,
        })
    }

    /// Takes the first pending job in claim order out of `queue`, due or not
    /// (PENDING → NEW), and returns it.
    pub fn pull(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<Option<PRef<Job>>> {
        let pending = tx.get(queue)?.pending;
        let Some((_, entry)) = BTree::range(tx, &pending, .., 1)?.pop() else {
            return Ok(None);
        };
        Queue::remove(tx, &entry.job)?;
        Ok(Some(entry.job))
    }

    /// Cancels the pending job `job`: out of its queue, back to NEW.
    pub fn remove(tx: &mut Transaction<'_>, job: &PRef<Job>) -> Result<()> {
        let id = job.oid();
        let j = tx.get(job)?;
        let (Status::Pending, Location::Queue { queue, key }) = (j.status(), j.location()) else {
            return Err(Error::NotInQueue {
                job: id,
                status: j.status(),
            });
        };
        let queue = Queue::named(tx, queue)?;
        crate::queue::release(tx, job)?;
        let removed = Queue::take(tx, &queue, key)?;
        assert!(removed, "job {id} is PENDING but missing from its queue");
        tx.modify(job, |j| {
            j.transition(id, Status::New, Timestamp::now())?;
            j.set_location(Location::None);
            Ok::<_, Error>(())
        })??;
        Ok(())
    }

    /// Puts a claimed (ASSIGNED or ACTIVE) job back in the queue it was claimed
    /// from: at the front for an immediate retry (`retry_at` `None`), or scheduled
    /// at `retry_at`. Its deadline is unchanged.
    pub fn put_back(
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        retry_at: Option<Timestamp>,
    ) -> Result<()> {
        Queue::put_back_at(tx, job, retry_at, Timestamp::now())
    }

    /// [`Queue::put_back`] at `now` (the put-back time and the time of the
    /// status change).
    pub(crate) fn put_back_at(
        tx: &mut Transaction<'_>,
        job: &PRef<Job>,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()> {
        let id = job.oid();
        let j = tx.get(job)?;
        let Location::Agent { queue, .. } = j.location() else {
            return Err(Error::NotClaimed {
                job: id,
                status: j.status(),
            });
        };
        let name = queue.clone();
        let quota_names = j.quota_names().to_vec();
        let priority = j.priority();
        let queue = Queue::named(tx, &name)?;
        // Back at the front, it keeps its quota places (jobs waiting for them stay
        // waiting); scheduled later, it lets them go.
        if retry_at.is_some() {
            crate::queue::release(tx, job)?;
        }
        let key = match retry_at {
            None => QueueKey {
                lane: QueueKey::lane_of(priority, false),
                at: now,
                job: id.0,
            },
            Some(at) => QueueKey {
                lane: QueueKey::lane_of(priority, true),
                at,
                job: id.0,
            },
        };
        let deadline = tx.modify(job, |j| {
            j.transition(id, Status::Pending, now)?;
            j.set_location(Location::Queue { queue: name, key });
            if let Some(at) = retry_at {
                // It begins after `at` now; the deadline stays where it was. A
                // deadline before `at` cannot be kept that way (`begin_by` would be
                // negative): the schedule stays, and the claim expires the job.
                let deadline = j.deadline();
                if deadline.is_none_or(|d| d >= at) {
                    j.set_schedule(at, deadline.map(|d| d.since(at)));
                }
            }
            Ok::<_, Error>(j.deadline())
        })??;
        let entry = Entry {
            job: *job,
            deadline,
            quota_names,
        };
        Queue::insert(tx, &queue, key, entry)
    }
}
