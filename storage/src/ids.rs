//! Object ids and transaction ids.
//!
//! Invariants:
//! - `Oid(0)` is the root object; the storage hands out oids from 1 upwards,
//!   increasing, and never reuses one (not even after pack).
//! - A `Tid` is the commit time in microseconds since the Unix epoch (UTC).
//!   Tids strictly increase with every commit: when the clock has not moved past
//!   the last tid (or went backwards) the next tid is `last + 1`.
//! - `Tid::ZERO` means "no revision" (the base tid of a new object).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// An object id. `Oid::ROOT` (0) is the root object.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Oid(pub u64);

impl Oid {
    /// The root object, which every database has and which the storage never allocates.
    pub const ROOT: Oid = Oid(0);
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A transaction id: the commit time in microseconds since the Unix epoch (UTC).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Tid(pub u64);

impl Tid {
    /// "No revision": the base tid of a new object and the last tid of an empty store.
    pub const ZERO: Tid = Tid(0);
    /// The greatest tid: a snapshot that sees every committed revision.
    pub const MAX: Tid = Tid(u64::MAX);

    /// The tid for the current wall-clock time, without the strictly-increasing rule.
    pub fn now() -> Tid {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Tid(micros)
    }

    /// The tid the next commit gets after `last`: the current time, or `last + 1` when
    /// the clock has not moved past `last`.
    pub fn next_after(last: Tid) -> Tid {
        let now = Tid::now();
        if now > last { now } else { Tid(last.0 + 1) }
    }

    /// The commit time this tid encodes.
    pub fn to_time(self) -> time::OffsetDateTime {
        let nanos = i128::from(self.0) * 1_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// The commit time as RFC 3339 text, e.g. `2026-11-24T10:00:00.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        self.to_time()
            .format(&format)
            .unwrap_or_else(|_| self.0.to_string())
    }

    /// The first tid at or after the given time.
    pub fn from_time(t: time::OffsetDateTime) -> Tid {
        let micros = t.unix_timestamp_nanos() / 1_000;
        Tid(micros.clamp(0, i128::from(u64::MAX)) as u64)
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_after_is_strictly_increasing_even_when_the_clock_is_behind() {
        let future = Tid(Tid::now().0 + 3_600_000_000);
        assert_eq!(Tid::next_after(future), Tid(future.0 + 1));
        let a = Tid::next_after(Tid::ZERO);
        assert!(a > Tid::ZERO);
        assert!(Tid::next_after(a) > a);
    }

    #[test]
    fn tid_round_trips_through_time() {
        let t = Tid(1_764_000_000_123_456);
        assert_eq!(Tid::from_time(t.to_time()), t);
        assert_eq!(t.to_rfc3339(), "2025-11-24T16:00:00.123456Z");
        assert_eq!(
            Tid(1_764_000_000_100_000).to_rfc3339(),
            "2025-11-24T16:00:00.100000Z"
        );
    }
}

/// Hashes an oid by one multiplication: oids are small, dense integers chosen by
/// the storage, not by an adversary, so a DoS-resistant hash buys nothing here.
#[derive(Default, Clone, Copy, Debug)]
pub struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A hash map keyed by oids, hashed with [`OidHasher`].
pub type OidMap<V> = HashMap<Oid, V, BuildHasherDefault<OidHasher>>;
