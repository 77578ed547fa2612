//! Transactions: reads at one snapshot, changes kept aside until commit.
//!
//! Invariants:
//! - Every read sees the snapshot fixed at begin: the cache holds nothing newer
//!   (the connection applies events only between transactions) and storage loads name
//!   the snapshot.
//! - Changed and new objects live in `writes` (copy-on-write over the cached value)
//!   until commit; only they are stored, each with the revision it was read at as
//!   its base tid (`Tid::ZERO` for a new object), so the storage finds conflicts per
//!   object. The cache is updated only after the storage has committed.
//! - On a conflict at vote, an object that merges (see
//!   [`Persistent::resolve_conflict`]) is rewritten as the merge of the revision it
//!   was read at, the committed revision and this transaction's state, and the vote is
//!   retried, at most `RESOLVE_ROUNDS_MAX` times; anything else is reported. A
//!   storage that merges in its vote (`merges_conflicts`, the file storage) is given
//!   the same merge and does it there, for every conflicting object at once; what
//!   it reports did not merge. Merged objects leave the cache (their state exists
//!   only as the merged bytes).

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zodiac_storage::{ConflictError, Oid, OidMap, Storage, Tid, TransactionMeta};

use crate::cache::Value;
use crate::codec;
use crate::connection::ConnState;
use crate::database::CommitCounters;
use crate::error::{Error, Result};
use crate::persistent::{Persistent, Root};
use crate::pref::PRef;
use crate::record;

/// Most conflict resolutions one commit attempts before reporting the conflict.
pub const RESOLVE_ROUNDS_MAX: usize = 32;

/// Longest wait for the committed revision of a conflict to become readable. A
/// storage may report a conflict with a commit that is written but still syncing
/// (group commit) and so not yet visible; it becomes visible when its sync ends.
pub const CONFLICT_VISIBLE_WAIT_MS_MAX: u64 = 5_000;

static NEXT_TRANSACTION_ID: AtomicU64 = AtomicU64::new(1);

/// A changed or new object, with its type's operations.
trait Dirty: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn value(&self) -> Value;
    fn encode(&self, oid: Oid) -> Result<Vec<u8>>;
    /// The merged record, or `None` when the type cannot merge these states.
    fn resolve(&self, old: &[u8], committed: &[u8]) -> Option<Vec<u8>>;
    /// The type's merge identity, when it merges.
    fn merge_identity(&self) -> Option<&'static str>;
    fn clone_box(&self) -> Box<dyn Dirty>;
}

struct DirtyValue<T>(Arc<T>);

impl<T: Persistent> Dirty for DirtyValue<T> {
    fn type_name(&self) -> &'static str {
        T::TYPE_NAME
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn value(&self) -> Value {
        self.0.clone()
    }
    fn encode(&self, oid: Oid) -> Result<Vec<u8>> {
        codec::encode(&*self.0).map_err(|source| Error::Encode {
            oid,
            type_name: T::TYPE_NAME,
            source,
        })
    }
    fn resolve(&self, old: &[u8], committed: &[u8]) -> Option<Vec<u8>> {
        let old = codec::decode_record::<T>(old)?;
        let committed = codec::decode_record::<T>(committed)?;
        let merged = T::resolve_conflict(&old, &committed, &self.0)?;
        codec::encode(&merged).ok()
    }
    fn merge_identity(&self) -> Option<&'static str> {
        T::MERGES.then(crate::merge::merge_identity::<T>)
    }
    fn clone_box(&self) -> Box<dyn Dirty> {
        Box::new(DirtyValue(Arc::clone(&self.0)))
    }
}

struct Write {
    base_tid: Tid,
    value: Box<dyn Dirty>,
}

impl Clone for Write {
    fn clone(&self) -> Self {
        Write {
            base_tid: self.base_tid,
            value: self.value.clone_box(),
        }
    }
}

/// The transaction's changes at one moment, to roll back to.
pub struct Savepoint {
    transaction: u64,
    writes: OidMap<Write>,
    checks: BTreeSet<Oid>,
}

/// One transaction of a [`Connection`](crate::Connection). Dropped without
/// [`commit`](Transaction::commit), it is aborted.
pub struct Transaction<'c> {
    storage: &'c dyn Storage,
    counters: &'c CommitCounters,
    state: &'c mut ConnState,
    snapshot: Tid,
    meta: TransactionMeta,
    writes: OidMap<Write>,
    /// The revision of every committed object read, for `check_current`.
    reads: OidMap<Tid>,
    checks: BTreeSet<Oid>,
    id: u64,
}

fn check_type<T: Persistent>(oid: Oid, stored: &str) -> Result<()> {
    if stored == T::TYPE_NAME {
        Ok(())
    } else {
        Err(Error::WrongType {
            oid,
            stored: stored.to_string(),
            requested: T::TYPE_NAME,
        })
    }
}

/// The value as a `T`. Fails when another Rust type with the same type name (e.g.
/// a generic collection with other parameters) put it in the cache or changed it.
fn downcast<T: Persistent>(oid: Oid, value: Value) -> Result<Arc<T>> {
    value.downcast::<T>().map_err(|_| Error::WrongType {
        oid,
        stored: format!("{} with other type parameters", T::TYPE_NAME),
        requested: T::TYPE_NAME,
    })
}

impl<'c> Transaction<'c> {
    pub(crate) fn new(
        storage: &'c dyn Storage,
        counters: &'c CommitCounters,
        state: &'c mut ConnState,
        snapshot: Tid,
    ) -> Transaction<'c> {
        Transaction {
            storage,
            counters,
            state,
            snapshot,
            meta: TransactionMeta::default(),
            writes: OidMap::default(),
            reads: OidMap::default(),
            checks: BTreeSet::new(),
            id: NEXT_TRANSACTION_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The snapshot every read of this transaction sees.
    pub fn snapshot(&self) -> Tid {
        self.snapshot
    }

    /// The root object (oid 0).
    pub fn root(&self) -> PRef<Root> {
        PRef::from_oid(Oid::ROOT)
    }

    /// The root entry `name`, as a reference to a `T` (checked when loaded).
    pub fn root_entry<T>(&mut self, name: &str) -> Result<Option<PRef<T>>> {
        let root = self.root();
        Ok(self.get(&root)?.get(name))
    }

    /// Sets the root entry `name`.
    pub fn set_root_entry<T>(&mut self, name: &str, target: PRef<T>) -> Result<()> {
        let root = self.root();
        self.modify(&root, |r| {
            r.insert(name, target);
        })
    }

    /// The object `r` refers to: this transaction's version if it changed it, else the
    /// revision at the snapshot. The returned value does not change: a later
    /// `modify` works on a copy.
    pub fn get<T: Persistent>(&mut self, r: &PRef<T>) -> Result<Arc<T>> {
        let oid = r.oid();
        if let Some(w) = self.writes.get(&oid) {
            check_type::<T>(oid, w.value.type_name())?;
            return downcast(oid, w.value.value());
        }
        self.load_committed(oid).map(|(_, v)| v)
    }

    /// A hint that this transaction (or the next) will soon read `refs`: objects
    /// neither changed here nor cached are asked of the storage ahead of need
    /// ([`Storage::prefetch`]: a client storage sends the loads without waiting,
    /// and they travel with its next request). Never fails.
    pub fn prefetch<T: Persistent>(&self, refs: &[PRef<T>]) {
        let oids: Vec<Oid> = refs
            .iter()
            .map(PRef::oid)
            .filter(|oid| !self.writes.contains_key(oid) && !self.state.cache.contains(*oid))
            .collect();
        if !oids.is_empty() {
            self.storage.prefetch(&oids, self.snapshot);
        }
    }

    fn load_committed<T: Persistent>(&mut self, oid: Oid) -> Result<(Tid, Arc<T>)> {
        if let Some(entry) = self.state.cache.get(oid) {
            debug_assert!(
                entry.tid <= self.snapshot,
                "cache entry newer than the snapshot"
            );
            check_type::<T>(oid, entry.type_name)?;
            let (tid, value) = (entry.tid, downcast(oid, entry.value.clone())?);
            self.reads.insert(oid, tid);
            return Ok((tid, value));
        }
        let rev = self.storage.load(oid, self.snapshot)?;
        let env =
            record::decode(&rev.data).map_err(|source| Error::DamagedRecord { oid, source })?;
        check_type::<T>(oid, env.type_name)?;
        let value = Arc::new(
            codec::decode::<T>(env.payload).map_err(|source| Error::Decode {
                oid,
                type_name: T::TYPE_NAME,
                source,
            })?,
        );
        self.state
            .cache
            .insert(oid, rev.tid, T::TYPE_NAME, value.clone(), rev.data.len());
        self.reads.insert(oid, rev.tid);
        Ok((rev.tid, value))
    }

    /// Adds a new object; it is written at commit.
    pub fn add<T: Persistent>(&mut self, value: T) -> Result<PRef<T>> {
        let oid = self.storage.new_oid()?;
        self.writes.insert(
            oid,
            Write {
                base_tid: Tid::ZERO,
                value: Box::new(DirtyValue(Arc::new(value))),
            },
        );
        Ok(PRef::from_oid(oid))
    }

    /// Changes the object `r` refers to with `f`; the object is written at commit.
    pub fn modify<T: Persistent, R>(
        &mut self,
        r: &PRef<T>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R> {
        let oid = r.oid();
        if !self.writes.contains_key(&oid) {
            let (base_tid, value) = self.load_committed::<T>(oid)?;
            self.writes.insert(
                oid,
                Write {
                    base_tid,
                    value: Box::new(DirtyValue(value)),
                },
            );
        }
        let write = self.writes.get_mut(&oid).expect("inserted above");
        check_type::<T>(oid, write.value.type_name())?;
        let dirty = write
            .value
            .as_any_mut()
            .downcast_mut::<DirtyValue<T>>()
            .ok_or_else(|| Error::WrongType {
                oid,
                stored: format!("{} with other type parameters", T::TYPE_NAME),
                requested: T::TYPE_NAME,
            })?;
        Ok(f(Arc::make_mut(&mut dirty.0)))
    }

    /// Replaces the object `r` refers to.
    pub fn set<T: Persistent>(&mut self, r: &PRef<T>, value: T) -> Result<()> {
        self.modify(r, |v| *v = value)
    }

    /// Makes the commit fail with a conflict unless the object `r` refers to is still
    /// at the revision this transaction reads (for objects read, not written, whose
    /// staleness matters).
    pub fn check_current<T: Persistent>(&mut self, r: &PRef<T>) -> Result<()> {
        self.get(r)?;
        self.checks.insert(r.oid());
        Ok(())
    }

    /// Sets the user recorded with this transaction's commit (at most
    /// [`USER_BYTES_MAX`](zodiac_storage::USER_BYTES_MAX) bytes; a longer one fails the
    /// commit). A commit that writes nothing records nothing.
    pub fn set_user(&mut self, user: impl Into<String>) {
        self.meta.user = user.into();
    }

    /// Sets the description recorded with this transaction's commit (at most
    /// [`DESCRIPTION_BYTES_MAX`](zodiac_storage::DESCRIPTION_BYTES_MAX) bytes; a longer
    /// one fails the commit).
    pub fn set_description(&mut self, description: impl Into<String>) {
        self.meta.description = description.into();
    }

    /// Sets `key` in the free-form extension map recorded with this transaction's
    /// commit, replacing an earlier value. Keys are at most
    /// [`EXTENSION_KEY_BYTES_MAX`](zodiac_storage::EXTENSION_KEY_BYTES_MAX) bytes and
    /// the whole map at most
    /// [`EXTENSION_BYTES_MAX`](zodiac_storage::EXTENSION_BYTES_MAX) (6 bytes per entry
    /// counted); more fails the commit.
    pub fn set_extension(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.meta.extension.insert(key.into(), value.into());
    }

    /// Remembers the changes made so far.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            transaction: self.id,
            writes: self.writes.clone(),
            checks: self.checks.clone(),
        }
    }

    /// Forgets every change made since `savepoint` (which stays usable).
    pub fn rollback_to(&mut self, savepoint: &Savepoint) -> Result<()> {
        if savepoint.transaction != self.id {
            return Err(Error::ForeignSavepoint);
        }
        self.writes = savepoint.writes.clone();
        self.checks = savepoint.checks.clone();
        Ok(())
    }

    /// Objects changed or added so far.
    pub fn changed_count(&self) -> usize {
        self.writes.len()
    }

    /// Aborts: nothing of this transaction is written.
    pub fn abort(self) {}

    /// Commits: writes every changed object and returns the new tid, or `None` when
    /// there was nothing to write. A conflict no type could merge is
    /// [`Error::Conflict`].
    pub fn commit(mut self) -> Result<Option<Tid>> {
        self.commit_changes()
    }

    /// Commits; when that fails with a conflict no type could merge, rolls back to
    /// `savepoint` and commits what was changed up to it instead. Returns the tid
    /// (`None` when nothing was written) and whether every change was committed
    /// (`false`: only those up to the savepoint). For a transaction whose later
    /// changes are optional, e.g. taking more work in the commit that stores a
    /// result: a competitor on those changes costs them, not the result.
    ///
    /// Reported conflicts of the fallback are the conflicts of the changes up to
    /// the savepoint, as [`Transaction::commit`] reports them.
    pub fn commit_or_rollback_to(mut self, savepoint: &Savepoint) -> Result<(Option<Tid>, bool)> {
        if savepoint.transaction != self.id {
            return Err(Error::ForeignSavepoint);
        }
        match self.commit_changes() {
            Ok(tid) => Ok((tid, true)),
            Err(Error::Conflict(conflict)) => {
                log::debug!(
                    "the changes after a savepoint conflicted on object {}; committing \
                     those before it",
                    conflict.oid
                );
                self.rollback_to(savepoint)?;
                Ok((self.commit_changes()?, false))
            }
            Err(e) => Err(e),
        }
    }

    fn commit_changes(&mut self) -> Result<Option<Tid>> {
        let checks: Vec<(Oid, Tid)> = self
            .checks
            .iter()
            .filter(|oid| !self.writes.contains_key(oid))
            .map(|oid| (*oid, self.reads[oid]))
            .collect();
        if self.writes.is_empty() && checks.is_empty() {
            return Ok(None);
        }
        let mut stores: Vec<(Oid, Tid, Vec<u8>)> = Vec::with_capacity(self.writes.len());
        for (&oid, w) in &self.writes {
            stores.push((oid, w.base_tid, w.value.encode(oid)?));
        }
        stores.sort_unstable_by_key(|s| s.0);
        let mut resolved = BTreeSet::new();
        let mut rounds = 0;
        let tid = loop {
            match self.try_commit(&stores, &checks) {
                Ok((tid, merged)) => {
                    CommitCounters::count(&self.counters.commits);
                    for oid in merged {
                        CommitCounters::count(&self.counters.conflicts_resolved);
                        resolved.insert(oid);
                    }
                    break tid;
                }
                // The storage merged what it could: what it reports does not merge.
                Err((Error::Conflict(conflict), false)) if rounds < RESOLVE_ROUNDS_MAX => {
                    let Some(merged) = self.resolve(&stores, conflict)? else {
                        CommitCounters::count(&self.counters.conflicts_unresolved);
                        return Err(Error::Conflict(conflict));
                    };
                    CommitCounters::count(&self.counters.conflicts_resolved);
                    let slot = stores.iter_mut().find(|s| s.0 == conflict.oid);
                    let slot = slot.expect("resolve found it");
                    slot.1 = conflict.current_tid;
                    slot.2 = merged;
                    resolved.insert(conflict.oid);
                    rounds += 1;
                    log::debug!("resolved a conflict on object {}", conflict.oid);
                    // Objects the storage already knows newer revisions of (a
                    // conflict reply carried them): merged in this round too, rather
                    // than one vote each to find them.
                    for i in 0..stores.len() {
                        let (oid, base) = (stores[i].0, stores[i].1);
                        let Some(current_tid) = self.storage.known_newer_revision(oid, base) else {
                            continue;
                        };
                        let known = ConflictError {
                            oid,
                            base_tid: base,
                            current_tid,
                        };
                        if let Some(merged) = self.resolve(&stores, known)? {
                            CommitCounters::count(&self.counters.conflicts_resolved);
                            stores[i].1 = current_tid;
                            stores[i].2 = merged;
                            resolved.insert(oid);
                        }
                    }
                }
                Err((e, _)) => {
                    if matches!(e, Error::Conflict(_)) {
                        CommitCounters::count(&self.counters.conflicts_unresolved);
                    }
                    return Err(e);
                }
            }
        };
        for (oid, _, data) in &stores {
            if resolved.contains(oid) {
                // The merged state exists only as bytes: load it when next needed.
                self.state.cache.remove(*oid);
            } else {
                let w = &self.writes[oid];
                self.state.cache.insert(
                    *oid,
                    tid,
                    w.value.type_name(),
                    w.value.value(),
                    data.len(),
                );
            }
        }
        Ok(Some(tid))
    }

    /// One attempt: the tid, and the oids whose stored data the storage replaced
    /// by a merge ([`zodiac_storage::StorageTransaction::vote_resolving`]); on
    /// failure, the error and whether the storage merges conflicts itself.
    fn try_commit(
        &self,
        stores: &[(Oid, Tid, Vec<u8>)],
        checks: &[(Oid, Tid)],
    ) -> std::result::Result<(Tid, Vec<Oid>), (Error, bool)> {
        let mut txn = self
            .storage
            .begin(self.meta.clone())
            .map_err(|e| (e.into(), false))?;
        let merges = txn.merges_conflicts();
        let failed = |e: zodiac_storage::Error| (Error::from(e), merges);
        for (oid, base_tid, data) in stores {
            let stored = match self.writes[oid].value.merge_identity() {
                Some(merge) => txn.store_mergeable(*oid, *base_tid, data.clone(), merge),
                None => txn.store(*oid, *base_tid, data.clone()),
            };
            stored.map_err(failed)?;
        }
        for &(oid, tid) in checks {
            txn.check_current(oid, tid).map_err(failed)?;
        }
        // The same merge as `resolve`, in the storage: against the revision each
        // store was made from (its base tid, which only the storage moves).
        let writes = &self.writes;
        let resolver = |oid: Oid, old: &[u8], committed: &[u8]| {
            writes
                .get(&oid)
                .and_then(|w| w.value.resolve(old, committed))
        };
        // Over a server this is one round trip (`Commit`), in which the server
        // merges the stores it has merge functions for.
        txn.commit_resolving(&resolver).map_err(failed)
    }

    /// The merged record for a conflict, or `None` when it cannot be merged.
    fn resolve(
        &self,
        stores: &[(Oid, Tid, Vec<u8>)],
        conflict: ConflictError,
    ) -> Result<Option<Vec<u8>>> {
        if !stores.iter().any(|s| s.0 == conflict.oid) {
            return Ok(None); // a check_current object: nothing to merge
        }
        let write = &self.writes[&conflict.oid];
        // The merge is always against the revision this transaction's state was made
        // from, even after earlier rounds moved the stored base tid forward: `mine`
        // is that state, so only that revision tells what this transaction changed.
        let base_tid = write.base_tid;
        if base_tid == Tid::ZERO || conflict.current_tid == Tid::ZERO {
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_millis(CONFLICT_VISIBLE_WAIT_MS_MAX);
        while self.storage.last_tid() < conflict.current_tid {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        // A revision packed away meanwhile cannot be merged: report the conflict,
        // which a retry handles, rather than a storage error, which it would not.
        let load = |tid| match self.storage.load_revision(conflict.oid, tid) {
            Ok(data) => Ok(Some(data)),
            Err(zodiac_storage::Error::NoSuchRevision { .. }) => Ok(None),
            Err(e) => Err(Error::from(e)),
        };
        let (Some(old), Some(committed)) = (load(base_tid)?, load(conflict.current_tid)?) else {
            return Ok(None);
        };
        Ok(write.value.resolve(&old, &committed))
    }
}
