//! Unique jobs: a put naming a unique key returns the job that holds that key
//! in its queue instead of queueing a second one.
//!
//! Invariants:
//! - The check and the put are one transaction: the put reads the key's entry in
//!   the queue's unique index and, when it queues the job, writes that entry. Two
//!   producers racing with one key both write the one entry, so they conflict;
//!   the retry of the loser finds the winner's job. No duplicate is ever queued,
//!   however many producers (threads, processes, clients of a server).
//! - The index is created by the first unique put of a queue (writing the queue
//!   object once); puts without a key never read or write it.
//! - An entry is removed when its job is dropped by retention or discarded, if
//!   it still names that job, so the index keeps no dropped job reachable.

use std::time::Duration;

use zodiac_objects::{BTree, PRef, Transaction};

use crate::error::{Error, Result};
use crate::model::job::Job;
use crate::model::queue::Queue;
use crate::model::unique::{UNIQUE_KEY_BYTES_MAX, UniqueEntry};
use crate::time::Timestamp;

/// A put's unique key: at most one job with it in its queue while that job is
/// not completed, or for `period` after its put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unique {
    /// The key (at most [`UNIQUE_KEY_BYTES_MAX`] bytes).
    pub key: String,
    /// How long after the put the key stays held even when the job completed.
    pub period: Option<Duration>,
}

impl Unique {
    /// The key `key`, held while its job is not completed.
    pub fn new(key: impl Into<String>) -> Unique {
        Unique {
            key: key.into(),
            period: None,
        }
    }

    /// The key held for `period` after the put too.
    pub fn for_period(mut self, period: Duration) -> Unique {
        self.period = Some(period);
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.key.len() > UNIQUE_KEY_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "a unique key (bytes)",
                len: self.key.len(),
                max: UNIQUE_KEY_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// The job holding `key` in `queue` at `now`, if one does.
pub(crate) fn holder(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    key: &str,
    now: Timestamp,
) -> Result<Option<PRef<Job>>> {
    let Some(index) = tx.get(queue)?.unique else {
        return Ok(None);
    };
    let Some(entry) = BTree::get(tx, &index, key)? else {
        return Ok(None);
    };
    let status = tx.get(&entry.job)?.status();
    Ok(entry.holds(status, now).then_some(entry.job))
}

/// Makes `job` the holder of `unique`'s key in `queue` from `now`.
pub(crate) fn hold(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    unique: &Unique,
    job: PRef<Job>,
    now: Timestamp,
) -> Result<()> {
    let index = match tx.get(queue)?.unique {
        Some(index) => index,
        None => {
            let index = BTree::create(tx)?;
            tx.modify(queue, |q| q.unique = Some(index))?;
            index
        }
    };
    let entry = UniqueEntry {
        job,
        until: unique.period.map(|p| now.plus(p)),
    };
    BTree::insert(tx, &index, unique.key.clone(), entry)?;
    Ok(())
}

/// Removes the entry of `job`'s unique key in `queue` if it still names `job`
/// (the job is being dropped).
pub(crate) fn release(tx: &mut Transaction<'_>, queue: &PRef<Queue>, job: PRef<Job>) -> Result<()> {
    let Some(index) = tx.get(queue)?.unique else {
        return Ok(());
    };
    let Some(key) = tx.get(&job)?.unique_key().map(str::to_string) else {
        return Ok(());
    };
    if BTree::get(tx, &index, key.as_str())?.is_some_and(|e| e.job == job) {
        BTree::remove(tx, &index, key.as_str())?;
    }
    Ok(())
}
