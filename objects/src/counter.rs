//! A conflict-free counter: concurrent increments merge instead of conflicting,
//! like ZODB's `BTrees.Length`.
//!
//! Invariant: resolving a conflict applies this transaction's net change (mine − old)
//! on top of the committed value, so no committed increment is ever lost.

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
}

impl Persistent for Counter {
    const TYPE_NAME: &'static str = "zodiac.Counter";
    const MERGES: bool = true;

    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let delta = mine.value.wrapping_sub(old.value);
        Some(Counter {
            value: committed.value.wrapping_add(delta),
        })
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
    fn encodes_as_one_zigzag_varint() {
        assert_eq!(postcard::to_stdvec(&Counter::new(-2)).unwrap(), [3]);
        assert_eq!(
            postcard::to_stdvec(&Counter::new(64)).unwrap(),
            [0x80, 0x01]
        );
    }
}
