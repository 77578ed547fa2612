//! Connections: one per thread of work, each with its own object cache and its
//! own view of commits.
//!
//! Invariants:
//! - Commit events are applied to the cache only in `begin`, never during a
//!   transaction, so a transaction sees one snapshot from begin to its end.
//! - `begin` reads the storage's last tid *before* draining events: the storage
//!   delivers a commit's event before its tid becomes the last tid, so every event at
//!   or before the new snapshot is in hand. Events after the snapshot wait in the
//!   backlog for a later begin (applying them early and then caching an older
//!   revision would leave a stale entry with its event already spent).
//! - Idle pooled connections catch up whenever a connection returns to the pool, so
//!   their pending events stay bounded by the commits between two returns.

use std::collections::VecDeque;
use std::sync::Arc;

use zodiac_storage::{Backoff, CommitEvent, CommitSubscription, ConflictError, Storage, Tid};

use crate::cache::{Cache, CacheStats};
use crate::database::DbInner;
use crate::error::{Error, Result};
use crate::transaction::Transaction;

pub(crate) struct ConnState {
    pub cache: Cache,
    subscription: CommitSubscription,
    backlog: VecDeque<CommitEvent>,
}

impl ConnState {
    fn new(db: &DbInner) -> ConnState {
        ConnState {
            cache: Cache::new(db.options.cache_objects_max, db.options.cache_bytes_max),
            subscription: db.storage.subscribe(),
            backlog: VecDeque::new(),
        }
    }

    /// Applies every commit event with `tid <= snapshot`.
    fn catch_up(&mut self, storage: &dyn Storage, snapshot: Tid) {
        self.backlog.extend(self.subscription.drain());
        // Checked after the drain: every event with tid <= snapshot was published
        // before the snapshot was read, so it was either drained or counted missed.
        if self.subscription.missed() {
            log::warn!("a connection fell too far behind the commits; dropping its object cache");
            self.cache.clear();
            self.backlog.clear();
            self.subscription = storage.subscribe();
            return;
        }
        while self.backlog.front().is_some_and(|e| e.tid <= snapshot) {
            let event = self.backlog.pop_front().expect("front exists");
            for &oid in event.oids.iter() {
                self.cache.invalidate(oid, event.tid);
            }
        }
    }
}

/// A connection to a [`Database`](crate::Database): a cache and one transaction at a
/// time. Returns to the database's pool when dropped.
pub struct Connection {
    db: Arc<DbInner>,
    state: Option<ConnState>,
}

impl Connection {
    pub(crate) fn new(db: Arc<DbInner>, state: Option<ConnState>) -> Connection {
        let state = state.unwrap_or_else(|| ConnState::new(&db));
        Connection {
            db,
            state: Some(state),
        }
    }

    /// Begins a transaction at the newest committed snapshot. Dropping it without
    /// `commit` aborts it.
    pub fn begin(&mut self) -> Transaction<'_> {
        let snapshot = self.db.storage.last_tid();
        let state = self.state.as_mut().expect("state is present until drop");
        state.catch_up(&*self.db.storage, snapshot);
        Transaction::new(&*self.db.storage, &self.db.commits, state, snapshot)
    }

    /// Runs `f` in a transaction and commits it; on a conflict (from `f` or from the
    /// commit) begins a new transaction and runs `f` again, after a growing, jittered
    /// wait, up to the database's [`RetryPolicy`](crate::RetryPolicy). Other errors
    /// abort and return at once. `f` must not have effects outside the transaction
    /// that would be wrong to repeat.
    pub fn transact<R>(&mut self, f: impl FnMut(&mut Transaction<'_>) -> Result<R>) -> Result<R> {
        self.transact_with(f)
    }

    /// [`transact`](Self::transact) for closures that return another crate's error
    /// (one that wraps this crate's): the one conflict-retry loop of Zodiac.
    pub fn transact_with<R, E: TransactError>(
        &mut self,
        mut f: impl FnMut(&mut Transaction<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let policy = self.db.options.retry;
        let mut backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
        let mut attempt = 1;
        loop {
            let mut tx = self.begin();
            let outcome = f(&mut tx).and_then(|r| tx.commit().map(|_| r).map_err(E::from));
            let conflict = match outcome {
                Ok(r) => return Ok(r),
                Err(e) => e.into_conflict()?,
            };
            if attempt >= policy.attempts_max {
                return Err(E::from(Error::RetriesExhausted {
                    attempts: attempt,
                    conflict,
                }));
            }
            log::debug!("transaction attempt {attempt} conflicted ({conflict}); retrying");
            std::thread::sleep(backoff.next_wait());
            attempt += 1;
        }
    }

    /// The counters and current size of this connection's object cache. The cache
    /// and its counters stay with the connection while it waits in the pool, so they
    /// cover every transaction it has run since it was created.
    pub fn cache_stats(&self) -> CacheStats {
        self.state.as_ref().expect("state").cache.stats()
    }
}

/// An error a transact loop can see conflicts in: this crate's, or one that wraps it.
pub trait TransactError: From<Error> {
    /// The write conflict this error is (to retry), or the error itself (to return).
    fn into_conflict(self) -> std::result::Result<ConflictError, Self>;
}

impl TransactError for Error {
    fn into_conflict(self) -> std::result::Result<ConflictError, Self> {
        match self {
            Error::Conflict(c) => Ok(c),
            e => Err(e),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            // Idle connections are between transactions, so they may catch up now;
            // without this, one at the bottom of the pool would hold every commit
            // event since it was last used.
            let snapshot = self.db.storage.last_tid();
            let mut pool = self.db.pool.lock();
            for idle in pool.iter_mut() {
                idle.catch_up(&*self.db.storage, snapshot);
            }
            if pool.len() < self.db.options.pool_size_max {
                pool.push(state);
            }
        }
    }
}
