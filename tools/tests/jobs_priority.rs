//! `zodiac jobs put --priority N` from the shell: pending jobs list in claim
//! order (the highest priority first), a real worker runs them in that order,
//! and a priority past 9 is refused before anything is written.

mod common;
use common::*;

use std::path::Path;

use serde_json::Value;

#[test]
fn jobs_are_listed_and_run_highest_priority_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    let mut ids = Vec::new();
    for priority in ["9", "5", "0", "5"] {
        ids.push(put(
            store,
            &["echo", r#"{"value": 1}"#, "--priority", priority],
        ));
    }
    let plain = put(store, &["echo", r#"{"value": 2}"#]);
    assert_eq!(show(store, ids[0])["priority"], 9);
    assert_eq!(show(store, plain)["priority"], 0);
    let rows: Vec<Value> = serde_json::from_str(&ok(&[
        "jobs", "list", store, "--status", "pending", "--json",
    ]))
    .unwrap();
    let listed: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(listed, [ids[2], plain, ids[1], ids[3], ids[0]]);

    // One worker running one job at a time starts them in that order.
    let w = start_worker(store, dir.path(), &["--size", "1"]);
    let starts: Vec<String> = listed
        .iter()
        .map(|id| {
            wait_completed(store, *id)["active_start"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "started in claim order");
    w.stop();
}

#[test]
fn a_priority_past_9_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    let o = zodiac(&["jobs", "put", store, "echo", "--priority", "10"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!Path::new(store).exists());
}
