//! The client storage: the [`Storage`] trait over a connection to a `Server`.
//!
//! Threads: callers write requests and wait for their replies (a read yields for
//! up to `REPLY_SPIN` before it sleeps: on loopback that saves a wake-up per load,
//! more than doubling cold loads); one reader per connection dispatches replies and
//! applies invalidations; one supervisor reconnects in the background (backoff with
//! jitter, forever, until close).
//!
//! The parts: [`options`] (how a client connects), [`link`] (the connection, its
//! reader thread and the reconnecting supervisor), [`invalidations`] (following
//! the server's commits, the catch-up at connect, the cache file), [`prefetch`]
//! (loads nobody waits for), [`transaction`] (the client's transactions), [`restore`]
//! (copied transactions, for `zodiac copy`). This
//! module holds the storage's state and its `Storage` implementation.
//!
//! Invariants:
//! - Nothing commits once `close` has returned (close waits for finishes in flight).
//! - A load is answered from the cache only at a snapshot the cache is current
//!   for (`snapshot <= cache.last_tid`); anything else asks the server.

mod invalidations;
mod link;
mod options;
mod prefetch;
mod restore;
mod transaction;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

pub use options::ClientOptions;
pub use prefetch::PREFETCHES_IN_FLIGHT_MAX;

use self::link::Link;
use self::transaction::{ClientTransaction, Slot};
use super::cache::Cache;
use super::protocol::{ClientMessage, Request, Response, WireMeta};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{Revision, RevisionInfo, TransactionInfo, TransactionMeta};
use crate::notify::{CommitSubscription, Notifier};
use crate::reports::{PackReport, References};
use crate::storage::{Storage, StorageTransaction, TransactionIter};

/// Oids one `NewOids` request asks for: `new_oid` takes a round trip once per batch.
const NEW_OIDS_BATCH: u32 = 32;

/// A storage served by a `zodiac server` (see `docs/protocol.md`).
pub struct ClientStorage {
    inner: Arc<Inner>,
}

/// What the storage's callers, the connection's reader thread and the reconnecting
/// supervisor share.
struct Inner {
    address: String,
    options: ClientOptions,
    link: Mutex<LinkState>,
    link_changed: Condvar,
    cache: Mutex<Cache>,
    /// `last_tid()`: advanced after the invalidations up to it were applied.
    published: AtomicU64,
    published_lock: Mutex<()>,
    published_changed: Condvar,
    notifier: Notifier,
    closed: AtomicBool,
    /// Held for reading by `finish`, for writing by `close`.
    closing: RwLock<()>,
    server_read_only: AtomicBool,
    connected_once: AtomicBool,
    /// The served storage's identity, from the last `Welcome` (0: unknown).
    identity: AtomicU64,
    /// The identity of the cache file loaded at connect, until the first
    /// `Welcome` checks it.
    preloaded: Mutex<Option<u64>>,
    next_id: AtomicU64,
    /// Transactions open now; the server allows at most
    /// `TRANSACTIONS_PER_CONNECTION_MAX` per connection, so `begin` waits for a slot.
    open_transactions: Mutex<usize>,
    transaction_ended: Condvar,
    /// Revisions from conflict replies, for merging without loading them.
    conflict_revisions: Mutex<super::revisions::RevisionStash>,
}

/// The connection in use, if any (`None` between a loss and the next connect).
struct LinkState {
    current: Option<Arc<Link>>,
}

impl Inner {
    fn disconnected(&self, reason: impl Into<String>) -> Error {
        Error::Disconnected {
            address: self.address.clone(),
            reason: reason.into(),
        }
    }

    fn link_lost(&self, link: &Link) -> Error {
        let reason = link.reason.lock().clone();
        self.disconnected(if reason.is_empty() {
            "connection lost".to_string()
        } else {
            reason
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl ClientStorage {
    /// Connects to the server at `address` (`HOST:PORT`, optionally `tcp://`-prefixed),
    /// trying for up to `wait_timeout`; a refusal (authentication, version) fails at once.
    pub fn connect(address: &str, options: ClientOptions) -> Result<ClientStorage> {
        let address = address
            .strip_prefix("tcp://")
            .unwrap_or(address)
            .to_string();
        let inner = Arc::new(Inner {
            address,
            cache: Mutex::new(Cache::new(options.cache_bytes_max)),
            options,
            link: Mutex::new(LinkState { current: None }),
            link_changed: Condvar::new(),
            published: AtomicU64::new(0),
            published_lock: Mutex::new(()),
            published_changed: Condvar::new(),
            notifier: Notifier::default(),
            closed: AtomicBool::new(false),
            closing: RwLock::new(()),
            server_read_only: AtomicBool::new(false),
            connected_once: AtomicBool::new(false),
            identity: AtomicU64::new(0),
            preloaded: Mutex::new(None),
            next_id: AtomicU64::new(1),
            open_transactions: Mutex::new(0),
            transaction_ended: Condvar::new(),
            conflict_revisions: Mutex::new(Default::default()),
        });
        inner.load_cache_file();
        let deadline = Instant::now() + inner.options.wait_timeout;
        let mut backoff = Backoff::new(
            inner.options.reconnect_delay_min,
            inner.options.reconnect_delay_max,
        );
        loop {
            match inner.establish() {
                Ok(()) => break,
                Err(
                    e @ (Error::Refused { .. } | Error::Protocol { .. } | Error::Format { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(wait);
                }
            }
        }
        let supervisor = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("zodiac-client-reconnect".into())
            .spawn(move || supervisor.supervise())
            .map_err(|e| inner.disconnected(format!("cannot start the reconnect thread: {e}")))?;
        Ok(ClientStorage { inner })
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner
            .link
            .lock()
            .current
            .as_ref()
            .is_some_and(|l| l.is_alive())
    }

    /// Objects and bytes in the cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let cache = self.inner.cache.lock();
        (cache.len(), cache.bytes())
    }

    /// Whether the server refuses commits.
    pub fn server_is_read_only(&self) -> bool {
        self.inner.server_read_only.load(Ordering::Acquire)
    }

    /// Returns once every commit the server acknowledged before this call is
    /// visible here (its invalidation applied, so a transaction begun afterwards
    /// reads it): one round trip. Without it another client's commit becomes
    /// visible when its invalidation arrives, which is soon but not at once (as in
    /// ZEO without `server_sync`). Works because the server queues a commit's
    /// invalidations for every connection before it acknowledges the commit, and
    /// writes a connection's frames in the order queued.
    pub fn sync(&self) -> Result<()> {
        self.inner.check_open()?;
        match self.inner.call(Request::Ping)? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Packs the server's storage to `pack_time` (`Tid::MAX`: now), with garbage
    /// collection when `gc`; returns once the packed file is in place. The server
    /// refuses when it is read-only (`ReadOnly`), when this client is read-only, and
    /// a `gc` pack when it has no reference reader (`ServerOptions::references`).
    /// The call waits for the whole pack (no timeout); losing the connection meanwhile
    /// fails it with `Disconnected`, and the pack may or may not complete.
    pub fn pack(&self, pack_time: Tid, gc: bool) -> Result<PackReport> {
        self.inner.check_open()?;
        if self.inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        match self.inner.call(Request::Pack {
            tid: pack_time.0,
            gc,
        })? {
            Response::Packed(report) => Ok(report.into()),
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for ClientStorage {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn unexpected(response: Response) -> Error {
    Error::Server {
        message: format!("unexpected reply {response:?}"),
    }
}

impl Storage for ClientStorage {
    fn describe(&self) -> String {
        format!("tcp://{}", self.inner.address)
    }

    fn last_tid(&self) -> Tid {
        Tid(self.inner.published.load(Ordering::Acquire))
    }

    fn new_oid(&self) -> Result<Oid> {
        self.inner.check_open()?;
        let link = self.inner.link()?;
        // Held across the request, so the spare oids stay in increasing order.
        let mut spare = link.oids.lock();
        if let Some(oid) = spare.pop_front() {
            return Ok(Oid(oid));
        }
        match self.inner.call_on(
            &link,
            Request::NewOids {
                count: NEW_OIDS_BATCH,
            },
        )? {
            Response::Oids(oids) if !oids.is_empty() => {
                spare.extend(&oids[1..]);
                Ok(Oid(oids[0]))
            }
            other => Err(unexpected(other)),
        }
    }

    fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision> {
        self.inner.check_open()?;
        let snapshot = snapshot.min(self.last_tid());
        let cached = || {
            let mut cache = self.inner.cache.lock();
            if snapshot <= cache.last_tid
                && let Some(revision) = cache.get(oid, snapshot)
            {
                return Ok(revision);
            }
            Err(cache.epoch)
        };
        if let Ok(revision) = cached() {
            return Ok(revision);
        }
        // Its prefetch may be in flight, or may have filled the cache since the
        // look above: either way, look again before asking the server.
        self.inner.await_prefetch(oid);
        let epoch = match cached() {
            Ok(revision) => return Ok(revision),
            Err(epoch) => epoch,
        };
        match self.inner.call(Request::Load {
            oid: oid.0,
            snapshot: snapshot.0,
        })? {
            Response::Revision { tid, data } => {
                let revision = Revision {
                    tid: Tid(tid),
                    data,
                };
                self.inner
                    .cache
                    .lock()
                    .insert_loaded(oid, snapshot, epoch, &revision);
                Ok(revision)
            }
            other => Err(unexpected(other)),
        }
    }

    fn known_newer_revision(&self, oid: Oid, than: Tid) -> Option<Tid> {
        self.inner.conflict_revisions.lock().newer(oid, than)
    }

    /// Sends loads of the oids not cached at `snapshot` without waiting for them;
    /// they go out with the next request (a commit, say), and their replies fill
    /// the cache, so the loads that follow are local.
    fn prefetch(&self, oids: &[Oid], snapshot: Tid) {
        if self.inner.check_open().is_err() {
            return;
        }
        let snapshot = snapshot.min(self.last_tid());
        let (epoch, missing) = {
            let cache = self.inner.cache.lock();
            if snapshot > cache.last_tid {
                return;
            }
            let missing: Vec<Oid> = oids
                .iter()
                .copied()
                .filter(|&oid| !cache.holds(oid, snapshot))
                .collect();
            (cache.epoch, missing)
        };
        if !missing.is_empty() {
            self.inner.prefetch(&missing, snapshot, epoch);
        }
    }

    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.inner.check_open()?;
        if let Some(data) = self.inner.conflict_revisions.lock().get(oid, tid) {
            return Ok(data);
        }
        match self.inner.call(Request::LoadRevision {
            oid: oid.0,
            tid: tid.0,
        })? {
            Response::Data(data) => Ok(data),
            other => Err(unexpected(other)),
        }
    }

    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.inner.check_open()?;
        match self.inner.call(Request::History {
            oid: oid.0,
            limit: limit as u64,
        })? {
            Response::History(h) => Ok(h
                .into_iter()
                .map(|(tid, size)| RevisionInfo {
                    tid: Tid(tid),
                    size,
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.inner.check_open()?;
        Ok(Box::new(Pages {
            inner: &self.inner,
            from,
            to: to.min(self.last_tid()),
            buffer: VecDeque::new(),
            done: false,
        }))
    }

    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        self.inner.check_open()?;
        meta.validate()?;
        if self.inner.options.read_only || self.server_is_read_only() {
            return Err(Error::ReadOnly);
        }
        let slot = Slot::take(&self.inner)?;
        let link = self.inner.link()?;
        let txn = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.send(
            &link,
            &ClientMessage::Begin {
                txn,
                meta: WireMeta::from(&meta),
            },
            false,
        )?;
        Ok(Box::new(ClientTransaction::new(
            Arc::clone(&self.inner),
            link,
            txn,
            slot,
        )))
    }

    fn subscribe(&self) -> CommitSubscription {
        self.inner.notifier.subscribe()
    }

    fn restore(&self, tid: Tid, meta: &TransactionMeta, records: &[(Oid, Vec<u8>)]) -> Result<()> {
        self.restore_remote(tid, meta, records)
    }

    fn pack(&self, pack_time: Tid, references: Option<References<'_>>) -> Result<PackReport> {
        ClientStorage::pack(self, pack_time, references.is_some())
    }

    fn close(&self) -> Result<()> {
        let _closing = self.inner.closing.write();
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut st = self.inner.link.lock();
        if let Some(link) = st.current.take() {
            link.kill("the client storage was closed");
        }
        self.inner.link_changed.notify_all();
        drop(st);
        self.inner.notifier.close();
        self.inner.save_cache_file();
        Ok(())
    }
}

/// Transactions fetched page by page.
struct Pages<'a> {
    inner: &'a Inner,
    from: Tid,
    to: Tid,
    buffer: VecDeque<TransactionInfo>,
    done: bool,
}

impl Iterator for Pages<'_> {
    type Item = Result<TransactionInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            if self.from > self.to {
                self.done = true;
                return None;
            }
            let response = self.inner.call(Request::Transactions {
                from: self.from.0,
                to: self.to.0,
            });
            match response {
                Ok(Response::Transactions { page, more }) => {
                    self.buffer
                        .extend(page.into_iter().map(TransactionInfo::from));
                    match self.buffer.back().and_then(|t| t.tid.0.checked_add(1)) {
                        Some(next) if more => self.from = Tid(next),
                        _ => self.done = true,
                    }
                }
                Ok(other) => {
                    self.done = true;
                    return Some(Err(unexpected(other)));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buffer.pop_front().map(Ok)
    }
}
