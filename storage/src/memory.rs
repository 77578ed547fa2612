//! An in-memory storage with the full `Storage` semantics and no durability,
//! for tests and for trying things out.
//!
//! Invariants:
//! - `revisions[oid]` is sorted by tid, ascending.
//! - The commit lock (`commit_lock`) is held from vote to finish/abort, so
//!   validation and application see the same state.
//! - A transaction's event is published before `last_tid` reports its tid.
//! - `close` and the apply step of `finish` (and of `restore`) hold the state write
//!   lock, so once `close` has returned no transaction becomes visible.
//! - A restored (copied) transaction keeps its tid, which must exceed every applied
//!   one, and raises the oid allocator past each oid it writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::conflicts;
use crate::error::{ConflictError, Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{
    ChangeInfo, CommitEvent, Revision, RevisionInfo, TransactionInfo, TransactionMeta,
};
use crate::notify::{CommitSubscription, Notifier};
use crate::pending::PendingWrites;
use crate::storage::{Resolver, Storage, StorageTransaction, TransactionIter};

/// A storage that keeps everything in memory.
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    commit_lock: Arc<Mutex<()>>,
    next_oid: AtomicU64,
    last_tid: AtomicU64,
    notifier: Notifier,
    closed: AtomicBool,
}

/// The revisions of one object, `(tid, data)`, oldest first.
type Revisions = Vec<(Tid, Arc<[u8]>)>;

#[derive(Default)]
struct State {
    revisions: HashMap<Oid, Revisions>,
    transactions: Vec<TransactionInfo>,
    /// Tid of the newest applied transaction (equal to `last_tid` once published).
    applied_tid: Tid,
}

impl State {
    fn newest_tid(&self, oid: Oid) -> Tid {
        self.revisions
            .get(&oid)
            .and_then(|revs| revs.last())
            .map_or(Tid::ZERO, |(tid, _)| *tid)
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                commit_lock: Arc::new(Mutex::new(())),
                next_oid: AtomicU64::new(1),
                last_tid: AtomicU64::new(0),
                notifier: Notifier::default(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Storage for MemoryStorage {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn last_tid(&self) -> Tid {
        Tid(self.shared.last_tid.load(Ordering::Acquire))
    }

    fn new_oid(&self) -> Result<Oid> {
        self.check_open()?;
        Ok(Oid(self.shared.next_oid.fetch_add(1, Ordering::Relaxed)))
    }

    fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision> {
        self.check_open()?;
        let snapshot = snapshot.min(self.last_tid());
        let state = self.shared.state.read();
        let revs = state
            .revisions
            .get(&oid)
            .ok_or(Error::NoSuchObject { oid })?;
        let at = revs.partition_point(|(tid, _)| *tid <= snapshot);
        if at == 0 {
            return Err(Error::NotFoundAtSnapshot { oid, snapshot });
        }
        let (tid, data) = &revs[at - 1];
        Ok(Revision {
            tid: *tid,
            data: data.to_vec(),
        })
    }

    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.check_open()?;
        let last = self.last_tid();
        let state = self.shared.state.read();
        let revs = state
            .revisions
            .get(&oid)
            .ok_or(Error::NoSuchObject { oid })?;
        match revs.binary_search_by_key(&tid, |(t, _)| *t) {
            Ok(i) if tid <= last => Ok(revs[i].1.to_vec()),
            _ => Err(Error::NoSuchRevision { oid, tid }),
        }
    }

    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.check_open()?;
        let last = self.last_tid();
        let state = self.shared.state.read();
        let revs = state
            .revisions
            .get(&oid)
            .ok_or(Error::NoSuchObject { oid })?;
        Ok(revs
            .iter()
            .rev()
            .filter(|(tid, _)| *tid <= last)
            .take(limit)
            .map(|(tid, data)| RevisionInfo {
                tid: *tid,
                size: data.len() as u64,
            })
            .collect())
    }

    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.check_open()?;
        let to = to.min(self.last_tid());
        let state = self.shared.state.read();
        let start = state.transactions.partition_point(|t| t.tid < from);
        let selected: Vec<TransactionInfo> = state.transactions[start..]
            .iter()
            .take_while(|t| t.tid <= to)
            .cloned()
            .collect();
        Ok(Box::new(selected.into_iter().map(Ok)))
    }

    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        self.check_open()?;
        meta.validate()?;
        Ok(Box::new(MemoryTransaction {
            shared: Arc::clone(&self.shared),
            meta,
            writes: PendingWrites::default(),
            voted: None,
        }))
    }

    fn subscribe(&self) -> CommitSubscription {
        self.shared.notifier.subscribe()
    }

    fn restore(&self, tid: Tid, meta: &TransactionMeta, records: &[(Oid, Vec<u8>)]) -> Result<()> {
        self.check_open()?;
        self.shared.restore(tid, meta, records)
    }

    fn close(&self) -> Result<()> {
        // Under the state lock: a commit in `finish` either became visible before
        // this returns, or sees the flag and is refused.
        let _state = self.shared.state.write();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notifier.close();
        Ok(())
    }
}

impl Shared {
    /// Makes `writes` visible as transaction `tid` and publishes it (the caller
    /// holds the commit lock and the state write lock, and checked `closed`).
    fn apply(&self, state: &mut State, tid: Tid, meta: TransactionMeta, writes: PendingWrites) {
        debug_assert!(tid > state.applied_tid);
        let oids: Arc<[Oid]> = writes.oids().into();
        let changes = writes
            .stores
            .iter()
            .map(|s| ChangeInfo {
                oid: s.oid,
                size: s.data.len() as u64,
            })
            .collect();
        for s in writes.stores {
            state
                .revisions
                .entry(s.oid)
                .or_default()
                .push((tid, s.data.into()));
        }
        state
            .transactions
            .push(TransactionInfo { tid, meta, changes });
        state.applied_tid = tid;
        self.notifier.publish(&CommitEvent { tid, oids });
        self.last_tid.store(tid.0, Ordering::Release);
    }

    /// Applies a transaction copied from another storage (see `Storage::restore`).
    fn restore(&self, tid: Tid, meta: &TransactionMeta, records: &[(Oid, Vec<u8>)]) -> Result<()> {
        meta.validate()?;
        let mut writes = PendingWrites::default();
        for (oid, data) in records {
            writes.store(*oid, Tid::ZERO, data.clone())?;
        }
        let _guard = self.commit_lock.lock();
        let mut state = self.state.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if tid <= state.applied_tid {
            return Err(Error::TidNotIncreasing {
                tid,
                last: state.applied_tid,
            });
        }
        let high = records.iter().map(|(oid, _)| oid.0.saturating_add(1));
        self.next_oid
            .fetch_max(high.max().unwrap_or(0), Ordering::AcqRel);
        self.apply(&mut state, tid, meta.clone(), writes);
        Ok(())
    }
}

struct MemoryTransaction {
    shared: Arc<Shared>,
    meta: TransactionMeta,
    writes: PendingWrites,
    /// Set by vote: the held commit lock and the tid this transaction will get.
    voted: Option<(parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>, Tid)>,
}

impl MemoryTransaction {
    /// The vote, merging conflicting stores through `resolver` when given (under
    /// the commit lock, against the newest revisions, which stay the newest until
    /// this transaction finishes or aborts); returns the merged oids.
    fn vote_with(&mut self, resolver: Option<Resolver<'_>>) -> Result<Vec<Oid>> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let guard = self.shared.commit_lock.lock_arc();
        let state = self.shared.state.read();
        let found = conflicts::find(&self.writes, resolver.is_some(), |oid| {
            Ok((state.newest_tid(oid), ()))
        })?;
        let revision = |oid: Oid, tid: Tid| {
            let revs = state.revisions.get(&oid)?;
            let i = revs.binary_search_by_key(&tid, |(t, _)| *t).ok()?;
            Some(&revs[i].1)
        };
        let merged = conflicts::merge_all(found, |c| {
            let ConflictError {
                oid,
                base_tid,
                current_tid,
            } = c.conflict;
            Ok(match resolver {
                Some(resolver) if c.stored => revision(oid, base_tid)
                    .zip(revision(oid, current_tid))
                    .and_then(|(old, committed)| resolver(oid, old, committed)),
                _ => None,
            })
        })?
        .map_err(Error::from)?;
        let tid = Tid::next_after(state.applied_tid);
        drop(state);
        let resolved = self.writes.apply_merges(merged);
        self.voted = Some((guard, tid));
        Ok(resolved)
    }
}

impl StorageTransaction for MemoryTransaction {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        if oid != Oid::ROOT && oid.0 >= self.shared.next_oid.load(Ordering::Relaxed) {
            return Err(Error::UnallocatedOid { oid });
        }
        self.writes.store(oid, base_tid, data)
    }

    fn check_current(&mut self, oid: Oid, tid: Tid) -> Result<()> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        self.writes.check_current(oid, tid);
        Ok(())
    }

    fn vote(&mut self) -> Result<()> {
        self.vote_with(None).map(drop)
    }

    fn vote_resolving(&mut self, resolver: Resolver<'_>) -> Result<Option<Vec<Oid>>> {
        self.vote_with(Some(resolver)).map(Some)
    }

    fn merges_conflicts(&self) -> bool {
        true
    }

    fn finish(mut self: Box<Self>) -> Result<Tid> {
        if self.voted.is_none() {
            self.vote()?;
        }
        let (guard, tid) = self.voted.take().expect("voted above");
        let writes = std::mem::take(&mut self.writes);
        let mut state = self.shared.state.write();
        // Voted before close, finishing after it: refused, so nothing commits once
        // close has returned (close sets the flag under this lock).
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.shared
            .apply(&mut state, tid, std::mem::take(&mut self.meta), writes);
        drop(state);
        drop(guard);
        Ok(tid)
    }

    fn abort(self: Box<Self>) {}
}
