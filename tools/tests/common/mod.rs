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
    /// Where its standard error goes.
    pub log: std::path::PathBuf,
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
        (
            Process {
                child,
                log: log.to_path_buf(),
            },
            line.trim().to_string(),
        )
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

/// Starts `zodiac server PATH --listen 127.0.0.1:0` (its log `DIR/server.log`);
/// returns it and the `tcp://` address it listens on.
pub fn start_server(path: &Path, dir: &Path) -> (Process, String) {
    let (p, line) = Process::start(
        &["server", path.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &dir.join("server.log"),
    );
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let url = format!("tcp://{addr}");
    (p, url)
}

/// Worker processes started by this test process, to name their logs apart.
static WORKERS_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts `zodiac worker STORE` as dispatcher `name` (its UUID kept in
/// `DIR/NAME.uuid`, so a restart under the same name is the same dispatcher),
/// polling every 100 ms with a 2 s grace, with `extra` arguments; waits for its
/// ready line and returns it with that line. Its log is `DIR/NAME-K.log`.
pub fn start_worker_named(
    store: &str,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> (Process, String) {
    let uuid = dir.join(format!("{name}.uuid"));
    let k = WORKERS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("{name}-{k}.log"));
    let mut args = vec![
        "worker",
        store,
        "--uuid-file",
        uuid.to_str().unwrap(),
        "--poll-interval",
        "100ms",
        "--grace",
        "2s",
    ];
    args.extend_from_slice(extra);
    let (p, line) = Process::start(&args, &log);
    assert!(
        line.starts_with("worker ") && line.ends_with(" ready"),
        "unexpected first line {line:?}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (p, line)
}

/// [`start_worker_named`] as dispatcher `worker`, without its ready line.
pub fn start_worker(store: &str, dir: &Path, extra: &[&str]) -> Process {
    start_worker_named(store, dir, "worker", extra).0
}

/// Waits (30 s at most) until job `id` of `store` has status `want`; returns its
/// `show --json`.
pub fn wait_status(store: &str, id: u64, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = show(store, id);
        if doc["status"] == want {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stays {} (waited for {want})",
            doc["status"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (30 s at most) until job `id` of `store` is COMPLETED; returns its
/// `show --json`.
pub fn wait_completed(store: &str, id: u64) -> Value {
    wait_status(store, id, "COMPLETED")
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
