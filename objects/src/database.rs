//! The database: a storage, the root object, and a pool of connections.
//!
//! Invariants:
//! - After `open` returns, the root object (oid 0) exists and is a [`Root`].
//! - A pooled connection keeps its cache and its commit subscription, so a
//!   connection taken from the pool catches up on every commit it missed at its next
//!   begin; the pool holds at most `pool_size_max` idle connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use zodiac_storage::{Oid, Storage, Tid, TransactionMeta};

use crate::codec;
use crate::connection::{ConnState, Connection};
use crate::error::{Error, Result};
use crate::persistent::{Persistent, Root};
use crate::record;
use crate::transaction::Transaction;

/// How `transact` retries a transaction that hit a write conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts_max: u32,
    /// Wait before the second attempt; doubles after each further conflict.
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 10,
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(100),
        }
    }
}

/// Per-database settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// Most objects one connection's cache holds (default 10 000).
    pub cache_objects_max: usize,
    /// Most record bytes one connection's cache holds (default 64 MiB).
    pub cache_bytes_max: usize,
    /// Most idle connections kept for reuse (default 16).
    pub pool_size_max: usize,
    /// How [`Connection::transact`] retries conflicts (default: 10 attempts, waits
    /// from 1 ms doubling up to 100 ms).
    pub retry: RetryPolicy,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            cache_objects_max: 10_000,
            cache_bytes_max: 64 << 20,
            pool_size_max: 16,
            retry: RetryPolicy::default(),
        }
    }
}

pub(crate) struct DbInner {
    pub storage: Arc<dyn Storage>,
    pub options: DatabaseOptions,
    pub pool: Mutex<Vec<ConnState>>,
    pub commits: CommitCounters,
}

/// What the commits of a database's transactions met, since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Commits that wrote something.
    pub commits: u64,
    /// Conflicts merged by the objects' types (`Persistent::resolve_conflict`):
    /// by the storage in the vote (embedded) or by its server at commit, at no
    /// extra cost, or else by the committer, at the cost of another vote.
    pub conflicts_resolved: u64,
    /// Conflicts no type could merge, reported to the committer (which may
    /// retry the whole transaction).
    pub conflicts_unresolved: u64,
}

/// The counters behind [`CommitStats`], shared by a database's transactions.
#[derive(Default)]
pub(crate) struct CommitCounters {
    pub commits: AtomicU64,
    pub conflicts_resolved: AtomicU64,
    pub conflicts_unresolved: AtomicU64,
}

impl CommitCounters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A database over any storage. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Database {
    inner: Arc<DbInner>,
}

impl Database {
    /// Opens a database with default options, creating the root object if the
    /// storage has none.
    pub fn open(storage: Arc<dyn Storage>) -> Result<Database> {
        Self::open_with(storage, DatabaseOptions::default())
    }

    /// Opens a database with `options`, creating the root object if the storage has
    /// none. Fails with [`Error::WrongType`] or [`Error::DamagedRecord`] when oid 0
    /// holds something other than a [`Root`]. Panics when
    /// `options.retry.attempts_max` is 0.
    pub fn open_with(storage: Arc<dyn Storage>, options: DatabaseOptions) -> Result<Database> {
        assert!(options.retry.attempts_max >= 1, "attempts_max must be >= 1");
        ensure_root(&*storage)?;
        Ok(Database {
            inner: Arc::new(DbInner {
                storage,
                options,
                pool: Mutex::new(Vec::new()),
                commits: CommitCounters::default(),
            }),
        })
    }

    /// A connection from the pool (or a new one). It returns to the pool when dropped.
    pub fn connection(&self) -> Connection {
        let state = self.inner.pool.lock().pop();
        Connection::new(Arc::clone(&self.inner), state)
    }

    /// Runs `f` in a transaction on a pooled connection, retrying on conflict;
    /// see [`Connection::transact`].
    pub fn transact<R>(&self, f: impl FnMut(&mut Transaction<'_>) -> Result<R>) -> Result<R> {
        self.connection().transact(f)
    }

    /// [`transact`](Self::transact) for closures returning another crate's error;
    /// see [`Connection::transact_with`].
    pub fn transact_with<R, E: crate::TransactError>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        self.connection().transact_with(f)
    }

    /// The storage this database was opened on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The options this database was opened with.
    pub fn options(&self) -> &DatabaseOptions {
        &self.inner.options
    }

    /// What commits met so far (counted by every connection of this database).
    pub fn commit_stats(&self) -> CommitStats {
        let c = &self.inner.commits;
        CommitStats {
            commits: c.commits.load(Ordering::Relaxed),
            conflicts_resolved: c.conflicts_resolved.load(Ordering::Relaxed),
            conflicts_unresolved: c.conflicts_unresolved.load(Ordering::Relaxed),
        }
    }

    /// Idle connections in the pool.
    pub fn pooled_connections(&self) -> usize {
        self.inner.pool.lock().len()
    }
}

fn ensure_root(storage: &dyn Storage) -> Result<()> {
    match storage.load(Oid::ROOT, storage.last_tid()) {
        Ok(rev) => {
            let found = record::type_name(&rev.data).map_err(|source| Error::DamagedRecord {
                oid: Oid::ROOT,
                source,
            })?;
            if found != Root::TYPE_NAME {
                return Err(Error::WrongType {
                    oid: Oid::ROOT,
                    stored: found.to_string(),
                    requested: Root::TYPE_NAME,
                });
            }
            Ok(())
        }
        Err(zodiac_storage::Error::NoSuchObject { .. })
        | Err(zodiac_storage::Error::NotFoundAtSnapshot { .. }) => {
            let data = codec::encode(&Root::default()).map_err(|source| Error::Encode {
                oid: Oid::ROOT,
                type_name: Root::TYPE_NAME,
                source,
            })?;
            let mut txn = storage.begin(TransactionMeta::described("create the root object"))?;
            txn.store(Oid::ROOT, Tid::ZERO, data)?;
            match txn.finish() {
                Ok(_) => Ok(()),
                // Another opener created it first.
                Err(zodiac_storage::Error::Conflict(_)) => ensure_root(storage),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
