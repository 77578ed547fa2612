//! The failed-job workflow and paused queues from the shell: `jobs list --status
//! failed|cancelled|timeout`, the endings in `jobs status`, `jobs retry`,
//! `jobs discard`, bulk `jobs cancel`, `jobs pause` and `resume`, run as a user
//! runs them (the real binary, a real worker, and a real server).

mod common;
use common::*;

use std::time::Duration;

use serde_json::Value;

/// Runs `zodiac ARGS`, expecting exit 1 with nothing on stdout; returns stderr.
fn refused(args: &[&str]) -> String {
    let o = zodiac(args);
    assert_eq!(o.status.code(), Some(1), "zodiac {args:?}: {}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

fn listed(store: &str, status: &str) -> Vec<u64> {
    let out = ok(&["jobs", "list", store, "--status", status, "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids
}

fn status(store: &str) -> Value {
    let doc: Value = serde_json::from_str(&ok(&["jobs", "status", store, "--json"])).unwrap();
    doc["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "")
        .expect("the default queue")
        .clone()
}

#[test]
fn failed_jobs_are_found_counted_retried_and_discarded_on_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb").to_str().unwrap().to_string();
    let failed = put(&store, &["fail", r#"{"message": "boom"}"#]);
    let echo = put(&store, &["echo", r#"{"value": 1}"#]);
    let cancelled = put(&store, &["echo"]);
    assert_eq!(
        ok(&["jobs", "cancel", &store, &cancelled.to_string()]),
        format!("cancelled job {cancelled}\n")
    );
    let late = put(&store, &["echo", "--begin-by", "1ms"]);
    std::thread::sleep(Duration::from_millis(20));
    let w = start_worker(&store, dir.path(), &[]);
    for id in [failed, echo, late] {
        wait_status(&store, id, "COMPLETED");
    }
    w.stop();

    assert_eq!(listed(&store, "failed"), [failed]);
    assert_eq!(listed(&store, "cancelled"), [cancelled]);
    assert_eq!(listed(&store, "timeout"), [late]);
    assert_eq!(listed(&store, "succeeded"), [echo]);
    assert_eq!(listed(&store, "completed"), [failed, echo, cancelled, late]);
    let q = status(&store);
    assert_eq!(q["paused"], false);
    assert_eq!(q["counts"]["completed"], 4);
    assert_eq!(
        q["completed"],
        serde_json::json!({"succeeded": 1, "failed": 1, "cancelled": 1, "timeout": 1})
    );
    let text = ok(&["jobs", "status", &store]);
    assert!(
        text.contains("completed 4 (succeeded 1, failed 1, cancelled 1, timeout 1)"),
        "{text}"
    );

    // A job that did not fail refuses the whole retry: nothing changes.
    let err = refused(&[
        "jobs",
        "retry",
        &store,
        &failed.to_string(),
        &echo.to_string(),
    ]);
    assert!(
        err.contains(&format!("job {echo} cannot be retried: it succeeded")),
        "{err}"
    );
    assert_eq!(listed(&store, "failed"), [failed]);

    let out = ok(&[
        "jobs",
        "retry",
        &store,
        &failed.to_string(),
        &cancelled.to_string(),
    ]);
    assert_eq!(out, format!("retried 2 jobs: {failed} {cancelled}\n"));
    let doc = show(&store, failed);
    assert_eq!(doc["status"], "PENDING");
    assert_eq!(doc["attempts"], 0);
    assert_eq!(doc["errors"][0]["error"], "user error: boom");
    assert!(listed(&store, "failed").is_empty());
    assert_eq!(listed(&store, "pending"), [failed, cancelled]);
    assert_eq!(status(&store)["completed"]["failed"], 0);
    let none = ok(&["jobs", "retry", &store, "--all-failed"]);
    assert_eq!(none, "retried 0 jobs (no failed job is kept)\n");

    // Discard: completed jobs only, all or none.
    let err = refused(&[
        "jobs",
        "discard",
        &store,
        &echo.to_string(),
        &failed.to_string(),
    ]);
    assert!(
        err.contains(&format!("job {failed} cannot be discarded: it is PENDING")),
        "{err}"
    );
    assert_eq!(
        ok(&["jobs", "discard", &store, &echo.to_string()]),
        format!("discarded 1 job: {echo} (the next pack reclaims them)\n")
    );
    assert_eq!(listed(&store, "completed"), [late]);
    // Held by nothing now: pack's garbage collection reclaims it, and only it.
    ok(&["pack", &store]);
    let gone = refused(&["jobs", "show", &store, &echo.to_string()]);
    assert!(gone.contains(&format!("there is no job {echo}")), "{gone}");
    assert_eq!(show(&store, late)["status"], "COMPLETED");
    assert_eq!(show(&store, failed)["status"], "PENDING");
    let err = refused(&["jobs", "retry", &store, "999999"]);
    assert!(err.contains("there is no job 999999"), "{err}");
}

#[test]
fn bulk_cancel_selects_pending_jobs_and_refuses_what_it_cannot_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb").to_str().unwrap().to_string();
    let bulk: Vec<u64> = (0..3)
        .map(|_| put(&store, &["echo", "--queue", "bulk"]))
        .collect();
    let slow = put(&store, &["sleep", "--queue", "bulk"]);
    let other = put(&store, &["echo"]);
    assert_eq!(
        ok(&[
            "jobs",
            "cancel",
            &store,
            "--queue",
            "bulk",
            "--handler",
            "echo"
        ]),
        "cancelled 3 jobs\n"
    );
    assert_eq!(listed(&store, "cancelled"), bulk);
    assert_eq!(
        ok(&["jobs", "cancel", &store, "--status", "pending"]),
        "cancelled 2 jobs\n"
    );
    let mut all = bulk.clone();
    all.extend([slow, other]);
    assert_eq!(listed(&store, "cancelled"), all);

    let err = refused(&["jobs", "cancel", &store, "--status", "active"]);
    assert!(err.contains("only PENDING jobs are selected"), "{err}");
    let err = refused(&["jobs", "cancel", &store]);
    assert!(err.contains("name the jobs to cancel"), "{err}");
    let err = refused(&["jobs", "cancel", &store, &other.to_string()]);
    assert!(
        err.contains(&format!("job {other} cannot be cancelled: it is COMPLETED")),
        "{err}"
    );
    let err = refused(&["jobs", "pause", &store, "nosuch"]);
    assert!(err.contains("there is no queue \"nosuch\""), "{err}");
}

#[test]
fn a_worker_claims_nothing_from_a_paused_queue_and_retried_jobs_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.zdb");
    let (_server, url) = start_server(&path, dir.path());
    let _worker = start_worker(&url, dir.path(), &[]);

    assert_eq!(ok(&["jobs", "pause", &url, ""]), "paused queue (default)\n");
    assert_eq!(
        ok(&["jobs", "pause", &url, ""]),
        "queue (default) was already paused\n"
    );
    assert_eq!(status(&url)["paused"], true);
    assert!(ok(&["jobs", "status", &url]).contains("queue (default) PAUSED:"));
    let echo = put(&url, &["echo", r#"{"value": "hello"}"#]);
    let cancelled = put(&url, &["echo", r#"{"value": "again"}"#]);
    // Several polls of the worker (every 100 ms): nothing is claimed.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(show(&url, echo)["status"], "PENDING");
    ok(&["jobs", "cancel", &url, &cancelled.to_string()]);

    assert_eq!(
        ok(&["jobs", "resume", &url, ""]),
        "resumed queue (default)\n"
    );
    assert_eq!(status(&url)["paused"], false);
    assert_eq!(wait_status(&url, echo, "COMPLETED")["result"], "hello");

    // A cancelled job retried runs to its value; a failure retried fails again,
    // with its first failure in its history and a fresh attempt count.
    ok(&["jobs", "retry", &url, &cancelled.to_string()]);
    let done = wait_status(&url, cancelled, "COMPLETED");
    assert_eq!(done["result"], "again");
    assert_eq!(done["attempts"], 1);
    let failed = put(&url, &["fail", r#"{"message": "boom"}"#]);
    wait_status(&url, failed, "COMPLETED");
    assert_eq!(
        ok(&["jobs", "retry", &url, "--all-failed"]),
        format!("retried 1 job: {failed}\n")
    );
    let again = wait_status(&url, failed, "COMPLETED");
    assert_eq!(again["attempts"], 1);
    assert_eq!(again["errors"].as_array().unwrap().len(), 2, "{again}");
    assert_eq!(again["failure"]["message"], "boom");
}
