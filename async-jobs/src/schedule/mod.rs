//! Recurring jobs: schedules that put a job in a queue at each tick of a cron
//! expression (UTC), put by the workers of that queue.
//!
//! Each worker checks the schedules of its queues at each poll, at most once per
//! poll interval or when a tick is due (see `crate::worker`), and puts the due
//! ticks ([`put_due`]), each in a transaction that also advances the schedule.
//!
//! Invariants:
//! - One job per tick however many workers run: the put and the schedule's
//!   advance commit together, and the schedule does not merge, so of two workers
//!   putting one tick only one commits; the other's retry finds it put. A worker
//!   that dies before its commit put nothing, and the next worker's poll puts
//!   the tick.
//! - Missed ticks coalesce (the documented rule): a put at time `now` covers
//!   every tick up to `now` with one job, and the schedule's next tick is the
//!   first after `now`. So after downtime a schedule puts one job at once, not
//!   one per tick missed; the others are counted in its `missed`.
//! - A job is put even if the previous tick's job has not run yet (as cron does),
//!   unless the schedule names a unique key: then a tick whose key an earlier
//!   job of the queue holds puts no job, advances the schedule all the same, and
//!   is counted in `held`. A quota keeps the jobs from running at once instead.
//! - A schedule added or replaced starts at its first tick after that commit.

mod cron;

use zodiac_objects::{PRef, Transaction};

pub use self::cron::{CRON_EXPRESSION_BYTES_MAX, CronExpr};
use crate::error::{Error, Result};
use crate::model::attempt_limit::AttemptLimit;
use crate::model::job::{HANDLER_NAME_BYTES_MAX, Job};
use crate::model::queue::{QUEUE_NAME_BYTES_MAX, Queue};
use crate::model::queue_key::PRIORITY_MAX;
use crate::model::schedule::{
    SCHEDULE_NAME_BYTES_MAX, SCHEDULES_MAX, SCHEDULES_ROOT_KEY, Schedule, ScheduleDirectory,
};
use crate::queue::{PutOptions, Unique};
use crate::time::Timestamp;

/// The annotation of a job a schedule put: the schedule's name and the tick
/// (postcard `(String, u64)`, the tick in microseconds; see [`scheduled_by`]).
pub const SCHEDULE_ANNOTATION: &str = "zodiac.async.schedule";

/// Most missed ticks counted by one put (the count of a longer downtime stops
/// there: counting walks the ticks one by one).
pub const MISSED_COUNTED_MAX: u64 = 100_000;

/// What a new schedule puts, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Its name, unique in the database.
    pub name: String,
    /// The cron expression ([`CronExpr`]).
    pub expression: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// Its jobs' handler.
    pub handler: String,
    /// Its jobs' arguments (postcard).
    pub arguments: Vec<u8>,
    /// Its jobs' priority (0 highest, the default).
    pub priority: u8,
    /// Its jobs' attempt limit (default: the queue's).
    pub attempt_limit: Option<AttemptLimit>,
    /// Quotas of the queue its jobs count against (each must exist at each put).
    pub quota_names: Vec<String>,
    /// Its jobs' unique key: a tick puts no job while an earlier one holds it.
    pub unique: Option<Unique>,
}

impl ScheduleSpec {
    /// A schedule `name` putting `handler(arguments)` in `queue` at each tick of
    /// `expression`, at priority 0 with the queue's attempt limit.
    pub fn new(
        name: impl Into<String>,
        expression: impl Into<String>,
        queue: impl Into<String>,
        handler: impl Into<String>,
        arguments: Vec<u8>,
    ) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            expression: expression.into(),
            queue: queue.into(),
            handler: handler.into(),
            arguments,
            priority: 0,
            attempt_limit: None,
            quota_names: Vec::new(),
            unique: None,
        }
    }

    fn check(&self) -> Result<CronExpr> {
        let limits = [
            (
                "a schedule name (bytes)",
                self.name.len(),
                SCHEDULE_NAME_BYTES_MAX,
            ),
            (
                "a queue name (bytes)",
                self.queue.len(),
                QUEUE_NAME_BYTES_MAX,
            ),
            (
                "a handler name (bytes)",
                self.handler.len(),
                HANDLER_NAME_BYTES_MAX,
            ),
            (
                "a job's priority (0 is the highest)",
                self.priority.into(),
                PRIORITY_MAX.into(),
            ),
        ];
        for (what, len, max) in limits {
            if len > max {
                return Err(Error::LimitExceeded { what, len, max });
            }
        }
        // The job it would put, checked now rather than at its first tick.
        Job::new(&self.handler, self.arguments.clone())?;
        if let Some(unique) = &self.unique {
            unique.check()?;
        }
        CronExpr::parse(&self.expression)
    }
}

/// A tick a schedule put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The job it put, or the earlier job holding the schedule's unique key
    /// (then `held`).
    pub job: PRef<Job>,
    /// No job was put: `job` held the schedule's unique key.
    pub held: bool,
    /// The tick it was put for (the latest due; earlier missed ones coalesced).
    pub tick: Timestamp,
    /// The missed ticks it covers besides `tick`.
    pub missed: u64,
}

fn directory(tx: &mut Transaction<'_>) -> Result<Option<PRef<ScheduleDirectory>>> {
    Ok(tx.root_entry(SCHEDULES_ROOT_KEY)?)
}

/// The schedule `name`, if there is one.
pub fn schedule(tx: &mut Transaction<'_>, name: &str) -> Result<Option<PRef<Schedule>>> {
    let Some(dir) = directory(tx)? else {
        return Ok(None);
    };
    Ok(tx.get(&dir)?.schedules.get(name).copied())
}

/// Every schedule, by name.
pub fn schedules(tx: &mut Transaction<'_>) -> Result<Vec<(PRef<Schedule>, Schedule)>> {
    let Some(dir) = directory(tx)? else {
        return Ok(Vec::new());
    };
    let refs = tx
        .get(&dir)?
        .schedules
        .values()
        .copied()
        .collect::<Vec<_>>();
    refs.into_iter()
        .map(|r| Ok((r, (*tx.get(&r)?).clone())))
        .collect()
}

/// Adds the schedule `spec` at `now`; its first job is put at its first tick
/// after `now`. A schedule of that name is an error unless `replace`, which
/// replaces what it puts and when (its counts start over; its last job stays
/// with the jobs, no longer named by it).
pub fn add_schedule(
    tx: &mut Transaction<'_>,
    spec: &ScheduleSpec,
    now: Timestamp,
    replace: bool,
) -> Result<PRef<Schedule>> {
    let expr = spec.check()?;
    // Its quotas exist now, as a put's must (a quota removed later is reported
    // by the put of a tick).
    if !spec.quota_names.is_empty() {
        let quotas = match Queue::get(tx, &spec.queue)? {
            Some(q) => tx.get(&q)?.quotas.clone(),
            None => Default::default(),
        };
        if let Some(missing) = spec.quota_names.iter().find(|n| !quotas.contains_key(*n)) {
            return Err(Error::NoSuchQuota {
                queue: spec.queue.clone(),
                name: missing.clone(),
            });
        }
    }
    let record = Schedule {
        name: spec.name.clone(),
        expression: spec.expression.clone(),
        queue: spec.queue.clone(),
        handler: spec.handler.clone(),
        arguments: spec.arguments.clone(),
        priority: spec.priority,
        attempt_limit: spec.attempt_limit,
        quota_names: spec.quota_names.clone(),
        unique_key: spec.unique.as_ref().map(|u| u.key.clone()),
        unique_for_micros: spec
            .unique
            .as_ref()
            .and_then(|u| u.period)
            .map(|p| u64::try_from(p.as_micros()).unwrap_or(u64::MAX)),
        created: now,
        next_tick: expr.next_after(now),
        last_tick: None,
        last_job: None,
        puts: 0,
        missed: 0,
        held: 0,
        removed: false,
    };
    if let Some(existing) = schedule(tx, &spec.name)? {
        if !replace {
            return Err(Error::ScheduleExists {
                name: spec.name.clone(),
            });
        }
        // The same object: a put racing the replacement conflicts with it.
        tx.set(&existing, record)?;
        return Ok(existing);
    }
    let dir = match directory(tx)? {
        Some(dir) => dir,
        None => {
            let dir = tx.add(ScheduleDirectory::default())?;
            tx.set_root_entry(SCHEDULES_ROOT_KEY, dir)?;
            dir
        }
    };
    let count = tx.get(&dir)?.schedules.len();
    if count >= SCHEDULES_MAX {
        return Err(Error::LimitExceeded {
            what: "the schedules of a database",
            len: count + 1,
            max: SCHEDULES_MAX,
        });
    }
    let added = tx.add(record)?;
    tx.modify(&dir, |d| d.schedules.insert(spec.name.clone(), added))?;
    Ok(added)
}

/// Removes the schedule `name`: it puts no more jobs (the jobs it put stay).
pub fn remove_schedule(tx: &mut Transaction<'_>, name: &str) -> Result<()> {
    let Some(dir) = directory(tx)? else {
        return Err(Error::NoSuchSchedule { name: name.into() });
    };
    let Some(existing) = tx.get(&dir)?.schedules.get(name).copied() else {
        return Err(Error::NoSuchSchedule { name: name.into() });
    };
    tx.modify(&existing, |s| s.removed = true)?;
    tx.modify(&dir, |d| d.schedules.remove(name))?;
    Ok(())
}

/// The schedules putting jobs in one of `queues` whose next tick is due at
/// `now`, and the earliest next tick of the others.
pub fn due_in(
    tx: &mut Transaction<'_>,
    queues: &[String],
    now: Timestamp,
) -> Result<(Vec<PRef<Schedule>>, Option<Timestamp>)> {
    let (mut due, mut next) = (Vec::new(), None::<Timestamp>);
    for (r, s) in schedules(tx)? {
        if !queues.contains(&s.queue) {
            continue;
        }
        match s.next_tick {
            Some(t) if t <= now => due.push(r),
            Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
            None => {}
        }
    }
    Ok((due, next))
}

/// Puts the job of `schedule`'s due tick at `now`, coalescing the missed ones,
/// and advances the schedule to its first tick after `now`; nothing if no tick
/// is due (another worker put it) or the schedule was removed.
pub fn put_due(
    tx: &mut Transaction<'_>,
    schedule: &PRef<Schedule>,
    now: Timestamp,
) -> Result<Option<Tick>> {
    let s = tx.get(schedule)?;
    let Some(first_due) = s.next_tick.filter(|t| *t <= now && !s.removed) else {
        return Ok(None);
    };
    let expr = CronExpr::parse(&s.expression)?;
    let (mut tick, mut missed) = (first_due, 0u64);
    let mut next = expr.next_after(first_due);
    while let Some(t) = next.filter(|t| *t <= now) {
        if missed == MISSED_COUNTED_MAX {
            // Counting stops here; the job is still put for the latest tick.
            tick = latest_tick_at_or_before(&expr, now).unwrap_or(tick);
            next = expr.next_after(now);
            break;
        }
        (tick, missed) = (t, missed + 1);
        next = expr.next_after(t);
    }
    let mut job = Job::new(&s.handler, s.arguments.clone())?;
    let annotation = postcard::to_stdvec(&(s.name.as_str(), tick.as_micros()))
        .map_err(Error::EncodeArguments)?;
    job.annotate(SCHEDULE_ANNOTATION, annotation)?;
    let mut options = PutOptions::new().priority(s.priority);
    if let Some(limit) = s.attempt_limit {
        options = options.attempt_limit(limit);
    }
    for name in &s.quota_names {
        options = options.quota(name.clone());
    }
    if let Some(key) = &s.unique_key {
        let mut unique = Unique::new(key.clone());
        if let Some(period) = s.unique_for() {
            unique = unique.for_period(period);
        }
        options = options.unique(unique);
    }
    let queue = Queue::get_or_create(tx, &s.queue)?;
    let queued = Queue::put_job_unique(tx, &queue, job, options)?;
    let (job, held) = (queued.job, queued.existing);
    tx.modify(schedule, |s| {
        s.next_tick = next;
        s.missed = s.missed.saturating_add(missed);
        if held {
            s.held += 1;
        } else {
            s.last_tick = Some(tick);
            s.last_job = Some(job);
            s.puts += 1;
        }
    })?;
    Ok(Some(Tick {
        job,
        held,
        tick,
        missed,
    }))
}

/// The latest tick of `expr` at or before `now`, looking back twice as far at
/// each step (up to about 34 years): a few evaluations, however many ticks
/// passed.
fn latest_tick_at_or_before(expr: &CronExpr, now: Timestamp) -> Option<Timestamp> {
    const LOOK_BACK_STEPS_MAX: u32 = 30;
    let mut back = std::time::Duration::from_secs(1);
    for _ in 0..LOOK_BACK_STEPS_MAX {
        let from = Timestamp::from_micros(now.as_micros().saturating_sub(back.as_micros() as u64));
        if let Some(first) = expr.next_after(from).filter(|t| *t <= now) {
            let mut latest = first;
            while let Some(t) = expr.next_after(latest).filter(|t| *t <= now) {
                latest = t;
            }
            return Some(latest);
        }
        back *= 2;
    }
    None
}

/// The schedule that put `job` and the tick it was put for, if a schedule put it.
pub fn scheduled_by(job: &Job) -> Option<(String, Timestamp)> {
    let bytes = job.annotations().get(SCHEDULE_ANNOTATION)?;
    let (name, micros): (String, u64) = postcard::from_bytes(bytes).ok()?;
    Some((name, Timestamp::from_micros(micros)))
}
