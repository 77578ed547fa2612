//! The bound on memory the server holds for its clients ([`ClientMemory`]): the
//! bytes of partial frames (reserved as they arrive, never for the length a frame
//! announces), of uncommitted transactions' stores (held until their finish or
//! abort) and of send queues. Every such byte is held by a [`Reservation`], which
//! gives it back when dropped.
//!
//! Invariants:
//! - `used` is the sum of the bytes of every live [`Reservation`].
//! - `used` passes `bytes_max` only by forced reservations: a frame queued on an
//!   empty send queue (written at once) and the small per-store overhead.
//! - A reservation gives its bytes back exactly once: when released or dropped.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Memory held for clients, shared by every connection of a server.
pub(crate) struct ClientMemory {
    bytes_max: usize,
    used: Mutex<usize>,
    /// Woken whenever bytes are given back.
    freed: Condvar,
}

impl ClientMemory {
    /// A bound of `bytes_max` bytes, none used.
    pub(crate) fn new(bytes_max: usize) -> Arc<ClientMemory> {
        Arc::new(ClientMemory {
            bytes_max,
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// The bound.
    pub(crate) fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        *self.used.lock()
    }

    /// An empty reservation that can grow against this bound.
    pub(crate) fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            memory: Some(Arc::clone(self)),
            bytes: 0,
        }
    }

    /// Takes `bytes` if they fit now.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut r = self.reservation();
        r.try_grow(bytes).then_some(r)
    }

    /// Takes `bytes` even past the bound (see the module's invariants for who may).
    pub(crate) fn force(self: &Arc<Self>, bytes: usize) -> Reservation {
        *self.used.lock() += bytes;
        Reservation {
            memory: Some(Arc::clone(self)),
            bytes,
        }
    }

    /// Takes `bytes` once they fit, waiting for them until `deadline` (the reader
    /// that waits reads no more: the client's sends back up, which is the
    /// backpressure). False if they did not fit in time.
    fn take_until(&self, bytes: usize, deadline: Option<Instant>) -> bool {
        let mut used = self.used.lock();
        loop {
            if used.saturating_add(bytes) <= self.bytes_max {
                *used += bytes;
                return true;
            }
            match deadline {
                Some(d) if Instant::now() < d => {
                    self.freed.wait_until(&mut used, d);
                }
                _ => return false,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut used = self.used.lock();
        assert!(*used >= bytes, "more client memory given back than taken");
        *used -= bytes;
        drop(used);
        self.freed.notify_all();
    }
}

/// Bytes held against a [`ClientMemory`]; given back when dropped. The default
/// holds nothing and belongs to no bound (it takes the bound of the first
/// reservation it absorbs).
#[derive(Default)]
pub(crate) struct Reservation {
    memory: Option<Arc<ClientMemory>>,
    bytes: usize,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation({} bytes)", self.bytes)
    }
}

impl Reservation {
    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows by `bytes` if they fit now.
    pub(crate) fn try_grow(&mut self, bytes: usize) -> bool {
        self.grow(bytes, None)
    }

    /// Grows by `bytes`, waiting for room until `deadline`.
    pub(crate) fn grow_until(&mut self, bytes: usize, deadline: Instant) -> bool {
        self.grow(bytes, Some(deadline))
    }

    fn grow(&mut self, bytes: usize, deadline: Option<Instant>) -> bool {
        let memory = self
            .memory
            .as_ref()
            .expect("growing a reservation that belongs to no bound");
        if !memory.take_until(bytes, deadline) {
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// Takes over what `other` holds.
    pub(crate) fn absorb(&mut self, mut other: Reservation) {
        if other.bytes == 0 {
            return;
        }
        match (&self.memory, &other.memory) {
            (None, _) => self.memory = other.memory.clone(),
            (Some(a), Some(b)) => {
                assert!(Arc::ptr_eq(a, b), "reservations of two bounds merged");
            }
            (Some(_), None) => unreachable!("bytes held without a bound"),
        }
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Gives back `bytes` of what is held.
    pub(crate) fn release(&mut self, bytes: usize) {
        assert!(
            bytes <= self.bytes,
            "releasing more than a reservation holds"
        );
        self.bytes -= bytes;
        if let Some(m) = &self.memory {
            m.give_back(bytes);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        if let Some(m) = &self.memory {
            m.give_back(bytes);
        }
    }
}

/// What a client is told when the bound is reached (a vote's error, a refused
/// request's, or the reason its connection is closed).
pub(crate) fn full_message(bytes_max: usize) -> String {
    format!(
        "the server's memory for clients is full (it holds at most {} for uncommitted \
         transactions, partial frames and send queues: `zodiac server --max-client-memory`); \
         retry later, commit in smaller transactions, or raise the limit",
        describe_bytes(bytes_max as u64)
    )
}

/// `bytes` for a person: "256 MiB", "1.5 GiB", "512 bytes".
pub(crate) fn describe_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, unit) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back_at_the_boundary() {
        let m = ClientMemory::new(100);
        let a = m.try_reserve(60).unwrap();
        assert!(m.try_reserve(41).is_none());
        let mut b = m.try_reserve(40).unwrap();
        assert_eq!(m.used(), 100);
        assert!(!b.try_grow(1));
        drop(a);
        assert_eq!(m.used(), 40);
        assert!(b.try_grow(60));
        b.release(50);
        assert_eq!((b.bytes(), m.used()), (50, 50));
        let mut c = Reservation::default();
        c.absorb(b);
        assert_eq!((c.bytes(), m.used()), (50, 50));
        drop(c);
        assert_eq!(m.used(), 0);
        // Forced past the bound, and given back the same.
        let f = m.force(150);
        assert_eq!(m.used(), 150);
        drop(f);
        assert_eq!(m.used(), 0);
    }

    #[test]
    fn a_waiting_reservation_gets_the_bytes_given_back_in_time() {
        let m = ClientMemory::new(10);
        let held = m.try_reserve(10).unwrap();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let mut r = m.reservation();
                r.grow_until(5, Instant::now() + Duration::from_secs(10))
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
        let _full = m.try_reserve(10).unwrap();
        let started = Instant::now();
        let mut r = m.reservation();
        assert!(!r.grow_until(1, started + Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn sizes_are_described_for_people() {
        assert_eq!(describe_bytes(256 << 20), "256 MiB");
        assert_eq!(describe_bytes(3 << 29), "1.5 GiB");
        assert_eq!(describe_bytes(512), "512 bytes");
    }
}
