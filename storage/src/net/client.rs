//! The client storage: the [`Storage`] trait over a connection to a `Server`.
//!
//! Threads: callers write requests and wait for their replies (a read yields for
//! up to `REPLY_SPIN` before it sleeps: on loopback that saves a wake-up per load,
//! more than doubling cold loads); one reader per connection dispatches replies and
//! applies invalidations; one supervisor reconnects in the background (backoff with
//! jitter, forever, until close).
//!
//! Invariants:
//! - Invalidations are applied in the order the server sends them (commit order):
//!   cache first, then subscribers, then `last_tid` (the ordering contract).
//! - `finish` returns only once the invalidation of its own transaction was applied
//!   (or the connection was lost), so `last_tid() >= tid` afterwards.
//! - A transaction is bound to the connection it began on; once that connection is
//!   lost, every call on it fails with `Disconnected` until it is aborted.
//! - Nothing commits once `close` has returned (close waits for finishes in flight).
//! - Prefetches (`Storage::prefetch`) are loads nobody waits for: their replies
//!   enter the cache under the same rules as a load's, at most one is in flight per
//!   oid, and a load that meets one waits for it (sending it first if buffered)
//!   rather than asking again. A lost connection drops them with the other
//!   requests in flight, waking the loads that wait for them.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::cache::Cache;
use super::cache_file;
use super::handshake::{self, ClientFailure, Hello};
use super::protocol::{
    self, CatchUp, ClientMessage, FRAME_BYTES_MAX, Request, Response, ServerMessage,
    TRANSACTIONS_PER_CONNECTION_MAX, WireError, WireMeta,
};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::file::pack::{PackReport, References};
use crate::ids::{Oid, Tid};
use crate::meta::{CommitEvent, Revision, RevisionInfo, TransactionInfo, TransactionMeta};
use crate::notify::{CommitSubscription, Notifier};
use crate::pending::{RECORD_BYTES_MAX, TRANSACTION_OBJECTS_MAX};
use crate::storage::{Resolver, Storage, StorageTransaction, TransactionIter};

/// How a client storage connects and behaves. Every limit is named and has a default.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub(crate) wait_timeout: Duration,
    pub(crate) cache_bytes_max: usize,
    pub(crate) read_only: bool,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_delay_min: Duration,
    pub(crate) reconnect_delay_max: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) cache_file: Option<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            wait_timeout: Duration::from_secs(30),
            cache_bytes_max: 64 << 20,
            read_only: false,
            token: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_delay_min: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(30),
            cache_file: None,
        }
    }
}

impl ClientOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// How long a call waits for a connection when there is none, and how long
    /// `connect` tries before giving up (default: 30 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }
    /// Bytes of object data the cache may hold (default: 64 MiB).
    pub fn cache_bytes_max(mut self, bytes: usize) -> Self {
        self.cache_bytes_max = bytes;
        self
    }
    /// Never commit; the server refuses this connection's commits too (default: false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
    /// The shared secret of a server that requires one (default: none).
    pub fn token(mut self, token: Option<Vec<u8>>) -> Self {
        self.token = token;
        self
    }
    /// Longest wait for one TCP connect and handshake (default: 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// After `interval` without a frame from the server the client pings it; after
    /// `timeout` without one it counts the connection as lost (a server that vanished
    /// without closing it) and reconnects. Writes that block for `timeout` fail too.
    /// Defaults: 5 s and 30 s.
    pub fn ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout.max(interval);
        self
    }
    /// Keeps the object cache in this file between runs (default: none): loaded at
    /// connect and used when the server still serves the same data (its identity
    /// matches and the catch-up from the file's tid works), saved at close. One file
    /// per client process; see docs/protocol.md, "The persistent cache file".
    pub fn cache_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.cache_file = path;
        self
    }
    /// First and longest pause between reconnect attempts (defaults: 50 ms, 5 s).
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_delay_min = min;
        self.reconnect_delay_max = max.max(min);
        self
    }
}

/// How long a read yields waiting for its reply before it sleeps.
const REPLY_SPIN: Duration = Duration::from_micros(50);

/// Oids one `NewOids` request asks for: `new_oid` takes a round trip once per batch.
const NEW_OIDS_BATCH: u32 = 32;

/// A storage served by a `zodiac server` (see `docs/protocol.md`).
pub struct ClientStorage {
    inner: Arc<Inner>,
}

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

struct LinkState {
    current: Option<Arc<Link>>,
}

/// Where the reader hands a reply to the caller waiting for it.
type ReplySender = mpsc::SyncSender<std::result::Result<Response, WireError>>;

/// Prefetches one connection keeps in flight at most; more are not sent.
pub const PREFETCHES_IN_FLIGHT_MAX: usize = 64;

/// A request in flight: a caller waits for its reply, or it is a prefetch whose
/// reply only fills the cache.
enum Waiting {
    Caller(ReplySender),
    Prefetch(Prefetch),
}

/// A load sent ahead of need ([`Storage::prefetch`]).
struct Prefetch {
    oid: Oid,
    snapshot: Tid,
    epoch: u64,
    /// Loads of `oid` that found this prefetch in flight and wait for its reply.
    waiters: Vec<mpsc::SyncSender<()>>,
}

/// The requests in flight on one connection.
#[derive(Default)]
struct InFlight {
    requests: HashMap<u64, Waiting>,
    /// The prefetch in flight for an oid: its request id (at most one per oid).
    prefetching: HashMap<Oid, u64>,
}

impl InFlight {
    fn call(&mut self, id: u64, sender: ReplySender) {
        self.requests.insert(id, Waiting::Caller(sender));
    }

    /// Takes request `id` out, and its oid out of `prefetching` if a prefetch.
    fn take(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.requests.remove(&id)?;
        if let Waiting::Prefetch(p) = &waiting {
            self.prefetching.remove(&p.oid);
        }
        Some(waiting)
    }
}

/// One connection to the server.
struct Link {
    stream: TcpStream,
    writer: Mutex<BufWriter<TcpStream>>,
    /// Requests waiting for replies; `None` once the connection is lost.
    pending: Mutex<Option<InFlight>>,
    alive: AtomicBool,
    reason: Mutex<String>,
    /// When the last frame arrived, and whether a ping is waiting for its answer.
    heard: Mutex<(Instant, bool)>,
    /// When the last frame was sent (the server closes connections idle too long).
    sent: Mutex<Instant>,
    /// Oids the server allocated for this connection and no call took yet (dropped
    /// with the connection: a server restored from a copy may not know them).
    oids: Mutex<VecDeque<u64>>,
}

impl Link {
    fn kill(&self, reason: &str) {
        if self.alive.swap(false, Ordering::AcqRel) {
            *self.reason.lock() = reason.to_string();
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        // Dropping the senders fails every call in flight (and wakes the loads
        // waiting for a prefetch).
        self.pending.lock().take();
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
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

    /// The live connection, waiting up to `wait_timeout` for one.
    fn link(&self) -> Result<Arc<Link>> {
        let deadline = Instant::now() + self.options.wait_timeout;
        let mut st = self.link.lock();
        loop {
            self.check_open()?;
            if let Some(link) = &st.current
                && link.is_alive()
            {
                return Ok(Arc::clone(link));
            }
            if Instant::now() >= deadline {
                return Err(self.disconnected(format!(
                    "no connection within the wait timeout of {:?}",
                    self.options.wait_timeout
                )));
            }
            self.link_changed.wait_until(&mut st, deadline);
        }
    }

    fn send(&self, link: &Link, message: &ClientMessage, flush: bool) -> Result<()> {
        let frame = protocol::encode(message);
        let mut writer = link.writer.lock();
        let written = writer
            .write_all(&frame)
            .and_then(|()| if flush { writer.flush() } else { Ok(()) });
        drop(writer);
        if written.is_ok() && flush {
            *link.sent.lock() = Instant::now();
        }
        written.map_err(|e| {
            link.kill(&format!("write failed: {e}"));
            self.link_lost(link)
        })
    }

    fn call_on(&self, link: &Link, request: Request) -> Result<Response> {
        // A read's reply on loopback comes in tens of microseconds: yield for a
        // while before sleeping, which saves the wake-up. Not for commits, which
        // wait for the disk.
        let spin = matches!(
            request,
            Request::Load { .. } | Request::LoadRevision { .. } | Request::History { .. }
        );
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::sync_channel(1);
        match link.pending.lock().as_mut() {
            Some(pending) => pending.call(id, sender),
            None => return Err(self.link_lost(link)),
        }
        self.send(link, &ClientMessage::Request { id, request }, true)?;
        match receive(&receiver, if spin { REPLY_SPIN } else { Duration::ZERO }) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                if let WireError::ConflictWithRevisions { revisions, .. } = &e {
                    let mut stash = self.conflict_revisions.lock();
                    for r in revisions {
                        stash.insert(Oid(r.oid), Tid(r.tid), r.data.clone());
                    }
                }
                Err(e.into())
            }
            Err(_) => Err(self.link_lost(link)),
        }
    }

    fn call(&self, request: Request) -> Result<Response> {
        let link = self.link()?;
        self.call_on(&link, request)
    }

    /// The live connection, if there is one now (no waiting).
    fn live_link(&self) -> Option<Arc<Link>> {
        let st = self.link.lock();
        st.current.as_ref().filter(|l| l.is_alive()).map(Arc::clone)
    }

    /// Sends loads of `oids` at `snapshot` (read in cache `epoch`) without waiting:
    /// their replies fill the cache. Skips oids already in flight and any beyond
    /// [`PREFETCHES_IN_FLIGHT_MAX`]. The frames go out with the next flushed
    /// request (or a load waiting for one of them), in the same write.
    fn prefetch(&self, oids: &[Oid], snapshot: Tid, epoch: u64) {
        let Some(link) = self.live_link() else {
            return;
        };
        let mut ids = Vec::with_capacity(oids.len());
        {
            let mut pending = link.pending.lock();
            let Some(in_flight) = pending.as_mut() else {
                return;
            };
            for &oid in oids {
                if in_flight.prefetching.len() >= PREFETCHES_IN_FLIGHT_MAX {
                    break;
                }
                if in_flight.prefetching.contains_key(&oid) {
                    continue;
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let prefetch = Prefetch {
                    oid,
                    snapshot,
                    epoch,
                    waiters: Vec::new(),
                };
                in_flight.requests.insert(id, Waiting::Prefetch(prefetch));
                in_flight.prefetching.insert(oid, id);
                ids.push((id, oid));
            }
        }
        for (id, oid) in ids {
            let request = Request::Load {
                oid: oid.0,
                snapshot: snapshot.0,
            };
            if self
                .send(&link, &ClientMessage::Request { id, request }, false)
                .is_err()
            {
                return; // the connection is lost; the loads will say so
            }
        }
    }

    /// Waits for the prefetch of `oid` in flight, if there is one (sending it
    /// first if it is still buffered). Afterwards the reply of any prefetch of
    /// `oid` is in the cache, if the cache took it: the reader caches a reply
    /// before the prefetch stops being in flight.
    fn await_prefetch(&self, oid: Oid) {
        let Some(link) = self.live_link() else {
            return;
        };
        let (sender, receiver) = mpsc::sync_channel(1);
        {
            let mut pending = link.pending.lock();
            let Some(in_flight) = pending.as_mut() else {
                return;
            };
            let Some(id) = in_flight.prefetching.get(&oid) else {
                return;
            };
            match in_flight.requests.get_mut(id) {
                Some(Waiting::Prefetch(p)) => p.waiters.push(sender),
                _ => return,
            }
        }
        let flushed = link.writer.lock().flush();
        if let Err(e) = flushed {
            link.kill(&format!("write failed: {e}"));
            return;
        }
        *link.sent.lock() = Instant::now();
        // Woken by the reply, or failed when the connection is lost.
        let _ = receive(&receiver, REPLY_SPIN);
    }

    /// A prefetch's reply: into the cache (if not made stale meanwhile). A failed
    /// prefetch is only logged: the load that needs the object asks again and
    /// reports the error.
    fn prefetched(&self, p: &Prefetch, result: std::result::Result<Response, WireError>) {
        match result {
            Ok(Response::Revision { tid, data }) => {
                let revision = Revision {
                    tid: Tid(tid),
                    data,
                };
                self.cache
                    .lock()
                    .insert_loaded(p.oid, p.snapshot, p.epoch, &revision);
            }
            Ok(other) => log::debug!("prefetch of {}: unexpected {other:?}", p.oid),
            Err(e) => log::debug!("prefetch of {}: {e:?}", p.oid),
        }
    }

    /// Applies one transaction's invalidation: cache, subscribers, then `last_tid`.
    /// Applies the invalidation of `tid`, keeping the cached objects it carries
    /// the new `data` of current rather than dropping them.
    fn apply(&self, tid: Tid, oids: Vec<Oid>, data: Vec<(u64, Vec<u8>)>) {
        let oids: Arc<[Oid]> = oids.into();
        self.cache
            .lock()
            .invalidate_updating(tid, Arc::clone(&oids), data);
        self.notifier.publish(&CommitEvent { tid, oids });
        self.set_published(tid);
    }

    fn set_published(&self, tid: Tid) {
        self.published.store(tid.0, Ordering::Release);
        let _guard = self.published_lock.lock();
        self.published_changed.notify_all();
    }

    /// Waits until `last_tid() >= tid`, or the connection is lost.
    fn wait_published(&self, tid: Tid, link: &Link) {
        let mut guard = self.published_lock.lock();
        while self.published.load(Ordering::Acquire) < tid.0
            && link.is_alive()
            && !self.closed.load(Ordering::Acquire)
        {
            self.published_changed
                .wait_for(&mut guard, Duration::from_millis(50));
        }
    }

    /// Connects, authenticates and catches up; installs the new connection.
    fn establish(self: &Arc<Self>) -> Result<()> {
        let addrs: Vec<_> = self
            .address
            .to_socket_addrs()
            .map_err(|e| self.disconnected(format!("cannot resolve the address: {e}")))?
            .collect();
        let mut last_error = self.disconnected("the address resolves to nothing");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.options.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = self.disconnected(format!("connect failed: {e}")),
            }
        }
        let stream = stream.ok_or(last_error)?;
        let io_err = |e: std::io::Error| self.disconnected(format!("handshake failed: {e}"));
        stream.set_nodelay(true).map_err(io_err)?;
        stream
            .set_read_timeout(Some(self.options.connect_timeout))
            .map_err(io_err)?;
        let mut reader = BufReader::with_capacity(64 << 10, stream.try_clone().map_err(io_err)?);
        let mut writer = stream.try_clone().map_err(io_err)?;
        let fresh = !self.connected_once.load(Ordering::Acquire) && self.preloaded.lock().is_none();
        let last_tid = self.cache.lock().last_tid;
        let hello = Hello::new(self.options.read_only, fresh, last_tid);
        let mut partial = None;
        let welcome = handshake::client(
            &mut reader,
            &mut writer,
            &hello,
            self.options.token.as_deref(),
            |(tid, oids, complete, data)| {
                if tid <= self.cache.lock().last_tid {
                    // Applied already (the previous connection's reader got it).
                    return Ok(());
                }
                self.on_invalidation(&mut partial, tid, oids, complete, data)
            },
        )
        .map_err(|failure| match failure {
            ClientFailure::Io(e) => self.disconnected(format!("handshake failed: {e}")),
            ClientFailure::Protocol(what) => Error::Protocol {
                peer: self.address.clone(),
                what,
            },
            ClientFailure::Refused(reason) => Error::Refused {
                address: self.address.clone(),
                reason,
            },
        })?;
        self.identity.store(welcome.identity, Ordering::Release);
        let (server_tid, read_only, catch_up) =
            (welcome.last_tid, welcome.read_only, welcome.catch_up);
        let preloaded = self.preloaded.lock().take();
        let identity = self.identity.load(Ordering::Acquire);
        match (preloaded, catch_up) {
            (Some(saved), CatchUp::Equal | CatchUp::Behind) if saved == identity && saved != 0 => {
                log::info!(
                    "{}: the cache file is current as of {last_tid}: starting with {} objects",
                    self.address,
                    self.cache.lock().len()
                );
            }
            (Some(_), _) => {
                log::info!(
                    "{}: the cache file does not match the server's data (another database, \
                     a pack, a restore, or too old to catch up): starting with an empty cache",
                    self.address
                );
                self.reset(server_tid, false);
            }
            (None, _) => self.caught_up(catch_up, last_tid, server_tid),
        }
        self.server_read_only.store(read_only, Ordering::Release);
        self.connected_once.store(true, Ordering::Release);
        stream.set_read_timeout(None).map_err(io_err)?;
        stream
            .set_write_timeout(Some(self.options.ping_timeout))
            .map_err(io_err)?;
        let link = Arc::new(Link {
            writer: Mutex::new(BufWriter::with_capacity(
                64 << 10,
                stream.try_clone().map_err(io_err)?,
            )),
            stream,
            pending: Mutex::new(Some(InFlight::default())),
            alive: AtomicBool::new(true),
            reason: Mutex::new(String::new()),
            heard: Mutex::new((Instant::now(), false)),
            sent: Mutex::new(Instant::now()),
            oids: Mutex::new(VecDeque::new()),
        });
        let inner = Arc::clone(self);
        let reader_link = Arc::clone(&link);
        std::thread::Builder::new()
            .name("zodiac-client-reader".into())
            .spawn(move || inner.read_loop(reader_link, reader, partial))
            .map_err(|e| self.disconnected(format!("cannot start the reader thread: {e}")))?;
        // Installed only while alive, under the lock the reader takes to remove it when
        // it ends: an installed connection is always removed by its reader.
        let mut st = self.link.lock();
        if self.closed.load(Ordering::Acquire) {
            link.kill("closed");
            return Err(Error::Closed);
        }
        if !link.is_alive() {
            return Err(self.link_lost(&link));
        }
        st.current = Some(link);
        self.link_changed.notify_all();
        Ok(())
    }

    /// Drops the cache and follows the server from `tid`. With `missed`, the
    /// commits in between are unknown: every subscriber is cut off (its
    /// `CommitSubscription::missed` says so) before `last_tid` moves, so a cache
    /// above this storage is cleared too.
    /// Starts the cache from the cache file, if there is one; a damaged file costs
    /// a warning and a cold start.
    fn load_cache_file(&self) {
        let Some(path) = &self.options.cache_file else {
            return;
        };
        match cache_file::read(path) {
            Ok(None) => {}
            Ok(Some(saved)) => {
                let last_tid = saved.last_tid;
                self.cache.lock().preload(last_tid, saved.entries);
                *self.preloaded.lock() = Some(saved.identity);
                self.set_published(last_tid);
            }
            Err(what) => log::warn!(
                "{}: ignoring the cache file {}: {what}",
                self.address,
                path.display()
            ),
        }
    }

    /// Saves the cache to the cache file, if one is configured and the server's
    /// identity is known; a failure costs a warning (the next start is cold).
    fn save_cache_file(&self) {
        let Some(path) = &self.options.cache_file else {
            return;
        };
        let identity = self.identity.load(Ordering::Acquire);
        if identity == 0 {
            return; // never connected, or a server whose storage has no identity
        }
        let saved = {
            let cache = self.cache.lock();
            cache_file::SavedCache {
                identity,
                last_tid: cache.last_tid,
                entries: cache.entries(),
            }
        };
        if let Err(e) = cache_file::write(path, &saved) {
            log::warn!(
                "{}: cannot save the cache file {}: {e}",
                self.address,
                path.display()
            );
        }
    }

    /// Applies the server's catch-up answer for a cache kept in memory across a
    /// reconnect (`last_tid`: where the cache was; `server_tid`: the server's).
    fn caught_up(&self, catch_up: CatchUp, last_tid: Tid, server_tid: Tid) {
        match catch_up {
            CatchUp::Equal | CatchUp::Behind => {}
            CatchUp::Fresh => self.reset(server_tid, false),
            CatchUp::TooFar => {
                log::warn!(
                    "{}: this client missed more transactions than the server keeps \
                     (last seen {last_tid}, server at {server_tid}): dropping the whole cache; \
                     subscribers miss those transactions",
                    self.address
                );
                self.reset(server_tid, true);
            }
            CatchUp::Ahead => {
                log::warn!(
                    "{}: this client has seen transaction {last_tid} but the server's last is \
                     {server_tid}: the server's data was restored from an older copy; dropping \
                     the whole cache and following the server",
                    self.address
                );
                self.reset(server_tid, true);
            }
        }
    }

    fn reset(&self, tid: Tid, missed: bool) {
        self.cache.lock().reset(tid);
        if missed {
            self.notifier.cut_off_all();
        }
        self.set_published(tid);
    }

    fn on_invalidation(
        &self,
        partial: &mut Option<(Tid, Vec<Oid>)>,
        tid: Tid,
        oids: Vec<u64>,
        complete: bool,
        data: Vec<(u64, Vec<u8>)>,
    ) -> std::result::Result<(), String> {
        let (ptid, acc) = partial.get_or_insert_with(|| (tid, Vec::new()));
        if *ptid != tid {
            return Err(format!("invalidation of {tid} inside the one of {ptid}"));
        }
        if acc.len() + oids.len() > TRANSACTION_OBJECTS_MAX {
            return Err("an invalidation of more objects than a transaction may write".into());
        }
        acc.extend(oids.into_iter().map(Oid));
        if complete {
            let (tid, oids) = partial.take().expect("set above");
            if tid <= self.cache.lock().last_tid {
                return Err(format!("invalidation of {tid} out of commit order"));
            }
            self.apply(tid, oids, data);
        } else if !data.is_empty() {
            return Err(format!("invalidation data of {tid} before its last chunk"));
        }
        Ok(())
    }

    fn read_loop(
        self: Arc<Self>,
        link: Arc<Link>,
        mut reader: BufReader<TcpStream>,
        mut partial: Option<(Tid, Vec<Oid>)>,
    ) {
        let reason = loop {
            let payload = match protocol::read_frame(&mut reader, FRAME_BYTES_MAX) {
                Ok(p) => p,
                Err(e) => break format!("connection lost: {e}"),
            };
            *link.heard.lock() = (Instant::now(), false);
            let message = match protocol::decode::<ServerMessage>(&payload) {
                Ok(m) => m,
                Err(e) => break format!("protocol error: {e}"),
            };
            if let Err(what) = message.check() {
                break format!("protocol error: {what}");
            }
            match message {
                ServerMessage::Reply { id, result } => {
                    let mut pending = link.pending.lock();
                    match pending.as_mut().and_then(|p| p.take(id)) {
                        Some(Waiting::Caller(sender)) => {
                            drop(pending);
                            let _ = sender.send(result);
                        }
                        Some(Waiting::Prefetch(p)) => {
                            // Cached before the prefetch stops being in flight (the
                            // lock is released): a load that finds it in flight no
                            // more finds it cached.
                            self.prefetched(&p, result);
                            drop(pending);
                            for waiter in p.waiters {
                                let _ = waiter.try_send(());
                            }
                        }
                        None => break format!("protocol error: a reply to unknown request {id}"),
                    }
                }
                ServerMessage::Invalidation {
                    tid,
                    oids,
                    complete,
                    data,
                } => {
                    if let Err(what) =
                        self.on_invalidation(&mut partial, Tid(tid), oids, complete, data)
                    {
                        break format!("protocol error: {what}");
                    }
                }
                other => break format!("protocol error: unexpected {other:?}"),
            }
        };
        if link.is_alive() && !self.closed.load(Ordering::Acquire) {
            log::warn!("{}: {reason}; reconnecting", self.address);
        }
        link.kill(&reason);
        let mut st = self.link.lock();
        if st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &link)) {
            st.current = None;
        }
        self.link_changed.notify_all();
        drop(st);
        let _guard = self.published_lock.lock();
        self.published_changed.notify_all();
    }

    /// Pings a silent server (and a server this client has not sent anything to for
    /// a while, which would close the connection as idle), and gives the connection
    /// up when the server stays silent.
    fn check_alive(&self, link: &Link) {
        let (heard, pinged) = *link.heard.lock();
        let silent = heard.elapsed();
        if silent >= self.options.ping_timeout {
            log::warn!(
                "{}: no answer from the server for {silent:?}; reconnecting",
                self.address
            );
            link.kill(&format!("no answer from the server for {silent:?}"));
        } else if (silent >= self.options.ping_interval
            || link.sent.lock().elapsed() >= self.options.ping_interval)
            && !pinged
        {
            link.heard.lock().1 = true;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            // Nobody waits for the answer: any frame proves the server alive.
            let (sender, _) = mpsc::sync_channel(1);
            if let Some(pending) = link.pending.lock().as_mut() {
                pending.call(id, sender);
            }
            let _ = self.send(
                link,
                &ClientMessage::Request {
                    id,
                    request: Request::Ping,
                },
                true,
            );
        }
    }

    /// Reconnects whenever the connection is lost, until close.
    fn supervise(self: Arc<Self>) {
        let mut backoff = Backoff::new(
            self.options.reconnect_delay_min,
            self.options.reconnect_delay_max,
        );
        loop {
            let tick = (self.options.ping_interval / 4)
                .clamp(Duration::from_millis(1), Duration::from_millis(200));
            // Until the connection's reader has ended and removed it, so no
            // invalidation of the old connection is applied after the new one's.
            loop {
                let link = {
                    let mut st = self.link.lock();
                    if st.current.is_none() || self.closed.load(Ordering::Acquire) {
                        break;
                    }
                    self.link_changed.wait_for(&mut st, tick);
                    st.current.clone().filter(|l| l.is_alive())
                };
                if let Some(link) = link {
                    self.check_alive(&link);
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            match self.establish() {
                Ok(()) => {
                    log::info!("{}: reconnected", self.address);
                    backoff.reset(self.options.reconnect_delay_min);
                }
                Err(Error::Closed) => return,
                Err(e) => {
                    log::info!("{}: reconnect failed: {e}", self.address);
                    let pause = backoff.next_wait();
                    let mut st = self.link.lock();
                    if !self.closed.load(Ordering::Acquire) {
                        self.link_changed.wait_for(&mut st, pause);
                    }
                }
            }
        }
    }
}

/// Receives from `receiver`, yielding for up to `spin` before sleeping (on
/// loopback a read's reply comes in tens of microseconds: spinning saves the
/// wake-up). `Err` when the sender was dropped (the connection is lost).
fn receive<T>(
    receiver: &mpsc::Receiver<T>,
    spin: Duration,
) -> std::result::Result<T, mpsc::RecvError> {
    let spin_until = Instant::now() + spin;
    loop {
        match receiver.try_recv() {
            Ok(reply) => return Ok(reply),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) if Instant::now() < spin_until => {
                std::thread::yield_now();
            }
            Err(mpsc::TryRecvError::Empty) => return receiver.recv(),
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
                Err(e @ (Error::Refused { .. } | Error::Protocol { .. })) => return Err(e),
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
        Ok(Box::new(ClientTransaction {
            inner: Arc::clone(&self.inner),
            link,
            txn,
            voted: false,
            doomed: false,
            ended: false,
            written: HashMap::new(),
            written_bytes: 0,
            _slot: slot,
        }))
    }

    fn subscribe(&self) -> CommitSubscription {
        self.inner.notifier.subscribe()
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

/// One of the open-transaction slots, released when dropped.
struct Slot(Arc<Inner>);

impl Slot {
    /// Waits up to `wait_timeout` for a free slot.
    fn take(inner: &Arc<Inner>) -> Result<Slot> {
        let deadline = Instant::now() + inner.options.wait_timeout;
        let mut open = inner.open_transactions.lock();
        while *open >= TRANSACTIONS_PER_CONNECTION_MAX {
            if inner
                .transaction_ended
                .wait_until(&mut open, deadline)
                .timed_out()
                && *open >= TRANSACTIONS_PER_CONNECTION_MAX
            {
                return Err(Error::LimitExceeded {
                    what: "open transactions on one connection",
                    len: *open as u64 + 1,
                    max: TRANSACTIONS_PER_CONNECTION_MAX as u64,
                });
            }
        }
        *open += 1;
        Ok(Slot(Arc::clone(inner)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.open_transactions.lock() -= 1;
        self.0.transaction_ended.notify_one();
    }
}

struct ClientTransaction {
    _slot: Slot,
    inner: Arc<Inner>,
    link: Arc<Link>,
    txn: u64,
    voted: bool,
    /// The connection was lost: every call fails until abort.
    doomed: bool,
    ended: bool,
    /// What this transaction stored, for the cache once it commits (at most
    /// `OWN_WRITES_CACHED_BYTES_MAX` bytes of data are kept).
    written: HashMap<Oid, Vec<u8>>,
    written_bytes: usize,
}

/// Most bytes of its own writes one transaction keeps to cache after its commit.
const OWN_WRITES_CACHED_BYTES_MAX: usize = 1 << 20;

impl ClientTransaction {
    fn check(&mut self) -> Result<()> {
        self.inner.check_open()?;
        if self.doomed || !self.link.is_alive() {
            self.doomed = true;
            return Err(self.inner.link_lost(&self.link));
        }
        Ok(())
    }

    fn doom_on_disconnect<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(Error::Disconnected { .. }) = &result {
            self.doomed = true;
        }
        result
    }

    fn send(&mut self, message: ClientMessage) -> Result<()> {
        let result = self.inner.send(&self.link, &message, false);
        self.doom_on_disconnect(result)
    }
}

impl StorageTransaction for ClientTransaction {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()> {
        self.send_store(oid, base_tid, data, None)
    }

    fn store_mergeable(
        &mut self,
        oid: Oid,
        base_tid: Tid,
        data: Vec<u8>,
        merge: &str,
    ) -> Result<()> {
        self.send_store(oid, base_tid, data, Some(merge))
    }

    fn check_current(&mut self, oid: Oid, tid: Tid) -> Result<()> {
        self.check()?;
        if self.voted {
            return Err(Error::AlreadyVoted);
        }
        self.send(ClientMessage::CheckCurrent {
            txn: self.txn,
            oid: oid.0,
            tid: tid.0,
        })
    }

    fn vote(&mut self) -> Result<()> {
        self.check()?;
        if self.voted {
            return Err(Error::AlreadyVoted);
        }
        let result = self
            .inner
            .call_on(&self.link, Request::Vote { txn: self.txn });
        match self.doom_on_disconnect(result)? {
            Response::Voted => {
                self.voted = true;
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// The server merges the stores whose merge identity it registered; the
    /// resolver is not used (conflicts the server reports are the caller's).
    fn commit_resolving(self: Box<Self>, _resolver: Resolver<'_>) -> Result<(Tid, Vec<Oid>)> {
        (*self).complete()
    }

    fn finish(self: Box<Self>) -> Result<Tid> {
        (*self).complete().map(|(tid, _)| tid)
    }

    fn abort(mut self: Box<Self>) {
        self.end();
    }
}

impl ClientTransaction {
    fn send_store(
        &mut self,
        oid: Oid,
        base_tid: Tid,
        data: Vec<u8>,
        merge: Option<&str>,
    ) -> Result<()> {
        self.check()?;
        if self.voted {
            return Err(Error::AlreadyVoted);
        }
        if data.len() > RECORD_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "object revision",
                len: data.len() as u64,
                max: RECORD_BYTES_MAX as u64,
            });
        }
        if self.written_bytes + data.len() <= OWN_WRITES_CACHED_BYTES_MAX {
            self.written_bytes += data.len();
            if let Some(old) = self.written.insert(oid, data.clone()) {
                self.written_bytes -= old.len();
            }
        } else {
            // Not kept: an older copy of the same object must not be cached either.
            if let Some(old) = self.written.remove(&oid) {
                self.written_bytes -= old.len();
            }
        }
        self.send(ClientMessage::Store {
            txn: self.txn,
            oid: oid.0,
            base_tid: base_tid.0,
            data,
            merge: merge.map(str::to_owned),
        })
    }

    /// Finishes (voting first when not voted: one `Commit` round trip); the tid and
    /// the stores the server merged.
    fn complete(mut self) -> Result<(Tid, Vec<Oid>)> {
        let inner = Arc::clone(&self.inner);
        let _closing = inner.closing.read();
        self.check()?;
        // Not voted yet: vote and finish in one round trip.
        let request = if self.voted {
            Request::Finish { txn: self.txn }
        } else {
            Request::Commit { txn: self.txn }
        };
        let epoch = self.inner.cache.lock().epoch;
        let result = self.inner.call_on(&self.link, request);
        self.ended = true;
        match self.doom_on_disconnect(result)? {
            Response::Finished { tid, merged } => {
                let tid = Tid(tid);
                self.inner.wait_published(tid, &self.link);
                // Our own writes are the revisions at `tid`: cached as a load at
                // snapshot `tid` would be (rule 3 of the ordering contract), once
                // the invalidation of `tid` is applied. A merged store committed
                // the server's data instead: that is cached when the reply has it.
                let mut written = std::mem::take(&mut self.written);
                for m in &merged {
                    written.remove(&Oid(m.oid));
                }
                let mut cache = self.inner.cache.lock();
                if cache.last_tid >= tid {
                    let merged_data = merged
                        .iter()
                        .filter_map(|m| Some((Oid(m.oid), m.data.clone()?)));
                    for (oid, data) in written.into_iter().chain(merged_data) {
                        cache.insert_loaded(oid, tid, epoch, &Revision { tid, data });
                    }
                }
                Ok((tid, merged.iter().map(|m| Oid(m.oid)).collect()))
            }
            other => Err(unexpected(other)),
        }
    }
    fn end(&mut self) {
        if !std::mem::replace(&mut self.ended, true) && self.link.is_alive() {
            let _ = self
                .inner
                .send(&self.link, &ClientMessage::Abort { txn: self.txn }, true);
        }
    }
}

impl Drop for ClientTransaction {
    fn drop(&mut self) {
        self.end();
    }
}
