//! A client storage that drops its cache on reconnect (too far behind the server's
//! history, or ahead of a server restored from an older copy) tells its own commit
//! subscribers that they missed commits, so caches above it (the objects layer's
//! connections) are cleared too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::{
    ClientOptions, ClientStorage, CommitSubscription, MemoryStorage, Oid, Server, ServerOptions,
    Storage, Tid, TransactionMeta,
};

fn commit(storage: &dyn Storage, oid: Oid, data: &[u8]) -> Tid {
    let base = storage.load(oid, Tid::MAX).map_or(Tid::ZERO, |r| r.tid);
    let mut txn = storage.begin(TransactionMeta::default()).unwrap();
    txn.store(oid, base, data.to_vec()).unwrap();
    txn.finish().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .reconnect_delay(Duration::from_millis(5), Duration::from_millis(50))
        .wait_timeout(Duration::from_secs(20))
}

/// Drains `subscription` on a thread; yields how many events it got and whether it
/// was told it missed some once it ended (or after 20 s without an event).
fn drain(subscription: CommitSubscription) -> std::thread::JoinHandle<(u64, bool)> {
    std::thread::spawn(move || {
        let mut events = 0;
        while subscription.recv_timeout(Duration::from_secs(20)).is_some() {
            events += 1;
        }
        (events, subscription.missed())
    })
}

#[test]
fn a_client_too_far_behind_tells_its_subscribers_they_missed_commits() {
    let storage = Arc::new(MemoryStorage::new());
    let options = ServerOptions::new().invalidation_history(2);
    let server = Server::start(
        Arc::clone(&storage) as Arc<dyn Storage>,
        "127.0.0.1:0",
        options.clone(),
    )
    .unwrap();
    let address = server.local_addr();
    let client = ClientStorage::connect(&address.to_string(), client_options()).unwrap();
    let oid = client.new_oid().unwrap();
    let first = commit(&client, oid, b"first");
    assert_eq!(client.load(oid, Tid::MAX).unwrap().tid, first);
    let drained = drain(client.subscribe());
    let kept = client.subscribe();

    server.shutdown();
    let mut last = first;
    for i in 0..5 {
        last = commit(storage.as_ref(), oid, format!("while away {i}").as_bytes());
    }
    let server = Server::start(Arc::clone(&storage) as Arc<dyn Storage>, address, options).unwrap();
    wait_for("the client to reconnect", || {
        client.is_connected() && client.last_tid() == last
    });

    let (events, missed) = drained.join().unwrap();
    assert!(missed, "the subscriber must learn it missed commits");
    assert_eq!(
        events, 0,
        "the client's own commit was published before subscribing"
    );
    assert!(
        kept.missed(),
        "every subscriber present at the reconnect is cut off"
    );
    assert_eq!(client.load(oid, Tid::MAX).unwrap().data, b"while away 4");

    // A new subscription works as before.
    let fresh = client.subscribe();
    let tid = commit(&client, oid, b"after");
    let event = fresh
        .recv_timeout(Duration::from_secs(10))
        .expect("an event");
    assert_eq!(event.tid, tid);
    assert!(!fresh.missed());
    client.close().unwrap();
    server.shutdown();
}

#[test]
fn a_client_ahead_of_a_restored_server_tells_its_subscribers_they_missed_commits() {
    // The "restored" copy: older than what the client will have seen.
    let restored = Arc::new(MemoryStorage::new());
    let oid = restored.new_oid().unwrap();
    let only = commit(restored.as_ref(), oid, b"restored");
    let original = Arc::new(MemoryStorage::new());
    let server = Server::start(
        Arc::clone(&original) as Arc<dyn Storage>,
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let address = server.local_addr();
    let client = ClientStorage::connect(&address.to_string(), client_options()).unwrap();
    assert_eq!(client.new_oid().unwrap(), oid);
    commit(&client, oid, b"one");
    let two = commit(&client, oid, b"two");
    assert!(two > only, "the client is ahead of the copy");
    assert_eq!(client.load(oid, Tid::MAX).unwrap().data, b"two");
    let drained = drain(client.subscribe());
    server.shutdown();

    let server = Server::start(
        Arc::clone(&restored) as Arc<dyn Storage>,
        address,
        ServerOptions::new(),
    )
    .unwrap();
    let (_, missed) = drained.join().unwrap();
    assert!(missed, "the subscriber must learn its view was dropped");
    wait_for("the client to follow the restored server", || {
        client.is_connected() && client.last_tid() == only
    });
    assert_eq!(client.load(oid, Tid::MAX).unwrap().data, b"restored");
    client.close().unwrap();
    server.shutdown();
}
