//! Waiting before a retry: one growing, jittered backoff for every retry loop in
//! Zodiac (conflict retries, reconnects, failed polls, job retries).
//!
//! Invariants: a wait is never longer than the backoff's maximum; the jitter only
//! shortens a wait (a factor in [0.5, 1)), so many retrying parties spread out and
//! none waits past its bound.

use std::time::Duration;

/// A doubling wait, from `initial` up to `max`, each one jittered.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff whose first wait is about `initial` and which never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            next: initial.min(max),
            max,
        }
    }

    /// The next wait (jittered), doubling the one after it up to the maximum.
    pub fn next_wait(&mut self) -> Duration {
        let wait = jittered(self.next);
        self.next = self.next.saturating_mul(2).min(self.max);
        debug_assert!(wait <= self.max);
        wait
    }

    /// Starts again from `initial`, as after a success.
    pub fn reset(&mut self, initial: Duration) {
        self.next = initial.min(self.max);
    }
}

/// `wait` scaled by a random factor in [0.5, 1), so retrying parties spread out.
pub fn jittered(wait: Duration) -> Duration {
    let random = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    );
    wait.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_and_stay_within_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let bounds = [10, 20, 40, 50, 50];
        for bound in bounds {
            let wait = backoff.next_wait();
            let bound = Duration::from_millis(bound);
            assert!(
                wait < bound && wait >= bound / 2,
                "{wait:?} outside [{:?}, {bound:?})",
                bound / 2
            );
        }
        backoff.reset(Duration::from_millis(10));
        assert!(backoff.next_wait() < Duration::from_millis(10));
    }
}
