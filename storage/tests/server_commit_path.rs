//! The server's commit path: a vote waiting for the commit lock runs off the
//! connection's reader, so the same connection's other requests, and the finish that
//! releases the lock, go on meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::{
    ClientOptions, ClientStorage, Durability, FileOptions, FileStorage, Server, ServerOptions,
    Storage, Tid, TransactionMeta,
};

/// A server of a new file storage (no fdatasync: these tests are about the path,
/// not durability) in `dir`.
fn serve_new_file(dir: &std::path::Path) -> Server {
    let file = FileStorage::open(
        dir.join("data.zdb"),
        FileOptions::new().durability(Durability::Off),
    )
    .unwrap();
    Server::start(Arc::new(file), "127.0.0.1:0", ServerOptions::new()).unwrap()
}

#[test]
fn a_vote_waiting_for_the_commit_lock_holds_up_nothing_else_on_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_new_file(dir.path());
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

/// `sync` makes every commit the server acknowledged before it visible: another
/// client's commit is otherwise applied when its invalidation arrives (within
/// about a millisecond), so reading right after it would often miss it.
#[test]
fn sync_makes_another_clients_acknowledged_commit_visible() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_new_file(dir.path());
    let addr = server.local_addr().to_string();
    let writer = ClientStorage::connect(&addr, ClientOptions::new()).unwrap();
    let reader = ClientStorage::connect(&addr, ClientOptions::new()).unwrap();
    let oid = writer.new_oid().unwrap();
    let mut base = Tid::ZERO;
    for i in 0..200u32 {
        let mut t = writer.begin(TransactionMeta::described("write")).unwrap();
        t.store(oid, base, i.to_le_bytes().to_vec()).unwrap();
        base = t.finish().unwrap();
        reader.sync().unwrap();
        assert!(
            reader.last_tid() >= base,
            "commit {i} not visible after sync"
        );
        assert_eq!(
            reader.load(oid, reader.last_tid()).unwrap().data,
            i.to_le_bytes()
        );
    }
    writer.close().unwrap();
    reader.close().unwrap();
    server.shutdown();
}
