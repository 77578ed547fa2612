//! The `Storage` trait: what every backend (file, memory, client) provides.
//!
//! Semantics every implementation keeps (the contract suite checks them):
//! - A load at snapshot `S` returns the newest revision with `tid <= S`; a snapshot
//!   beyond `last_tid()` is read as `last_tid()`, so nothing not yet durable and
//!   published is ever visible.
//! - `last_tid()` only moves forward, and a commit's notification is delivered to
//!   subscribers before `last_tid()` reports its tid.
//! - At vote, every stored oid whose newest revision is not its `base_tid`, and every
//!   `check_current` oid whose newest revision is not the given tid, fails the
//!   transaction with a [`ConflictError`](crate::ConflictError); nothing is written.
//!   The conflict's `current_tid` is already visible: it can be loaded at once.
//! - `finish` returns only when the transaction is durable (unless the storage was
//!   opened with durability off) and then it is visible to every new snapshot.
//! - A transaction dropped without `finish` is aborted and leaves no trace.

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{CopiedTransaction, Revision, RevisionInfo, TransactionInfo, TransactionMeta};
use crate::notify::CommitSubscription;
use crate::reports::{PackReport, References};

/// Iterator over committed transactions in commit order.
pub type TransactionIter<'a> = Box<dyn Iterator<Item = Result<TransactionInfo>> + Send + 'a>;

/// A store of object revisions with MVCC snapshots and two-phase commit.
pub trait Storage: Send + Sync {
    /// A short description for logs and errors (a path, an address, "memory").
    fn describe(&self) -> String;

    /// The tid of the newest durable, visible transaction (`Tid::ZERO` when empty).
    fn last_tid(&self) -> Tid;

    /// Allocates a new oid, never handed out before.
    fn new_oid(&self) -> Result<Oid>;

    /// The newest revision of `oid` with `tid <= snapshot`.
    fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision>;

    /// The data of exactly revision `tid` of `oid`.
    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>>;

    /// Up to `limit` revisions of `oid`, newest first.
    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>>;

    /// Committed transactions with `from <= tid <= to`, oldest first.
    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>>;

    /// Starts a commit.
    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>>;

    /// A stream of commit notifications (tid and changed oids), in commit order, for
    /// every transaction that becomes visible after this call.
    fn subscribe(&self) -> CommitSubscription;

    /// Flushes what should be saved (the index, for the file storage) and refuses
    /// further calls. Dropping the storage closes it too.
    fn close(&self) -> Result<()>;

    /// A revision of `oid` newer than `than` that this storage already holds for
    /// merging a conflict, if it knows one (a client storage keeps the revisions a
    /// conflict reply carried): a caller merging one conflict merges that object in
    /// the same round, without a vote to find it. A hint: `None` by default.
    fn known_newer_revision(&self, oid: Oid, than: Tid) -> Option<Tid> {
        let _ = (oid, than);
        None
    }

    /// A hint that `oids` will soon be loaded at `snapshot` (or later): a storage
    /// whose loads cross a network may start fetching them now, so the loads find
    /// them at hand. Never fails and never waits; the default does nothing.
    fn prefetch(&self, oids: &[Oid], snapshot: Tid) {
        let _ = (oids, snapshot);
    }

    /// A number naming this storage's data: two storages with the same nonzero
    /// identity hold the same history, so a cache of one is valid for the other as
    /// of a common tid. 0 (the default): unknown, never matched. The file storage's
    /// is its file id, which a pack or a restore changes.
    fn identity(&self) -> u64 {
        0
    }

    /// Writes a transaction copied from another storage (`zodiac copy`), keeping its
    /// tid and metadata: `tid` must be greater than `last_tid()`, every record is
    /// written as given (no conflict check: the source already decided), and every
    /// oid in it counts as allocated, so `new_oid` never hands it out. Durable and
    /// visible when it returns, with a commit notification like any commit.
    /// Storages that cannot restore refuse (the default).
    fn restore(&self, tid: Tid, meta: &TransactionMeta, records: &[(Oid, Vec<u8>)]) -> Result<()> {
        let _ = (tid, meta, records);
        Err(Error::Server {
            message: format!("{} cannot take copied transactions", self.describe()),
        })
    }

    /// Restores `transactions` in order, as [`restore`](Self::restore) each: when it
    /// returns `Ok`, all are durable and visible. On an error, the transactions
    /// before the failing one may be restored (`last_tid()` tells how far it got);
    /// none after it is. A storage may share one sync among them (the file storage
    /// does); the default restores them one by one.
    fn restore_batch(&self, transactions: &[CopiedTransaction]) -> Result<()> {
        for t in transactions {
            self.restore(t.tid, &t.meta, &t.records)?;
        }
        Ok(())
    }

    /// Packs to `pack_time`, with garbage collection through `references` when given
    /// (see `FileStorage::pack`). A client storage asks its server, which uses its
    /// own reference reader (`references` only says whether to collect garbage).
    /// Storages that cannot pack refuse (the default).
    fn pack(&self, pack_time: Tid, references: Option<References<'_>>) -> Result<PackReport> {
        let _ = (pack_time, references);
        Err(Error::Server {
            message: format!("{} cannot be packed", self.describe()),
        })
    }
}

/// Merges a conflicting store with the newest revision: given the object, the
/// record the transaction's stored state was made from (`old`, the revision of its
/// base tid) and the newest revision's record (`committed`), the record to store
/// instead, or `None` when the two changes do not merge. It must not call into
/// the storage (the file storage calls it under its commit lock).
pub type Resolver<'a> = &'a (dyn Fn(Oid, &[u8], &[u8]) -> Option<Vec<u8>> + Sync);

/// One commit in progress: `store`/`check_current` ..., `vote`, then `finish` or `abort`.
pub trait StorageTransaction: Send {
    /// Writes `data` as the new revision of `oid`, which this transaction read at
    /// `base_tid` (`Tid::ZERO` for a new object). Storing an oid twice keeps the last.
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()>;

    /// Fails the vote unless the newest revision of `oid` is still `tid`.
    fn check_current(&mut self, oid: Oid, tid: Tid) -> Result<()>;

    /// Validates the transaction (conflicts) and takes the commit lock until
    /// `finish` or `abort`.
    fn vote(&mut self) -> Result<()>;

    /// Votes like [`vote`](Self::vote), first merging every conflicting store it can
    /// through `resolver` (in one pass, without waiting for the newer revisions to
    /// become durable); returns the oids whose data a merge replaced. A conflict it
    /// reports could not be merged. A storage that does not merge (the default)
    /// votes and returns `None`: its conflicts are reported as `vote` reports
    /// them, for the caller to merge. See [`merges_conflicts`](Self::merges_conflicts).
    fn vote_resolving(&mut self, resolver: Resolver<'_>) -> Result<Option<Vec<Oid>>> {
        let _ = resolver;
        self.vote().map(|()| None)
    }

    /// Whether [`vote_resolving`](Self::vote_resolving) merges conflicts itself
    /// (`false` by default).
    fn merges_conflicts(&self) -> bool {
        false
    }

    /// Stores like [`store`](Self::store), naming the merge function for conflicts
    /// on `oid`: `merge` is an identity a storage server may have registered (see
    /// `ServerOptions::merge`), which lets the server merge this store's conflicts
    /// under its commit lock. Storages that merge nothing themselves ignore it (the
    /// default).
    fn store_mergeable(
        &mut self,
        oid: Oid,
        base_tid: Tid,
        data: Vec<u8>,
        merge: &str,
    ) -> Result<()> {
        let _ = merge;
        self.store(oid, base_tid, data)
    }

    /// Votes and finishes in one step, merging conflicts where the storage can: a
    /// storage that [merges conflicts](Self::merges_conflicts) merges through
    /// `resolver` (as [`vote_resolving`](Self::vote_resolving)); a client storage
    /// lets its server merge the stores named mergeable. Returns the tid and the
    /// oids whose data a merge replaced (their stored data is not what committed).
    /// The default votes through `vote_resolving` when the storage merges, then
    /// finishes. A conflict it reports was not merged.
    fn commit_resolving(mut self: Box<Self>, resolver: Resolver<'_>) -> Result<(Tid, Vec<Oid>)> {
        let merged = if self.merges_conflicts() {
            self.vote_resolving(resolver)?.unwrap_or_default()
        } else {
            Vec::new()
        };
        let tid = self.finish()?;
        Ok((tid, merged))
    }

    /// Makes the transaction durable and visible; returns its tid. Votes first if
    /// `vote` was not called.
    fn finish(self: Box<Self>) -> Result<Tid>;

    /// Drops the transaction; nothing of it is written.
    fn abort(self: Box<Self>);
}
