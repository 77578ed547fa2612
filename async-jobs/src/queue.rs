//! Persistent named queues.
//!
//! Layout: the root entry [`QUEUES_ROOT_KEY`] names a [`QueueDirectory`] (queue name
//! → [`Queue`]). A queue holds its pending jobs in a [`BTree`] keyed by
//! [`QueueKey`] `(lane, time, job oid)`; its size is the tree's entry counter:
//! - lane [`LANE_PUT_BACK`]: jobs put back to be retried at once, by put-back time;
//! - lane [`LANE_SCHEDULED`]: every other job, by the time it may start.
//!
//! Key order is claim order: put-back jobs first (FIFO), then due jobs by
//! `begin_after`, ties by job oid (creation order).
//!
//! Why this rarely conflicts: the queue object itself is never written by put or
//! claim. A put inserts one key and a claim removes one; the tree writes only the
//! bucket holding that key, and concurrent changes to different keys of one bucket
//! merge (bucket conflict resolution); the tree's counter merges too. What still
//! conflicts: two claimers taking the *same* job (the job object is written by both,
//! which is exactly what makes a claim exclusive), and a put that splits a bucket
//! another transaction changed at the same time. Both are retried.
//!
//! Invariants:
//! - A job is PENDING iff it has exactly one entry in its queue's tree, under the key
//!   stored in its `Location::Queue`.
//! - A claim never takes a job whose lane-1 time is after `now`, and never starts a
//!   job whose deadline (`begin_after + begin_by`) has passed: that job completes
//!   with a timeout failure instead, kept by the claiming agent or, for a claim no
//!   agent made, among the queue's ended jobs ([`crate::ended`]), in the claim's
//!   transaction.
//! - Queue keys name their job's oid only to order entries; the entry's value
//!   holds the reference (see [`crate::references`]).
//! - One claim examines at most [`CLAIM_SCAN_ENTRIES_MAX`] entries.
//! - [`Queue::claim_spread`] prefers the claimer's own lane of jobs ([`Spread`]: a
//!   hash of the job's oid) among the first `lanes × SPREAD_WINDOW_PER_LANE`
//!   claimable jobs, else takes the first claimable one: concurrent claimers (a
//!   worker's lane is its rank among the queue's live dispatchers, rotated over
//!   time) then take distinct jobs even while their snapshots lag each other's
//!   claims, and no job is passed over by more than that window.
//!   [`Spread::NONE`] (one lane) is strict claim order.
//! - A job naming quotas is claimed only when each has room (see [`crate::Quota`]);
//!   until then it stays pending and later jobs may be claimed ahead of it. A job
//!   put back at the front keeps its quota places until claimed again. Quota
//!   jobs do write their quota object on claim and release: a quota is a deliberate
//!   point of coordination.
//!
//! The tree detaches buckets that claims empty, so a claim reads the path to the
//! first pending job however many jobs the queue has seen.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zodiac_objects::{BTree, Counter, PRef, Persistent, Transaction};
use zodiac_storage::Oid;

use crate::ended::Ended;
use crate::error::{Error, Result};
use crate::failure::Failure;
use crate::job::{FailureLevel, Job, Location, Outcome};
use crate::quota::{QUOTAS_MAX, Quota};
use crate::status::Status;
use crate::time::Timestamp;

/// The root entry holding the queue directory (reserved for this crate).
pub const QUEUES_ROOT_KEY: &str = "zodiac.async.queues";
/// Most bytes of a queue name.
pub const QUEUE_NAME_BYTES_MAX: usize = 255;
/// Most pending entries one claim examines (expired jobs it completes count too).
pub const CLAIM_SCAN_ENTRIES_MAX: usize = 64;
/// Entries a claim reads first, beyond two per lane of its [`Spread`] (its lane's
/// job, and usually its lane's next one, which the claim prefetches); it reads up
/// to [`CLAIM_SCAN_ENTRIES_MAX`] only when none of them can be taken.
const CLAIM_FIRST_READ: usize = 2;
/// Claimable jobs per lane a spread claim looks through for one of its own lane
/// before it takes the first claimable one ([`Spread`]).
pub const SPREAD_WINDOW_PER_LANE: usize = 4;

/// How concurrent claimers spread over a queue's claimable jobs: each job belongs
/// to one of `lanes` lanes (a hash of its oid, [`Spread::lane_of`]), and a claimer
/// prefers jobs of its `lane`. Claimers with distinct lanes take distinct jobs
/// however stale their snapshots are; claiming "the k-th claimable job" instead
/// collides whenever one claimer has not yet seen another's claim (as a client
/// of a server often has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    pub lane: usize,
    pub lanes: usize,
    /// How many of the lane's next claimable jobs a claim asks a client storage
    /// to fetch meanwhile (1; a worker that claims in batches asks for more). The
    /// claim also looks this many times further for a job of its lane.
    pub ahead: usize,
    /// Whether a claim that finds no job of its lane takes the first claimable
    /// one (`true`), or nothing (the later claims of a batch: a stale snapshot
    /// still shows the jobs other claimers took, and taking one conflicts).
    pub fallback: bool,
}

impl Spread {
    /// One lane: strict claim order.
    pub const NONE: Spread = Spread::new(0, 1);

    /// Lane `lane` of `lanes`, fetching one job ahead.
    pub const fn new(lane: usize, lanes: usize) -> Spread {
        Spread {
            lane,
            lanes,
            ahead: 1,
            fallback: true,
        }
    }

    /// The lane of job `job` among `lanes` (0 when `lanes` is 0 or 1). A
    /// multiplicative hash, so oids allocated with any stride spread evenly.
    pub fn lane_of(job: Oid, lanes: usize) -> usize {
        if lanes <= 1 {
            return 0;
        }
        let hash = job.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        (hash % lanes as u64) as usize
    }
}
/// The lane of jobs put back for an immediate retry: claimed first.
pub const LANE_PUT_BACK: u8 = 0;
/// The lane of jobs waiting for their start time.
pub const LANE_SCHEDULED: u8 = 1;

/// Where a pending job sits in its queue's tree; ordered as claims take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    pub lane: u8,
    pub at: Timestamp,
    pub job: u64,
}

impl QueueKey {
    /// Whether the job may start at `now` (only scheduled jobs wait for their time).
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.lane != LANE_SCHEDULED || self.at <= now
    }
}

/// A pending job, with what a claim needs without loading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub job: PRef<Job>,
    pub deadline: Option<Timestamp>,
    /// The quotas the job counts against once claimed.
    pub quota_names: Vec<String>,
}

/// Every queue of the database, by name (the default queue is `""`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDirectory {
    queues: BTreeMap<String, PRef<Queue>>,
}

impl Persistent for QueueDirectory {
    const TYPE_NAME: &'static str = "zodiac.async.QueueDirectory";
    const MERGES: bool = true;

    /// Queues created concurrently under different names merge.
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let mut queues = committed.queues.clone();
        for (name, q) in &mine.queues {
            match (old.queues.get(name), committed.queues.get(name)) {
                (None, None) => {
                    queues.insert(name.clone(), *q);
                }
                (Some(o), Some(c)) if o == c && o == q => {}
                _ => return None,
            }
        }
        if old.queues.keys().any(|n| !mine.queues.contains_key(n)) {
            return None; // queues are never removed by this crate; refuse to guess
        }
        Some(QueueDirectory { queues })
    }
}

/// A named queue of pending jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    name: String,
    pending: PRef<BTree<QueueKey, Entry>>,
    /// No longer written: the pending tree counts its entries itself, and a
    /// second counter made every put and claim write one more contended object.
    /// Kept so that stored queues decode (and stays 0 in new ones).
    size: PRef<Counter>,
    quotas: BTreeMap<String, PRef<Quota>>,
    dispatchers: BTreeMap<String, PRef<crate::dispatcher::DispatcherRecord>>,
    /// The jobs that ended here without an agent running them (cancelled,
    /// expired), created by the first one. Added after the first version of the
    /// type: older queues read it as `None`.
    #[serde(default)]
    ended: Option<PRef<Ended>>,
}

impl Persistent for Queue {
    const TYPE_NAME: &'static str = "zodiac.async.Queue";
}

/// How to put a job: start time, deadline, retry policy and failure level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Not claimable before (default: the time of the put).
    pub begin_after: Option<Timestamp>,
    /// Must start within this long after `begin_after` (default: no deadline).
    pub begin_by: Option<Duration>,
    /// A retry policy name overriding the process default.
    pub retry_policy: Option<String>,
    pub failure_level: Option<FailureLevel>,
    /// Quotas of the queue the job counts against while held (each must exist).
    pub quota_names: Vec<String>,
}

impl PutOptions {
    pub fn new() -> PutOptions {
        PutOptions::default()
    }
    pub fn begin_after(mut self, t: Timestamp) -> PutOptions {
        self.begin_after = Some(t);
        self
    }
    pub fn begin_by(mut self, d: Duration) -> PutOptions {
        self.begin_by = Some(d);
        self
    }
    pub fn retry_policy(mut self, name: impl Into<String>) -> PutOptions {
        self.retry_policy = Some(name.into());
        self
    }
    pub fn failure_level(mut self, level: FailureLevel) -> PutOptions {
        self.failure_level = Some(level);
        self
    }
    pub fn quota(mut self, name: impl Into<String>) -> PutOptions {
        self.quota_names.push(name.into());
        self
    }
}

/// Who claims: an agent of a dispatcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimer {
    pub dispatcher: String,
    pub agent: String,
}

/// What a claim did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// The job now ASSIGNED to the claimer, if one was due.
    pub job: Option<PRef<Job>>,
    /// Jobs found past their deadline: completed with a timeout failure, or left in
    /// CALLBACKS when they have callbacks, for `Runner::finish_callbacks`.
    pub expired: Vec<PRef<Job>>,
}

fn directory(tx: &mut Transaction<'_>) -> Result<Option<PRef<QueueDirectory>>> {
    Ok(tx.root_entry(QUEUES_ROOT_KEY)?)
}

impl Queue {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue `name`, if it exists.
    pub fn get(tx: &mut Transaction<'_>, name: &str) -> Result<Option<PRef<Queue>>> {
        let Some(dir) = directory(tx)? else {
            return Ok(None);
        };
        Ok(tx.get(&dir)?.queues.get(name).copied())
    }

    /// The queue `name`, created (with the directory) if missing.
    pub fn get_or_create(tx: &mut Transaction<'_>, name: &str) -> Result<PRef<Queue>> {
        if name.len() > QUEUE_NAME_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "a queue name (bytes)",
                len: name.len(),
                max: QUEUE_NAME_BYTES_MAX,
            });
        }
        if let Some(q) = Queue::get(tx, name)? {
            return Ok(q);
        }
        let dir = match directory(tx)? {
            Some(dir) => dir,
            None => {
                let dir = tx.add(QueueDirectory::default())?;
                tx.set_root_entry(QUEUES_ROOT_KEY, dir)?;
                dir
            }
        };
        let pending = BTree::create(tx)?;
        let size = tx.add(Counter::new(0))?;
        let queue = tx.add(Queue {
            name: name.to_string(),
            pending,
            size,
            quotas: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
            ended: None,
        })?;
        tx.modify(&dir, |d| d.queues.insert(name.to_string(), queue))?;
        Ok(queue)
    }

    /// Every queue name, in order.
    pub fn names(tx: &mut Transaction<'_>) -> Result<Vec<String>> {
        let Some(dir) = directory(tx)? else {
            return Ok(Vec::new());
        };
        Ok(tx.get(&dir)?.queues.keys().cloned().collect())
    }

    fn named(tx: &mut Transaction<'_>, name: &str) -> Result<PRef<Queue>> {
        Queue::get(tx, name)?.ok_or_else(|| Error::NoSuchQueue { name: name.into() })
    }

    /// The object of the pending tree's entry counter: every put, put-back, claim
    /// and removal writes it, so a commit naming it tells a watcher the queue
    /// changed.
    pub fn size_oid(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<Oid> {
        let pending = tx.get(queue)?.pending;
        Ok(BTree::len_oid(tx, &pending)?)
    }

    /// Pending jobs (claimed jobs are not counted).
    pub fn len(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<u64> {
        let pending = tx.get(queue)?.pending;
        Ok(BTree::len(tx, &pending)?)
    }

    /// Up to `limit` pending jobs in claim order, with their keys.
    pub fn pending(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, PRef<Job>)>> {
        let pending = tx.get(queue)?.pending;
        let entries = BTree::range(tx, &pending, .., limit)?;
        Ok(entries.into_iter().map(|(k, e)| (k, e.job)).collect())
    }

    /// The earliest time after `now` at which a job pending in `queue` becomes
    /// claimable (a scheduled job, or one put back for a later retry), if any.
    pub fn next_start(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let pending = tx.get(queue)?.pending;
        let mut next: Option<Timestamp> = None;
        for lane in [LANE_PUT_BACK, LANE_SCHEDULED] {
            let from = QueueKey {
                lane,
                at: Timestamp(now.0.saturating_add(1)),
                job: 0,
            };
            let to = QueueKey {
                lane,
                at: Timestamp(u64::MAX),
                job: u64::MAX,
            };
            if let Some((key, _)) = BTree::range(tx, &pending, from..=to, 1)?.first() {
                next = Some(next.map_or(key.at, |n| n.min(key.at)));
            }
        }
        Ok(next)
    }

    fn insert(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        key: QueueKey,
        entry: Entry,
    ) -> Result<()> {
        let q = tx.get(queue)?;
        let previous = BTree::insert(tx, &q.pending, key, entry)?;
        debug_assert!(previous.is_none(), "a job has one entry");
        Ok(())
    }

    fn take(tx: &mut Transaction<'_>, queue: &PRef<Queue>, key: &QueueKey) -> Result<bool> {
        let q = tx.get(queue)?;
        Ok(BTree::remove(tx, &q.pending, key)?.is_some())
    }

    /// Puts the NEW job `job` in `queue` (NEW → PENDING); returns its id.
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
        let now = Timestamp::now();
        let begin_after = options.begin_after.unwrap_or(now);
        let key = QueueKey {
            lane: LANE_SCHEDULED,
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
        let deadline = tx.modify(job, |j| {
            j.transition(id, Status::Pending, now)?;
            j.set_quota_names(quota_names);
            j.set_schedule(begin_after, options.begin_by);
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
        Ok(id)
    }

    /// Adds `job` to the database and puts it in `queue`.
    pub fn put_job(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        job: Job,
        options: PutOptions,
    ) -> Result<PRef<Job>> {
        let job = tx.add(job)?;
        Queue::put(tx, queue, &job, options)?;
        Ok(job)
    }

    /// Claims the next due job for `claimer` (PENDING → ASSIGNED); see
    /// [`Queue::claim_at`].
    pub fn claim(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        claimer: &Claimer,
    ) -> Result<Claim> {
        Queue::claim_at(tx, queue, claimer, Timestamp::now())
    }

    /// Claims the first job in claim order that is due at `now`. Jobs met on the way
    /// whose deadline has passed are completed with a timeout failure instead.
    pub fn claim_at(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        claimer: &Claimer,
        now: Timestamp,
    ) -> Result<Claim> {
        Queue::claim_spread(tx, queue, claimer, now, Spread::NONE)
    }

    /// Like [`Queue::claim_at`], but takes the first claimable job of the
    /// claimer's lane ([`Spread`]) among the first `lanes × SPREAD_WINDOW_PER_LANE`
    /// claimable ones, and the first claimable one when there is none: concurrent
    /// claimers given distinct lanes (e.g. their rank among the queue's
    /// dispatchers) take distinct jobs instead of all conflicting on the head of
    /// the queue. [`Spread::NONE`] is `claim_at`. Passed-over jobs stay pending
    /// (claimed out of order by at most that window). The expired jobs are kept
    /// among the queue's ended jobs ([`crate::ended`]).
    pub fn claim_spread(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        claimer: &Claimer,
        now: Timestamp,
        spread: Spread,
    ) -> Result<Claim> {
        let claim = Queue::claim_unrecorded(tx, queue, claimer, now, spread)?;
        if !claim.expired.is_empty() {
            let name = tx.get(queue)?.name.clone();
            for job in &claim.expired {
                crate::ended::record(tx, &name, *job, now)?;
            }
        }
        Ok(claim)
    }

    /// [`Queue::claim_spread`] leaving the expired jobs it completes held by
    /// nothing: the caller keeps them in the same transaction (an agent's claim
    /// keeps them at the agent).
    pub(crate) fn claim_unrecorded(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        claimer: &Claimer,
        now: Timestamp,
        spread: Spread,
    ) -> Result<Claim> {
        let q = tx.get(queue)?;
        let mut claim = Claim::default();
        let mut examined = 0usize;
        let mut claimable = 0usize;
        let window = spread.lanes.max(1) * SPREAD_WINDOW_PER_LANE * spread.ahead.max(1);
        let mut first_claimable: Option<(QueueKey, Entry, Vec<PRef<Quota>>)> = None;
        let mut chosen: Option<(QueueKey, Entry, Vec<PRef<Quota>>)> = None;
        let mut after: Option<QueueKey> = None;
        // Read a few entries first (usually one of them is taken), then the rest
        // of the scan's allowance if needed.
        let mut want = ((1 + spread.ahead) * spread.lanes.max(1) + CLAIM_FIRST_READ)
            .min(CLAIM_SCAN_ENTRIES_MAX);
        'scan: loop {
            let entries = match after {
                None => BTree::range(tx, &q.pending, .., want)?,
                Some(k) => BTree::range(
                    tx,
                    &q.pending,
                    (std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded),
                    want,
                )?,
            };
            let read = entries.len();
            let mut entries = entries.into_iter();
            while let Some((key, entry)) = entries.next() {
                examined += 1;
                after = Some(key);
                if !key.is_due(now) {
                    break 'scan; // later entries start later still
                }
                if let Some(deadline) = entry.deadline.filter(|d| now > *d) {
                    crate::quota::release(tx, &entry.job)?;
                    Queue::take(tx, queue, &key)?;
                    let failure = Failure::timeout(format!(
                        "the job was not started by its deadline {deadline} (checked at {now})"
                    ));
                    finish_failed(tx, &entry.job, failure, now)?;
                    claim.expired.push(entry.job);
                    continue;
                }
                let mut quotas = Vec::with_capacity(entry.quota_names.len());
                for name in &entry.quota_names {
                    // A quota removed since the put no longer limits the job.
                    if let Some(quota) = q.quotas.get(name) {
                        quotas.push(*quota);
                    }
                }
                let id = entry.job.oid();
                let mut room = true;
                for quota in &quotas {
                    // A job put back at the front still holds its places.
                    let q = tx.get(quota)?;
                    room &= q.has_room() || q.held().contains(&entry.job);
                }
                if !room {
                    continue; // stays pending until its quotas have room
                }
                claimable += 1;
                if Spread::lane_of(id, spread.lanes) == spread.lane {
                    chosen = Some((key, entry, quotas));
                    // The lane's next jobs are likely this claimer's next claims:
                    // a client storage fetches them meanwhile (with this commit).
                    let next: Vec<PRef<Job>> = entries
                        .filter(|(k, e)| {
                            k.is_due(now)
                                && Spread::lane_of(e.job.oid(), spread.lanes) == spread.lane
                        })
                        .take(spread.ahead)
                        .map(|(_, e)| e.job)
                        .collect();
                    if !next.is_empty() {
                        tx.prefetch(&next);
                    }
                    break 'scan;
                }
                first_claimable.get_or_insert((key, entry, quotas));
                if claimable >= window {
                    break 'scan;
                }
            }
            if read < want || examined >= CLAIM_SCAN_ENTRIES_MAX {
                break;
            }
            want = CLAIM_SCAN_ENTRIES_MAX - examined;
        }
        let Some((key, entry, quotas)) = chosen.or(first_claimable.filter(|_| spread.fallback))
        else {
            return Ok(claim);
        };
        let id = entry.job.oid();
        for quota in &quotas {
            tx.modify(quota, |q| q.join(entry.job))?;
        }
        Queue::take(tx, queue, &key)?;
        let location = Location::Agent {
            queue: q.name.clone(),
            dispatcher: claimer.dispatcher.clone(),
            agent: claimer.agent.clone(),
        };
        tx.modify(&entry.job, |j| {
            j.transition(id, Status::Assigned, now)?;
            j.set_location(location);
            Ok::<_, Error>(())
        })??;
        claim.job = Some(entry.job);
        Ok(claim)
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
        crate::quota::release(tx, job)?;
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
        let queue = Queue::named(tx, &name)?;
        // Back at the front, it keeps its quota places (jobs waiting for them stay
        // waiting); scheduled later, it lets them go.
        if retry_at.is_some() {
            crate::quota::release(tx, job)?;
        }
        let now = Timestamp::now();
        let key = match retry_at {
            None => QueueKey {
                lane: LANE_PUT_BACK,
                at: now,
                job: id.0,
            },
            Some(at) => QueueKey {
                lane: LANE_SCHEDULED,
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

    /// Creates the quota `name` of `queue` with room for `size` held jobs, or
    /// resizes it.
    pub fn set_quota(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        name: &str,
        size: u32,
    ) -> Result<PRef<Quota>> {
        if let Some(quota) = Queue::quota(tx, queue, name)? {
            if tx.get(&quota)?.size() != size {
                tx.modify(&quota, |q| q.set_size(size))?;
            }
            return Ok(quota);
        }
        let count = tx.get(queue)?.quotas.len();
        if count >= QUOTAS_MAX {
            return Err(Error::LimitExceeded {
                what: "the quotas of a queue",
                len: count + 1,
                max: QUOTAS_MAX,
            });
        }
        let quota = tx.add(Quota::new(name, size))?;
        tx.modify(queue, |q| q.quotas.insert(name.to_string(), quota))?;
        Ok(quota)
    }

    /// The dispatchers registered in `queue`, by id.
    pub fn dispatchers(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
    ) -> Result<BTreeMap<String, PRef<crate::dispatcher::DispatcherRecord>>> {
        Ok(tx.get(queue)?.dispatchers.clone())
    }

    /// The jobs that ended in this queue without a run, if any did.
    pub(crate) fn ended(&self) -> Option<PRef<Ended>> {
        self.ended
    }

    pub(crate) fn set_ended(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        ended: PRef<Ended>,
    ) -> Result<()> {
        tx.modify(queue, |q| q.ended = Some(ended))?;
        Ok(())
    }

    /// The tree of pending jobs.
    #[cfg(test)]
    pub(crate) fn pending_tree(&self) -> PRef<BTree<QueueKey, Entry>> {
        self.pending
    }

    /// The dispatcher registry, without cloning it.
    pub(crate) fn dispatchers_ref(
        &self,
    ) -> &BTreeMap<String, PRef<crate::dispatcher::DispatcherRecord>> {
        &self.dispatchers
    }

    pub(crate) fn add_dispatcher(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        id: &str,
        record: PRef<crate::dispatcher::DispatcherRecord>,
    ) -> Result<()> {
        tx.modify(queue, |q| q.dispatchers.insert(id.to_string(), record))?;
        Ok(())
    }

    /// The quota `name` of `queue`.
    pub fn quota(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        name: &str,
    ) -> Result<Option<PRef<Quota>>> {
        Ok(tx.get(queue)?.quotas.get(name).copied())
    }
}

/// Fails a job that has not run to a result (NEW, PENDING or ASSIGNED → CALLBACKS):
/// a pending job leaves its queue; the failure (default: a timeout) becomes its
/// result; with no callbacks to run it is COMPLETED at once, otherwise it stays in
/// CALLBACKS until a worker adopts it and runs them
/// ([`crate::Dispatchers::adopt_ended`]) or the caller runs them
/// (`Runner::finish_callbacks`). It is kept among the ended jobs of its queue (the
/// default queue for a NEW job outside any queue; see [`crate::ended`]).
pub fn fail(tx: &mut Transaction<'_>, job: &PRef<Job>, failure: Option<Failure>) -> Result<()> {
    let id = job.oid();
    let j = tx.get(job)?;
    let queue_name = crate::ended::queue_of(j.location()).map(str::to_string);
    if let (Status::Pending, Location::Queue { queue, key }) = (j.status(), j.location()) {
        let queue = Queue::named(tx, queue)?;
        crate::quota::release(tx, job)?;
        Queue::take(tx, &queue, key)?;
    } else if j.status() == Status::Assigned {
        crate::quota::release(tx, job)?;
    } else if j.status() != Status::New {
        return Err(Error::IllegalTransition {
            job: id,
            from: j.status(),
            to: Status::Callbacks,
        });
    }
    let failure = failure.unwrap_or_else(|| Failure::timeout("failed without an error"));
    let now = Timestamp::now();
    finish_failed(tx, job, failure, now)?;
    // Kept where inspection finds it and pack keeps it; its callbacks are run by
    // the worker that adopts it.
    if let Some(name) = queue_name {
        crate::ended::record(tx, &name, *job, now)?;
    }
    Ok(())
}

/// Stores `failure` as the result (→ CALLBACKS, → COMPLETED when there are no
/// callbacks), records it in the error history and logs it at the job's level.
fn finish_failed(
    tx: &mut Transaction<'_>,
    job: &PRef<Job>,
    failure: Failure,
    now: Timestamp,
) -> Result<()> {
    let id = job.oid();
    tx.modify(job, |j| {
        j.transition(id, Status::Callbacks, now)?;
        j.record_error(now, &failure);
        j.set_result(Outcome::Failure(failure.clone()));
        j.set_location(Location::None);
        if j.callbacks().is_empty() {
            j.transition(id, Status::Completed, now)?;
        }
        crate::job::log_failure(id, j, &failure);
        Ok::<_, Error>(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn dir(entries: &[(&str, u64)]) -> QueueDirectory {
        let mut queues = BTreeMap::new();
        for (name, oid) in entries {
            queues.insert(name.to_string(), PRef::from_oid(Oid(*oid)));
        }
        QueueDirectory { queues }
    }

    #[test]
    fn the_directory_merges_queues_created_under_different_names() {
        let old = dir(&[("", 1)]);
        assert_eq!(
            QueueDirectory::resolve_conflict(
                &old,
                &dir(&[("", 1), ("a", 2)]),
                &dir(&[("", 1), ("b", 3)])
            ),
            Some(dir(&[("", 1), ("a", 2), ("b", 3)]))
        );
        // The same name created twice is a real conflict: the retry finds the winner.
        assert_eq!(
            QueueDirectory::resolve_conflict(
                &old,
                &dir(&[("", 1), ("a", 2)]),
                &dir(&[("", 1), ("a", 4)])
            ),
            None
        );
    }

    /// Queues stored before `ended` existed read as queues without ended jobs.
    #[test]
    fn a_queue_record_without_ended_reads_as_none() {
        let queue = Queue {
            name: "q".into(),
            pending: PRef::from_oid(Oid(2)),
            size: PRef::from_oid(Oid(3)),
            quotas: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
            ended: None,
        };
        let mut payload = postcard::to_allocvec(&queue).unwrap();
        assert_eq!(payload.pop(), Some(0), "ended None is the last byte");
        let old = zodiac_objects::record::encode(Queue::TYPE_NAME, &[Oid(2), Oid(3)], &payload);
        let read = zodiac_objects::decode_value::<Queue>(&old)
            .unwrap()
            .unwrap();
        assert_eq!(read, queue);
    }

    #[test]
    fn keys_order_put_backs_first_then_by_time_then_by_job() {
        let k = |lane, at, job| QueueKey {
            lane,
            at: Timestamp(at),
            job,
        };
        let mut keys = vec![
            k(1, 5, 1),
            k(1, 3, 9),
            k(0, 100, 4),
            k(1, 3, 2),
            k(0, 50, 7),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                k(0, 50, 7),
                k(0, 100, 4),
                k(1, 3, 2),
                k(1, 3, 9),
                k(1, 5, 1)
            ]
        );
    }
}
