//! Running job-layer operations in a transaction with conflict retries, through
//! the objects layer's one retry loop ([`zodiac_objects::Connection::transact_with`]).
//!
//! Invariant: only write conflicts are retried, each attempt in a new transaction,
//! at most the database's `RetryPolicy::attempts_max` attempts; any other error
//! aborts the transaction and returns at once.

use std::time::Duration;

use zodiac_objects::{Database, TransactError, Transaction};
use zodiac_storage::ConflictError;

use crate::error::{Error, Result};

/// Runs `f` in a transaction on a pooled connection of `db` and commits it; on a
/// conflict (from `f` or from the commit) runs `f` again in a new transaction after
/// a growing wait, as [`zodiac_objects::Connection::transact`] does, but for
/// closures returning this crate's [`Error`].
pub fn transact<R>(db: &Database, f: impl FnMut(&mut Transaction<'_>) -> Result<R>) -> Result<R> {
    db.transact_with(f)
}

impl TransactError for Error {
    fn into_conflict(self) -> std::result::Result<ConflictError, Self> {
        match self {
            Error::Objects(zodiac_objects::Error::Conflict(c)) => Ok(c),
            e => Err(e),
        }
    }
}

/// The wait before retrying after the `n`th failure in a row to reach the storage
/// (n ≥ 1): 5 s, 10 s, … capped at 60 s. A worker's failed polls and a run's state
/// changes through a lost connection wait this long: linear, without jitter, so
/// an operator can tell when the next attempt comes.
pub fn poll_backoff(n: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(n)
        .min(Duration::from_secs(60))
}
