//! Runs `zodiac server` as a user would: a client storage commits through it, and
//! SIGTERM / SIGINT stop it cleanly with every commit in the file.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zodiac_storage::{
    ClientOptions, ClientStorage, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

struct Running {
    child: Child,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .arg("server")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zodiac server");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
    Running { child, addr }
}

fn stop_with(running: Running, signal: &str) -> String {
    stop_with_log(running, signal).0
}

/// Stops the server with `signal`; its stdout and stderr (the log).
fn stop_with_log(mut running: Running, signal: &str) -> (String, String) {
    let status = Command::new("kill")
        .args([signal, &running.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = running.child.wait().expect("wait");
    let mut out = String::new();
    running
        .child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    running
        .child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "server exit {status}: {err}");
    (out, err)
}

fn commit_one(address: &str, token: Option<&[u8]>) -> (Oid, Tid) {
    let c = ClientStorage::connect(
        address,
        ClientOptions::new()
            .wait_timeout(Duration::from_secs(5))
            .token(token.map(<[u8]>::to_vec)),
    )
    .expect("connect");
    let oid = c.new_oid().unwrap();
    let mut txn = c
        .begin(TransactionMeta::described("via the server"))
        .unwrap();
    txn.store(oid, Tid::ZERO, b"served".to_vec()).unwrap();
    (oid, txn.finish().unwrap())
}

#[test]
fn server_serves_and_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let token = dir.path().join("token");
    std::fs::write(&token, "  open sesame \n").unwrap();
    let p = path.to_str().unwrap();
    let t = token.to_str().unwrap();
    let mut committed = Vec::new();
    for signal in ["-TERM", "-INT"] {
        let running = start(&[
            p,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            t,
            "--max-connections",
            "4",
            "--invalidation-history",
            "10",
        ]);
        let address = format!("tcp://{}", running.addr);
        committed.push(commit_one(&address, Some(b"open sesame")));
        assert!(
            ClientStorage::connect(&address, ClientOptions::new()).is_err(),
            "a client without the token was accepted"
        );
        let out = stop_with(running, signal);
        assert!(out.contains("stopped"), "{out}");
    }
    // Stopped cleanly: the file opens and holds both commits.
    let file = FileStorage::open(&path, FileOptions::new()).unwrap();
    for (oid, tid) in committed {
        assert_eq!(file.load(oid, Tid::MAX).unwrap().tid, tid);
    }
    file.close().unwrap();

    let running = start(&[p, "--listen", "127.0.0.1:0", "--read-only"]);
    let c = ClientStorage::connect(&running.addr, ClientOptions::new()).unwrap();
    assert!(c.server_is_read_only());
    assert!(c.begin(TransactionMeta::default()).is_err());
    assert_eq!(c.transactions(Tid::ZERO, Tid::MAX).unwrap().count(), 2);
    drop(c);
    stop_with(running, "-TERM");
}

#[test]
fn history_reads_through_the_server_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret").unwrap();
    let running = start(&[
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let address = format!("tcp://{}", running.addr);
    let (oid, tid) = commit_one(&address, Some(b"s3cret"));
    let zodiac = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(args)
            .output()
            .unwrap()
    };
    let oid_text = oid.0.to_string();
    let out = zodiac(&[
        "history",
        &address,
        &oid_text,
        "--json",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["revisions"][0]["tid"], tid.0);
    let refused = zodiac(&["history", &address, &oid_text]);
    assert_eq!(refused.status.code(), Some(1), "no token: refused");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error: connecting to"), "{stderr}");
}

/// Incremental backups taken while clients commit through a running server each
/// restore to a consistent prefix of what was committed: every acknowledged commit
/// up to the backup point, byte for byte, and nothing torn.
#[test]
fn backups_taken_while_a_server_writes_restore_consistent_prefixes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let backups = dir.path().join("backups");
    let running = start(&[path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let address = format!("tcp://{}", running.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (address, stop, acked) = (address.clone(), Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let c = ClientStorage::connect(&address, ClientOptions::new()).unwrap();
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let oid = c.new_oid().unwrap();
                    let data = format!("writer {w} commit {n}").into_bytes();
                    let mut txn = c.begin(TransactionMeta::described("busy")).unwrap();
                    txn.store(oid, Tid::ZERO, data.clone()).unwrap();
                    let tid = txn.finish().unwrap();
                    acked.lock().unwrap().push((oid, tid, data));
                    n += 1;
                }
            })
        })
        .collect();
    let zodiac = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(args)
            .output()
            .unwrap()
    };
    let (p, b) = (path.to_str().unwrap(), backups.to_str().unwrap());
    let mut points = 0;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        let out = zodiac(&["backup", p, b]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        points += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    drop(running);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the writers committed: {}", acked.len());
    for point in 1..=points {
        let restored = dir.path().join(format!("restored-{point}.zdb"));
        let out = zodiac(&[
            "restore",
            b,
            restored.to_str().unwrap(),
            "--at",
            &point.to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = FileStorage::open(&restored, FileOptions::new().read_only(true)).unwrap();
        let last = file.last_tid();
        let mut present = 0;
        for (oid, tid, data) in &acked {
            if *tid <= last {
                let revision = file.load(*oid, Tid::MAX).unwrap();
                assert_eq!((&revision.tid, &revision.data), (tid, data));
                present += 1;
            } else {
                assert!(
                    file.load(*oid, Tid::MAX).is_err(),
                    "a commit after the point"
                );
            }
        }
        assert!(present > 0 || point == 1);
        file.close().unwrap();
    }
}

/// `zodiac pack tcp://…` packs the file a running server serves, with GC by the
/// objects layer's references, while clients stay connected.
#[test]
fn pack_through_a_running_server_collects_garbage_and_keeps_serving() {
    use std::sync::Arc;
    use zodiac_objects::{Counter, Database};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let running = start(&[path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let address = format!("tcp://{}", running.addr);
    let client: Arc<dyn zodiac_storage::Storage> =
        Arc::new(ClientStorage::connect(&address, ClientOptions::new()).unwrap());
    let db = Database::open(Arc::clone(&client)).unwrap();
    let kept = db
        .transact(|tx| {
            let kept = tx.add(Counter::new(1))?;
            tx.set_root_entry("kept", kept)?;
            tx.add(Counter::new(2))?; // unreachable from the start
            Ok(kept)
        })
        .unwrap();
    for _ in 0..5 {
        db.transact(|tx| tx.modify(&kept, |c| c.add(1))).unwrap();
    }
    let zodiac = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = zodiac(&["pack", &address]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 unreachable objects removed"), "{stdout}");
    // The connected client goes on reading and committing.
    assert_eq!(db.transact(|tx| Ok(tx.get(&kept)?.value())).unwrap(), 6);
    db.transact(|tx| tx.modify(&kept, |c| c.add(1))).unwrap();
    assert!(dir.path().join("served.zdb.old").exists());
    drop(db);
    client.close().unwrap();

    let out = zodiac(&["pack", "tcp://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    drop(running);
    let read_only = start(&[
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--read-only",
    ]);
    let out = zodiac(&["pack", &format!("tcp://{}", read_only.addr)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: packing through"), "{stderr}");
}

/// A server that cannot listen creates nothing: it used to open (and so create) a
/// 5 MiB data file before finding its address in use.
#[test]
fn a_server_whose_address_is_in_use_creates_no_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = dir.path().join("new.zodiac");
    let out = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["server", path.to_str().unwrap(), "--listen", &addr])
        .output()
        .expect("run zodiac server");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("listening on {addr}")), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A client with no token was told that "the token does not match", as if it had
/// sent a wrong one: it is now told the server requires one, and how to give it.
#[test]
fn a_client_without_a_token_is_told_the_server_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let running = start(&[
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let store = format!("tcp://{}", running.addr);
    let list = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(["jobs", "list", &store])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let none = list(&[]);
    assert!(
        none.contains("requires a token") && none.contains("--token-file"),
        "{none}"
    );
    assert!(!none.contains("does not match"), "{none}");
    let bad = list(&["--token-file", wrong.to_str().unwrap()]);
    assert!(bad.contains("does not match"), "{bad}");
    assert_eq!(bad.lines().count(), 1, "{bad}");
}

/// The server logged "signal Some(15): shutting down": the Debug form of an
/// `Option` and a signal number. It now names the signal.
#[test]
fn the_shutdown_log_names_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    for (signal, name) in [("-TERM", "SIGTERM"), ("-INT", "SIGINT")] {
        let running = start(&[path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
        let (_, log) = stop_with_log(running, signal);
        assert!(log.contains(&format!("{name}: shutting down")), "{log}");
        assert!(!log.contains("Some("), "{log}");
    }
}

/// `zodiac jobs put` (and `pack`) through a `--read-only` server failed with "the
/// storage was opened read-only; open it writable to commit", though the user
/// had opened nothing read-only: the server was. The message now says both.
#[test]
fn a_write_through_a_read_only_server_names_the_server_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let p = path.to_str().unwrap();
    stop_with(start(&[p, "--listen", "127.0.0.1:0"]), "-TERM");
    let running = start(&[p, "--listen", "127.0.0.1:0", "--read-only"]);
    let store = format!("tcp://{}", running.addr);
    for args in [vec!["jobs", "put", &store, "echo"], vec!["pack", &store]] {
        let o = Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("`zodiac server --read-only`"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("was opened read-only"), "{args:?}: {err}");
    }
    stop_with(running, "-TERM");
}

/// `zodiac pack PATH` of the file a server serves failed with "locked by process
/// N … share a database between processes through `zodiac server`", advice the
/// operator had already followed. It now names the way to pack such a file:
/// through the server.
#[test]
fn packing_a_served_file_offline_points_to_packing_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let p = path.to_str().unwrap();
    let running = start(&[p, "--listen", "127.0.0.1:0"]);
    let o = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["pack", p])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is locked by process"), "{err}");
    assert!(err.contains("`zodiac pack tcp://HOST:PORT`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    stop_with(running, "-TERM");
}
