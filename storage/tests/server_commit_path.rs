//! The server's commit path: a vote waiting for the commit lock runs off the
//! connection's reader, so the same connection's other requests, and the finish that
//! releases the lock, go on meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::{
    ClientOptions, ClientStorage, Durability, FileOptions, FileStorage, Server, ServerOptions,
    Storage, Tid, TransactionMeta,
};

#[test]
fn a_vote_waiting_for_the_commit_lock_holds_up_nothing_else_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(
        FileStorage::open(
            dir.path().join("data.zdb"),
            FileOptions::new().durability(Durability::Off),
        )
        .unwrap(),
    );
    let server = Server::start(
        Arc::clone(&file) as Arc<dyn Storage>,
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let client = Arc::new(
        ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new()).unwrap(),
    );
    let a = client.new_oid().unwrap();
    let b = client.new_oid().unwrap();

    // Transaction one votes: it holds the storage's commit lock until it finishes.
    let mut first = client.begin(TransactionMeta::described("first")).unwrap();
    first.store(a, Tid::ZERO, b"a".to_vec()).unwrap();
    first.vote().unwrap();

    // Transaction two, on the same connection, commits: its vote waits for the lock.
    let second = {
        let client = Arc::clone(&client);
        std::thread::spawn(move || {
            let mut t = client.begin(TransactionMeta::described("second")).unwrap();
            t.store(b, Tid::ZERO, b"b".to_vec()).unwrap();
            t.finish()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !second.is_finished(),
        "the second commit waits for the lock"
    );

    // Meanwhile the connection answers other requests at once.
    let started = Instant::now();
    for _ in 0..50 {
        client.new_oid().unwrap();
        let _ = client.load(a, Tid::MAX);
        let _ = client.history(b, 1);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests were held up behind a waiting vote: {:?}",
        started.elapsed()
    );
    assert!(!second.is_finished());

    // The first finish, read while the second vote still waits, releases the lock.
    let first_tid = first.finish().unwrap();
    let second_tid = second.join().unwrap().unwrap();
    assert!(second_tid > first_tid);
    assert_eq!(client.load(a, Tid::MAX).unwrap().data, b"a");
    assert_eq!(client.load(b, Tid::MAX).unwrap().data, b"b");
    assert_eq!(client.last_tid(), second_tid);
    client.close().unwrap();
    server.shutdown();
}
