//! Claiming jobs from a queue: the next due job in claim order, spread over
//! concurrent claimers, expiring the jobs found past their deadline.
//!
//! Invariants:
//! - A claim from a paused queue ([`Queue::pause`]) takes nothing and expires nothing.
//! - A claimed job joins each quota it names and the queue's every-job quota
//!   (added to its names, so its release lets go of it); a job is claimable
//!   only while each has room.
//! - Claims honour priorities: a claim takes a job only when no claimable job of
//!   a higher priority came before it in key order (the spread's preference for
//!   its own lane is kept among the jobs of the first claimable job's priority);
//!   a scheduled job not yet due skips the scan to the next lane, never past the
//!   jobs of a lower priority that are due.
//! - A claim never takes a job whose scheduled time is after `now`, and never starts a
//!   job whose deadline (`begin_after + begin_by`) has passed: that job completes
//!   with a timeout failure instead, kept by the claiming agent or, for a claim no
//!   agent made, among the queue's ended jobs ([`crate::ended`]), in the claim's
//!   transaction.
//! - One claim examines at most [`CLAIM_SCAN_ENTRIES_MAX`] entries.
//! - [`Queue::claim_spread`] prefers the claimer's own lane of jobs ([`Spread`]: a
//!   hash of the job's oid) among the first `lanes × SPREAD_WINDOW_PER_LANE`
//!   claimable jobs, else (with `fallback`, or when the scan met the end of the
//!   claimables' priority) the `lane mod n`-th from the last of the `n`
//!   claimable ones it met (their own lanes' claimers take them from the
//!   first): concurrent claimers (a
//!   worker's lane is its rank among the queue's live dispatchers, rotated over
//!   time) then take distinct jobs even while their snapshots lag each other's
//!   claims, and no job is passed over by more than that window.
//!   [`Spread::NONE`] (one lane) is strict claim order.
//! - A job naming quotas is claimed only when each has room (see [`crate::Quota`]);
//!   until then it stays pending and later jobs may be claimed ahead of it. A job
//!   put back at the front keeps its quota places until claimed again. Quota
//!   jobs do write their quota object on claim and release: a quota is a deliberate
//!   point of coordination.

use zodiac_objects::{BTree, PRef, Transaction};
use zodiac_storage::Oid;

use crate::error::{Error, Result};
use crate::model::failure::Failure;
use crate::model::job::{Job, Location};
use crate::model::queue::{Entry, Queue, QueueKey};
use crate::model::queue_key::LANES;
use crate::model::quota::Quota;
use crate::model::status::Status;
use crate::queue::finish_failed;
use crate::time::Timestamp;
/// Most pending entries one claim examines (expired jobs it completes count too).
pub const CLAIM_SCAN_ENTRIES_MAX: usize = 64;
/// Entries a claim reads first, beyond two per lane of its [`Spread`] (its lane's
/// job, and usually its lane's next one, which the claim prefetches); it reads up
/// to [`CLAIM_SCAN_ENTRIES_MAX`] only when none of them can be taken.
const CLAIM_FIRST_READ: usize = 2;
/// Claimable jobs per lane a spread claim looks through for one of its own lane
/// before it takes another claimable one ([`Spread`]).
pub const SPREAD_WINDOW_PER_LANE: usize = 4;

/// How concurrent claimers spread over a queue's claimable jobs: each job belongs
/// to one of `lanes` lanes (a hash of its oid, [`Spread::lane_of`]), and a claimer
/// prefers jobs of its `lane`. Claimers with distinct lanes take distinct jobs
/// however stale their snapshots are; claiming "the k-th claimable job" instead
/// collides whenever one claimer has not yet seen another's claim (as a client
/// of a server often has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    /// The claimer's lane.
    pub lane: usize,
    /// How many lanes there are.
    pub lanes: usize,
    /// How many of the lane's next claimable jobs a claim asks a client storage
    /// to fetch meanwhile (1; a worker that claims in batches asks for more). The
    /// claim also looks this many times further for a job of its lane.
    pub ahead: usize,
    /// Whether a claim that finds no job of its lane takes another claimable
    /// one (`true`), or nothing (the later claims of a batch: a stale snapshot
    /// still shows the jobs other claimers took, and taking one conflicts).
    /// Either way, the last claimable jobs of a priority are taken before the
    /// claimer's lane's jobs of the next: a batch does not end at a priority's
    /// end, nor skip past it.
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

/// Who claims: an agent of a dispatcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimer {
    /// The dispatcher id.
    pub dispatcher: String,
    /// The agent's name.
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

impl Queue {
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
    /// claimable ones, and when there is none the `lane mod n`-th of the `n` it met (of one priority): concurrent
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
        if q.paused {
            return Ok(claim); // an operator paused it: nothing is claimed or expired
        }
        let Some((key, entry, quotas)) = Queue::scan(tx, queue, &q, now, spread, &mut claim)?
        else {
            return Ok(claim);
        };
        let id = entry.job.oid();
        for quota in &quotas {
            tx.modify(quota, |q| q.join(entry.job))?;
        }
        // The queue's every-job quota joins the job's names, so that its release
        // (which reads them) lets go of it.
        let every_job = every_job_quota(&q, &entry)
            .filter(|name| q.quotas.contains_key(*name))
            .cloned();
        Queue::take(tx, queue, &key)?;
        let location = Location::Agent {
            queue: q.name.clone(),
            dispatcher: claimer.dispatcher.clone(),
            agent: claimer.agent.clone(),
        };
        tx.modify(&entry.job, |j| {
            j.transition(id, Status::Assigned, now)?;
            j.set_location(location);
            if let Some(name) = every_job
                && !j.quota_names().contains(&name)
            {
                let mut names = j.quota_names().to_vec();
                names.push(name);
                j.set_quota_names(names);
            }
            Ok::<_, Error>(())
        })??;
        claim.job = Some(entry.job);
        Ok(claim)
    }

    /// The scan of a claim (see [`Queue::claim_spread`]): the entry to take, with
    /// the quotas it joins, if any is claimable; the expired jobs it met are
    /// completed and listed in `claim`.
    #[allow(clippy::type_complexity)]
    fn scan(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        q: &Queue,
        now: Timestamp,
        spread: Spread,
        claim: &mut Claim,
    ) -> Result<Option<(QueueKey, Entry, Vec<PRef<Quota>>)>> {
        let mut examined = 0usize;
        let mut claimable = 0usize;
        let window = spread.lanes.max(1) * SPREAD_WINDOW_PER_LANE * spread.ahead.max(1);
        // The claimable jobs met before one of the claimer's lane, all of one
        // priority (the first claimable job's).
        let mut claimables: Vec<(QueueKey, Entry, Vec<PRef<Quota>>)> = Vec::new();
        let mut chosen: Option<(QueueKey, Entry, Vec<PRef<Quota>>)> = None;
        let mut from: std::ops::Bound<QueueKey> = std::ops::Bound::Unbounded;
        // Whether the scan stopped at the end of the claimables' priority.
        let mut priority_ended = false;
        // Read a few entries first (usually one of them is taken), then the rest
        // of the scan's allowance if needed.
        let mut want = ((1 + spread.ahead) * spread.lanes.max(1) + CLAIM_FIRST_READ)
            .min(CLAIM_SCAN_ENTRIES_MAX);
        'scan: loop {
            let entries = BTree::range(tx, &q.pending, (from, std::ops::Bound::Unbounded), want)?;
            let read = entries.len();
            let mut entries = entries.into_iter();
            while let Some((key, entry)) = entries.next() {
                examined += 1;
                from = std::ops::Bound::Excluded(key);
                if claimables
                    .first()
                    .is_some_and(|(k, _, _)| key.priority() > k.priority())
                {
                    priority_ended = true;
                    break 'scan; // only jobs of a lower priority remain
                }
                if !key.is_due(now) {
                    // This lane's later entries start later still: go on with
                    // the next lane (a lower priority's due jobs).
                    if key.lane + 1 >= LANES || examined >= CLAIM_SCAN_ENTRIES_MAX {
                        break 'scan;
                    }
                    from = std::ops::Bound::Included(key.next_lane_start());
                    want = want.min(CLAIM_SCAN_ENTRIES_MAX - examined);
                    continue 'scan;
                }
                if let Some(deadline) = entry.deadline.filter(|d| now > *d) {
                    expire(tx, queue, &key, &entry, deadline, now)?;
                    claim.expired.push(entry.job);
                    continue;
                }
                let Some(quotas) = quotas_with_room(tx, q, &entry)? else {
                    continue; // stays pending until its quotas have room
                };
                let id = entry.job.oid();
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
                claimables.push((key, entry, quotas));
                if claimable >= window {
                    break 'scan;
                }
            }
            if read < want || examined >= CLAIM_SCAN_ENTRIES_MAX {
                // `read < want`: the tree has no entries after `from`.
                break;
            }
            want = CLAIM_SCAN_ENTRIES_MAX - examined;
        }
        // Without fallback a claim keeps to its lane, except at the end of a
        // priority: the last jobs of a higher priority go before the claimer's
        // lane's jobs of the next one.
        if chosen.is_some() || claimables.is_empty() || !(spread.fallback || priority_ended) {
            return Ok(chosen);
        }
        // None of the claimer's lane: one of the others, by the claimer's lane, so
        // that claimers meeting the same few jobs (the end of a priority, or of
        // the queue) take distinct ones instead of all the first; counted from
        // the last, as the jobs' own lanes' claimers take them from the first.
        let pick = claimables.len() - 1 - spread.lane % claimables.len();
        Ok(Some(claimables.swap_remove(pick)))
    }
}

/// The queue's every-job quota, when `entry`'s job does not name it itself.
fn every_job_quota<'q>(q: &'q Queue, entry: &Entry) -> Option<&'q String> {
    q.every_job_quota
        .as_ref()
        .filter(|name| !entry.quota_names.contains(name))
}

/// The quotas `entry`'s job joins when claimed, if each has room (a job put back
/// at the front still holds its places); `None` when one is full.
fn quotas_with_room(
    tx: &mut Transaction<'_>,
    q: &Queue,
    entry: &Entry,
) -> Result<Option<Vec<PRef<Quota>>>> {
    let mut quotas = Vec::with_capacity(entry.quota_names.len() + 1);
    for name in entry.quota_names.iter().chain(every_job_quota(q, entry)) {
        // A quota removed since the put no longer limits the job.
        if let Some(quota) = q.quotas.get(name) {
            quotas.push(*quota);
        }
    }
    let mut room = true;
    for quota in &quotas {
        let q = tx.get(quota)?;
        room &= q.has_room() || q.held().contains(&entry.job);
    }
    Ok(room.then_some(quotas))
}

/// Completes the pending job of `entry` (under `key`), found past its
/// `deadline` at `now`, with a timeout failure.
fn expire(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    key: &QueueKey,
    entry: &Entry,
    deadline: Timestamp,
    now: Timestamp,
) -> Result<()> {
    crate::queue::release(tx, &entry.job)?;
    Queue::take(tx, queue, key)?;
    let failure = Failure::timeout(format!(
        "the job was not started by its deadline {deadline} (checked at {now})"
    ));
    finish_failed(tx, &entry.job, failure, now)
}
