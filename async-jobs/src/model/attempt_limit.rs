//! A job's limit on retries of its handler's own errors: how many attempts it
//! gets, and how long it waits between them (the decision is made in
//! `crate::retry`, beside the policies).
//!
//! Invariants:
//! - `max_attempts` is in `1..=ATTEMPTS_MAX` (1: the handler is not retried);
//!   [`AttemptLimit::new`] refuses anything else.
//! - A wait is never longer than the backoff's bound: [`Backoff::Fixed`] waits
//!   exactly its duration, [`Backoff::Exponential`] doubles from `initial` up to
//!   `max` and the jitter only shortens a wait (a factor in [0.5, 1), the one
//!   jittered backoff of `zodiac_storage`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most attempts a job may be given.
pub const ATTEMPTS_MAX: u32 = 1000;

/// The wait before retrying a job whose handler failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backoff {
    /// The same wait after every failed attempt.
    Fixed(Duration),
    /// `initial` after the first failed attempt, doubling after each, capped at
    /// `max`; each wait jittered so that many failing jobs spread out.
    Exponential {
        /// The bound of the first wait.
        initial: Duration,
        /// The largest wait.
        max: Duration,
    },
}

impl Default for Backoff {
    /// Exponential from 1 s up to 5 minutes.
    fn default() -> Self {
        Backoff::Exponential {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The longest wait after failed attempt `attempt` (1 for the first run).
    pub fn bound_after(&self, attempt: u32) -> Duration {
        match *self {
            Backoff::Fixed(wait) => wait,
            Backoff::Exponential { initial, max } => {
                let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
                initial.saturating_mul(factor).min(max)
            }
        }
    }

    /// The wait after failed attempt `attempt`: [`Backoff::bound_after`],
    /// jittered when exponential.
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let bound = self.bound_after(attempt);
        let wait = match self {
            Backoff::Fixed(_) => bound,
            Backoff::Exponential { .. } => zodiac_storage::jittered(bound),
        };
        debug_assert!(wait <= bound);
        wait
    }
}

/// How many attempts a job's handler gets, and the wait between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLimit {
    max_attempts: u32,
    backoff: Backoff,
}

impl AttemptLimit {
    /// At most `max_attempts` runs (in `1..=ATTEMPTS_MAX`), waiting `backoff`
    /// between them.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Result<AttemptLimit> {
        if !(1..=ATTEMPTS_MAX).contains(&max_attempts) {
            return Err(Error::LimitExceeded {
                what: "the attempts of a job (at least 1)",
                len: max_attempts as usize,
                max: ATTEMPTS_MAX as usize,
            });
        }
        Ok(AttemptLimit {
            max_attempts,
            backoff,
        })
    }

    /// The most runs the job gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait between them.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Whether a handler that failed on attempt `attempt` runs again.
    pub fn allows_another_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_waits_double_up_to_the_max_and_stay_within_jitter() {
        let b = Backoff::Exponential {
            initial: ms(100),
            max: ms(500),
        };
        let bounds: Vec<_> = (1..=6).map(|n| b.bound_after(n)).collect();
        assert_eq!(
            bounds,
            [ms(100), ms(200), ms(400), ms(500), ms(500), ms(500)]
        );
        for attempt in 1..=6 {
            for _ in 0..50 {
                let wait = b.wait_after(attempt);
                let bound = b.bound_after(attempt);
                assert!(wait <= bound && wait >= bound / 2, "{wait:?} for {bound:?}");
            }
        }
        // A huge attempt number neither overflows nor passes the max.
        assert_eq!(b.bound_after(u32::MAX), ms(500));
    }

    #[test]
    fn fixed_waits_are_exact() {
        let b = Backoff::Fixed(ms(250));
        assert_eq!(
            (1..=4).map(|n| b.wait_after(n)).collect::<Vec<_>>(),
            [ms(250); 4]
        );
    }

    #[test]
    fn max_attempts_is_checked_at_its_bounds() {
        assert!(AttemptLimit::new(0, Backoff::default()).is_err());
        assert!(AttemptLimit::new(ATTEMPTS_MAX + 1, Backoff::default()).is_err());
        let one = AttemptLimit::new(1, Backoff::default()).unwrap();
        assert!(!one.allows_another_after(1));
        let most = AttemptLimit::new(ATTEMPTS_MAX, Backoff::default()).unwrap();
        assert!(most.allows_another_after(ATTEMPTS_MAX - 1));
        assert!(!most.allows_another_after(ATTEMPTS_MAX));
    }
}
