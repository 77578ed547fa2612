//! Running job-layer operations in a transaction with conflict retries.
//!
//! Invariant: only write conflicts are retried, each attempt in a new transaction,
//! at most the database's `RetryPolicy::attempts_max` attempts; any other error
//! aborts the transaction and returns at once.

use zodiac_objects::{Database, Transaction};

use crate::error::{Error, Result};

/// Runs `f` in a transaction on a pooled connection of `db` and commits it; on a
/// conflict (from `f` or from the commit) runs `f` again in a new transaction after
/// a growing wait, as [`zodiac_objects::Connection::transact`] does, but for
/// closures returning this crate's [`Error`].
pub fn transact<R>(
    db: &Database,
    mut f: impl FnMut(&mut Transaction<'_>) -> Result<R>,
) -> Result<R> {
    let policy = db.options().retry;
    let mut conn = db.connection();
    let mut wait = policy.backoff_initial;
    let mut attempt = 1;
    loop {
        let mut tx = conn.begin();
        let outcome = f(&mut tx).and_then(|r| Ok(tx.commit().map(|_| r)?));
        let conflict = match outcome {
            Ok(r) => return Ok(r),
            Err(Error::Objects(zodiac_objects::Error::Conflict(c))) => c,
            Err(e) => return Err(e),
        };
        if attempt >= policy.attempts_max {
            return Err(Error::Objects(zodiac_objects::Error::RetriesExhausted {
                attempts: attempt,
                conflict,
            }));
        }
        log::debug!(target: "zodiac_async::events", "attempt {attempt} conflicted ({conflict}); retrying");
        std::thread::sleep(jittered(wait));
        wait = (wait * 2).min(policy.backoff_max);
        attempt += 1;
    }
}

/// `wait` scaled by a random factor in [0.5, 1), so retrying committers spread out.
fn jittered(wait: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    wait.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}
