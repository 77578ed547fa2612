//! `zodiac jobs quota` and `jobs put --quota` from the shell: a quota of size 1
//! keeps the jobs naming it from running at once, though the worker has room for
//! three; `jobs status` shows it; a put naming a missing quota is refused.

mod common;
use common::*;

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
    let status = ok(&["jobs", "status", store, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["queues"][0]["quotas"]["one"]["held"], 0, "{doc}");
    assert_eq!(doc["queues"][0]["quotas"]["one"]["size"], 1, "{doc}");
}
