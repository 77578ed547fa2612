use std::net::{TcpListener, TcpStream};

use super::*;
use crate::net::protocol::Response;

fn new_outbox(bytes_max: usize) -> (Arc<Outbox>, TcpStream) {
    new_outbox_in(bytes_max, ClientMemory::new(1 << 30))
}

fn new_outbox_in(bytes_max: usize, memory: Arc<ClientMemory>) -> (Arc<Outbox>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let outbox = Outbox::new(
        1,
        "test".into(),
        crate::net::transport::plain_halves(stream).unwrap().1,
        bytes_max,
        Arc::new(Flusher::default()),
        memory,
        std::time::Duration::from_millis(50),
    );
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

/// Frames queued for this connection alone count against the client memory
/// until written; broadcast frames, one buffer shared by every queue, do not.
#[test]
fn own_frames_count_against_the_client_memory_and_broadcasts_do_not() {
    let memory = ClientMemory::new(100);
    let (outbox, _peer) = new_outbox_in(1000, Arc::clone(&memory));
    // Nobody writes (no writer thread): the queue keeps what it takes.
    outbox.state.lock().writing = true;
    assert!(outbox.push_own_or_close(vec![0; 60].into(), Delivery::Now));
    assert_eq!(memory.used(), 60);
    assert!(outbox.push_or_close(vec![0; 500].into(), Delivery::Now));
    assert_eq!(memory.used(), 60, "a broadcast is not counted per queue");
    assert!(outbox.push_own_or_close(vec![0; 40].into(), Delivery::Now));
    assert_eq!(memory.used(), 100);
    assert!(!outbox.push_own_or_close(vec![0; 1].into(), Delivery::Now));
    assert!(outbox.is_closed(), "no room: the connection is closed");
    drop(outbox);
    assert_eq!(memory.used(), 0, "given back with the queue");
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
        st.reserved.clear();
        st.bytes = 0;
        st.idle_woken_at = Some(Instant::now() - IDLE_WAKE_INTERVAL);
    }
    assert!(outbox.push_or_close(vec![0; 8].into(), Delivery::Soon));
    assert!(
        !outbox.state.lock().deferred,
        "woken at once after the interval"
    );
}
