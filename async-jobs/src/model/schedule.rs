//! The stored records of recurring jobs: the directory of schedules and a
//! schedule (the operations on them are in `crate::schedule`).
//!
//! Layout: the root entry [`SCHEDULES_ROOT_KEY`] names a [`ScheduleDirectory`]
//! (schedule name → [`Schedule`]). A schedule holds what each of its jobs is
//! made of (queue, handler, arguments, priority, attempt limit, quotas, unique
//! key), its cron
//! expression, and where it stands: the next tick not yet put, the last job put.
//!
//! Invariants:
//! - A schedule does not merge: every tick's put writes it, so two workers
//!   putting the same tick conflict and only one commits (the other's retry
//!   finds the tick put). One job per tick, however many workers run.
//! - `next_tick` only moves forward, to the first tick after the time of the put
//!   that moved it; the ticks it skipped are counted in `missed`.
//! - A removed schedule is marked `removed` in the transaction that takes it out
//!   of the directory, so a put racing the removal conflicts with it.
//! - `last_job` is a reference, so pack and GC keep the last job a schedule put.
//! - The directory merges additions and removals of distinct names; any other
//!   concurrent change is refused (the retry sees the other's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zodiac_objects::{PRef, Persistent};

use crate::model::attempt_limit::AttemptLimit;
use crate::model::job::Job;
use crate::time::Timestamp;

/// The root entry holding the schedule directory (reserved for this crate).
pub const SCHEDULES_ROOT_KEY: &str = "zodiac.async.schedules";
/// Most bytes of a schedule name.
pub const SCHEDULE_NAME_BYTES_MAX: usize = 255;
/// Most schedules of a database.
pub const SCHEDULES_MAX: usize = 10_000;

/// Every schedule of the database, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDirectory {
    pub(crate) schedules: BTreeMap<String, PRef<Schedule>>,
}

impl Persistent for ScheduleDirectory {
    const TYPE_NAME: &'static str = "zodiac.async.ScheduleDirectory";
    const MERGES: bool = true;

    /// Schedules added or removed concurrently under different names merge.
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let mut schedules = committed.schedules.clone();
        for (name, s) in &mine.schedules {
            match (old.schedules.get(name), committed.schedules.get(name)) {
                (None, None) => {
                    schedules.insert(name.clone(), *s);
                }
                (Some(o), Some(c)) if o == s && c == s => {}
                _ => return None,
            }
        }
        for (name, o) in &old.schedules {
            if mine.schedules.contains_key(name) {
                continue;
            }
            // Removed by mine: the committed side must not have replaced it.
            match committed.schedules.get(name) {
                Some(c) if c == o => {
                    schedules.remove(name);
                }
                None => {}
                Some(_) => return None,
            }
        }
        Some(ScheduleDirectory { schedules })
    }
}

/// A recurring job: what to put, when, and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub(crate) name: String,
    /// The cron expression (`crate::schedule::CronExpr`), as given.
    pub(crate) expression: String,
    pub(crate) queue: String,
    pub(crate) handler: String,
    #[serde(with = "serde_bytes")]
    pub(crate) arguments: Vec<u8>,
    pub(crate) priority: u8,
    pub(crate) attempt_limit: Option<AttemptLimit>,
    /// Quotas of the queue its jobs count against (each must exist at a put).
    pub(crate) quota_names: Vec<String>,
    /// Its jobs' unique key: a tick whose key is held by an earlier job of the
    /// queue puts no job (counted in `held`).
    pub(crate) unique_key: Option<String>,
    /// With `unique_key`: how long after its put a job keeps holding the key,
    /// in microseconds, even once completed.
    pub(crate) unique_for_micros: Option<u64>,
    pub(crate) created: Timestamp,
    /// The first tick not yet put (`None`: the expression has no more ticks).
    pub(crate) next_tick: Option<Timestamp>,
    /// The tick of the last job put.
    pub(crate) last_tick: Option<Timestamp>,
    pub(crate) last_job: Option<PRef<Job>>,
    /// Jobs put.
    pub(crate) puts: u64,
    /// Ticks that passed while no worker of the queue ran and that were
    /// coalesced into the next job (counted up to `MISSED_COUNTED_MAX` per put).
    pub(crate) missed: u64,
    /// Ticks that put no job because an earlier job held the unique key.
    pub(crate) held: u64,
    pub(crate) removed: bool,
}

impl Persistent for Schedule {
    const TYPE_NAME: &'static str = "zodiac.async.Schedule";
}

impl Schedule {
    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its cron expression, as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }
    /// The queue its jobs are put in.
    pub fn queue(&self) -> &str {
        &self.queue
    }
    /// Its jobs' handler.
    pub fn handler(&self) -> &str {
        &self.handler
    }
    /// Its jobs' arguments (postcard).
    pub fn argument_bytes(&self) -> &[u8] {
        &self.arguments
    }
    /// Its jobs' priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }
    /// Its jobs' attempt limit, if it names one.
    pub fn attempt_limit(&self) -> Option<&AttemptLimit> {
        self.attempt_limit.as_ref()
    }
    /// The quotas its jobs count against.
    pub fn quota_names(&self) -> &[String] {
        &self.quota_names
    }
    /// Its jobs' unique key, if it names one.
    pub fn unique_key(&self) -> Option<&str> {
        self.unique_key.as_deref()
    }
    /// With a unique key: how long a job holds it after its put.
    pub fn unique_for(&self) -> Option<std::time::Duration> {
        self.unique_for_micros.map(std::time::Duration::from_micros)
    }
    /// When it was added (or last replaced).
    pub fn created(&self) -> Timestamp {
        self.created
    }
    /// The first tick not yet put, if the expression has one.
    pub fn next_tick(&self) -> Option<Timestamp> {
        self.next_tick
    }
    /// The tick of the last job put, if any was.
    pub fn last_tick(&self) -> Option<Timestamp> {
        self.last_tick
    }
    /// The last job put, if any was.
    pub fn last_job(&self) -> Option<PRef<Job>> {
        self.last_job
    }
    /// How many jobs it put.
    pub fn puts(&self) -> u64 {
        self.puts
    }
    /// How many ticks were coalesced into later jobs (missed while no worker ran).
    pub fn missed(&self) -> u64 {
        self.missed
    }
    /// How many ticks put no job because an earlier job held the unique key.
    pub fn held(&self) -> u64 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodiac_storage::Oid;

    fn dir(names: &[(&str, u64)]) -> ScheduleDirectory {
        ScheduleDirectory {
            schedules: names
                .iter()
                .map(|(n, o)| (n.to_string(), PRef::from_oid(Oid(*o))))
                .collect(),
        }
    }

    #[test]
    fn additions_and_removals_of_distinct_names_merge() {
        let old = dir(&[("a", 1), ("b", 2)]);
        let committed = dir(&[("a", 1), ("b", 2), ("c", 3)]);
        let mine = dir(&[("b", 2), ("d", 4)]);
        let merged = ScheduleDirectory::resolve_conflict(&old, &committed, &mine).unwrap();
        assert_eq!(merged, dir(&[("b", 2), ("c", 3), ("d", 4)]));
    }

    #[test]
    fn the_same_name_changed_on_both_sides_does_not_merge() {
        let old = dir(&[("a", 1)]);
        // Both added "n".
        let both = (dir(&[("a", 1), ("n", 5)]), dir(&[("a", 1), ("n", 6)]));
        assert!(ScheduleDirectory::resolve_conflict(&old, &both.0, &both.1).is_none());
        // Mine removed "a" while the committed side replaced it.
        let replaced = dir(&[("a", 7)]);
        assert!(ScheduleDirectory::resolve_conflict(&old, &replaced, &dir(&[])).is_none());
        // Mine replaced "a" while the committed side removed it.
        assert!(ScheduleDirectory::resolve_conflict(&old, &dir(&[]), &replaced).is_none());
    }
}
