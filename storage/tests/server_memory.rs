//! The server's bound on memory held for clients (`ServerOptions::
//! client_memory_bytes_max`), at its boundary: what is held never passes it, a
//! client whose transaction finds no room gets an error saying what to do, and
//! the memory comes back when transactions end or connections close.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::protocol::{
    self, ClientMessage, MAGIC, PROTOCOL_VERSION, Request, ServerMessage, WireError,
};
use zodiac_storage::{
    ClientOptions, ClientStorage, Error, MemoryStorage, Server, ServerOptions, Storage, Tid,
    TransactionMeta,
};

const BOUND: usize = 8 << 20;

fn server() -> Server {
    Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new()
            .client_memory_bytes_max(BOUND)
            .client_memory_wait(Duration::from_millis(200)),
    )
    .unwrap()
}

fn client(server: &Server) -> ClientStorage {
    ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new()).unwrap()
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&protocol::encode(&ClientMessage::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        read_only: false,
        fresh: true,
        last_tid: 0,
    }))
    .unwrap();
    protocol::read_frame(&mut s, 1 << 20).unwrap();
    s.write_all(&protocol::encode(&ClientMessage::Auth { mac: None }))
        .unwrap();
    protocol::read_frame(&mut s, 1 << 20).unwrap();
    s
}

/// A transaction storing more than the bound fails at its finish with an error
/// that names the limit and what to do; its memory is given back, and a
/// transaction that fits commits.
#[test]
fn a_transaction_over_the_client_memory_fails_with_what_to_do() {
    let server = server();
    let c = client(&server);
    let oids: Vec<_> = (0..3).map(|_| c.new_oid().unwrap()).collect();
    let mut t = c.begin(TransactionMeta::default()).unwrap();
    for &oid in &oids {
        t.store(oid, Tid::ZERO, vec![1; 3 << 20]).unwrap();
    }
    let failed = t.finish().unwrap_err();
    let text = failed.to_string();
    assert!(matches!(failed, Error::Server { .. }), "{failed:?}");
    assert!(
        text.contains("memory for clients is full")
            && text.contains("8 MiB")
            && text.contains("--max-client-memory")
            && text.contains("retry later"),
        "{text}"
    );
    until("the failed transaction's memory is given back", || {
        server.client_memory_bytes() == 0
    });
    // Two of them fit (6 MiB and the frames' overhead).
    let mut t = c.begin(TransactionMeta::default()).unwrap();
    for &oid in &oids[..2] {
        t.store(oid, Tid::ZERO, vec![2; 3 << 20]).unwrap();
    }
    let tid = t.finish().unwrap();
    assert_eq!(c.load(oids[1], tid).unwrap().data, vec![2; 3 << 20]);
    until("a finished transaction's memory is given back", || {
        server.client_memory_bytes() == 0
    });
    c.close().unwrap();
    server.shutdown();
}

/// A frame announcing far more than the bound holds only the bytes that
/// arrived, never past the bound; the connection is refused (with the reason)
/// once no room comes, and everything it held is given back.
#[test]
fn a_partial_frame_holds_only_what_arrived_and_never_passes_the_bound() {
    let server = server();
    let mut s = raw_client(server.local_addr());
    s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    s.write_all(&vec![0u8; 2 << 20]).unwrap();
    until("2 MiB of the partial frame are held", || {
        server.client_memory_bytes() >= 2 << 20
    });
    assert!(server.client_memory_bytes() < 3 << 20);
    // More than the bound: the reader stops at it, then refuses the frame.
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..20 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        peak = peak.max(server.client_memory_bytes());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(peak <= BOUND, "{peak} bytes held, over {BOUND}");
    let reply = protocol::read_frame(&mut s, 1 << 20).unwrap();
    match protocol::decode(&reply).unwrap() {
        ServerMessage::Refused { reason } => {
            assert!(reason.contains("memory for clients is full"), "{reason}")
        }
        other => panic!("not refused: {other:?}"),
    }
    sender.join().unwrap();
    until("the refused connection's memory is given back", || {
        server.client_memory_bytes() == 0
    });
    server.shutdown();
}

/// A request frame that finds no room is skipped and answered with the error,
/// and the connection goes on: the next request is answered.
#[test]
fn a_request_without_room_is_answered_with_the_error_and_the_connection_goes_on() {
    let server = server();
    let c = client(&server);
    let oid = c.new_oid().unwrap();
    // Holds 6 MiB in an open transaction on another connection.
    let mut t = c.begin(TransactionMeta::default()).unwrap();
    t.store(oid, Tid::ZERO, vec![3; 6 << 20]).unwrap();
    until("the store is held", || {
        server.client_memory_bytes() >= 6 << 20
    });
    let mut s = raw_client(server.local_addr());
    let restore = ClientMessage::Request {
        id: 7,
        request: Request::Restore {
            tid: u64::MAX - 1,
            meta: (&TransactionMeta::default()).into(),
            records: vec![(1, vec![0; 4 << 20])],
        },
    };
    s.write_all(&protocol::encode(&restore)).unwrap();
    let ping = ClientMessage::Request {
        id: 8,
        request: Request::Ping,
    };
    s.write_all(&protocol::encode(&ping)).unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        let frame = protocol::read_frame(&mut s, 1 << 20).unwrap();
        if let ServerMessage::Reply { id, result } = protocol::decode(&frame).unwrap() {
            replies.push((id, result));
        }
    }
    match &replies[0] {
        (7, Err(WireError::Server { message })) => {
            assert!(message.contains("memory for clients is full"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(replies[1], (8, Ok(_))), "{replies:?}");
    drop(t);
    c.close().unwrap();
    server.shutdown();
}
