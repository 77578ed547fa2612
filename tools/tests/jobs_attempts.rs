//! `zodiac jobs put --max-attempts N --backoff DUR` from the shell: a real
//! worker runs a failing job N times, each attempt's error in `jobs show`, and
//! `jobs retry` gives it N fresh attempts.

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Waits until job `id` is COMPLETED with `errors` error entries (30 s at most).
fn wait_completed(store: &str, id: u64, errors: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = show(store, id);
        if doc["status"] == "COMPLETED" && doc["errors"].as_array().unwrap().len() == errors {
            return doc;
        }
        assert!(Instant::now() < deadline, "job {id}: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failing_job_gets_its_attempts_and_a_retry_gives_it_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    let id = put(
        store,
        &[
            "fail",
            r#"{"message": "still broken"}"#,
            "--max-attempts",
            "3",
            "--backoff",
            "100ms",
        ],
    );
    let doc = show(store, id);
    assert_eq!(
        (doc["max_attempts"].as_u64(), doc["backoff"].as_str()),
        (Some(3), Some("100ms"))
    );
    let w = start_worker(store, dir.path(), &[]);
    let doc = wait_completed(store, id, 3);
    assert_eq!(doc["attempts"], 3);
    let attempts: Vec<u64> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(doc["failure"]["message"], "still broken");
    let text = ok(&["jobs", "show", store, &id.to_string()]);
    assert!(text.contains("max_attempts: 3"), "{text}");

    // Retried by the operator (the worker stopped: one writer per data file):
    // three fresh attempts, six errors in all.
    w.stop();
    ok(&["jobs", "retry", store, &id.to_string()]);
    let w = start_worker(store, dir.path(), &[]);
    let doc = wait_completed(store, id, 6);
    assert_eq!(doc["attempts"], 3);
    w.stop();
}

#[test]
fn put_refuses_bad_attempt_options_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    for args in [
        &["jobs", "put", store, "echo", "--max-attempts", "0"][..],
        &["jobs", "put", store, "echo", "--max-attempts", "1001"][..],
        &["jobs", "put", store, "echo", "--backoff", "1s"][..],
        &[
            "jobs",
            "put",
            store,
            "echo",
            "--max-attempts",
            "2",
            "--backoff",
            "exp:1m:1s",
        ][..],
    ] {
        let o = zodiac(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert!(!Path::new(store).exists(), "nothing was written");
}
