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
//! The parts: [`options`] (how a server runs), [`hub`] (the broadcast of commits
//! and the invalidation history), [`outbox`] (each connection's send queue and the
//! deferred flusher), [`connection`] (reading a connection and answering its
//! requests), [`transaction`] (each open transaction's operations, votes, finishes
//! and merges). This module holds the server's lifecycle: start, accept, shutdown.
//!
//! Invariants:
//! - A connection is counted in `connection_count` from its accept until its
//!   [`connection::Connection`] is dropped. [`admission`] bounds those in their
//!   handshake (`handshakes_max`, evicting the longest waiting) apart from the
//!   authenticated ones (`connections_max`, over which a connection is refused
//!   after its handshake, with the reason).
//! - Shutdown stops accepting first, then closes every connection, then waits
//!   (bounded) for them to end.

mod admission;
mod connection;
mod exposure;
mod hub;
mod memory;
mod options;
mod outbox;
mod transaction;

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub use options::{MergeFn, ReferenceReader, ServerOptions};

use self::admission::Admission;
use self::hub::Hub;
use self::memory::ClientMemory;
use self::outbox::{Flusher, Outbox};
use crate::error::{Error, Result};
use crate::notify::CommitSubscription;
use crate::pool::ThreadPool;
use crate::storage::Storage;

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
    /// The bound on what is held for clients (partial frames, uncommitted stores,
    /// send queues).
    memory: Arc<ClientMemory>,
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
    /// Connections by stage: in their handshake, authenticated.
    admission: Admission,
}

/// A job for a pooled worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// How long an idle pooled thread of the server waits for work before it ends.
const POOL_IDLE: Duration = Duration::from_secs(10);

impl Shared {
    /// The state of a server of `storage`, subscribed to its commits.
    fn new(storage: Arc<dyn Storage>, options: ServerOptions) -> Arc<Shared> {
        // Subscribe before reading last_tid: every commit after it is seen.
        let subscription = storage.subscribe();
        let last_tid = storage.last_tid();
        let shared = Arc::new(Shared {
            storage,
            memory: ClientMemory::new(options.client_memory_bytes_max),
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
            admission: Admission::default(),
        });
        shared.set_waker(&shared.events.lock());
        shared
    }
}

impl Server {
    /// Listens on `addr` and serves `storage` until shut down.
    pub fn start(
        storage: Arc<dyn Storage>,
        addr: impl ToSocketAddrs,
        options: ServerOptions,
    ) -> Result<Server> {
        Server::start_on(storage, Server::bind(addr)?, options)
    }

    /// Binds the listening socket [`Server::start_on`] takes. A program that creates
    /// its storage for the server binds first, so that an address in use fails the
    /// start before anything is created.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<TcpListener> {
        TcpListener::bind(addr).map_err(|e| Error::Io {
            path: "listen address".into(),
            action: "bind",
            source: e,
        })
    }

    /// Serves `storage` on a socket already bound (by [`Server::bind`]) until shut down.
    pub fn start_on(
        storage: Arc<dyn Storage>,
        listener: TcpListener,
        options: ServerOptions,
    ) -> Result<Server> {
        let local_addr = listener.local_addr().map_err(|e| Error::Io {
            path: "listen address".into(),
            action: "local address",
            source: e,
        })?;
        let shared = Shared::new(storage, options);
        // Dropped on a failed spawn: stops the threads started so far.
        let mut server = Server {
            local_addr,
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let broadcaster = Arc::clone(&shared);
        server.spawn("zodiac-broadcast", move || broadcaster.broadcast_loop())?;
        let flusher = Arc::clone(&shared);
        server.spawn("zodiac-flush", move || {
            flusher.flusher.run(&flusher.stopping)
        })?;
        let acceptor = Arc::clone(&shared);
        server.spawn("zodiac-accept", move || acceptor.accept_loop(listener))?;
        log::info!("serving {} on {local_addr}", shared.storage.describe());
        let token = shared.options.token.is_some();
        if let Some(tls) = &shared.options.tls {
            log::info!(
                "TLS: certificate SHA-256 fingerprint {} (clients check it with \
                 tls://HOST:PORT?ca=CERT_FILE, or pin it with ?fingerprint=)",
                tls.fingerprint()
            );
        }
        let tls = shared.options.tls.is_some();
        if let Some(warning) = exposure::exposure_warning(local_addr, token, tls) {
            log::warn!("{warning}");
        }
        Ok(server)
    }

    /// Starts one of the server's threads, which [`Server::stop`] joins.
    fn spawn(&mut self, name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|source| Error::Io {
                path: "the server's threads".into(),
                action: "start",
                source,
            })?;
        self.threads.push(thread);
        Ok(())
    }

    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections being served now (in their handshake or authenticated).
    pub fn connection_count(&self) -> usize {
        self.shared.connection_count.load(Ordering::Acquire)
    }

    /// Connections in their handshake now (not yet authenticated).
    pub fn handshake_count(&self) -> usize {
        self.shared.admission.handshakes()
    }

    /// Authenticated connections now (what `connections_max` bounds).
    pub fn authenticated_count(&self) -> usize {
        self.shared.admission.authenticated()
    }

    /// Bytes held for clients now: partial frames, uncommitted transactions'
    /// stores and send queues (bounded by `client_memory_bytes_max`).
    pub fn client_memory_bytes(&self) -> usize {
        self.shared.memory.used()
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
            let (peer, ip) = match stream.peer_addr() {
                Ok(a) => (a.to_string(), a.ip()),
                Err(_) => continue,
            };
            let Ok(handle) = stream.try_clone() else {
                log::warn!("{peer}: cannot clone the socket");
                continue;
            };
            let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
            let options = &self.options;
            if let Some(evicted) = self.admission.begin_handshake(
                id,
                ip,
                peer.clone(),
                handle,
                options.handshakes_max,
                options.handshakes_per_address_max,
            ) {
                log::info!(
                    "closing the connection of {} before its handshake: {}",
                    evicted.peer,
                    evicted.why
                );
            }
            self.connection_count.fetch_add(1, Ordering::AcqRel);
            let shared = Arc::clone(&self);
            let spawned = std::thread::Builder::new()
                .name("zodiac-connection".into())
                // The connection counts itself out when it ends.
                .spawn(move || shared.serve(stream, peer, id));
            if spawned.is_err() {
                self.admission.end_handshake(id);
                self.connection_count.fetch_sub(1, Ordering::AcqRel);
                log::warn!("cannot start a thread for a new connection");
            }
        }
    }
}
