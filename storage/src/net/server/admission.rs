//! Admitting connections: those still in their handshake (not yet authenticated)
//! are bounded apart from authenticated ones, so sockets that never authenticate
//! can never take the places of clients that do.
//!
//! Invariants:
//! - At most `handshakes_max` connections are in their handshake at once, and at
//!   most `handshakes_per_address_max` from one IP address: a new one over either
//!   limit closes the one (of that address, for the second) that has waited
//!   longest. A handshake takes milliseconds and is cut at the handshake timeout,
//!   so a client that really talks gets through a flood of silent sockets.
//! - Only authenticated connections count against `connections_max`; a
//!   connection over it is refused after its handshake, with the reason.
//! - A connection is in `waiting` from its accept until its handshake ends, and
//!   in `authenticated` from then until it ends, never both.

use std::collections::BTreeMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// The connections of a server, by stage.
#[derive(Default)]
pub(super) struct Admission {
    /// Connections in their handshake, by id (ids grow: the first is the oldest).
    waiting: Mutex<BTreeMap<u64, Waiting>>,
    authenticated: AtomicUsize,
}

/// A connection in its handshake.
struct Waiting {
    ip: IpAddr,
    peer: String,
    /// A handle on its socket, to close it when it is evicted.
    stream: TcpStream,
}

/// A connection closed to make room for a new one in its handshake.
pub(super) struct Evicted {
    /// Its address.
    pub(super) peer: String,
    /// The limit it was closed for, for the log.
    pub(super) why: String,
}

impl Admission {
    /// Admits connection `id` from `ip` to its handshake; `stream` is a handle on
    /// its socket. Over a limit, the connection that waited longest (from the same
    /// address, when that address is over its own) is closed and returned.
    pub(super) fn begin_handshake(
        &self,
        id: u64,
        ip: IpAddr,
        peer: String,
        stream: TcpStream,
        handshakes_max: usize,
        per_address_max: usize,
    ) -> Option<Evicted> {
        let mut waiting = self.waiting.lock();
        debug_assert!(waiting.keys().all(|&k| k < id), "connection ids grow");
        let same_address = waiting.values().filter(|w| w.ip == ip).count();
        let evict = if same_address >= per_address_max {
            waiting
                .iter()
                .find(|(_, w)| w.ip == ip)
                .map(|(&k, _)| (k, format!("{per_address_max} connections from {ip}")))
        } else if waiting.len() >= handshakes_max {
            waiting
                .keys()
                .next()
                .map(|&k| (k, format!("{handshakes_max} connections")))
        } else {
            None
        };
        let evicted = evict.and_then(|(k, limit)| {
            let w = waiting.remove(&k)?;
            // Its handshake's read ends at once; its thread closes it.
            let _ = w.stream.shutdown(Shutdown::Both);
            Some(Evicted {
                peer: w.peer,
                why: format!("{limit} were in their handshake (the limit), it waited longest"),
            })
        });
        waiting.insert(id, Waiting { ip, peer, stream });
        assert!(waiting.len() <= handshakes_max.max(1));
        evicted
    }

    /// Connection `id`'s handshake ended (or it was closed in it).
    pub(super) fn end_handshake(&self, id: u64) {
        self.waiting.lock().remove(&id);
    }

    /// Counts an authenticated connection, unless `connections_max` are already.
    pub(super) fn authenticate(&self, connections_max: usize) -> bool {
        self.authenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < connections_max).then_some(n + 1)
            })
            .is_ok()
    }

    /// An authenticated connection ended.
    pub(super) fn leave(&self) {
        let before = self.authenticated.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "more authenticated connections left than came");
    }

    /// Connections in their handshake now.
    pub(super) fn handshakes(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Authenticated connections now.
    pub(super) fn authenticated(&self) -> usize {
        self.authenticated.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn socket(listener: &TcpListener) -> TcpStream {
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.accept().unwrap().0
    }

    #[test]
    fn handshakes_are_bounded_and_the_longest_waiting_is_evicted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let admission = Admission::default();
        let begin = |id: u64, ip: IpAddr| {
            admission
                .begin_handshake(id, ip, format!("peer {id}"), socket(&listener), 3, 2)
                .map(|e| e.peer)
        };
        assert_eq!(begin(1, a), None);
        assert_eq!(begin(2, a), None);
        // Over the per-address limit: a's oldest goes.
        assert_eq!(begin(3, a).as_deref(), Some("peer 1"));
        assert_eq!(begin(4, b), None);
        // Over the whole limit: the oldest of all goes.
        assert_eq!(begin(5, b).as_deref(), Some("peer 2"));
        assert_eq!(admission.handshakes(), 3);
        admission.end_handshake(3);
        assert_eq!(admission.handshakes(), 2);
        assert!(admission.authenticate(2));
        assert!(admission.authenticate(2));
        assert!(!admission.authenticate(2));
        admission.leave();
        assert_eq!(admission.authenticated(), 1);
        assert!(admission.authenticate(2));
    }
}
