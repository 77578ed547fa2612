//! Transaction helpers for work that must commit: [`never_fail`] and
//! [`try_n_times`].
//!
//! Invariants:
//! - Each attempt runs `f` in a new transaction and commits it; an attempt that
//!   fails (in `f` or at commit) leaves nothing behind.
//! - `never_fail` returns only with a committed result: conflicts are retried at
//!   once, other errors after a wait that grows by `wait_step` up to `wait_max`.
//! - `try_n_times` makes at most `attempts` attempts, retrying only conflicts.

use std::time::Duration;

use zodiac_objects::{Database, Transaction};

use crate::error::{Error, Result};

/// How [`never_fail_with`] waits and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeverFail {
    /// A WARNING every this many conflicts in a row (5).
    pub conflict_log_every: u32,
    /// Wait after the `n`th other error: `n × wait_step` (5 s) …
    pub wait_step: Duration,
    /// … capped at this (60 s).
    pub wait_max: Duration,
    /// Other errors are logged at the 1st and every this-many-th (10).
    pub error_log_every: u32,
}

impl Default for NeverFail {
    fn default() -> Self {
        NeverFail {
            conflict_log_every: 5,
            wait_step: Duration::from_secs(5),
            wait_max: Duration::from_secs(60),
            error_log_every: 10,
        }
    }
}

pub(crate) fn attempt<R>(
    db: &Database,
    f: &mut impl FnMut(&mut Transaction<'_>) -> Result<R>,
) -> Result<R> {
    let mut conn = db.connection();
    let mut tx = conn.begin();
    let r = f(&mut tx)?;
    tx.commit()?;
    Ok(r)
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Objects(zodiac_objects::Error::Conflict(_)))
}

/// Runs `f` and commits until it succeeds, with the default [`NeverFail`] waits.
pub fn never_fail<R>(db: &Database, f: impl FnMut(&mut Transaction<'_>) -> Result<R>) -> R {
    never_fail_with(db, &NeverFail::default(), f)
}

/// Runs `f` and commits until it succeeds: conflicts at once (a WARNING every
/// `conflict_log_every`), other errors after a growing wait (logged at the 1st and
/// every `error_log_every`).
pub fn never_fail_with<R>(
    db: &Database,
    options: &NeverFail,
    mut f: impl FnMut(&mut Transaction<'_>) -> Result<R>,
) -> R {
    let (mut conflicts, mut errors) = (0u32, 0u32);
    loop {
        match attempt(db, &mut f) {
            Ok(r) => return r,
            Err(e) if is_conflict(&e) => {
                conflicts = conflicts.saturating_add(1);
                if options.conflict_log_every > 0
                    && conflicts.is_multiple_of(options.conflict_log_every)
                {
                    log::warn!(
                        target: "zodiac_async::events",
                        "{conflicts} conflicts in a row; retrying at once: {e}"
                    );
                }
            }
            Err(e) => {
                conflicts = 0;
                errors = errors.saturating_add(1);
                if errors == 1
                    || (options.error_log_every > 0
                        && errors.is_multiple_of(options.error_log_every))
                {
                    log::error!(
                        target: "zodiac_async::events",
                        "attempt failed ({errors} error(s) so far); retrying: {e}"
                    );
                }
                std::thread::sleep(
                    options
                        .wait_step
                        .saturating_mul(errors)
                        .min(options.wait_max),
                );
            }
        }
    }
}

/// Runs `f` and commits, retrying conflicts at once, at most `attempts` attempts
/// in all; after the last conflict logs CRITICAL and returns
/// `RetriesExhausted`. Other errors return at once.
pub fn try_n_times<R>(
    db: &Database,
    attempts: u32,
    mut f: impl FnMut(&mut Transaction<'_>) -> Result<R>,
) -> Result<R> {
    assert!(attempts >= 1, "at least one attempt");
    let mut n = 1;
    loop {
        match attempt(db, &mut f) {
            Ok(r) => return Ok(r),
            Err(Error::Objects(zodiac_objects::Error::Conflict(conflict))) => {
                if n >= attempts {
                    log::error!(
                        target: "zodiac_async::events",
                        "critical: gave up after {n} conflicting attempts ({conflict})"
                    );
                    return Err(Error::Objects(zodiac_objects::Error::RetriesExhausted {
                        attempts: n,
                        conflict,
                    }));
                }
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_contracts_numbers() {
        let d = NeverFail::default();
        assert_eq!(d.conflict_log_every, 5);
        assert_eq!(d.wait_step, Duration::from_secs(5));
        assert_eq!(d.wait_max, Duration::from_secs(60));
        assert_eq!(d.error_log_every, 10);
    }
}
