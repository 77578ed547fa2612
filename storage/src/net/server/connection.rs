//! Reading one connection and answering its requests: the server's half of the
//! handshake, then every message in the order received, the quick ones answered on
//! the reading thread, votes, finishes and commits handed to the transaction's
//! actor off it, packs on a pooled worker, copied transactions (`restore`) off it.
//!
//! Invariants:
//! - A malformed or oversized frame closes only its connection, with a log line.
//! - Every request read gets one reply (`Outbox::send` counts them), or the
//!   connection ends.
//! - A connection has at most `TRANSACTIONS_PER_CONNECTION_MAX` transactions open;
//!   dropping the connection aborts them (a finish already running completes).
//! - A transaction stores at most `transaction_bytes_max` bytes before its vote;
//!   past it the transaction fails and its data is freed.
//! - Every payload byte read is reserved against the server's client memory
//!   before it is buffered; a frame refused room is skipped unbuffered and
//!   answered (a store fails its transaction, a request gets an error reply) or,
//!   when it is neither, closes the connection with the reason.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

mod restore;

use super::memory::{self, Reservation};
use super::outbox::Outbox;
use super::transaction::{TxnActor, TxnContext, TxnOp, TxnSlot};
use super::{Job, Shared};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::net::handshake;
use crate::net::protocol::{
    self, ClientMessage, FrameError, FramePeek, Request, ReservedFrame, Response, ServerMessage,
    TRANSACTIONS_PAGE_BYTES, TRANSACTIONS_PAGE_MAX, TRANSACTIONS_PER_CONNECTION_MAX, WireError,
    WireMeta, WirePackReport, WireTransaction,
};
use crate::net::transport::{self, ReadHalf, WriteHalf};

/// Client memory counted for each store beside its data: what the storage and
/// the transaction keep for it (its slot, its index entry, its base tid).
const STORE_OVERHEAD_BYTES: usize = 128;

/// Why a client that proved the read-only token cannot write.
const READ_ONLY_TOKEN_REFUSAL: &str = "this client authenticated with the server's read-only \
     token, which may load but not commit (nor allocate oids, pack or restore); give the \
     read-write token (`--token-file`) to write";

impl Shared {
    /// Serves a new connection on this thread until it ends.
    /// `id` is the connection's, in its handshake (see `admission`).
    pub(super) fn serve(self: &Arc<Self>, stream: TcpStream, peer: String, id: u64) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(self.options.write_timeout));
        let (read_half, write_half) = match self.halves(stream, &peer) {
            Some(halves) => halves,
            None => {
                self.admission.end_handshake(id);
                self.connection_count.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        let outbox = {
            let s = write_half;
            Arc::new(Outbox::new(
                id,
                peer,
                s,
                self.options.send_queue_bytes_max,
                Arc::clone(&self.flusher),
                Arc::clone(&self.memory),
                self.options.client_memory_wait,
            ))
        };
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
                reader: BufReader::with_capacity(64 << 10, read_half),
                read_only: self.options.read_only,
                transactions: HashMap::new(),
                writer: Some(writer),
                end_reason: String::new(),
                authenticated: false,
                read_only_token: false,
            }
            // Ends the connection (and counts it out) when it is dropped.
            .run(),
            Err(_) => {
                outbox.close("cannot start the writer thread");
                self.connections.lock().remove(&id);
                self.admission.end_handshake(id);
                self.connection_count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Shared {
    /// The connection's halves: plain, or after its TLS handshake (within the
    /// handshake timeout). `None`: it failed, and was logged.
    fn halves(&self, stream: TcpStream, peer: &str) -> Option<(ReadHalf, WriteHalf)> {
        let Some(tls) = &self.options.tls else {
            return match transport::plain_halves(stream) {
                Ok(halves) => Some(halves),
                Err(e) => {
                    log::warn!("{peer}: cannot clone the socket: {e}");
                    None
                }
            };
        };
        let timeout = self.options.handshake_timeout;
        let session = match tls.session() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("{peer}: cannot start a TLS session: {e}");
                return None;
            }
        };
        match transport::tls_halves(stream, session, Instant::now() + timeout) {
            Ok(halves) => Some(halves),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                log::warn!(
                    "client {peer} sent no TLS handshake within {} s",
                    timeout.as_secs_f64()
                );
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                log::info!("client {peer} left during its TLS handshake");
                None
            }
            Err(e) => {
                log::warn!("closing the connection of {peer}: TLS handshake failed: {e}");
                None
            }
        }
    }
}

/// One connection's reading side and state. It moves between threads: a vote,
/// finish or commit runs on the thread that read it, while a pooled worker goes on
/// reading (one thread wake-up less on a commit's path). Dropping it ends the
/// connection.
struct Connection {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    reader: BufReader<ReadHalf>,
    read_only: bool,
    transactions: HashMap<u64, TxnSlot>,
    writer: Option<JoinHandle<()>>,
    /// Why the connection ended ("" for an orderly end), logged when it closes.
    end_reason: String,
    /// Counted among the authenticated connections (else among those in their
    /// handshake).
    authenticated: bool,
    /// The client proved the read-only token: every write is refused, saying so.
    read_only_token: bool,
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
        if self.authenticated {
            self.shared.admission.leave();
        } else {
            self.shared.admission.end_handshake(id);
        }
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
            .socket()
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
            let Some((payload, mut reserved)) = self.read_payload()? else {
                continue;
            };
            // Decoding copies the payload's bytes into the message (but for a
            // large store): room for the copy while both live.
            let copy = if ClientMessage::decodes_in_place(&payload)
                || payload.len() <= protocol::FRAME_CHUNK_BYTES
            {
                0
            } else {
                payload.len()
            };
            let deadline = Instant::now() + self.shared.options.client_memory_wait;
            if copy > 0 && !reserved.grow_until(copy, deadline) {
                let prefix = payload[..protocol::FRAME_PREFIX_BYTES].to_vec();
                drop((payload, reserved));
                self.refused_frame(&prefix, 0, copy)?;
                continue;
            }
            let message = match ClientMessage::decode_owned(payload) {
                Ok(m) => m,
                Err(e) => return Err(e.to_string()),
            };
            reserved.release(copy);
            message.check()?;
            if let Some(job) = self.handle(message, reserved)? {
                return Ok(job);
            }
        }
    }

    /// Reads the next frame's payload, with the client memory it holds. `None`: a
    /// frame refused room and answered (see [`Connection::refused_frame`]).
    fn read_payload(&mut self) -> std::result::Result<Option<(Vec<u8>, Reservation)>, String> {
        let mut reserved = self.shared.memory.reservation();
        let wait = self.shared.options.client_memory_wait;
        let read =
            protocol::read_frame_reserving(&mut self.reader, protocol::FRAME_BYTES_MAX, &mut |n| {
                reserved.grow_until(n, Instant::now() + wait)
            });
        match read {
            Ok(ReservedFrame::Payload(p)) => Ok(Some((p, reserved))),
            Ok(ReservedFrame::Refused { prefix, left, len }) => {
                drop(reserved);
                self.refused_frame(&prefix, left, len).map(|()| None)
            }
            Err(e) => Err(self.read_failed(e)),
        }
    }

    /// Why reading a frame ended the connection ("" for an orderly end).
    fn read_failed(&self, e: FrameError) -> String {
        match e {
            FrameError::Closed => String::new(),
            _ if self.outbox.is_closed() => String::new(),
            FrameError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                format!(
                    "nothing received for {:?} (the idle timeout): the client is gone",
                    self.shared.options.idle_timeout
                )
            }
            FrameError::Io(e) => format!("read failed: {e}"),
            FrameError::Bad(what) => what,
        }
    }

    /// A frame the client memory had no room for, of which `prefix` was read and
    /// `left` bytes are still to come (of `len`): skipped without buffering, then a store
    /// fails its transaction and a request is answered with the error; anything
    /// else closes the connection, telling the client why.
    fn refused_frame(
        &mut self,
        prefix: &[u8],
        left: usize,
        len: usize,
    ) -> std::result::Result<(), String> {
        let memory = &self.shared.memory;
        let message = memory::full_message(memory.bytes_max());
        log::warn!(
            "{}: refusing a frame of {len} bytes: client memory full ({} of {} bytes held)",
            self.outbox.peer,
            memory.used(),
            memory.bytes_max()
        );
        let peek = ClientMessage::peek(prefix);
        if peek == FramePeek::Other {
            self.outbox.send(&ServerMessage::Refused {
                reason: message.clone(),
            });
            return Err(message);
        }
        protocol::skip_payload(&mut self.reader, left).map_err(|e| self.read_failed(e))?;
        let error = WireError::Server { message };
        match peek {
            FramePeek::Store(txn) => self.fail(txn, error),
            FramePeek::Request(id) => {
                self.outbox.request_read();
                self.outbox.send(&ServerMessage::Reply {
                    id,
                    result: Err(error),
                });
                Ok(())
            }
            FramePeek::Other => unreachable!("answered above"),
        }
    }

    /// Fails open transaction `txn` with `error` (reported by its vote or finish);
    /// its data is freed.
    fn fail(&mut self, txn: u64, error: WireError) -> std::result::Result<(), String> {
        match self.transactions.get(&txn) {
            // Dropping the actor aborts the transaction and frees its data.
            Some(TxnSlot::Running(..)) => {
                self.transactions.insert(txn, TxnSlot::Failed(error));
                Ok(())
            }
            Some(TxnSlot::Failed(_)) => Ok(()),
            None => Err(format!(
                "an operation on transaction {txn}, which is not open"
            )),
        }
    }

    /// The server's half of the handshake, then the catch-up and `Welcome`.
    /// `Ok(false)`: the peer left.
    fn handshake(&mut self) -> std::result::Result<bool, String> {
        // One deadline for the whole handshake, however slowly the bytes trickle in.
        let timeout = self.shared.options.handshake_timeout;
        let tokens = handshake::Tokens {
            read_write: self.shared.options.token.as_deref(),
            read_only: self.shared.options.read_only_token.as_deref(),
        };
        let outbox = &self.outbox;
        let hello =
            match handshake::serve(&mut self.reader, timeout, tokens, &mut |m| outbox.send(m)) {
                Ok(Some(hello)) => hello,
                Ok(None) => return Ok(false),
                Err(handshake::ServeFailure::Late(what)) => {
                    log::warn!("client {} {what}", self.outbox.peer);
                    return Ok(false);
                }
                Err(handshake::ServeFailure::Refused(reason)) => return Err(reason),
            };
        // Authenticated: from now on it counts against `connections_max`.
        let id = self.outbox.id;
        self.shared.admission.end_handshake(id);
        let max = self.shared.options.connections_max;
        if !self.shared.admission.authenticate(max) {
            let reason = format!("too many connections (the server's limit is {max})");
            self.outbox.send(&ServerMessage::Refused {
                reason: reason.clone(),
            });
            return Err(format!("refused: {max} connections already (the limit)"));
        }
        self.authenticated = true;
        self.read_only |= hello.read_only;
        self.read_only_token = hello.token_read_only;
        self.shared.welcome(&self.outbox, &hello)?;
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
    fn handle(
        &mut self,
        message: ClientMessage,
        reserved: Reservation,
    ) -> std::result::Result<Option<Job>, String> {
        match message {
            ClientMessage::Hello { .. } | ClientMessage::Auth { .. } => {
                return Err("a handshake message after the handshake".into());
            }
            ClientMessage::Request { id, request } => {
                // Every request gets one reply (`Outbox::send`).
                self.outbox.request_read();
                return self.handle_request(id, request, reserved);
            }
            ClientMessage::Begin { txn, meta } => self.begin(txn, meta)?,
            ClientMessage::Store {
                txn,
                oid,
                base_tid,
                data,
                merge,
            } => {
                let mut reserved = reserved;
                // What the storage keeps beside each stored record.
                if !reserved.try_grow(STORE_OVERHEAD_BYTES) {
                    let error = self.context().memory_full();
                    return self.fail(txn, error).map(|()| None);
                }
                self.count_stored(txn, data.len());
                let op = TxnOp::Store(Oid(oid), Tid(base_tid), data, merge, reserved);
                self.forward(txn, op)?
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

    /// Answers one request; a vote, finish or commit comes back as a job to run off
    /// the reader, if it has to wait.
    fn handle_request(
        &mut self,
        id: u64,
        request: Request,
        reserved: Reservation,
    ) -> std::result::Result<Option<Job>, String> {
        let storage = &self.shared.storage;
        let result = match request {
            Request::Vote { txn } => return self.forward_request(id, txn, TxnOp::Vote(id)),
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
            Request::Pack { tid, gc } => {
                self.pack(id, Tid(tid), gc);
                return Ok(None);
            }
            Request::Restore { tid, meta, records } => {
                return Ok(self.restore(id, tid, meta, records, reserved));
            }
            Request::Ping => Ok(Response::Pong),
            Request::NewOid => self
                .writable()
                .and_then(|()| storage.new_oid())
                .map(|o| Response::Oid(o.0)),
            Request::NewOids { count } => self.writable().and_then(|()| {
                (0..count)
                    .map(|_| storage.new_oid().map(|o| o.0))
                    .collect::<Result<Vec<u64>>>()
                    .map(Response::Oids)
            }),
            Request::Load { oid, snapshot } => {
                storage
                    .load(Oid(oid), Tid(snapshot))
                    .map(|r| Response::Revision {
                        tid: r.tid.0,
                        data: r.data,
                    })
            }
            Request::LoadRevision { oid, tid } => storage
                .load_revision(Oid(oid), Tid(tid))
                .map(Response::Data),
            Request::History { oid, limit } => {
                let limit = usize::try_from(limit)
                    .unwrap_or(usize::MAX)
                    .min(protocol::HISTORY_REPLY_MAX);
                storage
                    .history(Oid(oid), limit)
                    .map(|h| Response::History(h.into_iter().map(|r| (r.tid.0, r.size)).collect()))
            }
            Request::Transactions { from, to } => self.transactions_page(Tid(from), Tid(to)),
        };
        self.reply(id, result);
        Ok(None)
    }

    /// `ReadOnly` when this connection may not write.
    fn writable(&self) -> Result<()> {
        if self.read_only_token {
            Err(Error::Server {
                message: READ_ONLY_TOKEN_REFUSAL.into(),
            })
        } else if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn begin(&mut self, txn: u64, meta: WireMeta) -> std::result::Result<(), String> {
        if self.transactions.contains_key(&txn) {
            return Err(format!("transaction {txn} begun twice"));
        }
        if self.transactions.len() >= TRANSACTIONS_PER_CONNECTION_MAX {
            return Err(format!(
                "more than {TRANSACTIONS_PER_CONNECTION_MAX} open transactions"
            ));
        }
        let slot = if let Err(e) = self.writable() {
            TxnSlot::Failed(WireError::from(&e))
        } else {
            match self.shared.storage.begin(meta.into()) {
                Ok(t) => TxnSlot::Running(TxnActor::new(t), 0),
                Err(e) => TxnSlot::Failed(WireError::from(&e)),
            }
        };
        self.transactions.insert(txn, slot);
        Ok(())
    }

    /// Counts `len` more bytes stored by `txn`; past `transaction_bytes_max` the
    /// transaction fails.
    fn count_stored(&mut self, txn: u64, len: usize) {
        let max = self.shared.options.transaction_bytes_max;
        if let Some(TxnSlot::Running(_, bytes)) = self.transactions.get_mut(&txn) {
            *bytes += len as u64;
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
        if let Err(e) = self.writable() {
            return self.reply(id, Err(e));
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
            let to = if tid == Tid::MAX {
                "now".to_string()
            } else {
                format!("tid {tid} ({})", tid.to_rfc3339())
            };
            log::info!("{}: packing to {to} (gc: {gc})", ctx.outbox.peer);
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
