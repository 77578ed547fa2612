//! A conflict-free counter: concurrent increments merge instead of conflicting,
//! like ZODB's `BTrees.Length`.
//!
//! Invariants:
//! - Resolving a conflict applies this transaction's net change (mine − old) on top
//!   of the committed value, so no committed increment is ever lost.
//! - A merge whose result does not fit an `i64` does not merge: the conflict is
//!   reported instead of a wrapped value being committed.

use serde::{Deserialize, Serialize};

use crate::persistent::Persistent;

/// A persistent counter whose concurrent changes merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    value: i64,
}

impl Counter {
    /// A counter starting at `value`.
    pub fn new(value: i64) -> Counter {
        Counter { value }
    }

    /// The counter's value.
    pub fn value(&self) -> i64 {
        self.value
    }

    /// Adds `delta` (which may be negative), wrapping on overflow.
    pub fn add(&mut self, delta: i64) {
        self.value = self.value.wrapping_add(delta);
    }

    /// Adds `delta` (which may be negative), or returns `false` and leaves the
    /// value unchanged when the sum does not fit an `i64`.
    pub fn checked_add(&mut self, delta: i64) -> bool {
        match self.value.checked_add(delta) {
            Some(value) => {
                self.value = value;
                true
            }
            None => false,
        }
    }
}

impl Persistent for Counter {
    const TYPE_NAME: &'static str = "zodiac.Counter";
    const MERGES: bool = true;

    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let delta = mine.value.checked_sub(old.value)?;
        let value = committed.value.checked_add(delta)?;
        Some(Counter { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_applies_my_change_to_the_committed_value() {
        let merged =
            Counter::resolve_conflict(&Counter::new(10), &Counter::new(13), &Counter::new(8))
                .unwrap();
        assert_eq!(merged.value(), 11);
    }

    #[test]
    fn a_merge_that_would_overflow_is_a_conflict_not_a_wrapped_value() {
        let old = Counter::new(0);
        let committed = Counter::new(i64::MAX);
        assert_eq!(
            Counter::resolve_conflict(&old, &committed, &Counter::new(1)),
            None
        );
        assert_eq!(
            Counter::resolve_conflict(&old, &Counter::new(i64::MIN), &Counter::new(-1)),
            None
        );
        // A net change that itself overflows (mine − old) does not merge either.
        assert_eq!(
            Counter::resolve_conflict(&Counter::new(-1), &committed, &Counter::new(i64::MAX)),
            None
        );
        let near = Counter::resolve_conflict(&old, &Counter::new(i64::MAX - 1), &Counter::new(1));
        assert_eq!(near, Some(Counter::new(i64::MAX)));
    }

    #[test]
    fn checked_add_refuses_an_overflow_and_keeps_the_value() {
        let mut counter = Counter::new(i64::MAX);
        assert!(!counter.checked_add(1));
        assert_eq!(counter.value(), i64::MAX);
        assert!(counter.checked_add(-1));
        assert_eq!(counter.value(), i64::MAX - 1);
    }

    #[test]
    fn encodes_as_one_zigzag_varint() {
        assert_eq!(postcard::to_stdvec(&Counter::new(-2)).unwrap(), [3]);
        assert_eq!(
            postcard::to_stdvec(&Counter::new(64)).unwrap(),
            [0x80, 0x01]
        );
    }
}
