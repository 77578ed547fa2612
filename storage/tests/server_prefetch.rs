//! `Storage::prefetch` on a client storage: loads sent ahead of need fill the cache,
//! a load waits for its prefetch instead of asking again, and a prefetch never
//! serves a revision a commit made stale, nor hides an error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use zodiac_storage::{
    ClientOptions, ClientStorage, CommitSubscription, Error, MemoryStorage, Oid, Result,
    RevisionInfo, Server, ServerOptions, Storage, StorageTransaction, Tid, TransactionIter,
    TransactionMeta,
};
use zodiac_storage::{PackReport, References};

/// A memory storage that counts the loads the server makes of it.
struct CountingStorage {
    inner: MemoryStorage,
    loads: AtomicUsize,
}

impl Storage for CountingStorage {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn last_tid(&self) -> Tid {
        self.inner.last_tid()
    }
    fn new_oid(&self) -> Result<Oid> {
        self.inner.new_oid()
    }
    fn load(&self, oid: Oid, snapshot: Tid) -> Result<zodiac_storage::Revision> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(oid, snapshot)
    }
    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.inner.load_revision(oid, tid)
    }
    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.inner.history(oid, limit)
    }
    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.inner.transactions(from, to)
    }
    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        self.inner.begin(meta)
    }
    fn subscribe(&self) -> CommitSubscription {
        self.inner.subscribe()
    }
    fn close(&self) -> Result<()> {
        self.inner.close()
    }
    fn pack(&self, pack_time: Tid, references: Option<References<'_>>) -> Result<PackReport> {
        self.inner.pack(pack_time, references)
    }
}

struct Setup {
    server: Server,
    storage: Arc<CountingStorage>,
}

impl Setup {
    fn new() -> Setup {
        let storage = Arc::new(CountingStorage {
            inner: MemoryStorage::new(),
            loads: AtomicUsize::new(0),
        });
        let server = Server::start(storage.clone(), "127.0.0.1:0", ServerOptions::new()).unwrap();
        Setup { server, storage }
    }

    fn connect(&self) -> ClientStorage {
        let options = ClientOptions::new().wait_timeout(Duration::from_millis(500));
        ClientStorage::connect(&self.server.local_addr().to_string(), options).unwrap()
    }

    fn loads(&self) -> usize {
        self.storage.loads.load(Ordering::SeqCst)
    }
}

/// Commits `data` as the new revision of `oid` (read at `base`) through `client`.
fn commit(client: &ClientStorage, oid: Oid, base: Tid, data: &[u8]) -> Tid {
    let mut t = client.begin(TransactionMeta::default()).unwrap();
    t.store(oid, base, data.to_vec()).unwrap();
    t.finish().unwrap()
}

#[test]
fn a_prefetched_object_is_read_from_the_cache() {
    let setup = Setup::new();
    let (a, b) = (setup.connect(), setup.connect());
    let oid = b.new_oid().unwrap();
    let tid = commit(&b, oid, Tid::ZERO, b"written by b");
    a.sync().unwrap();
    a.prefetch(&[oid], a.last_tid());
    // The prefetch travels with the next request, and its reply comes first.
    a.sync().unwrap();
    // With the server gone, only what `a` has cached can be read.
    setup.server.shutdown();
    let rev = a.load(oid, Tid::MAX).unwrap();
    assert_eq!((rev.tid, rev.data), (tid, b"written by b".to_vec()));
}

#[test]
fn a_load_waits_for_its_prefetch_instead_of_asking_again() {
    let setup = Setup::new();
    let (a, b) = (setup.connect(), setup.connect());
    let oids: Vec<Oid> = (0..3).map(|_| b.new_oid().unwrap()).collect();
    let mut t = b.begin(TransactionMeta::default()).unwrap();
    for (i, oid) in oids.iter().enumerate() {
        t.store(*oid, Tid::ZERO, vec![i as u8; 10]).unwrap();
    }
    t.finish().unwrap();
    a.sync().unwrap();
    let before = setup.loads();
    a.prefetch(&oids, a.last_tid());
    // Still buffered: the load sends it and waits for its reply.
    for (i, oid) in oids.iter().enumerate() {
        assert_eq!(a.load(*oid, Tid::MAX).unwrap().data, vec![i as u8; 10]);
    }
    assert_eq!(
        setup.loads() - before,
        3,
        "one load per object, the prefetches"
    );
    // Prefetching what is cached sends nothing.
    a.prefetch(&oids, a.last_tid());
    a.sync().unwrap();
    assert_eq!(setup.loads() - before, 3);
}

#[test]
fn a_prefetch_overtaken_by_a_commit_is_not_served() {
    let setup = Setup::new();
    let (a, b) = (setup.connect(), setup.connect());
    let oid = b.new_oid().unwrap();
    let v1 = commit(&b, oid, Tid::ZERO, b"v1");
    a.sync().unwrap();
    // Asked at the snapshot of v1, answered after v2 committed (the prefetch
    // stays buffered until `a` flushes it).
    a.prefetch(&[oid], a.last_tid());
    let v2 = commit(&b, oid, v1, b"v2");
    a.sync().unwrap();
    assert_eq!(a.last_tid(), v2);
    let rev = a.load(oid, Tid::MAX).unwrap();
    assert_eq!((rev.tid, rev.data), (v2, b"v2".to_vec()));
    // At the old snapshot the old revision is still what a load returns.
    assert_eq!(a.load(oid, v1).unwrap().data, b"v1".to_vec());
}

#[test]
fn a_prefetch_of_a_missing_object_leaves_the_error_to_the_load() {
    let setup = Setup::new();
    let a = setup.connect();
    let missing = Oid(1 << 40);
    a.prefetch(&[missing], a.last_tid());
    let err = a.load(missing, Tid::MAX).unwrap_err();
    assert!(
        matches!(err, Error::NoSuchObject { oid } if oid == missing),
        "{err:?}"
    );
    // The connection is fine.
    let oid = a.new_oid().unwrap();
    commit(&a, oid, Tid::ZERO, b"fine");
    assert_eq!(a.load(oid, Tid::MAX).unwrap().data, b"fine".to_vec());
}

#[test]
fn a_prefetch_without_a_server_returns_at_once() {
    let setup = Setup::new();
    let a = setup.connect();
    let oid = a.new_oid().unwrap();
    commit(&a, oid, Tid::ZERO, b"x");
    let unknown = Oid(oid.0 + 1000);
    setup.server.shutdown();
    let started = std::time::Instant::now();
    a.prefetch(&[unknown], Tid::MAX);
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(matches!(
        a.load(unknown, Tid::MAX),
        Err(Error::Disconnected { .. })
    ));
}

#[test]
fn at_most_the_limit_of_prefetches_is_in_flight() {
    use zodiac_storage::PREFETCHES_IN_FLIGHT_MAX;

    let setup = Setup::new();
    let (a, b) = (setup.connect(), setup.connect());
    let n = PREFETCHES_IN_FLIGHT_MAX + 10;
    let oids: Vec<Oid> = (0..n).map(|_| b.new_oid().unwrap()).collect();
    let mut t = b.begin(TransactionMeta::default()).unwrap();
    for oid in &oids {
        t.store(*oid, Tid::ZERO, b"x".to_vec()).unwrap();
    }
    t.finish().unwrap();
    a.sync().unwrap();
    let before = setup.loads();
    a.prefetch(&oids, a.last_tid());
    a.sync().unwrap();
    assert_eq!(setup.loads() - before, PREFETCHES_IN_FLIGHT_MAX);
    // The ones left out are loaded when needed, once each.
    for oid in &oids {
        assert_eq!(a.load(*oid, Tid::MAX).unwrap().data, b"x".to_vec());
    }
    assert_eq!(setup.loads() - before, n);
}

/// A server that reads a prefetch and closes the connection without answering:
/// the load waiting for that prefetch fails with `Disconnected`, it does not hang.
#[test]
fn a_load_waiting_for_a_prefetch_fails_when_the_connection_is_lost() {
    use std::net::TcpListener;
    use zodiac_storage::protocol::{ClientMessage, Request};

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        common::fake_server_handshake(&mut s, 1);
        // The prefetch arrives once the load sends it; no answer, then gone.
        loop {
            if let ClientMessage::Request {
                request: Request::Load { oid: 7, .. },
                ..
            } = common::fake_server_read(&mut s)
            {
                break;
            }
        }
    });
    // No ping within the test: only the load can send the buffered prefetch.
    let options = ClientOptions::new()
        .ping(Duration::from_secs(60), Duration::from_secs(120))
        .wait_timeout(Duration::from_millis(200))
        .reconnect_delay(Duration::from_secs(60), Duration::from_secs(60));
    let client = ClientStorage::connect(&address, options).unwrap();
    client.prefetch(&[Oid(7)], Tid(1));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(client.load(Oid(7), Tid(1))));
    server.join().unwrap();
    let result = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("the load still waits for the lost prefetch");
    assert!(
        matches!(result, Err(Error::Disconnected { .. })),
        "{result:?}"
    );
}
