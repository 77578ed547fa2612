//! Many client storages against one in-process server over 127.0.0.1: concurrency,
//! the cache ordering contract under racing commits, catch-up after a disconnect at
//! the boundary of the invalidation history, a server restored from an older copy,
//! and the connection limit.
//!
//! `ZODIAC_NET_SEED=S` repeats the racing test's choices (the seed is printed).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zodiac_storage::{
    ClientOptions, ClientStorage, Durability, Error, FileOptions, FileStorage, Oid, Server,
    ServerOptions, Storage, Tid, TransactionMeta,
};
use zodiac_tests::SplitMix64;

fn open(path: &std::path::Path) -> Arc<FileStorage> {
    Arc::new(
        FileStorage::open(path, FileOptions::new().durability(Durability::Off))
            .expect("open data file"),
    )
}

fn serve(storage: &Arc<FileStorage>, addr: &str, options: ServerOptions) -> Server {
    Server::start(Arc::clone(storage) as Arc<dyn Storage>, addr, options).expect("start server")
}

fn connect(addr: impl ToString, options: ClientOptions) -> ClientStorage {
    ClientStorage::connect(&addr.to_string(), options).expect("connect")
}

fn commit(s: &dyn Storage, writes: &[(Oid, Tid, &[u8])]) -> Tid {
    let mut txn = s.begin(TransactionMeta::described("test")).expect("begin");
    for &(oid, base, data) in writes {
        txn.store(oid, base, data.to_vec()).expect("store");
    }
    txn.finish().expect("finish")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn forty_clients_commit_concurrently_and_all_see_every_commit_in_order() {
    const CLIENTS: usize = 40;
    const COMMITS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let clients: Vec<Arc<ClientStorage>> = (0..CLIENTS)
        .map(|_| Arc::new(connect(server.local_addr(), ClientOptions::new())))
        .collect();
    let subscriptions: Vec<_> = clients.iter().map(|c| c.subscribe()).collect();
    let oids: Vec<Oid> = clients.iter().map(|c| c.new_oid().unwrap()).collect();
    let handles: Vec<_> = clients
        .iter()
        .zip(&oids)
        .map(|(c, &oid)| {
            let c = Arc::clone(c);
            std::thread::spawn(move || {
                let mut base = Tid::ZERO;
                for i in 0..COMMITS {
                    base = commit(&*c, &[(oid, base, &i.to_le_bytes())]);
                    assert!(c.last_tid() >= base, "finish returned before last_tid");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("committer");
    }
    assert_eq!(server.connection_count(), CLIENTS);
    let all: Vec<Tid> = file
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    assert_eq!(all.len(), CLIENTS * COMMITS);
    for (c, sub) in clients.iter().zip(&subscriptions) {
        wait_until("every client at the last tid", || {
            c.last_tid() == file.last_tid()
        });
        let seen: Vec<Tid> = std::iter::from_fn(|| sub.try_recv())
            .map(|e| e.tid)
            .collect();
        assert_eq!(seen, all, "a client missed or reordered commits");
        for &oid in &oids {
            assert_eq!(
                c.load(oid, Tid::MAX).unwrap(),
                file.load(oid, Tid::MAX).unwrap()
            );
        }
    }
}

/// The ordering contract under racing commits: a reader that saw `last_tid() == L`
/// and loads at `L` gets exactly the revision the served storage has at `L`, whether
/// the answer came from its cache or from the server. Caches both large and tiny (so
/// entries are evicted and reloaded while invalidations race with the loads).
#[test]
fn racing_loads_and_invalidations_never_leave_a_stale_cache_entry() {
    const OIDS: usize = 6;
    const WRITERS: usize = 2;
    const READERS: usize = 4;
    let seed = std::env::var("ZODIAC_NET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Tid::now().0);
    println!("racing cache test: seed {seed} (repeat with ZODIAC_NET_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let addr = server.local_addr();
    let setup = connect(addr, ClientOptions::new());
    let oids: Vec<Oid> = (0..OIDS).map(|_| setup.new_oid().unwrap()).collect();
    let writes: Vec<(Oid, Tid, &[u8])> = oids.iter().map(|&o| (o, Tid::ZERO, &b"0"[..])).collect();
    commit(&setup, &writes);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let (stop, oids) = (Arc::clone(&stop), oids.clone());
        handles.push(std::thread::spawn(move || {
            let c = connect(addr, ClientOptions::new());
            let mut rng = SplitMix64::new(seed ^ (w as u64 + 1));
            let mut commits = 0u64;
            while !stop.load(Ordering::Acquire) {
                let n = rng.in_range(1, 3) as usize;
                let picked: Vec<Oid> = (0..n)
                    .map(|_| oids[rng.in_range(0, OIDS as u64 - 1) as usize])
                    .collect();
                let result = (|| {
                    let mut txn = c.begin(TransactionMeta::described("racer"))?;
                    for &oid in &picked {
                        let base = c.load(oid, c.last_tid())?.tid;
                        txn.store(oid, base, format!("w{w} c{commits}").into_bytes())?;
                    }
                    txn.finish()
                })();
                match result {
                    Ok(_) => commits += 1,
                    Err(Error::Conflict(_)) => {}
                    Err(e) => panic!("writer: {e}"),
                }
            }
            commits
        }));
    }
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (stop, oids, file) = (Arc::clone(&stop), oids.clone(), Arc::clone(&file));
        readers.push(std::thread::spawn(move || {
            let cache = if r % 2 == 0 { 64 << 20 } else { 400 };
            let c = connect(addr, ClientOptions::new().cache_bytes_max(cache));
            let mut rng = SplitMix64::new(seed ^ ((r as u64 + 1) << 32));
            let mut checks = 0u64;
            while !stop.load(Ordering::Acquire) {
                let last = c.last_tid();
                let oid = oids[rng.in_range(0, OIDS as u64 - 1) as usize];
                let got = c.load(oid, last).unwrap();
                let truth = file.load(oid, last).unwrap();
                assert_eq!(
                    got, truth,
                    "reader {r}: stale load of {oid} at {last} (seed {seed})"
                );
                checks += 1;
            }
            checks
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Release);
    let commits: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let checks: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    println!("racing cache test: {commits} commits, {checks} checked loads");
    assert!(
        commits > 50 && checks > 500,
        "too little racing: {commits} commits, {checks} loads"
    );
}

/// A TCP relay that can cut every connection through it, to disconnect one client,
/// or freeze them (hold every byte, close nothing), as a network partition would.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (cut2, streams2) = (Arc::clone(&cut), Arc::clone(&streams));
        let frozen2 = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::Acquire) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pump = |mut from: TcpStream, mut to: TcpStream| {
                    let frozen = Arc::clone(&frozen2);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            while frozen.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                };
                streams2.lock().unwrap().push(client.try_clone().unwrap());
                streams2.lock().unwrap().push(server.try_clone().unwrap());
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Relay {
            addr,
            cut,
            frozen,
            streams,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::Release);
        self.frozen.store(false, Ordering::Release);
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::Release);
    }
}

#[test]
fn catch_up_uses_the_history_up_to_its_limit_and_drops_the_cache_beyond() {
    const HISTORY: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().invalidation_history(HISTORY),
    );
    let relay = Relay::start(server.local_addr());
    let options =
        ClientOptions::new().reconnect_delay(Duration::from_millis(5), Duration::from_millis(20));
    let a = connect(relay.addr, options);
    let b = connect(server.local_addr(), ClientOptions::new());
    let x = b.new_oid().unwrap();
    let mut base = commit(&b, &[(x, Tid::ZERO, b"0")]);
    wait_until("a sees the first commit", || a.last_tid() == base);
    assert_eq!(a.load(x, Tid::MAX).unwrap().data, b"0");
    let events = a.subscribe();

    for (missed, expect_events) in [(HISTORY, true), (HISTORY + 1, false)] {
        assert_eq!(a.cache_usage().0, 1, "x is cached before the cut");
        relay.cut();
        wait_until("a notices the cut", || !a.is_connected());
        let mut tids = Vec::new();
        for i in 0..missed {
            base = commit(&b, &[(x, base, format!("{missed}:{i}").as_bytes())]);
            tids.push(base);
        }
        relay.heal();
        wait_until("a reconnects and catches up", || {
            a.is_connected() && a.last_tid() == base
        });
        let delivered: Vec<Tid> = std::iter::from_fn(|| events.try_recv())
            .map(|e| e.tid)
            .collect();
        if expect_events {
            // Within the history: the missed invalidations, in order; x was dropped.
            assert_eq!(delivered, tids, "missed {missed}");
        } else {
            // Beyond it: the whole cache was dropped instead.
            assert_eq!(delivered, vec![], "missed {missed}");
        }
        assert_eq!(a.cache_usage(), (0, 0), "missed {missed}: x not dropped");
        let expected = format!("{missed}:{}", missed - 1);
        assert_eq!(a.load(x, Tid::MAX).unwrap().data, expected.as_bytes());
    }
}

#[test]
fn client_ahead_of_a_restored_server_drops_its_cache_and_follows_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.zdb");
    let backup = dir.path().join("backup.zdb");
    let file = open(&path);
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let addr = server.local_addr();
    let c = connect(
        addr,
        ClientOptions::new().reconnect_delay(Duration::from_millis(5), Duration::from_millis(20)),
    );
    let x = c.new_oid().unwrap();
    let t1 = commit(&c, &[(x, Tid::ZERO, b"backed up")]);
    std::fs::copy(&path, &backup).unwrap();
    let t2 = commit(&c, &[(x, t1, b"lost in the restore")]);
    assert_eq!(c.load(x, Tid::MAX).unwrap().data, b"lost in the restore");
    assert_eq!(c.last_tid(), t2);

    server.shutdown();
    file.close().unwrap();
    let restored = open(&backup);
    assert_eq!(restored.last_tid(), t1);
    let _server = serve(&restored, &addr.to_string(), ServerOptions::new());
    wait_until("the client follows the restored server", || {
        c.is_connected() && c.last_tid() == t1
    });
    assert_eq!(c.cache_usage(), (0, 0));
    assert_eq!(c.load(x, Tid::MAX).unwrap().data, b"backed up");
    // Work goes on from the restored state.
    let t3 = commit(&c, &[(x, t1, b"after the restore")]);
    assert_eq!(c.load(x, Tid::MAX).unwrap().data, b"after the restore");
    assert_eq!(c.last_tid(), t3);
}

#[test]
fn connection_limit_holds_at_its_boundary() {
    const LIMIT: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().connections_max(LIMIT),
    );
    let options = ClientOptions::new().wait_timeout(Duration::from_secs(2));
    let mut clients: Vec<ClientStorage> = (0..LIMIT)
        .map(|_| connect(server.local_addr(), options.clone()))
        .collect();
    match ClientStorage::connect(&server.local_addr().to_string(), options.clone()) {
        Err(Error::Refused { reason, .. }) => assert!(reason.contains("too many connections")),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("connection over the limit accepted"),
    }
    clients.pop().unwrap().close().unwrap();
    wait_until("the server counts the closed connection", || {
        server.connection_count() < LIMIT
    });
    let again = connect(server.local_addr(), options);
    assert!(again.new_oid().is_ok());
}

#[test]
fn transaction_bytes_limit_holds_at_its_boundary() {
    const MAX: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().transaction_bytes_max(MAX),
    );
    let c = connect(server.local_addr(), ClientOptions::new());
    let (a, b) = (c.new_oid().unwrap(), c.new_oid().unwrap());
    let attempt = |second: usize| {
        let mut txn = c.begin(TransactionMeta::described("sized")).unwrap();
        txn.store(a, Tid::ZERO, vec![1; 500]).unwrap();
        txn.store(b, Tid::ZERO, vec![2; second]).unwrap();
        txn.finish()
    };
    match attempt(501) {
        Err(Error::LimitExceeded { what, len, max }) => {
            assert_eq!((what, len, max), ("transaction record", MAX + 1, MAX))
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_eq!(c.last_tid(), Tid::ZERO);
    let tid = attempt(500).expect("a transaction of exactly the limit");
    assert_eq!(c.load(b, Tid::MAX).unwrap().tid, tid);
}

#[test]
fn a_silent_server_is_given_up_after_the_ping_timeout_and_the_client_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let relay = Relay::start(server.local_addr());
    let timeout = Duration::from_millis(1000);
    let c = connect(
        relay.addr,
        ClientOptions::new()
            .ping(Duration::from_millis(100), timeout)
            .connect_timeout(Duration::from_millis(300))
            .reconnect_delay(Duration::from_millis(5), Duration::from_millis(20)),
    );
    let x = c.new_oid().unwrap();
    let t1 = commit(&c, &[(x, Tid::ZERO, b"x")]);
    // Idle, but pinged: the connection stays up.
    std::thread::sleep(timeout * 2);
    assert!(c.is_connected());
    relay.freeze();
    let started = Instant::now();
    match c.load_revision(x, t1) {
        Err(Error::Disconnected { reason, .. }) => {
            assert!(reason.contains("no answer"), "{reason}")
        }
        other => panic!("expected Disconnected from a silent server, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= timeout / 2 && waited < timeout * 4,
        "gave up after {waited:?}"
    );
    relay.heal();
    assert_eq!(c.load_revision(x, t1).unwrap(), b"x");
    assert!(c.is_connected());
}

/// S6 at scale: many connections sending seeded random bytes, some after a proper
/// handshake, while a client commits. The server closes each bad connection, keeps
/// serving, and ends up with only the good client connected.
#[test]
fn a_storm_of_garbage_connections_leaves_the_server_serving() {
    use zodiac_storage::protocol::{self, ClientMessage, MAGIC, PROTOCOL_VERSION};
    const CONNECTIONS: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().handshake_timeout(Duration::from_millis(500)),
    );
    let addr = server.local_addr();
    let good = connect(addr, ClientOptions::new());
    let x = good.new_oid().unwrap();
    let mut base = commit(&good, &[(x, Tid::ZERO, b"0")]);
    let seed = Tid::now().0;
    let storm: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut rng = SplitMix64::new(seed ^ (i << 40));
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                if i % 2 == 0 {
                    let hello = protocol::encode(&ClientMessage::Hello {
                        magic: MAGIC,
                        version: PROTOCOL_VERSION,
                        read_only: false,
                        fresh: true,
                        last_tid: 0,
                    });
                    let _ = s.write_all(&hello);
                    let _ = s.write_all(&protocol::encode(&ClientMessage::Auth { mac: None }));
                }
                for _ in 0..rng.in_range(1, 20) {
                    let len = rng.in_range(0, 64) as usize;
                    let mut frame = if rng.in_range(0, 3) == 0 {
                        (rng.next_u64() as u32).to_le_bytes().to_vec()
                    } else {
                        (len as u32).to_le_bytes().to_vec()
                    };
                    frame.extend((0..len).map(|_| rng.next_u64() as u8));
                    if s.write_all(&frame).is_err() {
                        break;
                    }
                }
                // Wait for the server to end it; bytes that happen to form valid
                // messages may keep it open until this side gives up.
                let mut sink = [0u8; 4096];
                loop {
                    match s.read(&mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
        })
        .collect();
    for i in 0..20 {
        base = commit(&good, &[(x, base, format!("{i}").as_bytes())]);
    }
    for t in storm {
        t.join().expect("storm connection");
    }
    wait_until("only the good client stays connected", || {
        server.connection_count() == 1
    });
    assert_eq!(good.load(x, Tid::MAX).unwrap().data, b"19");
    let late = connect(addr, ClientOptions::new());
    assert_eq!(late.load(x, Tid::MAX).unwrap().tid, base);
}

#[test]
fn idle_connections_are_closed_but_pinging_clients_stay() {
    use zodiac_storage::protocol::{self, ClientMessage, MAGIC, PROTOCOL_VERSION};
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    // Margins wide enough for a loaded machine: pings every 100 ms against 800 ms.
    let idle = Duration::from_millis(800);
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().idle_timeout(idle),
    );
    let pinging = connect(
        server.local_addr(),
        ClientOptions::new().ping(Duration::from_millis(100), Duration::from_secs(5)),
    );
    let mut silent = TcpStream::connect(server.local_addr()).unwrap();
    silent
        .write_all(&protocol::encode(&ClientMessage::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            read_only: false,
            fresh: true,
            last_tid: 0,
        }))
        .unwrap();
    silent
        .write_all(&protocol::encode(&ClientMessage::Auth { mac: None }))
        .unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match silent.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("the idle connection was not closed: {e}"),
        }
    }
    assert!(started.elapsed() >= idle / 2, "closed too early");
    // A client that only receives (invalidations) pings too, and stays.
    let committer = connect(
        server.local_addr(),
        ClientOptions::new().ping(Duration::from_millis(100), Duration::from_secs(5)),
    );
    let x = committer.new_oid().unwrap();
    let mut base = Tid::ZERO;
    let until = Instant::now() + idle * 2;
    while Instant::now() < until {
        base = commit(&committer, &[(x, base, b"busy")]);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pinging.is_connected());
    assert_eq!(server.connection_count(), 2);
    wait_until("the receiving client has the last commit", || {
        pinging.last_tid() == base
    });
    assert!(pinging.new_oid().is_ok());
}

#[test]
fn open_transactions_per_connection_limit_holds_at_its_boundary() {
    use zodiac_storage::protocol::{
        self, ClientMessage, MAGIC, PROTOCOL_VERSION, TRANSACTIONS_PER_CONNECTION_MAX,
    };
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    for txn in 0..TRANSACTIONS_PER_CONNECTION_MAX as u64 {
        s.write_all(&protocol::encode(&ClientMessage::Begin {
            txn,
            meta: Default::default(),
        }))
        .unwrap();
    }
    // At the limit the connection still answers.
    s.write_all(&protocol::encode(&ClientMessage::Request {
        id: 1,
        request: protocol::Request::Ping,
    }))
    .unwrap();
    let reply: protocol::ServerMessage =
        protocol::decode(&protocol::read_frame(&mut s, 1 << 20).unwrap()).unwrap();
    assert!(matches!(
        reply,
        protocol::ServerMessage::Reply { id: 1, .. }
    ));
    // One more is a protocol violation: the connection is closed.
    s.write_all(&protocol::encode(&ClientMessage::Begin {
        txn: 1000,
        meta: Default::default(),
    }))
    .unwrap();
    match protocol::read_frame(&mut s, 1 << 20) {
        Err(protocol::FrameError::Closed) | Err(protocol::FrameError::Io(_)) => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    wait_until("the server dropped the connection", || {
        server.connection_count() == 0
    });
}

#[test]
fn a_client_with_the_most_open_transactions_waits_for_one_to_end() {
    use zodiac_storage::protocol::TRANSACTIONS_PER_CONNECTION_MAX as MAX;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let c = Arc::new(connect(
        server.local_addr(),
        ClientOptions::new().wait_timeout(Duration::from_millis(300)),
    ));
    let mut open: Vec<_> = (0..MAX)
        .map(|_| c.begin(TransactionMeta::described("open")).unwrap())
        .collect();
    match c.begin(TransactionMeta::described("one too many")) {
        Err(Error::LimitExceeded { len, max, .. }) => {
            assert_eq!((len, max), (MAX as u64 + 1, MAX as u64))
        }
        Err(e) => panic!("expected LimitExceeded, got {e}"),
        Ok(_) => panic!("more open transactions than the limit"),
    }
    let waiter = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            let oid = c.new_oid().unwrap();
            let mut txn = c.begin(TransactionMeta::described("waited"))?;
            txn.store(oid, Tid::ZERO, b"w".to_vec())?;
            txn.finish()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    open.pop().unwrap().abort();
    let tid = waiter.join().unwrap().expect("the waiting transaction");
    assert_eq!(c.last_tid(), tid);
    // The connection was never closed for it.
    assert!(c.is_connected());
    drop(open);
}

#[test]
fn a_catch_up_too_large_for_the_send_queue_drops_the_cache_instead() {
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().send_queue_bytes_max(2_000),
    );
    let relay = Relay::start(server.local_addr());
    let a = connect(
        relay.addr,
        ClientOptions::new().reconnect_delay(Duration::from_millis(5), Duration::from_millis(20)),
    );
    let b = connect(server.local_addr(), ClientOptions::new());
    let x = b.new_oid().unwrap();
    let t1 = commit(&b, &[(x, Tid::ZERO, b"x")]);
    wait_until("a sees x", || a.last_tid() == t1);
    assert_eq!(a.load(x, Tid::MAX).unwrap().data, b"x");
    let events = a.subscribe();
    relay.cut();
    wait_until("a notices the cut", || !a.is_connected());
    // One transaction (within the history) of 500 oids: up to 5,000 bytes to send.
    let oids: Vec<Oid> = (0..500).map(|_| b.new_oid().unwrap()).collect();
    let writes: Vec<(Oid, Tid, &[u8])> = oids.iter().map(|&o| (o, Tid::ZERO, &b"y"[..])).collect();
    let t2 = commit(&b, &writes);
    relay.heal();
    wait_until("a catches up", || a.is_connected() && a.last_tid() == t2);
    assert!(events.try_recv().is_none(), "caught up through the history");
    assert_eq!(a.cache_usage(), (0, 0));
    assert_eq!(a.load(oids[0], Tid::MAX).unwrap().data, b"y");
}

#[test]
fn a_handshake_trickling_in_byte_by_byte_is_cut_at_the_handshake_timeout() {
    use zodiac_storage::protocol::{self, ClientMessage, MAGIC, PROTOCOL_VERSION};
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let timeout = Duration::from_millis(500);
    let server = serve(
        &file,
        "127.0.0.1:0",
        ServerOptions::new().handshake_timeout(timeout),
    );
    let hello = protocol::encode(&ClientMessage::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        read_only: false,
        fresh: true,
        last_tid: 0,
    });
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    let started = Instant::now();
    // Hello, then the Auth frame one byte every 150 ms: each byte well within the
    // timeout, the whole (6 bytes) beyond it.
    s.write_all(&hello).unwrap();
    let auth = protocol::encode(&ClientMessage::Auth { mac: None });
    let mut cut_after = None;
    for byte in &auth {
        if s.write_all(std::slice::from_ref(byte)).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        if server.connection_count() == 0 {
            cut_after = Some(started.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the trickling handshake was never cut");
    assert!(
        cut_after >= timeout && cut_after < timeout * 4,
        "cut after {cut_after:?}"
    );
}

/// Transactions come in pages (at most `TRANSACTIONS_PAGE_MAX` transactions, or about
/// 4 MiB): a listing across many pages is complete and in order, exactly at the page
/// boundaries too.
#[test]
fn transaction_listings_span_pages_completely_and_in_order() {
    use std::collections::BTreeMap;
    use zodiac_storage::protocol::TRANSACTIONS_PAGE_MAX as PAGE;
    let dir = tempfile::tempdir().unwrap();
    let file = open(&dir.path().join("d.zdb"));
    let server = serve(&file, "127.0.0.1:0", ServerOptions::new());
    let c = connect(server.local_addr(), ClientOptions::new());
    let x = c.new_oid().unwrap();
    let mut tids = Vec::new();
    let mut base = Tid::ZERO;
    for i in 0..2 * PAGE + 1 {
        base = commit(&c, &[(x, base, &i.to_le_bytes())]);
        tids.push(base);
    }
    // Big metadata (12 x 512 KiB): pages end by size before they reach the count.
    for _ in 0..12 {
        let mut txn = c
            .begin(TransactionMeta {
                extension: BTreeMap::from([("big".to_string(), vec![7; 1 << 19])]),
                ..Default::default()
            })
            .unwrap();
        txn.store(x, base, b"big".to_vec()).unwrap();
        base = txn.finish().unwrap();
        tids.push(base);
    }
    let listed = |from: Tid, to: Tid| -> Vec<Tid> {
        c.transactions(from, to)
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect()
    };
    assert_eq!(listed(Tid::ZERO, Tid::MAX), tids);
    for (from, to) in [
        (0, PAGE - 1),
        (0, PAGE),
        (1, PAGE + 1),
        (PAGE, 2 * PAGE + 3),
    ] {
        assert_eq!(
            listed(tids[from], tids[to]),
            tids[from..=to].to_vec(),
            "{from}..={to}"
        );
    }
    let infos: Vec<_> = c
        .transactions(tids[2 * PAGE + 1], Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(infos.len(), 12);
    assert!(
        infos
            .iter()
            .all(|t| t.meta.extension["big"].len() == 1 << 19)
    );
}
