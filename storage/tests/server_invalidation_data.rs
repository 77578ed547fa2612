//! An invalidation carries the new records of small objects: a client that cached
//! one keeps it current, and reads the new revision without asking the server.

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
