//! The vote's conflict check, shared by every backend that validates a
//! transaction itself (memory, file): which of a transaction's expectations the
//! newest revisions no longer meet, and which of those a merge replaces.
//!
//! Invariants:
//! - Expectations are checked in the order `PendingWrites::expectations` gives
//!   (stores, then `check_current`s); the conflict reported is the first one in
//!   that order that could not be merged, so every backend reports the same one.
//! - A conflict names the oid, the tid the transaction expected and the tid of the
//!   newest revision (`Tid::ZERO` when the object has none).
//! - Without a resolver the check stops at the first conflict: nothing more is
//!   read once the vote is known to fail.

use crate::error::{ConflictError, Result};
use crate::ids::{Oid, Tid};
use crate::pending::PendingWrites;

/// An expectation of the transaction the newest revision no longer meets.
pub(crate) struct Conflicting<P> {
    /// A stored object (mergeable), not a `check_current`.
    pub stored: bool,
    pub conflict: ConflictError,
    /// Where the backend keeps the newest revision (its own handle for the merge).
    pub at: P,
}

/// Merged stores: `(oid, current tid, merged data)`, for `PendingWrites::apply_merges`.
pub(crate) type Merges = Vec<(Oid, Tid, Vec<u8>)>;

/// The conflicts of `writes`, given `newest(oid)`: the tid of the newest revision
/// of `oid` and the backend's handle to it. All of them when `all` (the caller
/// merges), otherwise at most the first.
pub(crate) fn find<P>(
    writes: &PendingWrites,
    all: bool,
    mut newest: impl FnMut(Oid) -> Result<(Tid, P)>,
) -> Result<Vec<Conflicting<P>>> {
    let stores = writes.stores.len();
    let mut conflicts = Vec::new();
    for (i, (oid, expected)) in writes.expectations().enumerate() {
        let (current, at) = newest(oid)?;
        if current != expected {
            conflicts.push(Conflicting {
                stored: i < stores,
                conflict: ConflictError {
                    oid,
                    base_tid: expected,
                    current_tid: current,
                },
                at,
            });
            if !all {
                break;
            }
        }
    }
    Ok(conflicts)
}

/// Merges `conflicts` in order through `merge` (the merged data, or `None` when it
/// does not merge): every merge, or the first conflict that did not merge.
pub(crate) fn merge_all<P>(
    conflicts: Vec<Conflicting<P>>,
    mut merge: impl FnMut(&Conflicting<P>) -> Result<Option<Vec<u8>>>,
) -> Result<std::result::Result<Merges, ConflictError>> {
    let mut merged = Vec::with_capacity(conflicts.len());
    for c in conflicts {
        match merge(&c)? {
            Some(data) => merged.push((c.conflict.oid, c.conflict.current_tid, data)),
            None => return Ok(Err(c.conflict)),
        }
    }
    Ok(Ok(merged))
}
