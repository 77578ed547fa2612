//! Per handler statistics of a queue's retained COMPLETED jobs: how many ended
//! each way, and their run time's median and 99th percentile.
//!
//! Invariants:
//! - Only the jobs the queue and its agents retain are read (as
//!   [`super::endings`] reads them), at most [`super::ENDINGS_JOBS_MAX`]; the
//!   flag returned says whether every one was read. Nothing is written.
//! - A job's run time is `active_end - active_start` of its last attempt; a job
//!   that never started (cancelled, expired before its start) has none and is
//!   counted by ending only.
//! - Percentiles are nearest-rank over the run times read: `p50` and `p99` are
//!   run times some job took, never an interpolation.

use std::collections::BTreeMap;
use std::time::Duration;

use zodiac_objects::Transaction;

use crate::error::Result;
use crate::model::job::Ending;
use crate::model::queue::Queue;

/// One handler's completed jobs in one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Completed jobs by how they ended.
    pub endings: BTreeMap<Ending, u64>,
    /// How many of them ran (have a run time).
    pub runs: u64,
    /// The median run time, when any ran.
    pub run_p50: Option<Duration>,
    /// The 99th percentile run time, when any ran.
    pub run_p99: Option<Duration>,
}

/// The retained COMPLETED jobs of queue `name` by handler, and whether every one
/// was read; `None` if there is no such queue.
pub fn handler_stats(
    tx: &mut Transaction<'_>,
    name: &str,
) -> Result<Option<(BTreeMap<String, HandlerStats>, bool)>> {
    if Queue::get(tx, name)?.is_none() {
        return Ok(None);
    }
    let mut stats: BTreeMap<String, HandlerStats> = BTreeMap::new();
    let mut run_times: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut read = 0usize;
    let mut all = true;
    crate::queue::retained::find(tx, Some(name), &mut |tx, job| {
        if read >= super::ENDINGS_JOBS_MAX {
            all = false;
            return Ok(false);
        }
        read += 1;
        let j = tx.get(&job)?;
        let Some(outcome) = j.outcome() else {
            return Ok(false);
        };
        let entry = stats.entry(j.handler().to_string()).or_default();
        *entry.endings.entry(outcome.ending()).or_insert(0) += 1;
        if let (Some(start), Some(end)) = (j.active_start(), j.active_end()) {
            run_times
                .entry(j.handler().to_string())
                .or_default()
                .push(end.since(start));
        }
        Ok(false) // counted, not collected
    })?;
    for (handler, mut times) in run_times {
        times.sort_unstable();
        let entry = stats.entry(handler).or_default();
        entry.runs = times.len() as u64;
        entry.run_p50 = nearest_rank(&times, 50);
        entry.run_p99 = nearest_rank(&times, 99);
    }
    Ok(Some((stats, all)))
}

/// The `percent`-th percentile of `sorted` by nearest rank: the smallest value
/// with at least `percent`% of the values at or below it.
fn nearest_rank(sorted: &[Duration], percent: usize) -> Option<Duration> {
    assert!((1..=100).contains(&percent), "a percentile is 1..=100");
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * percent).div_ceil(100);
    Some(sorted[rank.max(1) - 1])
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;
    use std::time::Duration;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_are_values_taken() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&ms(&[7]), 50), Some(Duration::from_millis(7)));
        assert_eq!(nearest_rank(&ms(&[7]), 99), Some(Duration::from_millis(7)));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            nearest_rank(&ms(&hundred), 50),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            nearest_rank(&ms(&hundred), 99),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            nearest_rank(&ms(&[1, 2, 3]), 50),
            Some(Duration::from_millis(2))
        );
        assert_eq!(
            nearest_rank(&ms(&[1, 2, 3]), 99),
            Some(Duration::from_millis(3))
        );
    }
}
