//! An invalidation carries the new records of small objects: a client that cached
//! one keeps it current, and reads the new revision without asking the server.

mod common;

use std::sync::Arc;

use zodiac_storage::{
    ClientOptions, ClientStorage, MemoryStorage, Server, ServerOptions, Storage, Tid,
    TransactionMeta,
};

#[test]
fn a_cached_small_object_stays_current_without_a_load() {
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let connect = || {
        let options = ClientOptions::new().wait_timeout(std::time::Duration::from_millis(500));
        ClientStorage::connect(&server.local_addr().to_string(), options).unwrap()
    };
    let (a, b) = (connect(), connect());
    let (small, large) = (a.new_oid().unwrap(), a.new_oid().unwrap());
    let big = vec![7u8; 5000]; // over the 4 KiB an invalidation carries
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store(small, Tid::ZERO, b"small v1".to_vec()).unwrap();
    t.store(large, Tid::ZERO, big.clone()).unwrap();
    let v1 = t.finish().unwrap();
    // `a` caches its own writes; `b` changes both.
    b.sync().unwrap();
    let mut t = b.begin(TransactionMeta::default()).unwrap();
    t.store(small, v1, b"small v2".to_vec()).unwrap();
    t.store(large, v1, vec![8u8; 5000]).unwrap();
    let v2 = t.finish().unwrap();
    a.sync().unwrap();
    assert_eq!(a.last_tid(), v2);

    // With the server gone, only what `a` has cached can be read.
    server.shutdown();
    let rev = a.load(small, Tid::MAX).unwrap();
    assert_eq!((rev.tid, rev.data), (v2, b"small v2".to_vec()));
    assert!(
        a.load(large, Tid::MAX).is_err(),
        "a record over the limit is invalidated, not carried"
    );
}

/// A server sending invalidation data before a transaction's last chunk, or more
/// than the limit, breaks the protocol: the client drops the connection and
/// applies nothing of it.
#[test]
fn invalidation_data_out_of_place_or_over_the_limit_drops_the_connection() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;
    use zodiac_storage::protocol::{self, INVALIDATION_DATA_OBJECT_BYTES_MAX, ServerMessage};

    let bad_frames = [
        ServerMessage::Invalidation {
            tid: 5,
            oids: vec![1],
            complete: false,
            data: vec![(1, b"early".to_vec())],
        },
        ServerMessage::Invalidation {
            tid: 5,
            oids: vec![1],
            complete: true,
            data: vec![(1, vec![0; INVALIDATION_DATA_OBJECT_BYTES_MAX + 1])],
        },
    ];
    for bad in bad_frames {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            common::fake_server_handshake(&mut s, 1);
            s.write_all(&protocol::encode(&bad)).unwrap();
            // The client closes the connection (its pings aside, nothing else).
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        });
        let options =
            ClientOptions::new().reconnect_delay(Duration::from_secs(60), Duration::from_secs(60));
        let client = ClientStorage::connect(&address, options).unwrap();
        assert!(server.join().unwrap(), "the client kept the connection");
        assert_eq!(
            client.last_tid(),
            Tid(1),
            "nothing of the bad invalidation applied"
        );
    }
}
