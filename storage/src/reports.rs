//! What the `Storage` trait's maintenance calls take and report, free of any
//! backend: the reference reader a garbage-collecting pack follows, and the
//! report of a pack. Every backend (file, client, and those to come) names these
//! types; none of them lives in a backend's module, so the trait imports none.

use crate::ids::{Oid, Tid};

/// Reads the oids an object revision refers to. The objects layer provides it; the
/// storage itself knows nothing of what the bytes mean.
pub type References<'a> = &'a (dyn Fn(&[u8]) -> std::result::Result<Vec<Oid>, String> + Sync);

/// What a pack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    /// The effective pack time (the requested one, or the last tid if earlier).
    pub pack_tid: Tid,
    /// Bytes of data in the file before the pack.
    pub bytes_before: u64,
    /// Bytes of data in the packed file.
    pub bytes_after: u64,
    /// Transactions in the file before the pack.
    pub transactions_before: u64,
    /// Transactions the packed file keeps (the last one always, even when empty).
    pub transactions_after: u64,
    /// Object revisions in the file before the pack.
    pub revisions_before: u64,
    /// Object revisions the packed file keeps.
    pub revisions_after: u64,
    /// Objects dropped as unreachable from the root at the pack time.
    pub objects_removed: u64,
    /// Transactions committed while the pack ran, copied under the commit lock.
    pub copied_during_pack: u64,
    /// The most memory the pack's tables took at once (the oid tables, the
    /// reachability set and the traversal stack), in bytes.
    pub table_bytes_max: u64,
}
