//! The storage server as a real process (the `net_server` helper, which serves a data
//! file exactly as `zodiac server` does), with real client storages over 127.0.0.1.
//!
//! - S5: the server is killed (SIGKILL) mid-commit while 4 clients commit; after the
//!   restart every acknowledged commit is there, clients reconnect by themselves and
//!   their caches are caught up.
//! - A restart shorter than `wait_timeout` is invisible to a client that retries on
//!   `Disconnected`.
//! - S6: malformed, oversized and stalled connections are closed with a logged reason
//!   while another client keeps committing.
//! - A wrong token is refused; a read-only server refuses commits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zodiac_storage::protocol::{self, ClientMessage, MAGIC, PROTOCOL_VERSION};
use zodiac_storage::{ClientOptions, ClientStorage, Error, Oid, Storage, Tid, TransactionMeta};
use zodiac_tests::KillOnDrop;

struct ServerProcess {
    process: KillOnDrop,
    addr: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `net_server` on `listen` ("127.0.0.1:0" for a free port).
    fn start(data: &Path, listen: &str, extra: &[&str], log: PathBuf) -> ServerProcess {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_net_server"))
                .arg(data)
                .arg(listen)
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(
                    File::options()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .expect("server log file"),
                ))
                .spawn()
                .expect("spawn net_server");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("read the server's first line");
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                return ServerProcess {
                    process: KillOnDrop(child),
                    addr: addr.parse().expect("an address"),
                    log,
                };
            }
            // The port of a killed server may take a moment to be free again.
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "net_server did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(self) {
        drop(self.process);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn client(addr: SocketAddr, wait: Duration) -> ClientStorage {
    ClientStorage::connect(&addr.to_string(), ClientOptions::new().wait_timeout(wait))
        .expect("connect")
}

fn meta(d: &str) -> TransactionMeta {
    TransactionMeta::described(d)
}

/// One writer's record: every commit it attempted, and how it ended.
#[derive(Default)]
struct Attempts {
    acked: Vec<(u64, Tid)>,
    unknown: Vec<u64>,
}

/// Commits `counter` values to `oid` until `stop`, retrying on `Disconnected`.
fn write_loop(s: &ClientStorage, oid: Oid, stop: &AtomicBool) -> Attempts {
    let mut attempts = Attempts::default();
    let mut counter = 0u64;
    let mut base = Tid::ZERO;
    while !stop.load(Ordering::Acquire) {
        counter += 1;
        let result = (|| {
            let mut txn = s.begin(meta("writer"))?;
            txn.store(oid, base, counter.to_le_bytes().to_vec())?;
            txn.finish()
        })();
        match result {
            Ok(tid) => {
                attempts.acked.push((counter, tid));
                base = tid;
            }
            Err(Error::Disconnected { .. }) | Err(Error::Conflict(_)) => {
                attempts.unknown.push(counter);
                // Whether it committed is unknown: read the current base back.
                loop {
                    match s.load(oid, Tid::MAX) {
                        Ok(rev) => {
                            base = rev.tid;
                            break;
                        }
                        Err(Error::NoSuchObject { .. }) => {
                            base = Tid::ZERO;
                            break;
                        }
                        Err(Error::Disconnected { .. }) => continue,
                        Err(e) => panic!("reload after a disconnect: {e}"),
                    }
                }
            }
            Err(e) => panic!("commit failed: {e}"),
        }
    }
    attempts
}

#[test]
fn s5_kill9_mid_commit_loses_no_acknowledged_commit_and_clients_catch_up() {
    const CLIENTS: usize = 4;
    const KILLS: usize = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("served.zdb");
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::start(&data, "127.0.0.1:0", &[], log.clone());
    let addr = server.addr;
    let clients: Vec<Arc<ClientStorage>> = (0..CLIENTS)
        .map(|_| Arc::new(client(addr, Duration::from_secs(20))))
        .collect();
    let oids: Vec<Oid> = clients.iter().map(|c| c.new_oid().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = clients
        .iter()
        .zip(&oids)
        .map(|(c, &oid)| {
            let (c, stop) = (Arc::clone(c), Arc::clone(&stop));
            std::thread::spawn(move || write_loop(&c, oid, &stop))
        })
        .collect();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(400));
        server.kill9();
        std::thread::sleep(Duration::from_millis(150));
        server = ServerProcess::start(&data, &addr.to_string(), &[], log.clone());
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Release);
    let attempts: Vec<Attempts> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();

    let checker = client(addr, Duration::from_secs(10));
    let mut total_acked = 0;
    for (oid, a) in oids.iter().zip(&attempts) {
        assert!(!a.acked.is_empty(), "a writer never committed");
        total_acked += a.acked.len();
        let history: BTreeMap<Tid, u64> = checker
            .history(*oid, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| {
                let data = checker.load_revision(*oid, r.tid).unwrap();
                (r.tid, u64::from_le_bytes(data.try_into().expect("8 bytes")))
            })
            .collect();
        // No acknowledged commit lost, each with exactly its data.
        for (counter, tid) in &a.acked {
            assert_eq!(history.get(tid), Some(counter), "acknowledged commit lost");
        }
        // Anything else present was an attempt whose outcome was unknown.
        let acked: Vec<Tid> = a.acked.iter().map(|(_, t)| *t).collect();
        for (tid, counter) in &history {
            if !acked.contains(tid) {
                assert!(
                    a.unknown.contains(counter),
                    "commit {counter} appeared from nowhere"
                );
            }
        }
    }
    // Every client reconnected by itself and its cache serves what the server has.
    let deadline = Instant::now() + Duration::from_secs(10);
    let server_last = checker.last_tid();
    for c in &clients {
        while c.last_tid() != server_last {
            assert!(Instant::now() < deadline, "a client did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
        for oid in &oids {
            assert_eq!(
                c.load(*oid, Tid::MAX).unwrap(),
                checker.load(*oid, Tid::MAX).unwrap(),
                "stale read after the restarts"
            );
        }
    }
    println!(
        "s5: {KILLS} kills, {total_acked} acknowledged commits present, {} unknown outcomes",
        attempts.iter().map(|a| a.unknown.len()).sum::<usize>()
    );
    drop(server);
}

#[test]
fn restart_shorter_than_wait_timeout_is_invisible_to_a_retrying_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("served.zdb");
    let log = dir.path().join("server.log");
    let server = ServerProcess::start(&data, "127.0.0.1:0", &[], log.clone());
    let addr = server.addr;
    let c = client(addr, Duration::from_secs(10));
    let oid = c.new_oid().unwrap();
    let mut txn = c.begin(meta("before")).unwrap();
    txn.store(oid, Tid::ZERO, b"one".to_vec()).unwrap();
    let t1 = txn.finish().unwrap();
    assert_eq!(c.load(oid, Tid::MAX).unwrap().data, b"one");

    // A transaction open across the kill is doomed until aborted.
    let mut doomed = c.begin(meta("across the kill")).unwrap();
    server.kill9();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ServerProcess::start(&data, &addr.to_string(), &[], log)
    });
    let started = Instant::now();
    let mut disconnects = 0;
    let t2 = loop {
        let result = (|| {
            let mut txn = c.begin(meta("retried"))?;
            txn.store(oid, t1, b"two".to_vec())?;
            txn.finish()
        })();
        match result {
            Ok(tid) => break tid,
            Err(Error::Disconnected { .. }) => disconnects += 1,
            Err(e) => panic!("retry failed with {e}"),
        }
        assert!(disconnects < 5, "more than a few retries were needed");
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    for _ in 0..3 {
        match doomed.store(oid, t1, b"doomed".to_vec()) {
            Err(Error::Disconnected { .. }) => {}
            other => panic!("a transaction across a disconnect must stay doomed: {other:?}"),
        }
    }
    doomed.abort();
    assert_eq!(
        c.load(oid, Tid::MAX).unwrap(),
        zodiac_storage::Revision {
            tid: t2,
            data: b"two".to_vec()
        }
    );
    assert_eq!(c.last_tid(), t2);
    let _server = restarter.join().expect("restart");
}

/// Oids in each of the good client's transactions: wide invalidations fill a stalled
/// client's buffers quickly.
const WIDE_OIDS: usize = 20_000;

fn raw_handshake(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&protocol::encode(&ClientMessage::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        read_only: false,
        fresh: true,
        last_tid: 0,
    }))
    .unwrap();
    protocol::read_frame(&mut s, 1 << 20).expect("challenge");
    s.write_all(&protocol::encode(&ClientMessage::Auth { mac: None }))
        .unwrap();
    protocol::read_frame(&mut s, 1 << 20).expect("welcome");
    s
}

/// Reads until the server closes the connection; fails the test if it does not.
fn expect_closed(mut s: TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = [0u8; 65536];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn s6_bad_and_stalled_clients_are_closed_and_others_are_unaffected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(
        &dir.path().join("served.zdb"),
        "127.0.0.1:0",
        &[
            "--send-queue-bytes",
            "65536",
            "--handshake-timeout-ms",
            "500",
        ],
        dir.path().join("server.log"),
    );
    let addr = server.addr;
    let good = Arc::new(client(addr, Duration::from_secs(5)));
    let stop = Arc::new(AtomicBool::new(false));
    // A good client commits wide transactions throughout, timing each.
    let worker = {
        let (good, stop) = (Arc::clone(&good), Arc::clone(&stop));
        std::thread::spawn(move || {
            let oids: Vec<Oid> = (0..WIDE_OIDS).map(|_| good.new_oid().unwrap()).collect();
            let mut bases = vec![Tid::ZERO; oids.len()];
            let mut slowest = Duration::ZERO;
            let mut commits = 0;
            while !stop.load(Ordering::Acquire) || commits < 5 {
                let started = Instant::now();
                let mut txn = good.begin(meta("wide")).unwrap();
                for (oid, base) in oids.iter().zip(&bases) {
                    txn.store(*oid, *base, vec![1; 8]).unwrap();
                }
                let tid = txn.finish().expect("a good client's commit");
                bases.iter_mut().for_each(|b| *b = tid);
                slowest = slowest.max(started.elapsed());
                commits += 1;
            }
            (commits, slowest)
        })
    };

    // Oversized: a length over the handshake limit.
    let mut oversized = TcpStream::connect(addr).unwrap();
    oversized.write_all(&u32::MAX.to_le_bytes()).unwrap();
    expect_closed(oversized, "oversized frame");
    // Malformed: a frame that does not decode, before and after the handshake.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).unwrap();
    expect_closed(garbage, "malformed hello");
    let mut garbage = raw_handshake(addr);
    garbage.write_all(&[2, 0, 0, 0, 0x63, 0x01]).unwrap();
    expect_closed(garbage, "malformed request");
    // Oversized after the handshake: over FRAME_BYTES_MAX.
    let mut oversized = raw_handshake(addr);
    oversized
        .write_all(&(protocol::FRAME_BYTES_MAX as u32 + 1).to_le_bytes())
        .unwrap();
    expect_closed(oversized, "oversized request");
    // Stalled in the handshake: closed after the handshake timeout.
    let silent = TcpStream::connect(addr).unwrap();
    expect_closed(silent, "silent connection");
    // Stalled after the handshake: never reads while invalidations pile up (the
    // kernel's socket buffers fill first, then the server's send queue).
    let stalled = raw_handshake(addr);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !server.log().contains("the client is not reading") {
        assert!(
            Instant::now() < deadline,
            "the stalled client was not closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    expect_closed(stalled, "stalled reader");

    stop.store(true, Ordering::Release);
    let (commits, slowest) = worker.join().expect("good client");
    assert!(commits >= 5);
    assert!(
        slowest < Duration::from_secs(3),
        "a good client's commit took {slowest:?}"
    );
    let log = server.log();
    for reason in [
        "over the limit of 4096 bytes",
        "undecodable frame",
        "over the limit of",
        "during the handshake",
        "the client is not reading",
    ] {
        assert!(log.contains(reason), "no log line with {reason:?}:\n{log}");
    }
    // The server still serves new clients.
    let late = client(addr, Duration::from_secs(5));
    assert_eq!(late.last_tid(), good.last_tid());
}

#[test]
fn wrong_token_is_refused_and_read_only_server_refuses_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let data = dir.path().join("served.zdb");
    let server = ServerProcess::start(
        &data,
        "127.0.0.1:0",
        &["--token-file", token_file.to_str().unwrap()],
        dir.path().join("server.log"),
    );
    let address = server.addr.to_string();
    let with = |token: Option<&str>| {
        ClientStorage::connect(
            &address,
            ClientOptions::new()
                .wait_timeout(Duration::from_secs(5))
                .token(token.map(|t| t.as_bytes().to_vec())),
        )
    };
    for wrong in [None, Some("secret"), Some("s3cret\n")] {
        match with(wrong) {
            Err(Error::Refused { reason, .. }) => assert!(reason.contains("authentication")),
            Err(e) => panic!("token {wrong:?}: expected a refusal, got {e}"),
            Ok(_) => panic!("token {wrong:?}: accepted"),
        }
    }
    let c = with(Some("s3cret")).expect("the right token");
    let oid = c.new_oid().unwrap();
    let mut txn = c.begin(meta("authenticated")).unwrap();
    txn.store(oid, Tid::ZERO, b"kept".to_vec()).unwrap();
    let tid = txn.finish().unwrap();
    drop(c);
    server.kill9();

    let server = ServerProcess::start(
        &data,
        "127.0.0.1:0",
        &["--read-only"],
        dir.path().join("server-ro.log"),
    );
    let c = client(server.addr, Duration::from_secs(5));
    assert!(c.server_is_read_only());
    assert!(matches!(c.begin(meta("refused")), Err(Error::ReadOnly)));
    assert!(matches!(c.new_oid(), Err(Error::ReadOnly)));
    assert_eq!(c.load(oid, Tid::MAX).unwrap().data, b"kept");
    assert_eq!(c.last_tid(), tid);
    // A raw client that ignores the flag is refused by the server too.
    let mut raw = raw_handshake(server.addr);
    raw.write_all(&protocol::encode(&ClientMessage::Begin {
        txn: 1,
        meta: Default::default(),
    }))
    .unwrap();
    raw.write_all(&protocol::encode(&ClientMessage::Request {
        id: 1,
        request: protocol::Request::Vote { txn: 1 },
    }))
    .unwrap();
    let reply: protocol::ServerMessage =
        protocol::decode(&protocol::read_frame(&mut raw, 1 << 20).unwrap()).unwrap();
    assert_eq!(
        reply,
        protocol::ServerMessage::Reply {
            id: 1,
            result: Err(protocol::WireError::ReadOnly)
        }
    );
    // A read-only client of a writable server does not commit either.
    drop(server);
    let server = ServerProcess::start(
        &data,
        "127.0.0.1:0",
        &["--token-file", token_file.to_str().unwrap()],
        dir.path().join("server-3.log"),
    );
    let c = ClientStorage::connect(
        &server.addr.to_string(),
        ClientOptions::new()
            .read_only(true)
            .token(Some(b"s3cret".to_vec())),
    )
    .unwrap();
    assert!(matches!(c.begin(meta("refused")), Err(Error::ReadOnly)));
}
