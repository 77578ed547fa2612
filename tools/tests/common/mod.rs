//! Helpers the command-line tests share: running the real `zodiac` binary, and
//! the long-running processes (workers, servers) a test starts and stops.

// Each test file uses a different subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zodiac_storage::Storage;

/// Runs `zodiac ARGS` to its end.
pub fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

/// A process's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A process's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `zodiac ARGS`, expecting success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = zodiac(args);
    assert!(o.status.success(), "zodiac {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// `zodiac jobs put STORE ARGS...`; the job id it printed.
pub fn put(store: &str, args: &[&str]) -> u64 {
    let mut all = vec!["jobs", "put", store];
    all.extend_from_slice(args);
    ok(&all).trim().parse().expect("put prints the job id")
}

/// `zodiac jobs show STORE ID --json`, parsed.
pub fn show(store: &str, id: u64) -> Value {
    serde_json::from_str(&ok(&["jobs", "show", store, &id.to_string(), "--json"]))
        .expect("show --json is one JSON document")
}

/// A child process killed (and reaped) when dropped.
pub struct Process {
    pub child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `zodiac ARGS` with stderr to `log`; returns it with its first stdout line.
    pub fn start(args: &[&str], log: &Path) -> (Process, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("run zodiac");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (Process { child }, line.trim().to_string())
    }

    /// Sends `signal` (e.g. `-TERM`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most `limit`); returns whether it succeeded.
    pub fn wait(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (at most 20 s) for a clean exit.
    pub fn stop(mut self) {
        self.signal("-TERM");
        assert!(
            self.wait(Duration::from_secs(20)),
            "the process did not exit cleanly"
        );
    }
}

/// Commits `count` transactions into the data file at `path` (created if missing):
/// each writes a new object and rewrites the first, with full metadata.
pub fn commit_some(path: &Path, count: usize) {
    let s = zodiac_storage::FileStorage::open(
        path,
        zodiac_storage::FileOptions::new().durability(zodiac_storage::Durability::Off),
    )
    .unwrap();
    let first = zodiac_storage::Oid(1);
    for i in 0..count {
        let oid = s.new_oid().unwrap();
        let mut meta = zodiac_storage::TransactionMeta {
            user: format!("user {i}"),
            description: format!("commit {i} of {}", s.last_tid()),
            ..zodiac_storage::TransactionMeta::default()
        };
        meta.extension.insert("n".into(), vec![i as u8, 0, 255]);
        let mut t = s.begin(meta).unwrap();
        let base = s
            .load(first, zodiac_storage::Tid::MAX)
            .map_or(zodiac_storage::Tid::ZERO, |r| r.tid);
        if oid != first {
            t.store(first, base, format!("first after {i}").into_bytes())
                .unwrap();
        }
        t.store(oid, zodiac_storage::Tid::ZERO, vec![i as u8; 100 + i * 37])
            .unwrap();
        t.finish().unwrap();
    }
    s.sync().unwrap();
    s.close().unwrap();
}
