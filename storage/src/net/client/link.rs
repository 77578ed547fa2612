//! The connection to the server: establishing it (connect, handshake, catch-up),
//! sending requests and waiting for their replies, the reader thread that
//! dispatches replies and invalidations, and the supervisor that pings a silent
//! server and reconnects whenever the connection is lost.
//!
//! Invariants:
//! - A connection is installed only while alive, under the lock its reader takes
//!   to remove it when it ends: an installed connection is always removed by its
//!   reader.
//! - The supervisor reconnects only once the old connection's reader has ended,
//!   so no invalidation of the old connection is applied after the new one's.
//! - Losing a connection fails every request in flight on it (their senders are
//!   dropped), and wakes the loads waiting for a prefetch.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Inner;
use super::prefetch::Prefetch;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::net::handshake::{self, ClientFailure, Hello, Welcome};
use crate::net::protocol::{
    self, CatchUp, ClientMessage, FRAME_BYTES_MAX, PROTOCOL_VERSION, Request, Response,
    ServerMessage, WireError,
};
use crate::net::tls;
use crate::net::transport::{self, ReadHalf, WriteHalf};

/// How long a read yields waiting for its reply before it sleeps.
pub(super) const REPLY_SPIN: Duration = Duration::from_micros(50);

/// Where the reader hands a reply to the caller waiting for it.
pub(super) type ReplySender = mpsc::SyncSender<std::result::Result<Response, WireError>>;

/// A request in flight: a caller waits for its reply, or it is a prefetch whose
/// reply only fills the cache.
pub(super) enum Waiting {
    Caller(ReplySender),
    Prefetch(Prefetch),
}

/// The requests in flight on one connection.
#[derive(Default)]
pub(super) struct InFlight {
    pub(super) requests: HashMap<u64, Waiting>,
    /// The prefetch in flight for an oid: its request id (at most one per oid).
    pub(super) prefetching: HashMap<Oid, u64>,
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
pub(super) struct Link {
    pub(super) stream: TcpStream,
    pub(super) writer: Mutex<BufWriter<WriteHalf>>,
    /// Requests waiting for replies; `None` once the connection is lost.
    pub(super) pending: Mutex<Option<InFlight>>,
    pub(super) alive: AtomicBool,
    pub(super) reason: Mutex<String>,
    /// When the last frame arrived, and whether a ping is waiting for its answer.
    pub(super) heard: Mutex<(Instant, bool)>,
    /// When the last frame was sent (the server closes connections idle too long).
    pub(super) sent: Mutex<Instant>,
    /// Oids the server allocated for this connection and no call took yet (dropped
    /// with the connection: a server restored from a copy may not know them).
    pub(super) oids: Mutex<VecDeque<u64>>,
    /// The protocol version spoken on this connection (the server's, when older).
    pub(super) version: u32,
}

impl Link {
    pub(super) fn kill(&self, reason: &str) {
        if self.alive.swap(false, Ordering::AcqRel) {
            *self.reason.lock() = reason.to_string();
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        // Dropping the senders fails every call in flight (and wakes the loads
        // waiting for a prefetch).
        self.pending.lock().take();
    }

    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

impl Inner {
    /// The live connection, waiting up to `wait_timeout` for one.
    pub(super) fn link(&self) -> Result<Arc<Link>> {
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

    pub(super) fn send(&self, link: &Link, message: &ClientMessage, flush: bool) -> Result<()> {
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

    pub(super) fn call_on(&self, link: &Link, request: Request) -> Result<Response> {
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

    pub(super) fn call(&self, request: Request) -> Result<Response> {
        let link = self.link()?;
        self.call_on(&link, request)
    }

    /// The live connection, if there is one now (no waiting).
    pub(super) fn live_link(&self) -> Option<Arc<Link>> {
        let st = self.link.lock();
        st.current.as_ref().filter(|l| l.is_alive()).map(Arc::clone)
    }

    /// Connects, authenticates and catches up; installs the new connection. A
    /// server of an older protocol version this build still speaks refuses this
    /// build's: the client connects again in the server's version.
    pub(super) fn establish(self: &Arc<Self>) -> Result<()> {
        let result = self.establish_speaking(PROTOCOL_VERSION);
        if let Err(Error::Refused { reason, .. }) = &result
            && let Some(version) = handshake::older_version_spoken(reason)
        {
            log::info!(
                "{}: the server speaks protocol version {version}: connecting in it",
                self.address
            );
            return self.establish_speaking(version);
        }
        result
    }

    /// [`establish`](Self::establish) in protocol `version`.
    fn establish_speaking(self: &Arc<Self>, version: u32) -> Result<()> {
        let address = tls::parse_address(&self.address, self.options.tls.as_ref())?;
        let stream = self.connect_stream(&address.host_port)?;
        let io_err = |e: std::io::Error| self.disconnected(format!("handshake failed: {e}"));
        stream.set_nodelay(true).map_err(io_err)?;
        let (read_half, mut writer) = match &address.tls {
            None => transport::plain_halves(stream.try_clone().map_err(io_err)?).map_err(io_err)?,
            Some(config) => self.tls_halves(&stream, config, &address.host)?,
        };
        stream
            .set_read_timeout(Some(self.options.connect_timeout))
            .map_err(io_err)?;
        let mut reader = BufReader::with_capacity(64 << 10, read_half);
        let last_tid = self.cache.lock().last_tid;
        let mut partial = None;
        let hello = Hello::speaking(version, self.options.read_only, self.fresh(), last_tid);
        let welcome = self.handshake(&mut reader, &mut writer, &hello, &mut partial)?;
        self.adopt(&welcome, last_tid);
        stream.set_read_timeout(None).map_err(io_err)?;
        stream
            .set_write_timeout(Some(self.options.ping_timeout))
            .map_err(io_err)?;
        self.install(stream, reader, writer, partial, version)
    }

    /// The halves of a TLS connection over `stream`, after its handshake (within
    /// the connect timeout). A certificate that does not check out is a protocol
    /// error (returned at once by a first connect), not a lost connection.
    fn tls_halves(
        &self,
        stream: &TcpStream,
        config: &tls::ClientTls,
        host: &str,
    ) -> Result<(ReadHalf, WriteHalf)> {
        let session = config.session(host).map_err(|what| Error::Protocol {
            peer: self.address.clone(),
            what,
        })?;
        let deadline = Instant::now() + self.options.connect_timeout;
        let stream = stream
            .try_clone()
            .map_err(|e| self.disconnected(format!("handshake failed: {e}")))?;
        transport::tls_halves(stream, session, deadline).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::Protocol {
                    peer: self.address.clone(),
                    what: format!("TLS handshake failed: {e}"),
                }
            } else {
                self.disconnected(format!("TLS handshake failed: {e}"))
            }
        })
    }

    /// A TCP connection to the first of `host_port`'s socket addresses that takes one.
    fn connect_stream(&self, host_port: &str) -> Result<TcpStream> {
        let addrs: Vec<_> = host_port
            .to_socket_addrs()
            .map_err(|e| self.disconnected(format!("cannot resolve the address: {e}")))?
            .collect();
        let mut last_error = self.disconnected("the address resolves to nothing");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.options.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last_error = self.disconnected(format!("connect failed: {e}")),
            }
        }
        Err(last_error)
    }

    /// The client's half of the handshake, from a cache current as of `last_tid`;
    /// the catch-up invalidations are applied as they come (`partial`: the chunks
    /// of a transaction's invalidation so far).
    fn handshake(
        &self,
        reader: &mut BufReader<ReadHalf>,
        writer: &mut WriteHalf,
        hello: &Hello,
        partial: &mut Option<(Tid, Vec<Oid>)>,
    ) -> Result<Welcome> {
        let welcome = handshake::client(
            reader,
            writer,
            hello,
            self.options.token.as_deref(),
            |(tid, oids, complete, data)| {
                if tid <= self.cache.lock().last_tid {
                    // Applied already (the previous connection's reader got it).
                    return Ok(());
                }
                self.on_invalidation(partial, tid, oids, complete, data)
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
        Ok(welcome)
    }

    /// Whether this connection is the first and there is no cache file: nothing
    /// to catch up.
    fn fresh(&self) -> bool {
        !self.connected_once.load(Ordering::Acquire) && self.preloaded.lock().is_none()
    }

    /// Acts on the server's `Welcome` for a cache that was current as of
    /// `last_tid`: keeps the cache (from memory or the cache file) or drops it.
    fn adopt(&self, welcome: &Welcome, last_tid: Tid) {
        let (server_tid, catch_up) = (welcome.last_tid, welcome.catch_up);
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
        self.server_read_only
            .store(welcome.read_only, Ordering::Release);
        self.connected_once.store(true, Ordering::Release);
    }

    /// Starts the reader thread of a connection that passed the handshake, and
    /// installs the connection.
    fn install(
        self: &Arc<Self>,
        stream: TcpStream,
        reader: BufReader<ReadHalf>,
        writer: WriteHalf,
        partial: Option<(Tid, Vec<Oid>)>,
        version: u32,
    ) -> Result<()> {
        let link = Arc::new(Link {
            writer: Mutex::new(BufWriter::with_capacity(64 << 10, writer)),
            stream,
            pending: Mutex::new(Some(InFlight::default())),
            alive: AtomicBool::new(true),
            reason: Mutex::new(String::new()),
            heard: Mutex::new((Instant::now(), false)),
            sent: Mutex::new(Instant::now()),
            oids: Mutex::new(VecDeque::new()),
            version,
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

    /// The connection's reader thread: dispatches replies and applies
    /// invalidations until the connection is lost, then removes it.
    fn read_loop(
        self: Arc<Self>,
        link: Arc<Link>,
        mut reader: BufReader<ReadHalf>,
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
            let handled = match message {
                ServerMessage::Reply { id, result } => self.on_reply(&link, id, result),
                ServerMessage::Invalidation {
                    tid,
                    oids,
                    complete,
                    data,
                } => self.on_invalidation(&mut partial, Tid(tid), oids, complete, data),
                // The server closes the connection after it, saying why (e.g. its
                // memory for clients is full): what the calls in flight report.
                ServerMessage::Refused { reason } => {
                    break format!("the server closed the connection: {reason}");
                }
                other => Err(format!("unexpected {other:?}")),
            };
            if let Err(what) = handled {
                break format!("protocol error: {what}");
            }
        };
        self.reader_ended(&link, reason);
    }

    /// Hands the reply to request `id` to whoever waits for it.
    fn on_reply(
        &self,
        link: &Link,
        id: u64,
        result: std::result::Result<Response, WireError>,
    ) -> std::result::Result<(), String> {
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
            None => return Err(format!("a reply to unknown request {id}")),
        }
        Ok(())
    }

    /// The reader's end: the connection is given up and removed, and everyone
    /// waiting on it is woken.
    fn reader_ended(&self, link: &Arc<Link>, reason: String) {
        if link.is_alive() && !self.closed.load(Ordering::Acquire) {
            log::warn!("{}: {reason}; reconnecting", self.address);
        }
        link.kill(&reason);
        let mut st = self.link.lock();
        if st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, link)) {
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
    pub(super) fn supervise(self: Arc<Self>) {
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
pub(super) fn receive<T>(
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
