//! `Storage::restore` through a server (the `Restore` request, protocol version 5):
//! a version 4 server is spoken to in its own version and restoring into it is
//! refused at once as too old, never sent; a read-only server refuses the request.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::fake_server_read;
use zodiac_storage::protocol::{
    self, CatchUp, ClientMessage, FRAME_BYTES_MAX, PROTOCOL_VERSION, Request, ServerMessage,
    WireError, WireMeta,
};
use zodiac_storage::{
    ClientOptions, ClientStorage, Error, MemoryStorage, Oid, Server, ServerOptions, Storage, Tid,
    TransactionMeta,
};

fn send(s: &mut TcpStream, message: &ServerMessage) {
    s.write_all(&protocol::encode(message)).unwrap();
}

/// Plays a version 4 server: refuses a newer client's `Hello` with the words every
/// server has used, then serves a `Hello` of version 4; returns that connection.
fn old_server(listener: &TcpListener) -> TcpStream {
    let (mut first, _) = listener.accept().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ClientMessage::Hello { version, .. } = fake_server_read(&mut first) else {
        panic!("the first message is not Hello");
    };
    assert_eq!(version, PROTOCOL_VERSION);
    let reason = format!(
        "protocol version {version} is not supported (this server speaks version 4); \
         upgrade the older side"
    );
    send(&mut first, &ServerMessage::Refused { reason });
    drop(first);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ClientMessage::Hello { version, .. } = fake_server_read(&mut s) else {
        panic!("the first message is not Hello");
    };
    assert_eq!(version, 4, "the client did not speak the server's version");
    let nonce = [0; protocol::NONCE_BYTES];
    send(
        &mut s,
        &ServerMessage::Challenge {
            nonce,
            auth_required: false,
        },
    );
    assert!(matches!(
        fake_server_read(&mut s),
        ClientMessage::Auth { .. }
    ));
    send(
        &mut s,
        &ServerMessage::Welcome {
            last_tid: 0,
            read_only: false,
            catch_up: CatchUp::Fresh,
            identity: 0,
        },
    );
    s
}

#[test]
fn restoring_into_a_version_4_server_is_refused_as_too_old_without_sending_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let mut s = old_server(&listener);
        // Nothing more may come: a Restore would be a message this server cannot
        // decode (it would close the connection, and the client would retry).
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let more = protocol::read_frame(&mut s, FRAME_BYTES_MAX);
        assert!(
            more.is_err(),
            "the client sent {more:?} to a version 4 server"
        );
    });
    let client = ClientStorage::connect(&address, ClientOptions::new()).unwrap();
    let err = client
        .restore(
            Tid(5),
            &TransactionMeta::default(),
            &[(Oid(1), b"x".to_vec())],
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("too old to take copied transactions") && text.contains("version 4"),
        "{text}"
    );
    server.join().unwrap();
    client.close().unwrap();
}

#[test]
fn a_read_only_server_refuses_a_restore_request() {
    let storage = Arc::new(MemoryStorage::new());
    let server = Server::start(
        Arc::clone(&storage) as Arc<dyn Storage>,
        "127.0.0.1:0",
        ServerOptions::new().read_only(true),
    )
    .unwrap();
    // By hand: a client storage refuses before asking a server it knows is read-only.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let send_client = |s: &mut TcpStream, m: &ClientMessage| {
        s.write_all(&protocol::encode(m)).unwrap();
    };
    let read = |s: &mut TcpStream| -> ServerMessage {
        protocol::decode(&protocol::read_frame(s, FRAME_BYTES_MAX).unwrap()).unwrap()
    };
    send_client(
        &mut s,
        &ClientMessage::Hello {
            magic: protocol::MAGIC,
            version: PROTOCOL_VERSION,
            read_only: false,
            fresh: true,
            last_tid: 0,
        },
    );
    assert!(matches!(read(&mut s), ServerMessage::Challenge { .. }));
    send_client(&mut s, &ClientMessage::Auth { mac: None });
    assert!(matches!(read(&mut s), ServerMessage::Welcome { .. }));
    let request = Request::Restore {
        tid: 9,
        meta: WireMeta::default(),
        records: vec![(1, b"x".to_vec())],
    };
    send_client(&mut s, &ClientMessage::Request { id: 7, request });
    match read(&mut s) {
        ServerMessage::Reply { id: 7, result } => assert_eq!(result, Err(WireError::ReadOnly)),
        other => panic!("expected the reply, got {other:?}"),
    }
    assert_eq!(storage.last_tid(), Tid::ZERO);
    assert!(matches!(
        storage.load(Oid(1), Tid::MAX),
        Err(Error::NoSuchObject { .. })
    ));
    server.shutdown();
}
