//! `zodiac jobs quota` and `jobs put --quota` from the shell: a quota of size 1
//! keeps the jobs naming it from running at once, though the worker has room for
//! three; `jobs status` shows it; a put naming a missing quota is refused. With
//! `--every-job` it is the queue's global concurrency: two worker processes over
//! a server run the queue's jobs, put without --quota, one at a time.

mod common;
use common::*;

/// The jobs `ids` of `store` ran one at a time: no two active intervals overlap.
fn assert_one_at_a_time(store: &str, ids: &[u64]) {
    let mut runs: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            let job = show(store, *id);
            let time = |k: &str| job[k].as_str().unwrap().to_string();
            (time("active_start"), time("active_end"))
        })
        .collect();
    // RFC 3339 UTC times of one format compare as text.
    runs.sort();
    for pair in runs.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlapped: {runs:?}");
    }
}

#[test]
fn a_quota_of_one_runs_its_jobs_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    let o = zodiac(&[
        "jobs",
        "put",
        store,
        "sleep",
        r#"{"ms": 1}"#,
        "--quota",
        "one",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("zodiac jobs quota"), "{}", stderr(&o));
    ok(&["jobs", "quota", store, "", "one", "1"]);
    let ids: Vec<u64> = (0..3)
        .map(|_| put(store, &["sleep", r#"{"ms": 300}"#, "--quota", "one"]))
        .collect();
    let status = ok(&["jobs", "status", store]);
    assert!(status.contains("quota one: 0/1 held"), "{status}");
    let w = start_worker(store, dir.path(), &["--size", "3"]);
    for id in &ids {
        wait_completed(store, *id);
    }
    w.stop();
    assert_one_at_a_time(store, &ids);
    let status = ok(&["jobs", "status", store, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["queues"][0]["quotas"]["one"]["held"], 0, "{doc}");
    assert_eq!(doc["queues"][0]["quotas"]["one"]["size"], 1, "{doc}");
}

#[test]
fn an_every_job_quota_is_the_queues_concurrency_across_worker_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("jobs.zdb"), dir.path());
    let said = ok(&["jobs", "quota", &url, "", "global", "1", "--every-job"]);
    assert!(said.contains("every job of the queue"), "{said}");
    let ids: Vec<u64> = (0..4)
        .map(|_| put(&url, &["sleep", r#"{"ms": 250}"#]))
        .collect();
    let workers: Vec<Process> = (0..2)
        .map(|i| start_worker_named(&url, dir.path(), &format!("w{i}"), &["--size", "3"]).0)
        .collect();
    for id in &ids {
        wait_completed(&url, *id);
    }
    assert_one_at_a_time(&url, &ids);
    let doc: serde_json::Value =
        serde_json::from_str(&ok(&["jobs", "status", &url, "--json"])).unwrap();
    let global = &doc["queues"][0]["quotas"]["global"];
    assert_eq!(
        (&global["held"], &global["every_job"]),
        (&serde_json::json!(0), &serde_json::json!(true)),
        "{doc}"
    );
    assert!(ok(&["jobs", "status", &url]).contains("quota global: 0/1 held (every job)"));
    // Undone: two jobs run at once again on a worker with room for three.
    ok(&["jobs", "quota", &url, "", "global", "1", "--named-only"]);
    let pair: Vec<u64> = (0..2)
        .map(|_| put(&url, &["sleep", r#"{"ms": 800}"#]))
        .collect();
    for id in &pair {
        wait_completed(&url, *id);
    }
    let runs: Vec<(String, String)> = pair
        .iter()
        .map(|id| {
            let job = show(&url, *id);
            let time = |k: &str| job[k].as_str().unwrap().to_string();
            (time("active_start"), time("active_end"))
        })
        .collect();
    assert!(
        runs[0].0 < runs[1].1 && runs[1].0 < runs[0].1,
        "the two jobs overlapped once the quota counted only its own: {runs:?}"
    );
    for w in workers {
        w.stop();
    }
}
