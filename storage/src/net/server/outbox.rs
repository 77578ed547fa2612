//! Each connection's send queue ([`Outbox`]) and the flusher that writes deferred
//! frames nobody else wrote in time.
//!
//! Invariants:
//! - Frames leave an outbox in the order queued; one thread writes at a time.
//! - Nobody broadcasting blocks on a connection: an outbox over its byte limit gets
//!   its connection closed instead.
//! - A deferred frame is written within `DEFERRED_FLUSH`: with the reply it waited
//!   for, or by the writer thread the flusher wakes.
//! - Every byte queued for this connection alone (replies, its catch-up, its
//!   `Welcome`) is reserved against the server's client memory until it is
//!   written (`OutboxState::held`); a frame queued on an empty queue is always
//!   taken (it is written at once), any other waits for room (a reply, up to
//!   `memory_wait`) or closes the connection. A broadcast frame is one buffer
//!   shared by every queue and is not counted per queue: the broadcast frames
//!   alive are the last `bytes_max` of the stream at most, however many clients.

use std::collections::VecDeque;
use std::io::Write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::memory::{self, ClientMemory, Reservation};
use crate::net::protocol::{self, ServerMessage};
use crate::net::transport::WriteHalf;

/// The frames waiting to be written to one connection.
pub(super) struct Outbox {
    pub(super) id: u64,
    pub(super) peer: String,
    stream: WriteHalf,
    state: Mutex<OutboxState>,
    /// Wakes the writer thread: frames to write, or the connection closing.
    wake_writer: Condvar,
    /// Wakes replies waiting for room in the queue (and them too on close).
    space_freed: Condvar,
    bytes_max: usize,
    flusher: Arc<Flusher>,
    memory: Arc<ClientMemory>,
    /// Longest a reply waits for room in the client memory.
    memory_wait: Duration,
}

/// How soon a queued frame must be written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Delivery {
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
pub(super) const IDLE_WAKE_INTERVAL: Duration = Duration::from_millis(1);

/// Longest an invalidation for a client that is not the committer waits for a reply
/// to travel with.
pub(super) const DEFERRED_FLUSH: Duration = Duration::from_millis(1);

/// Wakes the writers of connections whose deferred frames nobody wrote in time.
#[derive(Default)]
pub(super) struct Flusher {
    pending: Mutex<Vec<Arc<Outbox>>>,
    changed: Condvar,
}

impl Flusher {
    pub(super) fn defer(&self, outbox: Arc<Outbox>) {
        let mut pending = self.pending.lock();
        pending.push(outbox);
        if pending.len() == 1 {
            self.changed.notify_one();
        }
    }

    pub(super) fn run(&self, stopping: &AtomicBool) {
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

pub(super) struct OutboxState {
    frames: VecDeque<Arc<[u8]>>,
    bytes: usize,
    /// The client memory each queued frame holds (0 for a broadcast's).
    reserved: VecDeque<usize>,
    /// The client memory the queued frames hold: the sum of `reserved`.
    held: Reservation,
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
    /// An empty queue for the connection `id` with `peer` over `stream`.
    pub(super) fn new(
        id: u64,
        peer: String,
        stream: WriteHalf,
        bytes_max: usize,
        flusher: Arc<Flusher>,
        memory: Arc<ClientMemory>,
        memory_wait: Duration,
    ) -> Outbox {
        Outbox {
            id,
            peer,
            stream,
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                bytes: 0,
                reserved: VecDeque::new(),
                held: memory.reservation(),
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
            flusher,
            memory,
            memory_wait,
        }
    }
    /// Queues a frame the broadcaster sends: never waits, never writes; a full queue
    /// closes the connection (the client is too slow or stalled).
    pub(super) fn push_or_close(self: &Arc<Self>, frame: Arc<[u8]>, delivery: Delivery) -> bool {
        self.push(frame, delivery, false)
    }

    /// Queues a frame made for this connection alone (its catch-up, its
    /// `Welcome`) as [`Outbox::push_or_close`] does, its bytes reserved against the
    /// client memory.
    pub(super) fn push_own_or_close(
        self: &Arc<Self>,
        frame: Arc<[u8]>,
        delivery: Delivery,
    ) -> bool {
        self.push(frame, delivery, true)
    }

    fn push(self: &Arc<Self>, frame: Arc<[u8]>, delivery: Delivery, own: bool) -> bool {
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
        let reserved = if own { frame.len() } else { 0 };
        if !self.take_memory(&mut st, reserved) {
            drop(st);
            self.close(&memory::full_message(self.memory.bytes_max()));
            return false;
        }
        st.bytes += frame.len();
        st.reserved.push_back(reserved);
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

    /// Reserves client memory for a frame of `len` bytes about to be queued: always
    /// granted on an empty queue (the frame is written at once), else if there is
    /// room now.
    fn take_memory(&self, st: &mut OutboxState, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        if st.bytes == 0 {
            st.held.absorb(self.memory.force(len));
            return true;
        }
        st.held.try_grow(len)
    }

    /// Whether an idle delivery woke the writer less than `IDLE_WAKE_INTERVAL`
    /// ago; if not, notes that one does now.
    pub(super) fn woke_idle_lately(&self, st: &mut OutboxState) -> bool {
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
    pub(super) fn flush_deferred(&self) {
        let mut st = self.state.lock();
        if std::mem::take(&mut st.deferred) && !st.frames.is_empty() && !st.writing {
            self.wake_writer.notify_all();
        }
    }

    /// Queues a reply (waiting while the queue is full: the client's own requests)
    /// and, unless another thread is writing, writes the queue from this thread.
    pub(super) fn push_wait(&self, frame: Arc<[u8]>) {
        let mut st = self.state.lock();
        while !st.closed && st.bytes > 0 && st.bytes + frame.len() > self.bytes_max {
            self.space_freed.wait(&mut st);
        }
        if st.closed || st.draining {
            return;
        }
        if !self.take_memory(&mut st, frame.len()) {
            // Waits for room without the queue's lock (the writer frees it).
            drop(st);
            let deadline = Instant::now() + self.memory_wait;
            let mut room = self.memory.reservation();
            if !room.grow_until(frame.len(), deadline) {
                self.close(&memory::full_message(self.memory.bytes_max()));
                return;
            }
            st = self.state.lock();
            if st.closed || st.draining {
                return;
            }
            st.held.absorb(room);
        }
        st.bytes += frame.len();
        st.reserved.push_back(frame.len());
        st.frames.push_back(frame);
        if !st.writing {
            self.write_queued(st);
        }
    }

    /// Writes the queue until it is empty, as the connection's one writer for now;
    /// a failed or blocked write closes the connection.
    pub(super) fn write_queued<'a>(&'a self, mut st: parking_lot::MutexGuard<'a, OutboxState>) {
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
            let mut freed = 0;
            for _ in 0..batch.len() {
                st.frames.pop_front();
                freed += st.reserved.pop_front().unwrap_or(0);
            }
            st.bytes -= written;
            st.held.release(freed);
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

    pub(super) fn send(&self, message: &ServerMessage) {
        if matches!(message, ServerMessage::Reply { .. }) {
            let mut st = self.state.lock();
            st.awaiting_replies = st.awaiting_replies.saturating_sub(1);
        }
        self.push_wait(protocol::encode(message).into());
    }

    /// A request was read: its reply will follow.
    pub(super) fn request_read(&self) {
        self.state.lock().awaiting_replies += 1;
    }

    pub(super) fn close(&self, reason: &str) {
        let mut st = self.state.lock();
        if !st.closed {
            st.closed = true;
            if !reason.is_empty() {
                log::warn!("closing the connection of {}: {reason}", self.peer);
            }
            self.stream.shutdown();
            self.wake_writer.notify_all();
            self.space_freed.notify_all();
        }
    }

    /// Closes once the queued frames are written (bounded by the write timeout).
    pub(super) fn drain_and_close(&self, reason: &str) {
        if !reason.is_empty() {
            log::warn!("closing the connection of {}: {reason}", self.peer);
        }
        let mut st = self.state.lock();
        st.draining = true;
        self.wake_writer.notify_all();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Writes queued frames nobody else writes, until the connection closes.
    pub(super) fn write_loop(&self) {
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

#[cfg(test)]
mod tests;
