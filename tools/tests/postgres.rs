//! The `zodiac` binary on PostgreSQL stores (`postgres://URL?schema=NAME`), each
//! test in a fresh schema of the database named by ZODIAC_TEST_POSTGRES, dropped
//! at its end: a data file copied into PostgreSQL and back dumps the same (tids,
//! metadata, records), incrementally; `dump`, `tail`, `history` and `pg verify`
//! read it; jobs put by one process are run by two worker processes that open the
//! database themselves, one of them killed with SIGKILL mid-job. Without the
//! variable the tests say they skipped; with it, an unreachable server fails them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Process, commit_some, ok, put, show, start_worker_named, stderr, zodiac};
use zodiac_storage::{FileOptions, FileStorage, Storage, Tid};

/// The variable naming the test database.
const VARIABLE: &str = "ZODIAC_TEST_POSTGRES";

/// Held shared by every test, and alone by the one that restarts the server.
static SERVER_IN_USE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// How a test holds the PostgreSQL server.
#[allow(dead_code)] // held for its drop
enum ServerUse {
    Shared(std::sync::RwLockReadGuard<'static, ()>),
    Alone(std::sync::RwLockWriteGuard<'static, ()>),
}

/// A schema of the test database that lives as long as the value.
struct Schema {
    base: String,
    name: String,
    _server: ServerUse,
}

impl Schema {
    /// A fresh schema name, or `None` (printed) when the variable is not set.
    fn new(tag: &str) -> Option<Schema> {
        let shared = SERVER_IN_USE.read().unwrap_or_else(|e| e.into_inner());
        Schema::with(tag, ServerUse::Shared(shared))
    }

    /// [`Schema::new`] for a test that restarts the server: it waits for the
    /// others to end, and they for it.
    fn alone(tag: &str) -> Option<Schema> {
        let alone = SERVER_IN_USE.write().unwrap_or_else(|e| e.into_inner());
        Schema::with(tag, ServerUse::Alone(alone))
    }

    fn with(tag: &str, server: ServerUse) -> Option<Schema> {
        let Ok(base) = std::env::var(VARIABLE) else {
            eprintln!("skipped PostgreSQL: set {VARIABLE} to a database URL to run this test");
            return None;
        };
        let mut client = postgres::Client::connect(&base, postgres::NoTls)
            .unwrap_or_else(|e| panic!("{VARIABLE}={base} is set but cannot be reached: {e}"));
        let name = format!("zt_tools_{tag}_{}", std::process::id());
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .unwrap();
        Some(Schema {
            base,
            name,
            _server: server,
        })
    }

    /// The store name the tools take.
    fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}schema={}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn dump(store: &str) -> String {
    ok(&["dump", store, "--json"])
}

#[test]
fn a_file_copied_into_postgres_and_back_dumps_the_same() {
    let Some(schema) = Schema::new("copy") else {
        return;
    };
    let pg = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.zdb");
    let back = dir.path().join("back.zdb");
    let (src_name, back_name) = (src.to_str().unwrap(), back.to_str().unwrap());
    commit_some(&src, 4);
    let out = ok(&["copy", src_name, &pg]);
    assert!(
        out.contains("copied 4 transactions") && out.contains("verified"),
        "{out}"
    );
    commit_some(&src, 2);
    let out = ok(&["copy", src_name, &pg]);
    assert!(out.contains("copied 2 transactions"), "incremental: {out}");
    let out = ok(&["copy", &pg, back_name]);
    assert!(out.contains("copied 6 transactions"), "{out}");

    let original = dump(src_name);
    assert_eq!(original.lines().count(), 6);
    assert_eq!(dump(&pg), original, "PostgreSQL holds the file's history");
    assert_eq!(dump(back_name), original, "and gives it back unchanged");
    let a = FileStorage::open(&src, FileOptions::new().read_only(true)).unwrap();
    let b = FileStorage::open(&back, FileOptions::new().read_only(true)).unwrap();
    for t in a.transactions(Tid::ZERO, Tid::MAX).unwrap() {
        let t = t.unwrap();
        for c in &t.changes {
            assert_eq!(
                a.load_revision(c.oid, t.tid).unwrap(),
                b.load_revision(c.oid, t.tid).unwrap(),
                "record {} at {} is byte-identical",
                c.oid,
                t.tid
            );
        }
    }

    // The read-only tools on the PostgreSQL store agree with the file.
    assert_eq!(
        ok(&["tail", &pg, "-n", "2", "--json"]),
        ok(&["tail", src_name, "-n", "2", "--json"])
    );
    assert_eq!(
        ok(&["history", &pg, "1", "--json"]),
        ok(&["history", src_name, "1", "--json"])
    );
    let verified = ok(&["pg", "verify", &pg]);
    assert!(!verified.is_empty(), "pg verify reports what it checked");
    let again = ok(&["copy", src_name, &pg]);
    assert!(again.contains("nothing to copy"), "{again}");
}

/// Waits until job `id` is COMPLETED in `store`; returns its `show --json`.
fn wait_completed(store: &str, id: u64) -> serde_json::Value {
    try_wait_completed(store, id).unwrap_or_else(|doc| panic!("job {id} did not complete: {doc}"))
}

/// Waits (at most 60 s) until job `id` is COMPLETED in `store`; returns its `show
/// --json`, or the last one seen when it did not complete.
fn try_wait_completed(store: &str, id: u64) -> Result<serde_json::Value, serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = show(store, id);
        if doc["status"] == "COMPLETED" {
            return Ok(doc);
        }
        if Instant::now() >= deadline {
            return Err(doc);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of counter `name`, read by one more `incr` job (by 0) once every
/// earlier job has completed (concurrent increments merge, so their own results
/// may repeat a value; the counter itself counts each once).
fn counter(store: &str, name: &str) -> i64 {
    let id = put(
        store,
        &["incr", &format!(r#"{{"counter": "{name}", "by": 0}}"#)],
    );
    wait_completed(store, id)["result"].as_i64().unwrap()
}

fn worker(store: &str, dir: &Path, name: &str) -> Process {
    let liveness = ["--ping-interval", "200ms", "--ping-death-interval", "2s"];
    start_worker_named(store, dir, name, &liveness).0
}

#[test]
fn worker_processes_on_postgres_run_every_job_once_and_recover_a_killed_ones_job() {
    let Some(schema) = Schema::new("jobs") else {
        return;
    };
    let pg = schema.url();
    let dir = tempfile::tempdir().unwrap();
    ok(&["pg", "init", &pg]);
    // A job that runs long enough to be killed in, and quick ones.
    let slow = put(&pg, &["sleep", r#"{"ms": 10000}"#]);
    let quick: Vec<u64> = (0..20)
        .map(|i| {
            put(
                &pg,
                &["incr", &format!(r#"{{"counter": "hits", "by": {i}}}"#)],
            )
        })
        .collect();
    let mut first = worker(&pg, dir.path(), "a");
    let deadline = Instant::now() + Duration::from_secs(30);
    while show(&pg, slow)["status"] != "ACTIVE" {
        assert!(Instant::now() < deadline, "the slow job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = worker(&pg, dir.path(), "b");
    first.signal("-KILL");
    assert!(!first.wait(Duration::from_secs(10)), "SIGKILL ends it");
    let done = wait_completed(&pg, slow);
    assert_eq!(
        done["interruptions"], 1,
        "the killed worker's job was recovered and ran again: {done}"
    );
    for id in &quick {
        assert!(
            wait_completed(&pg, *id)["result"].is_i64(),
            "job {id} succeeded"
        );
    }
    assert_eq!(
        counter(&pg, "hits"),
        (0..20).sum::<i64>(),
        "each increment ran once"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["jobs", "status", &pg, "--json"])).unwrap();
    assert!(status["queues"].is_array(), "{status}");
    ok(&["pg", "verify", &pg]);

    // analyze and refs read the database as they read a data file: the same
    // types and counts as a copy of it, and no dangling references.
    second.stop();
    let copy = dir.path().join("copy.zdb");
    ok(&["copy", &pg, copy.to_str().unwrap()]);
    let types = |store: &str| -> serde_json::Value {
        let doc: serde_json::Value =
            serde_json::from_str(&ok(&["analyze", store, "--json"])).unwrap();
        doc["types"].clone()
    };
    let on_pg = types(&pg);
    assert!(on_pg.to_string().contains("Job"), "{on_pg}");
    assert_eq!(on_pg, types(copy.to_str().unwrap()));
    let refs = ok(&["refs", &pg]);
    assert!(refs.contains("no dangling references among"), "{refs}");
}

/// Jobs of the connection-cut test.
const CUT_JOBS: i64 = 150;

#[test]
fn a_worker_whose_database_connections_are_cut_loses_no_job_and_runs_none_twice() {
    let Some(schema) = Schema::new("cut") else {
        return;
    };
    let pg = schema.url();
    let dir = tempfile::tempdir().unwrap();
    ok(&["pg", "init", &pg]);
    let jobs: Vec<u64> = (0..CUT_JOBS)
        .map(|_| put(&pg, &["incr", r#"{"counter": "cut"}"#]))
        .collect();
    let worker = worker(&pg, dir.path(), "w");
    // Cut every connection the worker holds to the database, every 30 ms for 3 s,
    // while it claims jobs and commits their results (some cuts land in a vote,
    // a COMMIT or a poll).
    let mut admin = postgres::Client::connect(&schema.base, postgres::NoTls).unwrap();
    let mut cuts = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        cuts += admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&format!("zodiac {}", schema.name)],
            )
            .unwrap()
            .len();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(cuts > 10, "the worker's connections were cut ({cuts})");
    let log_path = worker.log.clone();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    for id in &jobs {
        let doc = try_wait_completed(&pg, *id).unwrap_or_else(|doc| {
            panic!(
                "job {id} did not complete: {doc}\nthe worker's log:\n{}",
                log()
            )
        });
        assert!(doc["result"].is_i64(), "job {id} failed: {doc}");
    }
    assert_eq!(counter(&pg, "cut"), CUT_JOBS, "each increment ran once");
    drop(worker);
    assert!(
        log().contains("was cut"),
        "the cuts reached the worker: {}",
        log()
    );
}

#[test]
fn a_server_in_front_of_postgres_serves_workers_and_a_pack_keeps_their_jobs() {
    let Some(schema) = Schema::new("served") else {
        return;
    };
    let pg = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let (server, line) = Process::start(
        &["server", &pg, "--listen", "127.0.0.1:0"],
        &dir.path().join("server.log"),
    );
    let tcp = format!("tcp://{}", line.strip_prefix("listening on ").unwrap());
    let first = put(&tcp, &["echo", r#"{"value": 1}"#]);
    let worker = worker(&tcp, dir.path(), "w");
    assert_eq!(wait_completed(&tcp, first)["result"], 1);
    // A pack with GC of the schema itself, while the server and its worker run.
    let packed = ok(&["pack", &pg]);
    assert!(packed.contains("PostgreSQL keeps no copy"), "{packed}");
    let second = put(&tcp, &["echo", r#"{"value": 2}"#]);
    assert_eq!(wait_completed(&tcp, second)["result"], 2);
    assert_eq!(
        show(&tcp, first)["result"],
        1,
        "the pack kept the completed job"
    );
    // Stopped, the worker commits nothing more between the two dumps.
    worker.stop();
    assert_eq!(
        dump(&tcp),
        dump(&pg),
        "the server shows PostgreSQL's history"
    );
    ok(&["pg", "verify", &pg]);
    server.stop();
}

#[test]
fn a_run_whose_result_cannot_be_committed_hands_its_job_back_and_it_runs_again() {
    let Some(schema) = Schema::new("handback") else {
        return;
    };
    let pg = schema.url();
    let dir = tempfile::tempdir().unwrap();
    ok(&["pg", "init", &pg]);
    let job = put(&pg, &["sleep", r#"{"ms": 2000}"#]);
    // A death interval far beyond the test: recovery of a dead worker is not what
    // brings the job back.
    let uuid = dir.path().join("w.uuid");
    let (_worker, line) = Process::start(
        &[
            "worker",
            &pg,
            "--uuid-file",
            uuid.to_str().unwrap(),
            "--poll-interval",
            "100ms",
            "--ping-death-interval",
            "600s",
        ],
        &dir.path().join("w.log"),
    );
    assert!(line.ends_with(" ready"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while show(&pg, job)["status"] != "ACTIVE" {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Hold the commit lock past two of the storage's 10 s lock timeouts: the run's
    // result commit fails (a PostgreSQL error, not a lost connection), and so does
    // the commit storing that failure as the job's result; the run itself has
    // failed then, with its job still ACTIVE under a live agent.
    let mut admin = postgres::Client::connect(&schema.base, postgres::NoTls).unwrap();
    let mut lock = admin.transaction().unwrap();
    lock.batch_execute(&format!(
        "LOCK TABLE {}.head IN EXCLUSIVE MODE",
        schema.name
    ))
    .unwrap();
    std::thread::sleep(Duration::from_secs(24));
    lock.commit().unwrap();
    let done = wait_completed(&pg, job);
    let log = std::fs::read_to_string(dir.path().join("w.log")).unwrap();
    assert!(
        done["failure"].is_null(),
        "it ran again to its end: {done}\n{log}"
    );
    assert_eq!(done["interruptions"], 1, "{done}\n{log}");
    assert!(log.contains("to recovery after their run failed"), "{log}");
}

/// A password in a `postgres://` URL is never printed: not by a worker's log,
/// a put, a copy, a pack, `refs`, nor a wrong store name (the test database
/// trusts local connections, so the password is not checked).
#[test]
fn a_password_in_the_url_is_never_printed() {
    let Some(schema) = Schema::new("secret") else {
        return;
    };
    const SECRET: &str = "zt-not-a-real-password";
    let url = schema.url();
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let Some(at) = url
        .find('@')
        .filter(|at| !url[scheme_end..*at].contains(':'))
    else {
        eprintln!("skipped: {VARIABLE} names no user (or has a password) to add one to");
        return;
    };
    let pg = format!("{}:{SECRET}{}", &url[..at], &url[at..]);
    let dir = tempfile::tempdir().unwrap();
    let mut printed = String::new();
    printed += &ok(&["pg", "init", &pg]);
    let id = put(&pg, &["echo", r#"{"value": 1}"#]);
    let w = start_worker_named(&pg, dir.path(), "secret", &[]).0;
    wait_completed(&pg, id);
    let log = w.log.clone();
    w.stop();
    printed += &std::fs::read_to_string(&log).unwrap();
    let copy = dir.path().join("copy.zdb");
    printed += &ok(&["copy", &pg, copy.to_str().unwrap()]);
    printed += &ok(&["pack", &pg]);
    printed += &ok(&["refs", &pg]);
    // A mistyped scheme is refused, naming the store without its password.
    let mistyped = format!("pgsql{}", &pg["postgres".len()..]);
    let o = zodiac(&["jobs", "status", &mistyped]);
    assert!(!o.status.success(), "{mistyped} is no store kind");
    assert!(stderr(&o).contains("unknown store kind"), "{}", stderr(&o));
    printed += &stderr(&o);
    let o = zodiac(&[
        "jobs", "put", &pg, "echo", "--queue", "q", "--quota", "absent",
    ]);
    assert_eq!(o.status.code(), Some(1));
    printed += &stderr(&o);
    assert!(
        printed.contains(":***@"),
        "the URLs are named, hidden: {printed}"
    );
    assert!(
        !printed.contains(SECRET),
        "the password was printed: {printed}"
    );
}

/// The local cluster serving the test database (`pg_lsclusters`: version and
/// name), if this machine can restart it (`pg_ctlcluster`, as root).
fn local_cluster(base: &str) -> Option<(String, String)> {
    let listed = std::process::Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let port = base
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or("5432")
        .to_string();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() >= 4 && fields[2] == port && fields[3] == "online")
            .then(|| (fields[0].to_string(), fields[1].to_string()))
    })
}

/// PostgreSQL itself restarts (`pg_ctlcluster restart`: every connection
/// dropped, connections refused until it is back) while two worker processes
/// drain jobs from it: every job completes, each increment counted once.
#[test]
fn worker_processes_ride_out_a_postgresql_restart_losing_no_job() {
    let Some(schema) = Schema::alone("restart") else {
        return;
    };
    let Some((version, cluster)) = local_cluster(&schema.base) else {
        eprintln!(
            "skipped the PostgreSQL restart: no local cluster of {} that pg_ctlcluster can restart",
            schema.base
        );
        return;
    };
    let pg = schema.url();
    let dir = tempfile::tempdir().unwrap();
    ok(&["pg", "init", &pg]);
    const JOBS: i64 = 60;
    let jobs: Vec<u64> = (0..JOBS)
        .map(|_| put(&pg, &["sleep", r#"{"ms": 40}"#, "--max-attempts", "1"]))
        .collect();
    let counted: Vec<u64> = (0..JOBS)
        .map(|_| put(&pg, &["incr", r#"{"counter": "restart"}"#]))
        .collect();
    let workers: Vec<Process> = (0..2)
        .map(|i| worker(&pg, dir.path(), &format!("r{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let restarted = std::process::Command::new("pg_ctlcluster")
        .args([version.as_str(), cluster.as_str(), "restart"])
        .status()
        .expect("run pg_ctlcluster");
    assert!(
        restarted.success(),
        "pg_ctlcluster {version} {cluster} restart failed"
    );
    for id in jobs.iter().chain(&counted) {
        let doc = try_wait_completed(&pg, *id).unwrap_or_else(|doc| {
            let logs: String = workers
                .iter()
                .map(|w| std::fs::read_to_string(&w.log).unwrap_or_default())
                .collect();
            panic!("job {id} did not complete after the restart: {doc}\n{logs}")
        });
        assert!(doc["failure"].is_null(), "job {id} failed: {doc}");
    }
    assert_eq!(counter(&pg, "restart"), JOBS, "each increment ran once");
    for w in workers {
        w.stop();
    }
    ok(&["pg", "verify", &pg]);
}
