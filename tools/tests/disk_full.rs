//! The `zodiac` processes on a full disk: a small tmpfs filled up (root only; where
//! mounting is not permitted each test says it skipped and passes).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zodiac_storage::{ClientOptions, ClientStorage, Storage, Tid, TransactionMeta};

/// A small tmpfs mounted in a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_bytes: u64, case: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipping {case}: mounting a tmpfs is not permitted here");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system: writes a filler file until ENOSPC.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            while f.write_all(&zeros).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

/// The process ended by exiting (with a code), not by a signal, and said why if
/// it failed.
fn assert_exited(what: &str, status: ExitStatus, stderr: &str) {
    assert!(
        status.signal().is_none(),
        "{what} died of signal {:?}: {stderr}",
        status.signal()
    );
    if !status.success() {
        assert!(!stderr.trim().is_empty(), "{what} failed without a message");
    }
}

fn run_exits(what: &str, args: &[&str]) -> Output {
    let o = zodiac(args);
    assert_exited(what, o.status, &String::from_utf8_lossy(&o.stderr));
    o
}

/// `zodiac server PATH` with its log in `log` (off the full file system).
fn server(path: &Path, log: &Path) -> (Child, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["server", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("run zodiac server");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string);
    (child, addr)
}

/// Stops a server with SIGTERM (if still running) and returns how it ended.
fn stop(mut child: Child) -> ExitStatus {
    if child.try_wait().unwrap().is_none() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The story: a server filled its tmpfs; a large append had extended the file with
/// `set_len` before its write failed, leaving a hole, and `verify`, `jobs status` and
/// the restarted server all died of SIGBUS with no message. Now the commits fail
/// with "disk full", and every later process exits with a message or works.
#[test]
fn processes_on_a_full_tmpfs_exit_with_a_message_never_a_signal() {
    let Some(fs) = Tmpfs::mount(12 << 20, "processes_on_a_full_tmpfs") else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let path = fs.path().join("jobs.zdb");
    let store = path.to_str().unwrap();
    run_exits(
        "jobs put",
        &["jobs", "put", store, "echo", r#"{"value": 1}"#],
    );
    let (child, addr) = server(&path, &logs.path().join("server.log"));
    let addr = addr.expect("the server started");
    let client = ClientStorage::connect(
        &format!("tcp://{addr}"),
        ClientOptions::new().wait_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    // Large commits, appended directly (not into zeros written beforehand), until
    // the disk is full.
    let mut failure = None;
    for i in 0..400 {
        let size = 300 << 10;
        let oid = client.new_oid().unwrap();
        let mut t = client.begin(TransactionMeta::described("fill")).unwrap();
        t.store(oid, Tid::ZERO, vec![i as u8; size]).unwrap();
        if let Err(e) = t.finish() {
            failure = Some(e.to_string());
            break;
        }
    }
    drop(client);
    let failure = failure.expect("the disk filled up");
    assert!(failure.contains("disk full"), "{failure}");
    for (what, args) in [
        ("verify", vec!["verify", store]),
        ("jobs status", vec!["jobs", "status", store]),
        ("jobs list", vec!["jobs", "list", store]),
    ] {
        run_exits(what, &args);
    }
    let log = logs.path().join("server.log");
    let status = stop(child);
    assert_exited("server", status, &std::fs::read_to_string(&log).unwrap());
    let restarted_log = logs.path().join("restarted.log");
    let (child, _) = server(&path, &restarted_log);
    let status = stop(child);
    assert_exited(
        "restarted server",
        status,
        &std::fs::read_to_string(&restarted_log).unwrap(),
    );
    let o = run_exits("verify", &["verify", store]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// The story: an embedded `zodiac jobs put` on a full disk exited 1 ("saving the
/// index failed: No space left on device") although its commit was durable and
/// the job PENDING, so the user's retry queued it twice. The commit fits in the
/// file's preallocated space; only the index save at close fails, which is a
/// warning.
#[test]
fn an_embedded_put_whose_index_cannot_be_saved_succeeds_once() {
    let Some(fs) = Tmpfs::mount(8 << 20, "an_embedded_put_whose_index_cannot_be_saved") else {
        return;
    };
    let path = fs.path().join("jobs.zdb");
    let store = path.to_str().unwrap();
    let first = run_exits(
        "jobs put",
        &["jobs", "put", store, "echo", r#"{"value": 1}"#],
    );
    assert!(first.status.success());
    fs.fill();
    let o = run_exits(
        "jobs put",
        &["jobs", "put", store, "echo", r#"{"value": 2}"#],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "a durable put reported as failed: {stderr}"
    );
    assert!(stderr.contains("could not save the index"), "{stderr}");
    let id: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let listed = run_exits("jobs list", &["jobs", "list", store, "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let this: Vec<&Value> = listed.iter().filter(|j| j["id"] == id).collect();
    assert_eq!(this.len(), 1, "{listed:?}");
    assert_eq!(this[0]["status"], "PENDING");
}
