use std::time::{Duration, Instant};

use super::*;
use crate::memory::MemoryStorage;
use crate::meta::TransactionMeta;
use crate::net::{ClientOptions, ClientStorage, Server, ServerOptions};
use crate::notify::SUBSCRIPTION_EVENTS_MAX;

fn commit(storage: &dyn Storage, oid: Oid, data: &[u8]) -> Tid {
    let base = storage.load(oid, Tid::MAX).map_or(Tid::ZERO, |r| r.tid);
    let mut txn = storage.begin(TransactionMeta::default()).unwrap();
    txn.store(oid, base, data.to_vec()).unwrap();
    txn.finish().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The broadcaster (or whoever pumps) fell so far behind the storage that its
/// subscription was cut off: the server must drop every client, which reconnect
/// too far behind, drop their caches and tell their own subscribers; and it must
/// go on broadcasting from a new subscription.
#[test]
fn missed_commit_notifications_restart_the_history_and_drop_every_client() {
    let storage = Arc::new(MemoryStorage::new());
    let server = Server::start(
        Arc::clone(&storage) as Arc<dyn Storage>,
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let address = server.local_addr().to_string();
    let options = ClientOptions::new()
        .reconnect_delay(Duration::from_millis(5), Duration::from_millis(50))
        .wait_timeout(Duration::from_secs(30));
    let writer = ClientStorage::connect(&address, options.clone()).unwrap();
    let witness = ClientStorage::connect(&address, options).unwrap();
    let oid = writer.new_oid().unwrap();
    let before = commit(&writer, oid, b"before");
    wait_for("the first invalidation", || witness.last_tid() >= before);
    assert_eq!(witness.load(oid, Tid::MAX).unwrap().data, b"before");
    assert_eq!(witness.cache_usage().0, 1);
    let subscription = witness.subscribe();
    let drained = std::thread::spawn(move || {
        let mut events = 0u64;
        while subscription.recv_timeout(Duration::from_secs(30)).is_some() {
            events += 1;
        }
        (events, subscription.missed())
    });

    // Stall broadcasting, as a server far behind its storage would be, while the
    // storage commits past what one subscription may leave unread.
    let flood = SUBSCRIPTION_EVENTS_MAX as u64 + 50;
    let last = {
        let _stalled = server.shared.events.lock();
        let mut last = Tid::ZERO;
        for i in 0..flood {
            last = commit(storage.as_ref(), oid, format!("flood {i}").as_bytes());
        }
        last
    };
    assert!(!server.shared.events.lock().missed(), "restarted");

    wait_for("the witness to follow the server", || {
        witness.last_tid() == last && witness.is_connected()
    });
    assert_eq!(
        witness.load(oid, Tid::MAX).unwrap().data,
        format!("flood {}", flood - 1).as_bytes(),
        "the cache was dropped: no stale revision"
    );
    let (events, missed) = drained.join().unwrap();
    assert!(
        missed,
        "the witness's subscriber was told it missed commits"
    );
    assert!(events < flood, "{events} events");

    // Broadcasting goes on after the restart, to every client.
    wait_for("the writer to reconnect", || writer.is_connected());
    let after = commit(&writer, oid, b"after");
    wait_for("the invalidation after the restart", || {
        witness.last_tid() >= after
    });
    assert_eq!(witness.load(oid, Tid::MAX).unwrap().data, b"after");
    // Commits made beside the server reach the clients too (the broadcaster's
    // new subscription).
    let beside = commit(storage.as_ref(), oid, b"beside");
    wait_for("the invalidation of a commit beside the server", || {
        witness.last_tid() >= beside
    });
    assert_eq!(witness.load(oid, Tid::MAX).unwrap().data, b"beside");
    writer.close().unwrap();
    witness.close().unwrap();
    server.shutdown();
}

#[test]
fn invalidations_are_split_into_chunks_of_the_limit() {
    let oids: Vec<Oid> = (0..INVALIDATION_CHUNK_OIDS_MAX as u64 * 2 + 1)
        .map(Oid)
        .collect();
    let frames = invalidation_frames(Tid(9), &oids, vec![(5, b"five".to_vec())]);
    assert_eq!(frames.len(), 3);
    let mut all = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let message: ServerMessage = protocol::decode(&frame[4..]).unwrap();
        let ServerMessage::Invalidation {
            tid,
            oids,
            complete,
            data,
        } = message
        else {
            panic!("not an invalidation");
        };
        assert_eq!(tid, 9);
        assert_eq!(complete, i == 2);
        // The data rides on the last chunk.
        let expected = if complete {
            vec![(5, b"five".to_vec())]
        } else {
            Vec::new()
        };
        assert_eq!(data, expected);
        all.extend(oids);
    }
    assert_eq!(
        all,
        (0..INVALIDATION_CHUNK_OIDS_MAX as u64 * 2 + 1).collect::<Vec<_>>()
    );
    assert_eq!(invalidation_frames(Tid(9), &[], Vec::new()).len(), 1);
    assert_eq!(
        invalidation_frames(Tid(9), &oids[..INVALIDATION_CHUNK_OIDS_MAX], Vec::new()).len(),
        1
    );
}
