//! UTC times as stored in jobs, and the clock that tells them.
//!
//! Invariants:
//! - A [`Timestamp`] is microseconds since the Unix epoch, UTC, the same unit as a
//!   storage tid, so job times and commit times compare directly.
//! - Code that schedules (runs, retries, pings, death checks, deadlines,
//!   retention) asks the [`Clock`] it was given, never the system directly; the
//!   default is [`SystemClock`], and tests advance a [`ManualClock`] instead of
//!   sleeping. Waiting itself (a worker's sleep between polls) stays real time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zodiac_storage::Tid;

/// A UTC time in microseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Timestamp(micros)
    }

    /// The time `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating at the end of time.
    pub fn plus(self, d: Duration) -> Timestamp {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }

    /// How long after `earlier` this is (zero when it is not later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Where the job layer reads the time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock of the system ([`Timestamp::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: clones share one time, so a test holds one
/// and gives others to the runner and worker it drives.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            micros: Arc::new(AtomicU64::new(start.0)),
        }
    }

    /// Moves the time forward by `d` (saturating at the end of time).
    pub fn advance(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_add(micros))
            });
    }

    /// Sets the time to `t`.
    pub fn set(&self, t: Timestamp) {
        self.micros.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A tid is the same unit; reuse its RFC 3339 rendering.
        f.write_str(&Tid(self.0).to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_shows_as_utc() {
        let t = Timestamp(1_000_000);
        assert_eq!(t.plus(Duration::from_millis(1500)), Timestamp(2_500_000));
        assert_eq!(
            Timestamp(u64::MAX - 1).plus(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
        assert_eq!(Timestamp(5).since(Timestamp(9)), Duration::ZERO);
        assert_eq!(t.to_string(), "1970-01-01T00:00:01.000000Z");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_share_it() {
        let clock = ManualClock::new(Timestamp(100));
        let shared = clock.clone();
        assert_eq!(shared.now(), Timestamp(100));
        clock.advance(Duration::from_micros(50));
        assert_eq!(shared.now(), Timestamp(150));
        shared.set(Timestamp(7));
        assert_eq!(clock.now(), Timestamp(7));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Timestamp(u64::MAX));
    }
}
