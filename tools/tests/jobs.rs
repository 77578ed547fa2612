//! `zodiac jobs` and `zodiac worker`, run as a user runs them: on an embedded data
//! file and through `zodiac server`, checking outputs, JSON shapes, exit codes and
//! the errors for bad input.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn data_file(dir: &tempfile::TempDir) -> (PathBuf, String) {
    let path = dir.path().join("jobs.zdb");
    let store = path.to_str().unwrap().to_string();
    (path, store)
}

#[test]
fn put_list_show_status_and_cancel_on_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let echo = put(&store, &["echo", r#"{"value": [1, "two"]}"#]);
    let later = put(
        &store,
        &[
            "sleep",
            r#"{"ms": 5}"#,
            "--queue",
            "slow",
            "--begin-after",
            "+1h",
            "--begin-by",
            "30s",
            "--retry",
            "never",
        ],
    );

    let listed: Value = serde_json::from_str(&ok(&["jobs", "list", &store, "--json"])).unwrap();
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], echo);
    assert_eq!(listed[0]["status"], "PENDING");
    assert_eq!(listed[0]["handler"], "echo");
    assert_eq!(listed[1]["queue"], "slow");
    let only: Value = serde_json::from_str(&ok(&[
        "jobs", "list", &store, "--queue", "slow", "--status", "pending", "--json",
    ]))
    .unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert!(ok(&["jobs", "list", &store]).contains("echo"));

    let doc = show(&store, later);
    for key in [
        "id",
        "handler",
        "args",
        "status",
        "result",
        "failure",
        "begin_after",
        "begin_by_ms",
        "active_start",
        "active_end",
        "attempts",
        "errors",
        "retry_policy",
        "callbacks",
    ] {
        assert!(doc.get(key).is_some(), "show --json lacks {key}: {doc}");
    }
    assert_eq!(doc["args"], serde_json::json!({"ms": 5}));
    assert_eq!(doc["retry_policy"], "never");
    assert_eq!(doc["begin_by_ms"], 30_000);
    assert_eq!(doc["location"]["queue"], "slow");

    let status: Value = serde_json::from_str(&ok(&["jobs", "status", &store, "--json"])).unwrap();
    let queues = status["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    assert!(queues.iter().all(|q| q["counts"]["pending"] == 1));
    assert!(ok(&["jobs", "status", &store]).contains("pending 1"));

    assert_eq!(
        ok(&["jobs", "cancel", &store, &later.to_string()]).trim(),
        format!("cancelled job {later}")
    );
    let doc = show(&store, later);
    assert_eq!(doc["status"], "COMPLETED");
    assert_eq!(doc["failure"]["kind"], "cancelled");
    let again = zodiac(&["jobs", "cancel", &store, &later.to_string()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(&format!(
            "job {later} cannot be cancelled: it is COMPLETED; only a job that has not started"
        )),
        "{}",
        stderr(&again)
    );
}

#[test]
fn bad_input_gets_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    put(&store, &["echo"]);

    let bad_json = zodiac(&["jobs", "put", &store, "echo", "{nope"]);
    assert_eq!(bad_json.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&bad_json).contains("not JSON"),
        "{}",
        stderr(&bad_json)
    );
    let not_object = zodiac(&["jobs", "put", &store, "echo", "[1]"]);
    assert_eq!(not_object.status.code(), Some(2));
    assert!(stderr(&not_object).contains("must be a JSON object"));
    let bad_retry = zodiac(&["jobs", "put", &store, "echo", "--retry", "sometimes"]);
    assert_eq!(bad_retry.status.code(), Some(2));
    let bad_status = zodiac(&["jobs", "list", &store, "--status", "sleeping"]);
    assert_eq!(bad_status.status.code(), Some(2));
    assert!(stderr(&bad_status).contains("is not a status"));

    let missing = zodiac(&["jobs", "show", &store, "999999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        "error: there is no job 999999 (see `zodiac jobs list`)"
    );
    let root = zodiac(&["jobs", "show", &store, "0"]);
    assert!(
        stderr(&root).contains("object 0 is not a job"),
        "{}",
        stderr(&root)
    );

    let nowhere = dir.path().join("absent.zdb");
    let absent = zodiac(&["jobs", "list", nowhere.to_str().unwrap()]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(
        stderr(&absent).contains("no such data file"),
        "{}",
        stderr(&absent)
    );

    std::fs::write(
        dir.path().join("garbage.zdb"),
        b"this is not a data file at all",
    )
    .unwrap();
    let garbage = zodiac(&[
        "jobs",
        "list",
        dir.path().join("garbage.zdb").to_str().unwrap(),
    ]);
    assert_eq!(garbage.status.code(), Some(1));
    assert!(
        stderr(&garbage).starts_with("error: "),
        "{}",
        stderr(&garbage)
    );
    assert_eq!(stderr(&garbage).lines().count(), 1, "{}", stderr(&garbage));

    let started = Instant::now();
    let down = zodiac(&["jobs", "list", "tcp://127.0.0.1:1"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        stderr(&down).contains("is `zodiac server` running there?"),
        "{}",
        stderr(&down)
    );
    for (store, expected) in [
        ("tcp://localhost", "a server store needs a port"),
        ("http://example.com/db", "unknown store kind \"http\""),
        (
            "/no/such/dir/jobs.zdb",
            "the directory /no/such/dir does not exist",
        ),
    ] {
        let out = zodiac(&["jobs", "put", store, "echo"]);
        assert_eq!(out.status.code(), Some(1), "{store}");
        assert!(stderr(&out).contains(expected), "{store}: {}", stderr(&out));
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gives up after a few seconds"
    );
}

#[test]
fn a_worker_on_a_data_file_runs_the_built_in_handlers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let echo = put(&store, &["echo", r#"{"value": {"x": 1}}"#]);
    let fail = put(
        &store,
        &["fail", r#"{"message": "as planned"}"#, "--retry", "never"],
    );
    let incr1 = put(&store, &["incr", r#"{"counter": "hits", "by": 5}"#]);
    let incr2 = put(&store, &["incr", r#"{"counter": "hits"}"#]);
    let shell = put(&store, &["shell", r#"{"cmd": "echo hi"}"#]);
    let missing = put(&store, &["no-such-handler"]);

    let (mut w, ready) = start_worker_named(&store, dir.path(), "worker", &[]);
    let uuid = ready
        .trim_start_matches("worker ")
        .trim_end_matches(" ready")
        .to_string();
    assert_eq!(uuid.len(), 36, "a UUID: {uuid}");

    assert_eq!(
        wait_completed(&store, echo)["result"],
        serde_json::json!({"x": 1})
    );
    let failed = wait_completed(&store, fail);
    assert_eq!(failed["failure"]["kind"], "user error");
    assert_eq!(failed["failure"]["message"], "as planned");
    wait_completed(&store, incr1);
    let second = wait_completed(&store, incr2);
    let first = show(&store, incr1);
    let mut values = [
        first["result"].as_i64().unwrap(),
        second["result"].as_i64().unwrap(),
    ];
    values.sort();
    assert!(
        values == [5, 6] || values == [1, 6],
        "increments add up: {values:?}"
    );
    let refused = wait_completed(&store, shell);
    assert_eq!(
        refused["failure"]["kind"], "unknown handler",
        "shell needs --allow-shell"
    );
    assert_eq!(
        wait_completed(&store, missing)["failure"]["kind"],
        "unknown handler"
    );

    let status: Value = serde_json::from_str(&ok(&["jobs", "status", &store, "--json"])).unwrap();
    let d = &status["queues"][0]["dispatchers"][0];
    assert_eq!(d["uuid"], uuid);
    assert_eq!(d["alive"], true);
    assert_eq!(d["agents"][0]["size"], 3);
    // Per handler: completed jobs by ending and run-time percentiles.
    let handlers = &status["queues"][0]["handlers"];
    assert_eq!(handlers["incr"]["completed"]["succeeded"], 2, "{handlers}");
    assert_eq!(handlers["incr"]["completed"]["failed"], 0, "{handlers}");
    assert_eq!(handlers["incr"]["runs"], 2, "{handlers}");
    let p50 = handlers["incr"]["run_ms_p50"].as_f64().unwrap();
    let p99 = handlers["incr"]["run_ms_p99"].as_f64().unwrap();
    assert!(0.0 <= p50 && p50 <= p99, "{handlers}");
    assert_eq!(handlers["fail"]["completed"]["failed"], 1, "{handlers}");
    assert_eq!(handlers["echo"]["completed"]["succeeded"], 1, "{handlers}");
    assert_eq!(status["queues"][0]["completed"]["succeeded"], 3, "{status}");
    let text = ok(&["jobs", "status", &store]);
    assert!(
        text.contains("  handler incr: succeeded 2; run p50 "),
        "{text}"
    );

    // A second worker on the same UUID file refuses to start.
    let twin = zodiac(&[
        "worker",
        &store,
        "--uuid-file",
        dir.path().join("worker.uuid").to_str().unwrap(),
    ]);
    assert_eq!(twin.status.code(), Some(1));
    assert!(
        stderr(&twin).contains("already activated by another process"),
        "{}",
        stderr(&twin)
    );

    w.signal("-TERM");
    assert!(w.wait(Duration::from_secs(20)), "a graceful stop exits 0");
    let status: Value = serde_json::from_str(&ok(&["jobs", "status", &store, "--json"])).unwrap();
    assert_eq!(status["queues"][0]["dispatchers"][0]["state"], "inactive");
}

/// `--batch`: the worker claims, runs and completes 4 jobs per commit; each job
/// ends as it would alone, whatever its neighbours in the batch do.
#[test]
fn a_worker_running_batches_gives_each_job_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let jobs = [
        put(&store, &["incr", r#"{"counter": "hits"}"#]),
        put(
            &store,
            &["fail", r#"{"message": "as planned"}"#, "--retry", "never"],
        ),
        put(&store, &["incr", r#"{"counter": "hits"}"#]),
        put(&store, &["no-such-handler"]),
        put(&store, &["echo", r#"{"value": 7}"#]),
        put(&store, &["incr", r#"{"counter": "hits"}"#]),
    ];
    let mut w = start_worker(&store, dir.path(), &["--size", "4", "--batch", "4"]);
    let done: Vec<Value> = jobs.iter().map(|id| wait_completed(&store, *id)).collect();
    let mut hits: Vec<i64> = [0, 2, 5]
        .iter()
        .map(|&i| done[i]["result"].as_i64().unwrap())
        .collect();
    hits.sort();
    assert_eq!(hits, [1, 2, 3], "each increment once");
    assert_eq!(done[1]["failure"]["kind"], "user error");
    assert_eq!(done[1]["failure"]["message"], "as planned");
    assert_eq!(done[3]["failure"]["kind"], "unknown handler");
    assert_eq!(done[4]["result"], serde_json::json!(7));
    w.signal("-TERM");
    assert!(w.wait(Duration::from_secs(20)), "a graceful stop exits 0");

    let refused = zodiac(&["worker", &store, "--batch", "0"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}

#[test]
fn the_shell_handler_runs_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let id = put(
        &store,
        &["shell", r#"{"cmd": "echo out; echo err >&2; exit 4"}"#],
    );
    let mut w = start_worker(&store, dir.path(), &["--allow-shell"]);
    let doc = wait_completed(&store, id);
    assert_eq!(doc["result"]["exit"], 4);
    assert_eq!(doc["result"]["stdout"], "out\n");
    assert_eq!(doc["result"]["stderr"], "err\n");
    w.signal("-INT");
    assert!(w.wait(Duration::from_secs(20)));
}

#[test]
fn put_wait_through_a_server_reports_the_outcome_in_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = data_file(&dir);
    let (_server, url) = start_server(&path, dir.path());
    let _worker = start_worker(&url, dir.path(), &["--queue", "", "--queue", "other"]);

    let done = zodiac(&[
        "jobs",
        "put",
        &url,
        "echo",
        r#"{"value": "hello"}"#,
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let lines: Vec<_> = stdout(&done).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "the id, then the result: {lines:?}");
    assert_eq!(lines[1], "\"hello\"");

    let failed = zodiac(&[
        "jobs",
        "put",
        &url,
        "fail",
        r#"{"message": "nope"}"#,
        "--queue",
        "other",
        "--wait",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stdout(&failed).contains("failed: user error: nope"),
        "{}",
        stdout(&failed)
    );

    let slow = zodiac(&[
        "jobs",
        "put",
        &url,
        "sleep",
        r#"{"ms": 3000}"#,
        "--wait",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(slow.status.code(), Some(3));
    assert!(
        stderr(&slow).contains("did not complete within 200 ms"),
        "{}",
        stderr(&slow)
    );

    // The server holds the file: an embedded writer is refused, naming the holder.
    let locked = zodiac(&["jobs", "put", path.to_str().unwrap(), "echo"]);
    assert_eq!(locked.status.code(), Some(1));
    assert!(
        stderr(&locked).contains("locked by process"),
        "{}",
        stderr(&locked)
    );

    let counted = zodiac(&[
        "jobs",
        "put",
        &url,
        "incr",
        r#"{"counter": "c", "by": 0}"#,
        "--wait",
    ]);
    assert_eq!(stdout(&counted).lines().nth(1), Some("0"));
}

#[test]
fn put_wait_on_a_data_file_lets_a_worker_start_later() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    put(&store, &["echo"]); // creates the file
    let waiting = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args([
            "jobs",
            "put",
            &store,
            "echo",
            r#"{"value": 7}"#,
            "--wait",
            "--timeout",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it printed the job's id, the waiting put released the writer lock: a
    // worker can take the file.
    let mut waiting = waiting;
    let mut out = BufReader::new(waiting.stdout.take().unwrap());
    let mut id = String::new();
    out.read_line(&mut id).unwrap();
    assert!(id.trim().parse::<u64>().is_ok(), "{id:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let w = loop {
        let uuid = dir.path().join("worker.uuid");
        let log = dir.path().join("late-worker.log");
        let (p, line) = Process::start(
            &[
                "worker",
                &store,
                "--uuid-file",
                uuid.to_str().unwrap(),
                "--poll-interval",
                "100ms",
            ],
            &log,
        );
        if line.ends_with(" ready") {
            break p;
        }
        drop(p);
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut result = String::new();
    out.read_line(&mut result).unwrap();
    let status = waiting.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(result.trim(), "7");
    drop(w);
}

/// A dispatcher that stopped while callbacks of its jobs still ran is shown as
/// `STOPPED`, without the epoch that marks it as a last ping.
#[test]
fn status_shows_a_dispatcher_that_left_its_jobs_to_its_siblings() {
    use std::sync::Arc;
    use zodiac_async::{Dispatchers, Queue, Timestamp};
    use zodiac_objects::Database;
    use zodiac_storage::{FileOptions, FileStorage};

    let dir = tempfile::tempdir().unwrap();
    let (path, store) = data_file(&dir);
    put(&store, &["echo", r#"{"value": 1}"#]);
    {
        let storage = FileStorage::open(&path, FileOptions::new()).unwrap();
        let db = Database::open(Arc::new(storage)).unwrap();
        zodiac_async::transact(&db, |tx| {
            let q = Queue::get_or_create(tx, "")?;
            let now = Timestamp::now();
            Dispatchers::activate(tx, &q, "stopper", now, Duration::from_secs(60))?;
            Dispatchers::leave_to_siblings(tx, &q, "stopper")
        })
        .unwrap();
    }
    let status: Value = serde_json::from_str(&ok(&["jobs", "status", &store, "--json"])).unwrap();
    let d = &status["queues"][0]["dispatchers"][0];
    assert_eq!(d["uuid"], "stopper");
    assert_eq!(d["alive"], false);
    assert_eq!(d["state"], "STOPPED");
    assert_eq!(d["last_ping"], Value::Null);
    let text = ok(&["jobs", "status", &store]);
    assert!(
        text.contains("dispatcher stopper STOPPED last ping none since its stop"),
        "{text}"
    );
}

/// The story: `zodiac pack tcp://…` (GC is its default) while a `sleep` job was
/// ACTIVE in a worker reported "1 unreachable objects removed"; then `zodiac jobs
/// status` failed with "object 0x21 does not exist in this database" and `jobs
/// show` said the job did not exist: the agent kept its jobs as plain numbers,
/// invisible to GC.
#[test]
fn pack_through_a_server_keeps_the_job_a_worker_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = data_file(&dir);
    let (server, url) = start_server(&path, dir.path());
    let _worker = start_worker(&url, dir.path(), &[]);
    let id = put(&url, &["sleep", r#"{"ms": 2000}"#]);
    wait_status(&url, id, "ACTIVE");

    let packed = ok(&["pack", &url]);
    assert!(packed.contains("unreachable objects removed"), "{packed}");
    // The server's log names the pack time as a time, not as u64::MAX.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("packing to now (gc: true)"), "{log}");
    let status = zodiac(&["jobs", "status", &url, "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["queues"][0]["counts"]["active"], 1, "{status}");
    assert_eq!(show(&url, id)["status"], "ACTIVE");
    let done = wait_completed(&url, id);
    assert_eq!(done["failure"], Value::Null, "{done}");
    let refs = zodiac(&["refs", path.to_str().unwrap()]);
    // The server holds the file; `refs` reads it read-only beside it.
    assert!(refs.status.success(), "{}{}", stdout(&refs), stderr(&refs));
}

/// The story: a worker holding 4 jobs was killed with `kill -9`, the file was
/// packed offline, and the restarted worker (same UUID file) failed every poll
/// with "object 0x8 does not exist", forever: the pack had deleted the jobs its
/// agent held.
#[test]
fn offline_pack_after_kill9_keeps_the_jobs_the_restarted_worker_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let ids: Vec<u64> = (0..4)
        .map(|_| put(&store, &["sleep", r#"{"ms": 4000}"#]))
        .collect();
    let mut first = start_worker(&store, dir.path(), &["--size", "4"]);
    for id in &ids {
        wait_status(&store, *id, "ACTIVE");
    }
    first.signal("-KILL");
    first.wait(Duration::from_secs(10));
    drop(first);

    let packed = ok(&["pack", &store]);
    assert!(packed.contains("unreachable objects removed"), "{packed}");
    let refs = zodiac(&["refs", &store]);
    assert_eq!(refs.status.code(), Some(0), "{}", stdout(&refs));
    for id in &ids {
        assert_eq!(
            show(&store, *id)["status"],
            "ACTIVE",
            "held by the dead worker"
        );
    }
    let _second = start_worker(&store, dir.path(), &["--size", "4"]);
    for id in &ids {
        // Recovered at once (same UUID), retried by the default policy, run again.
        let done = wait_completed(&store, *id);
        assert_eq!(done["failure"], Value::Null, "{done}");
        assert_eq!(done["attempts"], 2, "{done}");
    }
    let status: Value = serde_json::from_str(&ok(&["jobs", "status", &store, "--json"])).unwrap();
    assert_eq!(status["queues"][0]["counts"]["completed"], 4, "{status}");
}

/// The story: a cancelled job and one whose `begin_by` passed before any claim
/// were held by nothing: `jobs list` and `jobs status` left them out and the next
/// pack deleted them.
#[test]
fn cancelled_and_expired_jobs_are_listed_counted_and_survive_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let cancelled = put(&store, &["echo", "--begin-after", "+1h"]);
    let expired = put(
        &store,
        &[
            "echo",
            "--begin-after",
            "2020-01-01T00:00:00Z",
            "--begin-by",
            "1s",
        ],
    );
    ok(&["jobs", "cancel", &store, &cancelled.to_string()]);
    let mut w = start_worker(&store, dir.path(), &[]);
    wait_status(&store, expired, "COMPLETED");
    w.signal("-TERM");
    assert!(w.wait(Duration::from_secs(10)));

    ok(&["pack", &store]);
    assert_eq!(show(&store, cancelled)["failure"]["kind"], "cancelled");
    assert_eq!(show(&store, expired)["failure"]["kind"], "timeout");
    let listed: Value = serde_json::from_str(&ok(&["jobs", "list", &store, "--json"])).unwrap();
    let mut ids: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [cancelled, expired], "{listed}");
    let status: Value = serde_json::from_str(&ok(&["jobs", "status", &store, "--json"])).unwrap();
    assert_eq!(status["queues"][0]["counts"]["completed"], 2, "{status}");
}

/// The story: after GC deleted the jobs an agent held, `zodiac refs` called the
/// file healthy: it read only reference lists, and the agent named its jobs as
/// plain numbers. A record written that way (as the agents of earlier versions
/// were) is reported before the pack (its link is invisible to GC) and after it
/// (the id dangles), and `refs` exits 1.
#[test]
fn refs_reports_ids_outside_reference_lists_and_those_gc_deleted() {
    use std::sync::Arc;
    use zodiac_objects::{Database, PRef, record};
    use zodiac_storage::{FileOptions, FileStorage, Storage, Tid, TransactionMeta};

    let dir = tempfile::tempdir().unwrap();
    let (path, store) = data_file(&dir);
    let job = put(&store, &["echo", "--queue", "elsewhere"]);
    ok(&["jobs", "cancel", &store, &job.to_string()]);
    let clean = zodiac(&["refs", &store]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    // An agent as earlier versions stored it: its held jobs are numbers, not in
    // the reference list (which names only its completed tree, here the root).
    let agent = {
        let storage = FileStorage::open(&path, FileOptions::new()).unwrap();
        let oid = storage.new_oid().unwrap();
        let payload = postcard::to_stdvec(&("main", 3u32, vec![job], 0u64)).unwrap();
        let data = record::encode("zodiac.async.Agent", &[zodiac_storage::Oid(0)], &payload);
        let mut t = storage.begin(TransactionMeta::default()).unwrap();
        t.store(oid, Tid::ZERO, data).unwrap();
        t.finish().unwrap();
        let db = Database::open(Arc::new(storage) as Arc<dyn Storage>).unwrap();
        zodiac_async::transact(&db, |tx| {
            Ok(tx.set_root_entry("old-agent", PRef::<()>::from_oid(oid))?)
        })
        .unwrap();
        oid
    };
    // Unreachable except through the old agent's number, the cancelled job is
    // dropped from its queue's ended jobs to make the agent its only holder.
    {
        let storage = FileStorage::open(&path, FileOptions::new()).unwrap();
        let db = Database::open(Arc::new(storage) as Arc<dyn Storage>).unwrap();
        zodiac_async::transact(&db, |tx| {
            let q = zodiac_async::Queue::get(tx, "elsewhere")?.unwrap();
            let far = zodiac_async::Timestamp::from_micros(u64::MAX);
            zodiac_async::ended::drop_completed_before(tx, &q, far, 10).map(|_| ())
        })
        .unwrap();
    }
    let before = zodiac(&["refs", &store]);
    assert_eq!(before.status.code(), Some(1), "{}", stdout(&before));
    let text = stdout(&before);
    let named = format!(
        "object {agent} (zodiac.async.Agent) names object {:#x}",
        job
    );
    assert!(
        text.contains(&format!("{named} outside its reference list")),
        "{text}"
    );

    ok(&["pack", &store]);
    let after = zodiac(&["refs", &store]);
    assert_eq!(after.status.code(), Some(1), "{}", stdout(&after));
    let text = stdout(&after);
    assert!(
        text.contains(&format!("{named}, which does not exist")),
        "{text}"
    );
    assert!(text.contains("1 ids outside reference lists"), "{text}");
}

/// A cancel is an operator's decision: `jobs cancel` used to log it at ERROR
/// ("job 0x1f (sleep) failed: cancelled: ..."), and with the id in hex where the
/// command line prints it in decimal. Now it is an INFO line naming the id as
/// `jobs put` printed it.
#[test]
fn cancel_logs_at_info_with_the_job_id_the_command_line_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let id = put(&store, &["sleep", "--begin-after", "+1h"]);
    let out = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["jobs", "cancel", &store, &id.to_string()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let line = log
        .lines()
        .find(|l| l.contains(&format!("job {id} (sleep) cancelled")))
        .unwrap_or_else(|| panic!("no cancel line naming job {id}: {log}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// The worker's log names a job by the id `jobs put` printed (decimal), so the log
/// can be searched for it; it used to print `0x1f` for job 31.
#[test]
fn the_workers_log_names_jobs_by_their_decimal_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = data_file(&dir);
    let ids: Vec<u64> = (0..12).map(|_| put(&store, &["echo"])).collect();
    let mut w = start_worker(&store, dir.path(), &[]);
    let last = *ids.last().unwrap();
    assert!(
        last >= 10,
        "an id whose hex and decimal forms differ: {last}"
    );
    wait_completed(&store, last);
    w.signal("-TERM");
    assert!(w.wait(Duration::from_secs(10)));
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(
        log.contains(&format!("job {last} (echo) completed on attempt 1")),
        "{log}"
    );
    assert!(!log.contains("job 0x"), "{log}");
}

/// A worker pointed at a `--read-only` server printed "ready" and then failed every
/// poll forever; it now refuses at start, saying why.
#[test]
fn a_worker_refuses_a_read_only_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = data_file(&dir);
    put(&store, &["echo"]);
    let (_server, line) = Process::start(
        &[
            "server",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--read-only",
        ],
        &dir.path().join("server.log"),
    );
    let url = format!("tcp://{}", line.strip_prefix("listening on ").unwrap());
    let uuid = dir.path().join("worker.uuid");
    let log = dir.path().join("worker.log");
    // Bounded: the worker that polled a read-only server forever fails the wait.
    let (mut w, first) = Process::start(
        &["worker", &url, "--uuid-file", uuid.to_str().unwrap()],
        &log,
    );
    assert_eq!(first, "", "the worker printed {first:?}");
    assert!(!w.wait(Duration::from_secs(20)), "the worker succeeded");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("is served read-only") && err.contains("--read-only"),
        "{err}"
    );
}
