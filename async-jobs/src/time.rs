//! UTC times as stored in jobs.
//!
//! Invariant: a [`Timestamp`] is microseconds since the Unix epoch, UTC, the same
//! unit as a storage tid, so job times and commit times compare directly.

use std::fmt;
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

    pub const fn from_micros(micros: u64) -> Timestamp {
        Timestamp(micros)
    }

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
}
