//! The storage server: serves one [`Storage`] to many clients over TCP.
//!
//! Threads: one accepts; one broadcasts commits made beside the server; one flushes
//! deferred invalidations; per connection one writes what nobody else wrote, and
//! one at a time reads and answers requests (running stores and checks). Reading a
//! connection moves between threads: a vote, finish or commit runs on the thread
//! that read it while a pooled worker goes on reading (a vote waits for the commit
//! lock, which must not stop the connection's other requests nor other
//! connections' finishes, which share fdatasyncs). Packs run on pooled workers.
//!
//! A commit's path: the reader reads `Commit` (or `Vote`/`Finish`), hands the
//! reading to a pooled worker and votes and finishes itself, then pumps the
//! storage's commit notifications (so the committer's invalidation is queued,
//! without waking its writer) and writes the reply together with the queued frames.
//! Other connections awaiting a reply get the invalidation with that reply, or from
//! their writer within `DEFERRED_FLUSH`; idle ones (awaiting no reply: e.g. a
//! worker waiting for work) get it from their writer at once.
//!
//! Invariants:
//! - Invalidations reach every connection's outbox in commit order (whoever pumps
//!   holds the subscription's lock), and nobody broadcasting blocks on a
//!   connection: an outbox over its byte limit gets its connection closed instead.
//! - Frames leave an outbox in the order queued; one thread writes at a time.
//! - A connection is registered for invalidations under the same lock as its
//!   catch-up is computed, so it misses none and gets none twice.
//! - The history holds every transaction with `floor < tid <= last_tid`.
//! - An invalidation of tid T is sent only once the storage reads snapshot T (its
//!   `last_tid() >= T`), so a client never gets a load answered below the snapshot
//!   it asked for.
//! - A transaction's operations run in the order received, one at a time.
//! - A malformed or oversized frame closes only its connection, with a log line.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::protocol::{
    self, CatchUp, ClientMessage, FrameError, HANDSHAKE_FRAME_BYTES_MAX,
    INVALIDATION_CHUNK_OIDS_MAX, INVALIDATION_DATA_BYTES_MAX, INVALIDATION_DATA_OBJECT_BYTES_MAX,
    MAGIC, MERGED_REPLY_BYTES_MAX, MergedStore, PROTOCOL_VERSION, Request, Response, ServerMessage,
    TRANSACTIONS_PAGE_BYTES, TRANSACTIONS_PAGE_MAX, TRANSACTIONS_PER_CONNECTION_MAX, WireError,
    WirePackReport, WireRevision, WireTransaction,
};
use crate::error::{ConflictError, Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::CommitEvent;
use crate::notify::CommitSubscription;
use crate::pool::ThreadPool;
use crate::storage::{Storage, StorageTransaction};

/// Reads the oids an object revision refers to, for a pack with garbage collection
/// (the objects layer's `record::referenced_oids`; the storage cannot read records).
pub type ReferenceReader =
    Arc<dyn Fn(&[u8]) -> std::result::Result<Vec<Oid>, String> + Send + Sync>;

/// Merges a conflicting store at commit (the objects layer's registered merge
/// functions): `(identity, old, committed, mine)` → the merged record, or `None`
/// when the changes do not merge. `identity` is what the client named for the
/// store (`StorageTransaction::store_mergeable`); `old` is the revision the store
/// was based on, `committed` the newest one, `mine` the stored data. Called under
/// the storage's commit lock: it must be quick and must not call the storage.
pub type MergeFn = Arc<dyn Fn(&str, &[u8], &[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Most of a commit's oids the server looks at for the data its invalidation
/// carries.
const INVALIDATION_DATA_OIDS_EXAMINED: usize = 256;

/// How a server runs. Every limit is named and has a default.
#[derive(Clone)]
pub struct ServerOptions {
    pub(crate) read_only: bool,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) connections_max: usize,
    pub(crate) invalidation_history: usize,
    pub(crate) send_queue_bytes_max: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) transaction_bytes_max: u64,
    pub(crate) idle_timeout: Duration,
    pub(crate) references: Option<ReferenceReader>,
    pub(crate) merge: Option<MergeFn>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("read_only", &self.read_only)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("connections_max", &self.connections_max)
            .field("invalidation_history", &self.invalidation_history)
            .field("send_queue_bytes_max", &self.send_queue_bytes_max)
            .field("write_timeout", &self.write_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("transaction_bytes_max", &self.transaction_bytes_max)
            .field("idle_timeout", &self.idle_timeout)
            .field("references", &self.references.as_ref().map(|_| "<set>"))
            .field("merge", &self.merge.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            read_only: false,
            token: None,
            connections_max: 1000,
            invalidation_history: 100,
            send_queue_bytes_max: 64 << 20,
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            transaction_bytes_max: 1 << 30,
            idle_timeout: Duration::from_secs(120),
            references: None,
            merge: None,
        }
    }
}

impl ServerOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// Refuse every commit and oid allocation (default: false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
    /// Require clients to prove they know this shared secret (default: none).
    pub fn token(mut self, token: Option<Vec<u8>>) -> Self {
        self.token = token;
        self
    }
    /// Most connections served at once; more are refused (default: 1000).
    pub fn connections_max(mut self, n: usize) -> Self {
        self.connections_max = n;
        self
    }
    /// Transactions kept for reconnecting clients to catch up (default: 100).
    pub fn invalidation_history(mut self, n: usize) -> Self {
        self.invalidation_history = n;
        self
    }
    /// Bytes queued for one client before it counts as stalled and is disconnected
    /// (default: 64 MiB).
    pub fn send_queue_bytes_max(mut self, bytes: usize) -> Self {
        self.send_queue_bytes_max = bytes;
        self
    }
    /// Longest a write to a client may block before it is disconnected (default: 30 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }
    /// Most bytes of data one transaction may store before its vote; the server holds
    /// them in memory until then (default: 1 GiB).
    pub fn transaction_bytes_max(mut self, bytes: u64) -> Self {
        self.transaction_bytes_max = bytes;
        self
    }
    /// Longest a connection may send nothing before it counts as gone and is closed
    /// (default: 120 s). Client storages ping a silent server every `ping_interval`
    /// (default 5 s), which keeps their connections alive; keep this well above it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// How a `Pack` request with garbage collection reads an object revision's
    /// references (default: none, and such packs are refused; packs without garbage
    /// collection work either way).
    pub fn references(mut self, references: Option<ReferenceReader>) -> Self {
        self.references = references;
        self
    }
    /// How a `Commit` merges conflicting stores that name a merge identity (default:
    /// none: every conflict goes back to the client, which merges and retries, one
    /// round trip more each time). With it a hot object (a counter, a queue's
    /// bucket) merges under the commit lock, as an embedded storage does.
    pub fn merge(mut self, merge: Option<MergeFn>) -> Self {
        self.merge = merge;
        self
    }
    /// Longest a new connection may take to finish the handshake (default: 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// A running storage server. [`Server::shutdown`] (or dropping it) stops it; the
/// storage stays open for the caller to close.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    options: ServerOptions,
    hub: Mutex<Hub>,
    /// The storage's commit notifications. Whoever holds the lock broadcasts what is
    /// waiting ([`Shared::pump`]): the thread that just finished a commit, at once,
    /// or the broadcaster thread, woken by the subscription's waker.
    events: Mutex<CommitSubscription>,
    /// Set by the waker: the broadcaster thread has events to pump.
    events_waiting: Mutex<bool>,
    events_changed: Condvar,
    /// Commits being finished by this server's workers, which pump right after: the
    /// waker leaves their events to them instead of waking the broadcaster thread.
    finishing: AtomicUsize,
    /// Worker threads for votes, finishes and packs (never the connection's reader:
    /// a vote waits for the commit lock).
    /// Threads for connection readers and commits: every job gets a thread at
    /// once, an idle one or a new one (a job may wait for the commit lock held by
    /// a transaction whose finish is the next job).
    pool: Arc<ThreadPool>,
    flusher: Arc<Flusher>,
    /// Every live connection, for shutdown and counting.
    connections: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_connection: AtomicU64,
    stopping: AtomicBool,
    connection_count: AtomicUsize,
}

struct Hub {
    last_tid: Tid,
    /// Every transaction with `floor < tid <= last_tid`, oldest first.
    history: VecDeque<(Tid, Arc<[Oid]>)>,
    floor: Tid,
    subscribers: HashMap<u64, Arc<Outbox>>,
}

/// Largest revision a conflict reply carries (larger ones are loaded if needed).
const CONFLICT_REVISION_BYTES_MAX: usize = 64 << 10;
/// Most bytes of revisions one conflict reply carries.
const CONFLICT_REVISIONS_BYTES_MAX: usize = 1 << 20;
/// Most stored objects a conflict reply looks at.
const CONFLICT_SCAN_MAX: usize = 4096;

/// A job for a pooled worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// How long an idle pooled thread of the server waits for work before it ends.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// The frames waiting to be written to one connection.
struct Outbox {
    id: u64,
    peer: String,
    stream: TcpStream,
    state: Mutex<OutboxState>,
    /// Wakes the writer thread: frames to write, or the connection closing.
    wake_writer: Condvar,
    /// Wakes replies waiting for room in the queue (and them too on close).
    space_freed: Condvar,
    bytes_max: usize,
    flusher: Arc<Flusher>,
}

/// How soon a queued frame must be written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    /// Wake the writer thread.
    Now,
    /// The caller's reply follows at once and writes it too.
    WithReply,
    /// Another client's invalidation: when the client awaits a reply, with that
    /// reply or within `DEFERRED_FLUSH`, whichever comes first (one write, one
    /// wake-up on each side instead of two: busy clients get their invalidations
    /// with their replies); when it awaits none (an idle client, e.g. a worker
    /// waiting for work), at once, as `Now`, unless an idle delivery woke its
    /// writer less than `IDLE_WAKE_INTERVAL` ago: then as for a busy client. So
    /// the first commit after a quiet spell reaches an idle client at once, and a
    /// stream of commits wakes it (and its writer) at most once per interval,
    /// however many other clients commit.
    Soon,
}

/// Shortest time between two wake-ups of a connection's writer for another
/// client's invalidation, when the client awaits no reply.
const IDLE_WAKE_INTERVAL: Duration = Duration::from_millis(1);

/// Longest an invalidation for a client that is not the committer waits for a reply
/// to travel with.
const DEFERRED_FLUSH: Duration = Duration::from_millis(1);

/// Wakes the writers of connections whose deferred frames nobody wrote in time.
#[derive(Default)]
struct Flusher {
    pending: Mutex<Vec<Arc<Outbox>>>,
    changed: Condvar,
}

impl Flusher {
    fn defer(&self, outbox: Arc<Outbox>) {
        let mut pending = self.pending.lock();
        pending.push(outbox);
        if pending.len() == 1 {
            self.changed.notify_one();
        }
    }

    fn run(&self, stopping: &AtomicBool) {
        while !stopping.load(Ordering::Acquire) {
            {
                let mut pending = self.pending.lock();
                if pending.is_empty() {
                    self.changed
                        .wait_for(&mut pending, Duration::from_millis(100));
                    continue;
                }
            }
            std::thread::sleep(DEFERRED_FLUSH);
            let due = std::mem::take(&mut *self.pending.lock());
            for outbox in due {
                outbox.flush_deferred();
            }
        }
    }
}

struct OutboxState {
    frames: VecDeque<Arc<[u8]>>,
    bytes: usize,
    closed: bool,
    /// Write what is queued, then close (after a refusal or a protocol error).
    draining: bool,
    /// A thread is writing queued frames to the socket: the writer thread, or the
    /// thread of a reply, which writes at once instead of waking the writer.
    writing: bool,
    /// Frames were queued without waking the writer; the flusher has this outbox.
    deferred: bool,
    /// Requests read and not yet answered: while there are, a reply is coming that
    /// a deferred invalidation can travel with.
    awaiting_replies: usize,
    /// When an invalidation last woke the writer while the client awaited no reply.
    idle_woken_at: Option<Instant>,
}

impl Outbox {
    /// Queues a frame the broadcaster sends: never waits, never writes; a full queue
    /// closes the connection (the client is too slow or stalled).
    fn push_or_close(self: &Arc<Self>, frame: Arc<[u8]>, delivery: Delivery) -> bool {
        let mut st = self.state.lock();
        if st.closed || st.draining {
            return false;
        }
        if st.bytes > 0 && st.bytes + frame.len() > self.bytes_max {
            drop(st);
            self.close(&format!(
                "send queue over {} bytes: the client is not reading",
                self.bytes_max
            ));
            return false;
        }
        st.bytes += frame.len();
        st.frames.push_back(frame);
        match delivery {
            Delivery::Now => {
                self.wake_writer.notify_all();
            }
            Delivery::WithReply => {}
            Delivery::Soon if st.awaiting_replies == 0 && !self.woke_idle_lately(&mut st) => {
                self.wake_writer.notify_all();
            }
            Delivery::Soon => {
                if !st.writing && !st.deferred {
                    st.deferred = true;
                    drop(st);
                    self.flusher.defer(Arc::clone(self));
                }
            }
        }
        true
    }

    /// Whether an idle delivery woke the writer less than `IDLE_WAKE_INTERVAL`
    /// ago; if not, notes that one does now.
    fn woke_idle_lately(&self, st: &mut OutboxState) -> bool {
        let now = Instant::now();
        if st
            .idle_woken_at
            .is_some_and(|at| now.duration_since(at) < IDLE_WAKE_INTERVAL)
        {
            return true;
        }
        st.idle_woken_at = Some(now);
        false
    }

    /// The flusher's turn: deferred frames nobody wrote yet go to the writer thread.
    fn flush_deferred(&self) {
        let mut st = self.state.lock();
        if std::mem::take(&mut st.deferred) && !st.frames.is_empty() && !st.writing {
            self.wake_writer.notify_all();
        }
    }

    /// Queues a reply (waiting while the queue is full: the client's own requests)
    /// and, unless another thread is writing, writes the queue from this thread.
    fn push_wait(&self, frame: Arc<[u8]>) {
        let mut st = self.state.lock();
        while !st.closed && st.bytes > 0 && st.bytes + frame.len() > self.bytes_max {
            self.space_freed.wait(&mut st);
        }
        if st.closed || st.draining {
            return;
        }
        st.bytes += frame.len();
        st.frames.push_back(frame);
        if !st.writing {
            self.write_queued(st);
        }
    }

    /// Writes the queue until it is empty, as the connection's one writer for now;
    /// a failed or blocked write closes the connection.
    fn write_queued<'a>(&'a self, mut st: parking_lot::MutexGuard<'a, OutboxState>) {
        debug_assert!(!st.writing);
        st.writing = true;
        st.deferred = false;
        let mut buffer = Vec::new();
        while !st.closed && !st.frames.is_empty() {
            let batch: Vec<Arc<[u8]>> = st.frames.iter().cloned().collect();
            drop(st);
            let written: usize = batch.iter().map(|f| f.len()).sum();
            let result = if batch.len() == 1 {
                (&self.stream).write_all(&batch[0])
            } else {
                buffer.clear();
                for frame in &batch {
                    buffer.extend_from_slice(frame);
                }
                (&self.stream).write_all(&buffer)
            };
            if let Err(e) = result {
                let reason = if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    "a write blocked past the write timeout: the client is stalled".to_string()
                } else {
                    format!("write failed: {e}")
                };
                self.close(&reason);
                st = self.state.lock();
                break;
            }
            st = self.state.lock();
            for _ in 0..batch.len() {
                st.frames.pop_front();
            }
            st.bytes -= written;
        }
        st.writing = false;
        self.space_freed.notify_all();
        // The writer thread has nothing to do here (the queue is empty, or the
        // connection closed), unless it is to close the drained connection: waking
        // it after every reply would cost a thread wake-up per reply.
        if st.draining || st.closed {
            self.wake_writer.notify_all();
        }
    }

    fn send(&self, message: &ServerMessage) {
        if matches!(message, ServerMessage::Reply { .. }) {
            let mut st = self.state.lock();
            st.awaiting_replies = st.awaiting_replies.saturating_sub(1);
        }
        self.push_wait(protocol::encode(message).into());
    }

    /// A request was read: its reply will follow.
    fn request_read(&self) {
        self.state.lock().awaiting_replies += 1;
    }

    fn close(&self, reason: &str) {
        let mut st = self.state.lock();
        if !st.closed {
            st.closed = true;
            if !reason.is_empty() {
                log::warn!("closing the connection of {}: {reason}", self.peer);
            }
            let _ = self.stream.shutdown(Shutdown::Both);
            self.wake_writer.notify_all();
            self.space_freed.notify_all();
        }
    }

    /// Closes once the queued frames are written (bounded by the write timeout).
    fn drain_and_close(&self, reason: &str) {
        if !reason.is_empty() {
            log::warn!("closing the connection of {}: {reason}", self.peer);
        }
        let mut st = self.state.lock();
        st.draining = true;
        self.wake_writer.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Writes queued frames nobody else writes, until the connection closes.
    fn write_loop(&self) {
        let mut st = self.state.lock();
        loop {
            if st.closed {
                drop(st);
                return self.close("");
            }
            if !st.writing && !st.frames.is_empty() {
                self.write_queued(st);
                st = self.state.lock();
                continue;
            }
            if st.draining && !st.writing && st.frames.is_empty() {
                drop(st);
                return self.close("");
            }
            self.wake_writer.wait(&mut st);
        }
    }
}

impl Server {
    /// Listens on `addr` and serves `storage` until shut down.
    pub fn start(
        storage: Arc<dyn Storage>,
        addr: impl ToSocketAddrs,
        options: ServerOptions,
    ) -> Result<Server> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::Io {
            path: "listen address".into(),
            action: "bind",
            source: e,
        })?;
        let local_addr = listener.local_addr().map_err(|e| Error::Io {
            path: "listen address".into(),
            action: "local address",
            source: e,
        })?;
        // Subscribe before reading last_tid: every commit after it is seen.
        let subscription = storage.subscribe();
        let last_tid = storage.last_tid();
        let shared = Arc::new(Shared {
            storage,
            options,
            hub: Mutex::new(Hub {
                last_tid,
                history: VecDeque::new(),
                floor: last_tid,
                subscribers: HashMap::new(),
            }),
            events: Mutex::new(subscription),
            events_waiting: Mutex::new(false),
            events_changed: Condvar::new(),
            finishing: AtomicUsize::new(0),
            pool: Arc::new(ThreadPool::new("zodiac-worker", POOL_IDLE)),
            flusher: Arc::new(Flusher::default()),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            connection_count: AtomicUsize::new(0),
        });
        shared.set_waker(&shared.events.lock());
        // Dropped on a failed spawn: stops the threads started so far.
        let mut server = Server {
            local_addr,
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let spawn_failed = |source| Error::Io {
            path: "the server's threads".into(),
            action: "start",
            source,
        };
        let broadcaster = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("zodiac-broadcast".into())
                .spawn(move || {
                    while !shared.stopping.load(Ordering::Acquire) {
                        {
                            let mut waiting = shared.events_waiting.lock();
                            if !*waiting {
                                // The timeout is a fallback: the waker ends the wait.
                                shared
                                    .events_changed
                                    .wait_for(&mut waiting, Duration::from_millis(100));
                            }
                            *waiting = false;
                        }
                        shared.pump(None);
                    }
                })
                .map_err(spawn_failed)?
        };
        server.threads.push(broadcaster);
        let flusher = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("zodiac-flush".into())
                .spawn(move || shared.flusher.run(&shared.stopping))
                .map_err(spawn_failed)?
        };
        server.threads.push(flusher);
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("zodiac-accept".into())
                .spawn(move || shared.accept_loop(listener))
                .map_err(spawn_failed)?
        };
        server.threads.push(acceptor);
        log::info!("serving {} on {local_addr}", shared.storage.describe());
        Ok(server)
    }

    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections being served now.
    pub fn connection_count(&self) -> usize {
        self.shared.connection_count.load(Ordering::Acquire)
    }

    /// Stops accepting, closes every connection and waits for the server's threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the acceptor.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let connections: Vec<Arc<Outbox>> =
            self.shared.connections.lock().values().cloned().collect();
        for c in connections {
            c.close("");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.connection_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        log::info!("server on {} stopped", self.local_addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "unknown peer".to_string(), |a| a.to_string());
            let count = self.connection_count.fetch_add(1, Ordering::AcqRel) + 1;
            if count > self.options.connections_max {
                self.connection_count.fetch_sub(1, Ordering::AcqRel);
                log::warn!(
                    "refusing {peer}: {} connections already (the limit)",
                    self.options.connections_max
                );
                let reason = format!(
                    "too many connections (the server's limit is {})",
                    self.options.connections_max
                );
                // On its own thread: the refusal must not hold up accepting.
                let _ = std::thread::Builder::new()
                    .name("zodiac-refuse".into())
                    .spawn(move || refuse(stream, reason));
                continue;
            }
            let shared = Arc::clone(&self);
            let spawned = std::thread::Builder::new()
                .name("zodiac-connection".into())
                // The connection counts itself out when it ends.
                .spawn(move || shared.serve(stream, peer));
            if spawned.is_err() {
                self.connection_count.fetch_sub(1, Ordering::AcqRel);
                log::warn!("cannot start a thread for a new connection");
            }
        }
    }

    /// Makes the storage wake the broadcaster thread after each commit event, unless
    /// a worker of this server is finishing a commit and pumps right after it.
    fn set_waker(self: &Arc<Self>, subscription: &CommitSubscription) {
        let weak = Arc::downgrade(self);
        subscription.set_waker(Arc::new(move || {
            // Never takes `events`: its holder may be waiting for this commit's
            // tid to become readable, which happens after this call returns.
            if let Some(shared) = weak.upgrade()
                && shared.finishing.load(Ordering::SeqCst) == 0
            {
                *shared.events_waiting.lock() = true;
                shared.events_changed.notify_one();
            }
        }));
    }

    /// Broadcasts every commit event waiting, in commit order. `quiet`: the
    /// connection whose reply the caller sends next, which writes the invalidations
    /// with it (its writer thread is not woken).
    fn pump(self: &Arc<Self>, quiet: Option<u64>) {
        let mut events = self.events.lock();
        loop {
            if let Some(event) = events.try_recv() {
                self.broadcast(&event, quiet);
            } else if events.missed() {
                *events = self.restart_after_missed_commits();
                self.set_waker(&events);
            } else {
                return;
            }
        }
    }

    /// The broadcaster fell so far behind the storage that commit events were
    /// dropped: the history has a gap, so no client can catch up from it. Start the
    /// history afresh and drop every client; they reconnect, find themselves too far
    /// behind, and drop their caches.
    fn restart_after_missed_commits(&self) -> CommitSubscription {
        log::error!(
            "the server fell behind its storage's commit notifications; disconnecting every \
             client so they rebuild their caches"
        );
        let subscription = self.storage.subscribe();
        let mut hub = self.hub.lock();
        hub.last_tid = self.storage.last_tid();
        hub.floor = hub.last_tid;
        hub.history.clear();
        for (_, outbox) in hub.subscribers.drain() {
            outbox.close("the server missed commit notifications");
        }
        subscription
    }

    fn broadcast(&self, event: &CommitEvent, quiet: Option<u64>) {
        // A storage delivers the event before its last_tid reports the tid. A client
        // that applied this invalidation may at once load at this tid: were the
        // storage still to read such a load at the previous tid, the client would
        // cache an old revision as current. So wait until the tid is readable.
        let waited = Instant::now();
        // The gap is a few instructions under the storage's publication lock: yield
        // first (a sleep lasts far longer than 20 us and delays every commit's reply).
        for _ in 0..1_000 {
            if self.storage.last_tid() >= event.tid {
                break;
            }
            std::thread::yield_now();
        }
        while self.storage.last_tid() < event.tid {
            if waited.elapsed() > Duration::from_secs(5) {
                log::warn!(
                    "the storage has not reported transaction {} as its last 5 s after \
                     notifying it; sending its invalidation anyway",
                    event.tid
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        // The data is a saving, never a reason to overflow a send queue: at most a
        // 64th of it.
        let budget = INVALIDATION_DATA_BYTES_MAX.min(self.options.send_queue_bytes_max / 64);
        let data = invalidation_data(&*self.storage, event.tid, &event.oids, budget);
        let frames = invalidation_frames(event.tid, &event.oids, data);
        let mut hub = self.hub.lock();
        if event.tid <= hub.last_tid {
            return;
        }
        hub.last_tid = event.tid;
        hub.history.push_back((event.tid, Arc::clone(&event.oids)));
        while hub.history.len() > self.options.invalidation_history {
            let (tid, _) = hub.history.pop_front().expect("not empty");
            hub.floor = tid;
        }
        hub.subscribers.retain(|id, outbox| {
            let delivery = if quiet == Some(*id) {
                Delivery::WithReply
            } else {
                Delivery::Soon
            };
            frames
                .iter()
                .all(|frame| outbox.push_or_close(Arc::clone(frame), delivery))
        });
    }

    fn serve(self: &Arc<Self>, stream: TcpStream, peer: String) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(self.options.write_timeout));
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox {
            id,
            peer: peer.clone(),
            stream: match stream.try_clone() {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("{peer}: cannot clone the socket: {e}");
                    self.connection_count.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            },
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
                draining: false,
                writing: false,
                deferred: false,
                idle_woken_at: None,
                awaiting_replies: 0,
            }),
            wake_writer: Condvar::new(),
            space_freed: Condvar::new(),
            bytes_max: self.options.send_queue_bytes_max,
            flusher: Arc::clone(&self.flusher),
        });
        self.connections.lock().insert(id, Arc::clone(&outbox));
        if self.stopping.load(Ordering::Acquire) {
            outbox.close("");
        }
        let writer = {
            let outbox = Arc::clone(&outbox);
            std::thread::Builder::new()
                .name("zodiac-writer".into())
                .spawn(move || outbox.write_loop())
        };
        match writer {
            Ok(writer) => Connection {
                shared: Arc::clone(self),
                outbox,
                reader: BufReader::with_capacity(64 << 10, stream),
                read_only: self.options.read_only,
                transactions: HashMap::new(),
                writer: Some(writer),
                end_reason: String::new(),
            }
            // Ends the connection (and counts it out) when it is dropped.
            .run(),
            Err(_) => {
                outbox.close("cannot start the writer thread");
                self.connections.lock().remove(&id);
                self.connection_count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Reads with a read timeout of whatever is left before `deadline`.
struct DeadlineReader<'a> {
    inner: &'a mut BufReader<TcpStream>,
    deadline: Instant,
}

impl std::io::Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the handshake timeout passed",
            ));
        }
        self.inner.get_ref().set_read_timeout(Some(left))?;
        self.inner.read(buf)
    }
}

/// Upper bound of the bytes one oid takes in an `Invalidation` frame (a u64 varint).
const CATCH_UP_BYTES_PER_OID: usize = 10;

/// Tells a connection over the limit why it is refused, then closes it once the
/// client has read that (closing with its hello unread would reset the connection
/// and lose the reason).
fn refuse(mut stream: TcpStream, reason: String) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = protocol::write_frame(
        &mut stream,
        &protocol::encode(&ServerMessage::Refused { reason }),
    );
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match std::io::Read::read(&mut stream, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Splits a transaction's invalidation into frames of at most the chunk limit.
fn invalidation_frames(tid: Tid, oids: &[Oid], mut data: Vec<(u64, Vec<u8>)>) -> Vec<Arc<[u8]>> {
    let mut frames = Vec::new();
    let mut chunks = oids.chunks(INVALIDATION_CHUNK_OIDS_MAX).peekable();
    if chunks.peek().is_none() {
        return vec![
            protocol::encode(&ServerMessage::Invalidation {
                tid: tid.0,
                oids: Vec::new(),
                complete: true,
                data: Vec::new(),
            })
            .into(),
        ];
    }
    while let Some(chunk) = chunks.next() {
        let complete = chunks.peek().is_none();
        frames.push(
            protocol::encode(&ServerMessage::Invalidation {
                tid: tid.0,
                oids: chunk.iter().map(|o| o.0).collect(),
                complete,
                data: if complete {
                    std::mem::take(&mut data)
                } else {
                    Vec::new()
                },
            })
            .into(),
        );
    }
    frames
}

/// The new records of the small objects transaction `tid` changed, for its
/// invalidation, at most `budget` bytes (see [`INVALIDATION_DATA_BYTES_MAX`]): a
/// client caching one of them keeps it current instead of loading it again. Only
/// revisions written by `tid` itself (a later commit may have replaced one
/// already: that one's own invalidation carries it). Looks at the first
/// [`INVALIDATION_DATA_OIDS_EXAMINED`] oids only: every commit is broadcast
/// through here, and a bulk commit of large objects must not load them all.
fn invalidation_data(
    storage: &dyn Storage,
    tid: Tid,
    oids: &[Oid],
    budget: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut data = Vec::new();
    let mut bytes = 0;
    for &oid in oids.iter().take(INVALIDATION_DATA_OIDS_EXAMINED) {
        let Ok(revision) = storage.load(oid, tid) else {
            continue;
        };
        let len = revision.data.len();
        if revision.tid != tid || len > INVALIDATION_DATA_OBJECT_BYTES_MAX {
            continue;
        }
        if bytes + len > budget {
            break;
        }
        bytes += len;
        data.push((oid.0, revision.data));
    }
    data
}

/// A transaction's operations, in the order the client sent them.
enum TxnOp {
    /// A store, with its merge identity when the client named one.
    Store(Oid, Tid, Vec<u8>, Option<String>),
    CheckCurrent(Oid, Tid),
    Vote(u64),
    Finish(u64),
    /// Vote and finish.
    Commit(u64),
    Abort,
}

impl TxnOp {
    /// Whether the op may wait (for the commit lock, for the disk): it then runs on
    /// a pooled worker, never on the connection's reader.
    fn may_wait(&self) -> bool {
        matches!(self, TxnOp::Vote(_) | TxnOp::Finish(_) | TxnOp::Commit(_))
    }
}

/// One open transaction: its operations run one at a time in order, the quick ones
/// (stores, checks) on the connection's reader when nothing else is queued, the
/// ones that may wait on a pooled worker.
struct TxnActor {
    state: Mutex<ActorState>,
}

struct ActorState {
    /// Taken while a worker runs an op on it.
    data: TxnData,
    queue: VecDeque<TxnOp>,
    /// A worker is draining `queue`.
    running: bool,
}

/// One transaction's state, which its ops change.
#[derive(Default)]
struct TxnData {
    /// `None` while a worker runs an op on it, or once finished or aborted.
    txn: Option<Box<dyn StorageTransaction>>,
    /// The first error of a store, check or vote, reported at vote/finish.
    failed: Option<WireError>,
    /// What was stored: (oid, base tid), for the revisions a conflict reports.
    stored: Vec<(Oid, Tid)>,
    /// The stores that named a merge identity, when the server merges: oid →
    /// (identity, stored data), what a `Commit` merges a conflict with.
    mergeable: HashMap<Oid, (String, Vec<u8>)>,
}

impl Drop for TxnData {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            txn.abort();
        }
    }
}

/// What an op needs to reply and to broadcast.
#[derive(Clone)]
struct TxnContext {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
}

impl TxnContext {
    fn reply(&self, id: u64, result: std::result::Result<Response, WireError>) {
        self.outbox.send(&ServerMessage::Reply { id, result });
    }

    /// Conflict `c` of a vote, with the revisions a client needs to merge every
    /// stored object found stale (not only `c`'s): each one's newest revision and
    /// the revision it was stored on, while they fit [`CONFLICT_REVISION_BYTES_MAX`]
    /// each and [`CONFLICT_REVISIONS_BYTES_MAX`] in all. The storage's vote waited
    /// for the conflicting commits to be readable.
    fn conflict_with_revisions(&self, c: &ConflictError, stored: &[(Oid, Tid)]) -> WireError {
        let storage = &self.shared.storage;
        let mut revisions = Vec::new();
        let mut bytes = 0;
        for &(oid, base) in stored.iter().take(CONFLICT_SCAN_MAX) {
            if base == Tid::ZERO {
                continue;
            }
            let Ok(newest) = storage.load(oid, Tid::MAX) else {
                continue;
            };
            if newest.tid == base {
                continue;
            }
            let Ok(old) = storage.load_revision(oid, base) else {
                continue;
            };
            let size = newest.data.len() + old.len();
            if newest.data.len().max(old.len()) > CONFLICT_REVISION_BYTES_MAX
                || bytes + size > CONFLICT_REVISIONS_BYTES_MAX
            {
                continue;
            }
            bytes += size;
            revisions.push(WireRevision {
                oid: oid.0,
                tid: newest.tid.0,
                data: newest.data,
            });
            revisions.push(WireRevision {
                oid: oid.0,
                tid: base.0,
                data: old,
            });
        }
        WireError::ConflictWithRevisions {
            oid: c.oid.0,
            base_tid: c.base_tid.0,
            current_tid: c.current_tid.0,
            revisions,
        }
    }

    /// Votes `t`, merging its conflicting mergeable stores through the server's
    /// merge function, and finishes it; the tid and what was merged (with the
    /// merged data while it fits [`MERGED_REPLY_BYTES_MAX`]). A merge function that
    /// panics counts as one that does not merge.
    fn merge_and_finish(
        &self,
        mut t: Box<dyn StorageTransaction>,
        mergeable: &HashMap<Oid, (String, Vec<u8>)>,
    ) -> Result<(Tid, Vec<MergedStore>)> {
        let (Some(merge), false) = (&self.shared.options.merge, mergeable.is_empty()) else {
            t.vote()?;
            return t.finish().map(|tid| (tid, Vec::new()));
        };
        let outputs = Mutex::new(HashMap::new());
        let resolver = |oid: Oid, old: &[u8], committed: &[u8]| {
            let (identity, mine) = mergeable.get(&oid)?;
            let call = std::panic::AssertUnwindSafe(|| merge(identity, old, committed, mine));
            let merged = match std::panic::catch_unwind(call) {
                Ok(merged) => merged?,
                Err(_) => {
                    log::error!("the merge function for {identity} panicked on object {oid}");
                    return None;
                }
            };
            outputs.lock().insert(oid, merged.clone());
            Some(merged)
        };
        let merged_oids = t.vote_resolving(&resolver)?.unwrap_or_default();
        let tid = t.finish()?;
        let mut outputs = outputs.into_inner();
        let mut bytes = 0;
        let merged = merged_oids
            .into_iter()
            .map(|oid| {
                let data = outputs.remove(&oid).filter(|d| {
                    bytes += d.len();
                    bytes <= MERGED_REPLY_BYTES_MAX
                });
                MergedStore { oid: oid.0, data }
            })
            .collect();
        Ok((tid, merged))
    }

    /// Runs `op` on the transaction.
    fn apply(&self, op: TxnOp, data: &mut TxnData) {
        let TxnData {
            txn,
            failed,
            stored,
            mergeable,
        } = data;
        // A vote's conflict carries the revisions to merge it (protocol 3).
        let wire = |e: Error| match &e {
            Error::Conflict(c) => self.conflict_with_revisions(c, stored),
            _ => WireError::from(&e),
        };
        match op {
            TxnOp::Store(oid, base, bytes, merge) => {
                if failed.is_none()
                    && let Some(t) = txn.as_mut()
                {
                    let merge = merge.filter(|_| self.shared.options.merge.is_some());
                    if let Some(identity) = merge {
                        mergeable.insert(oid, (identity, bytes.clone()));
                    } else {
                        // Stored again without an identity: no longer merged.
                        mergeable.remove(&oid);
                    }
                    match t.store(oid, base, bytes) {
                        Ok(()) => stored.push((oid, base)),
                        Err(e) => *failed = Some(WireError::from(&e)),
                    }
                }
            }
            TxnOp::CheckCurrent(oid, tid) => {
                if failed.is_none()
                    && let Some(t) = txn.as_mut()
                    && let Err(e) = t.check_current(oid, tid)
                {
                    *failed = Some(WireError::from(&e));
                }
            }
            TxnOp::Vote(id) => {
                let result = match (failed.clone(), txn.as_mut()) {
                    (Some(e), _) => Err(e),
                    (None, Some(t)) => t.vote().map(|()| Response::Voted).map_err(wire),
                    (None, None) => Err(WireError::Server {
                        message: "the transaction ended".into(),
                    }),
                };
                if let Err(e) = &result {
                    failed.get_or_insert_with(|| e.clone());
                }
                self.reply(id, result);
            }
            TxnOp::Finish(id) | TxnOp::Commit(id) => {
                let commit = matches!(op, TxnOp::Commit(_));
                let result = match (failed.clone(), txn.take()) {
                    (Some(e), t) => {
                        if let Some(t) = t {
                            t.abort();
                        }
                        Err(e)
                    }
                    (None, Some(t)) => {
                        // The waker leaves this commit's event to the pump below.
                        self.shared.finishing.fetch_add(1, Ordering::SeqCst);
                        let result = if commit {
                            self.merge_and_finish(t, mergeable)
                        } else {
                            t.finish().map(|tid| (tid, Vec::new()))
                        };
                        // Broadcast it (and whatever else is waiting) before the
                        // reply: the reply's write carries this client's invalidation.
                        self.shared.pump(Some(self.outbox.id));
                        self.shared.finishing.fetch_sub(1, Ordering::SeqCst);
                        // Again: an event published while `finishing` hid it from the
                        // waker (before the reply, whose write may block on a slow
                        // client).
                        self.shared.pump(Some(self.outbox.id));
                        let result = result
                            .map(|(tid, merged)| Response::Finished { tid: tid.0, merged })
                            .map_err(wire);
                        self.reply(id, result);
                        return;
                    }
                    (None, None) => Err(WireError::Server {
                        message: "the transaction ended".into(),
                    }),
                };
                self.reply(id, result);
            }
            TxnOp::Abort => {
                if let Some(t) = txn.take() {
                    t.abort();
                }
            }
        }
    }
}

impl TxnActor {
    fn new(txn: Box<dyn StorageTransaction>) -> Arc<TxnActor> {
        Arc::new(TxnActor {
            state: Mutex::new(ActorState {
                data: TxnData {
                    txn: Some(txn),
                    failed: None,
                    stored: Vec::new(),
                    mergeable: HashMap::new(),
                },
                queue: VecDeque::new(),
                running: false,
            }),
        })
    }

    /// Runs `op` after the ones before it: here when it is quick and nothing is
    /// queued. An op that may wait, with nothing running, comes back as a job for
    /// the caller to run off the connection's reader.
    #[must_use]
    fn submit(self: &Arc<Self>, op: TxnOp, ctx: &TxnContext) -> Option<Job> {
        let mut st = self.state.lock();
        if st.running {
            st.queue.push_back(op);
            return None;
        }
        if !op.may_wait() {
            ctx.apply(op, &mut st.data);
            return None;
        }
        st.queue.push_back(op);
        st.running = true;
        drop(st);
        let actor = Arc::clone(self);
        let ctx = ctx.clone();
        Some(Box::new(move || actor.drain(&ctx)))
    }

    /// On a worker: runs the queued ops in order, without holding the lock.
    fn drain(&self, ctx: &TxnContext) {
        let mut st = self.state.lock();
        while let Some(op) = st.queue.pop_front() {
            let mut data = std::mem::take(&mut st.data);
            drop(st);
            ctx.apply(op, &mut data);
            st = self.state.lock();
            st.data = data;
        }
        st.running = false;
    }
}

enum TxnSlot {
    /// The transaction, and the bytes stored so far.
    Running(Arc<TxnActor>, u64),
    /// `begin` failed: every vote or finish gets this error.
    Failed(WireError),
}

/// One connection's reading side and state. It moves between threads: a vote,
/// finish or commit runs on the thread that read it, while a pooled worker goes on
/// reading (one thread wake-up less on a commit's path). Dropping it ends the
/// connection.
struct Connection {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    reader: BufReader<TcpStream>,
    read_only: bool,
    transactions: HashMap<u64, TxnSlot>,
    writer: Option<JoinHandle<()>>,
    /// Why the connection ended ("" for an orderly end), logged when it closes.
    end_reason: String,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Aborts the open transactions (a finish already running completes).
        self.transactions.clear();
        let id = self.outbox.id;
        self.shared.hub.lock().subscribers.remove(&id);
        self.outbox.drain_and_close(&self.end_reason);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.shared.connections.lock().remove(&id);
        self.shared.connection_count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connection {
    /// Serves the connection until it ends.
    fn run(mut self) {
        match self.handshake() {
            Ok(true) => {}
            Ok(false) => return,
            Err(reason) => {
                self.end_reason = reason;
                return;
            }
        }
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(self.shared.options.idle_timeout));
        self.read_loop();
    }

    /// Reads and handles messages until the connection ends or hands off.
    fn read_loop(mut self) {
        match self.read_messages() {
            Ok(job) => self.hand_off(job),
            Err(reason) => self.end_reason = reason,
        }
    }

    /// Runs `job` (a vote, finish or commit just read) on this thread, and the
    /// reading on a pooled worker, so the commit starts without a thread wake-up.
    fn hand_off(self, job: Job) {
        let pool = Arc::clone(&self.shared.pool);
        match pool.try_spawn(move || self.read_loop()) {
            Ok(_) => job(),
            Err(reading) => {
                // No thread to read meanwhile: the connection waits for this one.
                job();
                reading();
            }
        }
    }

    /// Reads until a message comes back with a job to run off the reader (`Ok`) or
    /// the connection ends (`Err` with why, "" for an orderly end).
    fn read_messages(&mut self) -> std::result::Result<Job, String> {
        loop {
            let payload = match protocol::read_frame(&mut self.reader, protocol::FRAME_BYTES_MAX) {
                Ok(p) => p,
                Err(FrameError::Closed) => return Err(String::new()),
                Err(e) if self.outbox.is_closed() => {
                    let _ = e;
                    return Err(String::new());
                }
                Err(FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!(
                        "nothing received for {:?} (the idle timeout): the client is gone",
                        self.shared.options.idle_timeout
                    ));
                }
                Err(FrameError::Io(e)) => return Err(format!("read failed: {e}")),
                Err(FrameError::Bad(what)) => return Err(what),
            };
            let message = match protocol::decode::<ClientMessage>(&payload) {
                Ok(m) => m,
                Err(e) => return Err(e.to_string()),
            };
            message.check()?;
            if let Some(job) = self.handle(message)? {
                return Ok(job);
            }
        }
    }

    fn refuse(&self, reason: String) -> String {
        self.outbox.send(&ServerMessage::Refused {
            reason: reason.clone(),
        });
        reason
    }

    fn read_handshake(&mut self, deadline: Instant) -> std::result::Result<ClientMessage, String> {
        let mut reader = DeadlineReader {
            inner: &mut self.reader,
            deadline,
        };
        let payload = protocol::read_frame(&mut reader, HANDSHAKE_FRAME_BYTES_MAX)
            .map_err(|e| format!("during the handshake: {e}"))?;
        protocol::decode(&payload).map_err(|e| format!("during the handshake: {e}"))
    }

    /// Hello, challenge, auth, catch-up and welcome. `Ok(false)`: the peer left.
    fn handshake(&mut self) -> std::result::Result<bool, String> {
        // One deadline for the whole handshake, however slowly the bytes trickle in.
        let deadline = Instant::now() + self.shared.options.handshake_timeout;
        let hello = match self.read_handshake(deadline) {
            Ok(m) => m,
            Err(e) if e.contains("closed by the peer") => return Ok(false),
            Err(e) => return Err(e),
        };
        let ClientMessage::Hello {
            magic,
            version,
            read_only,
            fresh,
            last_tid,
        } = hello
        else {
            return Err(self.refuse("the first message must be Hello".into()));
        };
        if magic != MAGIC {
            return Err("not a Zodiac client (wrong magic number)".into());
        }
        if version != PROTOCOL_VERSION {
            return Err(self.refuse(format!(
                "protocol version {version} is not supported (this server speaks version \
                 {PROTOCOL_VERSION}); upgrade the older side"
            )));
        }
        self.read_only |= read_only;
        let nonce = super::handshake::random_nonce();
        let auth_required = self.shared.options.token.is_some();
        self.outbox.send(&ServerMessage::Challenge {
            nonce,
            auth_required,
        });
        let ClientMessage::Auth { mac } = self.read_handshake(deadline)? else {
            return Err(self.refuse("the second message must be Auth".into()));
        };
        if let Some(token) = &self.shared.options.token {
            let expected = super::handshake::auth_mac(token, &nonce);
            if !mac.is_some_and(|m| super::handshake::macs_equal(&m, &expected)) {
                return Err(self.refuse(
                    "authentication failed: the client's token does not match the server's".into(),
                ));
            }
        }
        let mut hub = self.shared.hub.lock();
        let client_tid = Tid(last_tid);
        let catch_up = if fresh {
            CatchUp::Fresh
        } else if client_tid == hub.last_tid {
            CatchUp::Equal
        } else if client_tid > hub.last_tid {
            log::warn!(
                "client {} has seen transaction {client_tid}, newer than this server's last \
                 ({}): was the data file restored from a backup? The client drops its cache",
                self.outbox.peer,
                hub.last_tid
            );
            CatchUp::Ahead
        } else if client_tid >= hub.floor
            && hub
                .history
                .iter()
                .filter(|(tid, _)| *tid > client_tid)
                .map(|(_, oids)| oids.len() * CATCH_UP_BYTES_PER_OID + 16)
                .sum::<usize>()
                <= self.shared.options.send_queue_bytes_max / 2
        {
            CatchUp::Behind
        } else {
            // Older than the history, or so much to send that it would overflow the
            // send queue (and the client would reconnect to the same again).
            CatchUp::TooFar
        };
        if catch_up == CatchUp::Behind {
            for (tid, oids) in hub.history.iter().filter(|(tid, _)| *tid > client_tid) {
                for frame in invalidation_frames(*tid, oids, Vec::new()) {
                    if !self.outbox.push_or_close(frame, Delivery::Now) {
                        return Err("catch-up overflowed the send queue".into());
                    }
                }
            }
        }
        hub.subscribers
            .insert(self.outbox.id, Arc::clone(&self.outbox));
        let welcome = ServerMessage::Welcome {
            last_tid: hub.last_tid.0,
            read_only: self.shared.options.read_only,
            catch_up,
            identity: self.shared.storage.identity(),
        };
        self.outbox
            .push_or_close(protocol::encode(&welcome).into(), Delivery::Now);
        drop(hub);
        Ok(true)
    }

    fn reply(&self, id: u64, result: Result<Response>) {
        self.outbox.send(&ServerMessage::Reply {
            id,
            result: result.map_err(|e| WireError::from(&e)),
        });
    }

    /// Acts on one message. `Ok(Some(job))`: a vote, finish or commit to run off the
    /// reader (see [`Connection::hand_off`]).
    fn handle(&mut self, message: ClientMessage) -> std::result::Result<Option<Job>, String> {
        let storage = &self.shared.storage;
        if matches!(message, ClientMessage::Request { .. }) {
            // Every request gets one reply (`Outbox::send`).
            self.outbox.request_read();
        }
        match message {
            ClientMessage::Hello { .. } | ClientMessage::Auth { .. } => {
                return Err("a handshake message after the handshake".into());
            }
            ClientMessage::Request { id, request } => match request {
                Request::Ping => self.reply(id, Ok(Response::Pong)),
                Request::NewOid => {
                    let result = if self.read_only {
                        Err(Error::ReadOnly)
                    } else {
                        storage.new_oid().map(|o| Response::Oid(o.0))
                    };
                    self.reply(id, result);
                }
                Request::NewOids { count } => {
                    let result = if self.read_only {
                        Err(Error::ReadOnly)
                    } else {
                        (0..count)
                            .map(|_| storage.new_oid().map(|o| o.0))
                            .collect::<Result<Vec<u64>>>()
                            .map(Response::Oids)
                    };
                    self.reply(id, result);
                }
                Request::Load { oid, snapshot } => {
                    let result =
                        storage
                            .load(Oid(oid), Tid(snapshot))
                            .map(|r| Response::Revision {
                                tid: r.tid.0,
                                data: r.data,
                            });
                    self.reply(id, result);
                }
                Request::LoadRevision { oid, tid } => {
                    let result = storage
                        .load_revision(Oid(oid), Tid(tid))
                        .map(Response::Data);
                    self.reply(id, result);
                }
                Request::History { oid, limit } => {
                    let limit = usize::try_from(limit)
                        .unwrap_or(usize::MAX)
                        .min(protocol::HISTORY_REPLY_MAX);
                    let result = storage.history(Oid(oid), limit).map(|h| {
                        Response::History(h.into_iter().map(|r| (r.tid.0, r.size)).collect())
                    });
                    self.reply(id, result);
                }
                Request::Transactions { from, to } => {
                    let result = self.transactions_page(Tid(from), Tid(to));
                    self.reply(id, result);
                }
                Request::Pack { tid, gc } => self.pack(id, Tid(tid), gc),
                Request::Vote { txn } => {
                    return self.forward_request(id, txn, TxnOp::Vote(id));
                }
                Request::Finish { txn } => {
                    let job = self.forward_request(id, txn, TxnOp::Finish(id))?;
                    self.transactions.remove(&txn);
                    return Ok(job);
                }
                Request::Commit { txn } => {
                    let job = self.forward_request(id, txn, TxnOp::Commit(id))?;
                    self.transactions.remove(&txn);
                    return Ok(job);
                }
            },
            ClientMessage::Begin { txn, meta } => {
                if self.transactions.contains_key(&txn) {
                    return Err(format!("transaction {txn} begun twice"));
                }
                if self.transactions.len() >= TRANSACTIONS_PER_CONNECTION_MAX {
                    return Err(format!(
                        "more than {TRANSACTIONS_PER_CONNECTION_MAX} open transactions"
                    ));
                }
                let slot = if self.read_only {
                    TxnSlot::Failed(WireError::ReadOnly)
                } else {
                    match storage.begin(meta.into()) {
                        Ok(t) => TxnSlot::Running(TxnActor::new(t), 0),
                        Err(e) => TxnSlot::Failed(WireError::from(&e)),
                    }
                };
                self.transactions.insert(txn, slot);
            }
            ClientMessage::Store {
                txn,
                oid,
                base_tid,
                data,
                merge,
            } => {
                let max = self.shared.options.transaction_bytes_max;
                if let Some(TxnSlot::Running(_, bytes)) = self.transactions.get_mut(&txn) {
                    *bytes += data.len() as u64;
                    if *bytes > max {
                        // Dropping the actor aborts the transaction and frees its data.
                        let len = *bytes;
                        self.transactions.insert(
                            txn,
                            TxnSlot::Failed(WireError::LimitExceeded {
                                what: "transaction record".into(),
                                len,
                                max,
                            }),
                        );
                    }
                }
                self.forward(txn, TxnOp::Store(Oid(oid), Tid(base_tid), data, merge))?
            }
            ClientMessage::CheckCurrent { txn, oid, tid } => {
                self.forward(txn, TxnOp::CheckCurrent(Oid(oid), Tid(tid)))?
            }
            ClientMessage::Abort { txn } => {
                if let Some(TxnSlot::Running(actor, _)) = self.transactions.remove(&txn) {
                    let job = actor.submit(TxnOp::Abort, &self.context());
                    debug_assert!(job.is_none(), "an abort never waits");
                }
            }
        }
        Ok(None)
    }

    fn context(&self) -> TxnContext {
        TxnContext {
            shared: Arc::clone(&self.shared),
            outbox: Arc::clone(&self.outbox),
        }
    }

    fn forward(&mut self, txn: u64, op: TxnOp) -> std::result::Result<(), String> {
        match self.transactions.get(&txn) {
            Some(TxnSlot::Running(actor, _)) => {
                let job = actor.submit(op, &self.context());
                debug_assert!(job.is_none(), "stores and checks never wait");
                Ok(())
            }
            Some(TxnSlot::Failed(_)) => Ok(()),
            None => Err(format!(
                "an operation on transaction {txn}, which is not open"
            )),
        }
    }

    /// Submits a vote, finish or commit; the job to run it off the reader, if any.
    fn forward_request(
        &mut self,
        id: u64,
        txn: u64,
        op: TxnOp,
    ) -> std::result::Result<Option<Job>, String> {
        match self.transactions.get(&txn) {
            Some(TxnSlot::Running(actor, _)) => Ok(actor.submit(op, &self.context())),
            Some(TxnSlot::Failed(e)) => {
                let e = e.clone();
                self.outbox
                    .send(&ServerMessage::Reply { id, result: Err(e) });
                Ok(None)
            }
            None => Err(format!(
                "an operation on transaction {txn}, which is not open"
            )),
        }
    }

    /// Packs the storage on a pooled worker (it takes long; the connection goes on).
    fn pack(&self, id: u64, tid: Tid, gc: bool) {
        if self.read_only {
            return self.reply(id, Err(Error::ReadOnly));
        }
        let references = self.shared.options.references.clone();
        if gc && references.is_none() {
            return self.reply(
                id,
                Err(Error::Server {
                    message: "this server cannot pack with garbage collection: it was started \
                              without a reference reader (ServerOptions::references); pack \
                              without garbage collection, or configure one"
                        .into(),
                }),
            );
        }
        let ctx = self.context();
        let job = Box::new(move || {
            log::info!("{}: packing to {tid} (gc: {gc})", ctx.outbox.peer);
            let reader = references.filter(|_| gc);
            let result = match &reader {
                Some(reader) => {
                    let f = |record: &[u8]| reader(record);
                    ctx.shared.storage.pack(tid, Some(&f))
                }
                None => ctx.shared.storage.pack(tid, None),
            };
            match &result {
                Ok(r) => log::info!(
                    "packed to {}: {} -> {} bytes, {} objects removed",
                    r.pack_tid,
                    r.bytes_before,
                    r.bytes_after,
                    r.objects_removed
                ),
                Err(e) => log::warn!("pack failed: {e}"),
            }
            ctx.reply(
                id,
                result
                    .map(|r| Response::Packed(WirePackReport::from(&r)))
                    .map_err(|e| WireError::from(&e)),
            );
        });
        if self.shared.pool.try_spawn(job).is_err() {
            // Dropping the job drops its context; the reply says why.
            self.reply(
                id,
                Err(Error::Server {
                    message: "cannot start a thread for the pack".into(),
                }),
            );
        }
    }

    fn transactions_page(&self, from: Tid, to: Tid) -> Result<Response> {
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut iter = self.shared.storage.transactions(from, to)?.peekable();
        while page.len() < TRANSACTIONS_PAGE_MAX && bytes < TRANSACTIONS_PAGE_BYTES {
            match iter.next() {
                None => break,
                Some(t) => {
                    let t = WireTransaction::from(t?);
                    bytes += t.approximate_bytes();
                    page.push(t);
                }
            }
        }
        let more = iter.peek().is_some();
        Ok(Response::Transactions { page, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStorage;
    use crate::meta::TransactionMeta;
    use crate::net::{ClientOptions, ClientStorage};
    use crate::notify::SUBSCRIPTION_EVENTS_MAX;

    fn commit(storage: &dyn Storage, oid: Oid, data: &[u8]) -> Tid {
        let base = storage.load(oid, Tid::MAX).map_or(Tid::ZERO, |r| r.tid);
        let mut txn = storage.begin(TransactionMeta::default()).unwrap();
        txn.store(oid, base, data.to_vec()).unwrap();
        txn.finish().unwrap()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A client of an older protocol version is refused at the handshake, with a
    /// reason naming both versions.
    #[test]
    fn a_client_of_another_protocol_version_is_refused_naming_both() {
        let server = Server::start(
            Arc::new(MemoryStorage::new()),
            "127.0.0.1:0",
            ServerOptions::new(),
        )
        .unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        let hello = ClientMessage::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION - 1,
            read_only: false,
            fresh: true,
            last_tid: 0,
        };
        protocol::write_frame(&mut stream, &protocol::encode(&hello)).unwrap();
        let payload = protocol::read_frame(&mut stream, HANDSHAKE_FRAME_BYTES_MAX).unwrap();
        let ServerMessage::Refused { reason } = protocol::decode(&payload).unwrap() else {
            panic!("not refused");
        };
        assert!(
            reason.contains(&(PROTOCOL_VERSION - 1).to_string())
                && reason.contains(&PROTOCOL_VERSION.to_string()),
            "{reason}"
        );
        server.shutdown();
    }

    /// A vote's conflict carries, for every stored object found stale, its newest
    /// revision and the one it was stored on: the client merges them without a
    /// load (here with the server gone) and knows every stale object at once.
    #[test]
    fn a_conflict_reply_carries_the_revisions_to_merge_every_stale_object() {
        let server = Server::start(
            Arc::new(MemoryStorage::new()),
            "127.0.0.1:0",
            ServerOptions::new(),
        )
        .unwrap();
        let address = server.local_addr().to_string();
        let (a, b) = (
            ClientStorage::connect(&address, ClientOptions::new()).unwrap(),
            ClientStorage::connect(&address, ClientOptions::new()).unwrap(),
        );
        let (x, y, fresh) = (
            a.new_oid().unwrap(),
            a.new_oid().unwrap(),
            a.new_oid().unwrap(),
        );
        // Over the size a reply carries: left out (a merge loads it).
        let (big, big_data) = (
            a.new_oid().unwrap(),
            vec![7; CONFLICT_REVISION_BYTES_MAX + 1],
        );
        let mut t = a.begin(TransactionMeta::default()).unwrap();
        t.store(x, Tid::ZERO, b"x0".to_vec()).unwrap();
        t.store(y, Tid::ZERO, b"y0".to_vec()).unwrap();
        t.store(big, Tid::ZERO, big_data.clone()).unwrap();
        let base = t.finish().unwrap();
        let mut t = a.begin(TransactionMeta::default()).unwrap();
        t.store(x, base, b"x1".to_vec()).unwrap();
        t.store(y, base, b"y1".to_vec()).unwrap();
        t.store(big, base, big_data.clone()).unwrap();
        let newer = t.finish().unwrap();
        assert_eq!(b.known_newer_revision(x, base), None);
        let mut t = b.begin(TransactionMeta::default()).unwrap();
        t.store(fresh, Tid::ZERO, b"new".to_vec()).unwrap();
        t.store(x, base, b"x-mine".to_vec()).unwrap();
        t.store(y, base, b"y-mine".to_vec()).unwrap();
        t.store(big, base, big_data).unwrap();
        let e = t.finish().unwrap_err();
        let c = *e.as_conflict().expect("a conflict");
        assert_eq!((c.base_tid, c.current_tid), (base, newer));
        for (oid, old, committed) in [(x, b"x0", b"x1"), (y, b"y0", b"y1")] {
            assert_eq!(b.known_newer_revision(oid, base), Some(newer));
            assert_eq!(b.known_newer_revision(oid, newer), None);
            assert_eq!(b.load_revision(oid, base).unwrap(), old);
            assert_eq!(b.load_revision(oid, newer).unwrap(), committed);
        }
        assert_eq!(b.known_newer_revision(fresh, Tid::ZERO), None, "not stale");
        assert_eq!(
            b.known_newer_revision(big, base),
            None,
            "too large to carry"
        );
        a.close().unwrap();
        server.shutdown();
        // The merge needs no round trip: the revisions are at hand.
        assert_eq!(b.load_revision(x, base).unwrap(), b"x0");
        assert_eq!(b.load_revision(y, newer).unwrap(), b"y1");
        b.close().unwrap();
    }

    /// The broadcaster (or whoever pumps) fell so far behind the storage that its
    /// subscription was cut off: the server must drop every client, which reconnect
    /// too far behind, drop their caches and tell their own subscribers; and it must
    /// go on broadcasting from a new subscription.
    #[test]
    fn missed_commit_notifications_restart_the_history_and_drop_every_client() {
        let storage = Arc::new(MemoryStorage::new());
        let server = Server::start(
            Arc::clone(&storage) as Arc<dyn Storage>,
            "127.0.0.1:0",
            ServerOptions::new(),
        )
        .unwrap();
        let address = server.local_addr().to_string();
        let options = ClientOptions::new()
            .reconnect_delay(Duration::from_millis(5), Duration::from_millis(50))
            .wait_timeout(Duration::from_secs(30));
        let writer = ClientStorage::connect(&address, options.clone()).unwrap();
        let witness = ClientStorage::connect(&address, options).unwrap();
        let oid = writer.new_oid().unwrap();
        let before = commit(&writer, oid, b"before");
        wait_for("the first invalidation", || witness.last_tid() >= before);
        assert_eq!(witness.load(oid, Tid::MAX).unwrap().data, b"before");
        assert_eq!(witness.cache_usage().0, 1);
        let subscription = witness.subscribe();
        let drained = std::thread::spawn(move || {
            let mut events = 0u64;
            while subscription.recv_timeout(Duration::from_secs(30)).is_some() {
                events += 1;
            }
            (events, subscription.missed())
        });

        // Stall broadcasting, as a server far behind its storage would be, while the
        // storage commits past what one subscription may leave unread.
        let flood = SUBSCRIPTION_EVENTS_MAX as u64 + 50;
        let last = {
            let _stalled = server.shared.events.lock();
            let mut last = Tid::ZERO;
            for i in 0..flood {
                last = commit(storage.as_ref(), oid, format!("flood {i}").as_bytes());
            }
            last
        };
        assert!(!server.shared.events.lock().missed(), "restarted");

        wait_for("the witness to follow the server", || {
            witness.last_tid() == last && witness.is_connected()
        });
        assert_eq!(
            witness.load(oid, Tid::MAX).unwrap().data,
            format!("flood {}", flood - 1).as_bytes(),
            "the cache was dropped: no stale revision"
        );
        let (events, missed) = drained.join().unwrap();
        assert!(
            missed,
            "the witness's subscriber was told it missed commits"
        );
        assert!(events < flood, "{events} events");

        // Broadcasting goes on after the restart, to every client.
        wait_for("the writer to reconnect", || writer.is_connected());
        let after = commit(&writer, oid, b"after");
        wait_for("the invalidation after the restart", || {
            witness.last_tid() >= after
        });
        assert_eq!(witness.load(oid, Tid::MAX).unwrap().data, b"after");
        // Commits made beside the server reach the clients too (the broadcaster's
        // new subscription).
        let beside = commit(storage.as_ref(), oid, b"beside");
        wait_for("the invalidation of a commit beside the server", || {
            witness.last_tid() >= beside
        });
        assert_eq!(witness.load(oid, Tid::MAX).unwrap().data, b"beside");
        writer.close().unwrap();
        witness.close().unwrap();
        server.shutdown();
    }

    fn new_outbox(bytes_max: usize) -> (Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let outbox = Outbox {
            id: 1,
            peer: "test".into(),
            stream,
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
                draining: false,
                writing: false,
                deferred: false,
                idle_woken_at: None,
                awaiting_replies: 0,
            }),
            wake_writer: Condvar::new(),
            space_freed: Condvar::new(),
            bytes_max,
            flusher: Arc::new(Flusher::default()),
        };
        (Arc::new(outbox), peer)
    }

    #[test]
    fn send_queue_limit_holds_at_its_boundary() {
        let (outbox, _peer) = new_outbox(100);
        assert!(outbox.push_or_close(vec![0; 60].into(), Delivery::Now));
        assert!(outbox.push_or_close(vec![0; 40].into(), Delivery::Now));
        assert_eq!(outbox.state.lock().bytes, 100);
        assert!(!outbox.is_closed());
        assert!(!outbox.push_or_close(vec![0; 1].into(), Delivery::Now));
        assert!(outbox.is_closed());
        // A single frame larger than the limit still goes out when the queue is empty.
        let (outbox, _peer) = new_outbox(100);
        assert!(outbox.push_or_close(vec![0; 500].into(), Delivery::Now));
        assert!(!outbox.is_closed());
    }

    /// Another client's invalidation waits for a reply only when one is coming:
    /// an idle client (a worker waiting for work) gets it at once.
    #[test]
    fn an_invalidation_is_deferred_only_for_a_client_awaiting_a_reply() {
        let (outbox, _peer) = new_outbox(1 << 20);
        assert!(outbox.push_or_close(vec![0; 8].into(), Delivery::Soon));
        assert!(!outbox.state.lock().deferred, "an idle client waited");
        assert!(outbox.flusher.pending.lock().is_empty());
        let (outbox, _peer) = new_outbox(1 << 20);
        outbox.request_read();
        assert!(outbox.push_or_close(vec![0; 8].into(), Delivery::Soon));
        assert!(
            outbox.state.lock().deferred,
            "not deferred for the coming reply"
        );
        assert_eq!(outbox.flusher.pending.lock().len(), 1);
        // The reply takes it along, and the client is idle again.
        outbox.send(&ServerMessage::Reply {
            id: 1,
            result: Ok(Response::Pong),
        });
        let st = outbox.state.lock();
        assert!(st.frames.is_empty() && !st.deferred && st.awaiting_replies == 0);
    }

    #[test]
    fn an_idle_client_is_woken_at_most_once_per_interval() {
        let (outbox, _peer) = new_outbox(1 << 20);
        assert!(outbox.push_or_close(vec![0; 8].into(), Delivery::Soon));
        assert!(!outbox.state.lock().deferred, "the first one waited");
        assert!(outbox.push_or_close(vec![0; 8].into(), Delivery::Soon));
        assert!(
            outbox.state.lock().deferred,
            "a second one within the interval woke the writer again"
        );
        assert_eq!(outbox.flusher.pending.lock().len(), 1);
        // Once the interval has passed (and the deferred frames went out), the
        // next one is sent at once again.
        outbox.flush_deferred();
        {
            let mut st = outbox.state.lock();
            st.frames.clear();
            st.bytes = 0;
            st.idle_woken_at = Some(Instant::now() - IDLE_WAKE_INTERVAL);
        }
        assert!(outbox.push_or_close(vec![0; 8].into(), Delivery::Soon));
        assert!(
            !outbox.state.lock().deferred,
            "woken at once after the interval"
        );
    }

    #[test]
    fn invalidations_are_split_into_chunks_of_the_limit() {
        let oids: Vec<Oid> = (0..INVALIDATION_CHUNK_OIDS_MAX as u64 * 2 + 1)
            .map(Oid)
            .collect();
        let frames = invalidation_frames(Tid(9), &oids, vec![(5, b"five".to_vec())]);
        assert_eq!(frames.len(), 3);
        let mut all = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let message: ServerMessage = protocol::decode(&frame[4..]).unwrap();
            let ServerMessage::Invalidation {
                tid,
                oids,
                complete,
                data,
            } = message
            else {
                panic!("not an invalidation");
            };
            assert_eq!(tid, 9);
            assert_eq!(complete, i == 2);
            // The data rides on the last chunk.
            let expected = if complete {
                vec![(5, b"five".to_vec())]
            } else {
                Vec::new()
            };
            assert_eq!(data, expected);
            all.extend(oids);
        }
        assert_eq!(
            all,
            (0..INVALIDATION_CHUNK_OIDS_MAX as u64 * 2 + 1).collect::<Vec<_>>()
        );
        assert_eq!(invalidation_frames(Tid(9), &[], Vec::new()).len(), 1);
        assert_eq!(
            invalidation_frames(Tid(9), &oids[..INVALIDATION_CHUNK_OIDS_MAX], Vec::new()).len(),
            1
        );
    }
}
