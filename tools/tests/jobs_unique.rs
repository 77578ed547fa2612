//! `zodiac jobs put --unique KEY [--unique-for DUR]` from the shell: producer
//! processes racing over a real `zodiac server` on 127.0.0.1 queue one job per
//! key and all print its id; a completed job frees its key unless within its
//! period.

mod common;
use common::*;

use std::process::{Command, Stdio};

use serde_json::Value;

fn pending(store: &str) -> Vec<u64> {
    let rows: Vec<Value> = serde_json::from_str(&ok(&[
        "jobs", "list", store, "--status", "pending", "--json",
    ]))
    .unwrap();
    rows.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

#[test]
fn racing_producer_processes_over_a_server_queue_one_job_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.zdb");
    let (server, url) = start_server(&path, dir.path());
    // 12 producer processes at once, two keys between them.
    let producers: Vec<_> = (0..12)
        .map(|i| {
            let key = format!("nightly-{}", i % 2);
            Command::new(env!("CARGO_BIN_EXE_zodiac"))
                .args([
                    "jobs",
                    "put",
                    &url,
                    "echo",
                    r#"{"value": 1}"#,
                    "--unique",
                    &key,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut existing = 0;
    for (i, p) in producers.into_iter().enumerate() {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        ids[i % 2].push(stdout(&o).trim().parse().unwrap());
        if stderr(&o).contains("already holds unique key") {
            existing += 1;
        }
    }
    for key_ids in &ids {
        assert!(key_ids.iter().all(|id| *id == key_ids[0]), "{key_ids:?}");
    }
    assert_ne!(ids[0][0], ids[1][0]);
    assert_eq!(
        existing, 10,
        "all but the first put of each key found it held"
    );
    let mut queued = pending(&url);
    queued.sort();
    let mut want = vec![ids[0][0], ids[1][0]];
    want.sort();
    assert_eq!(queued, want, "one job per key");
    assert_eq!(show(&url, ids[0][0])["unique_key"], "nightly-0");
    server.stop();
}

#[test]
fn a_completed_job_frees_its_key_unless_within_its_period() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    let plain = put(store, &["echo", "{}", "--unique", "plain"]);
    let held = put(
        store,
        &["echo", "{}", "--unique", "held", "--unique-for", "1h"],
    );
    assert_eq!(put(store, &["echo", "{}", "--unique", "plain"]), plain);
    let w = start_worker(store, dir.path(), &[]);
    for id in [plain, held] {
        wait_completed(store, id);
    }
    w.stop();
    assert_ne!(put(store, &["echo", "{}", "--unique", "plain"]), plain);
    assert_eq!(
        put(
            store,
            &["echo", "{}", "--unique", "held", "--unique-for", "1h"]
        ),
        held
    );
    let o = zodiac(&["jobs", "put", store, "echo", "--unique-for", "1h"]);
    assert_eq!(o.status.code(), Some(2), "--unique-for needs --unique");
}
