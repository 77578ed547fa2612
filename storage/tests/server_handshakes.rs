//! Connections in their handshake are bounded apart from authenticated ones
//! (`ServerOptions::handshakes_max`, `handshakes_per_address_max`,
//! `connections_max`): silent sockets never take a client's place.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::{
    ClientOptions, ClientStorage, Error, MemoryStorage, Server, ServerOptions, Storage, Tid,
    TransactionMeta,
};

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Far more silent sockets than the handshake limit: at most `handshakes_max` are
/// kept, and a client with the token connects and commits; over the
/// authenticated limit a client is refused naming it, whatever the silent ones.
#[test]
fn silent_sockets_are_bounded_apart_and_a_client_with_the_token_gets_in() {
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new()
            .token(Some(b"t".to_vec()))
            .handshakes_max(8)
            .connections_max(2),
    )
    .unwrap();
    let addr = server.local_addr();
    let silent: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    until("the silent sockets are accepted", || {
        server.handshake_count() == 8 && server.connection_count() <= 8 + 1
    });
    let options = ClientOptions::new()
        .token(Some(b"t".to_vec()))
        .wait_timeout(Duration::from_secs(5));
    let connect = || ClientStorage::connect(&addr.to_string(), options.clone());
    let a = connect().expect("a client with the token gets in");
    let oid = a.new_oid().unwrap();
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store(oid, Tid::ZERO, b"in".to_vec()).unwrap();
    t.finish().unwrap();
    let b = connect().unwrap();
    assert_eq!(server.authenticated_count(), 2);
    assert!(server.handshake_count() <= 8);
    match connect() {
        Err(Error::Refused { reason, .. }) => {
            assert!(reason.contains("too many connections"), "{reason}")
        }
        other => panic!("over the limit: {:?}", other.map(|_| ())),
    }
    b.close().unwrap();
    until("the closed client is counted out", || {
        server.authenticated_count() == 1
    });
    connect().expect("room again").close().unwrap();
    drop(silent);
    a.close().unwrap();
    server.shutdown();
}

/// Silent sockets are cut at the handshake timeout.
#[test]
fn a_silent_socket_is_cut_at_the_handshake_timeout() {
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new().handshake_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let started = Instant::now();
    let s = TcpStream::connect(server.local_addr()).unwrap();
    until("the silent socket is counted", || {
        server.handshake_count() == 1
    });
    until("the silent socket is cut", || {
        server.connection_count() == 0
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(s);
    server.shutdown();
}

/// A burst of clients connecting at once from one address (workers reconnecting
/// after a server restart, the 100-connection load bench) all get in with the
/// default handshake limits: one evicted in its handshake connects again.
#[test]
fn a_burst_of_clients_from_one_address_all_get_in() {
    const CLIENTS: usize = 100;
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new().token(Some(b"t".to_vec())),
    )
    .unwrap();
    let address = server.local_addr().to_string();
    let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (address, barrier) = (address.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                ClientStorage::connect(
                    &address,
                    ClientOptions::new()
                        .token(Some(b"t".to_vec()))
                        .wait_timeout(Duration::from_secs(20)),
                )
            })
        })
        .collect();
    let clients: Vec<ClientStorage> = clients
        .into_iter()
        .map(|c| {
            c.join()
                .unwrap()
                .expect("every client of the burst connects")
        })
        .collect();
    assert_eq!(server.authenticated_count(), CLIENTS);
    for c in clients {
        c.close().unwrap();
    }
    server.shutdown();
}
