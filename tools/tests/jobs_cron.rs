//! `zodiac jobs cron` from the shell: three worker processes over a real
//! `zodiac server` on 127.0.0.1 put one job per tick of an every-second
//! schedule, also while one of them is killed with SIGKILL; a removed schedule
//! puts no more; bad expressions are refused before the store is touched.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

fn echo_jobs(store: &str) -> Vec<u64> {
    let rows: Vec<Value> = serde_json::from_str(&ok(&[
        "jobs",
        "list",
        store,
        "--handler",
        "echo",
        "--limit",
        "10000",
        "--json",
    ]))
    .unwrap();
    rows.iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

fn schedule_row(store: &str) -> Value {
    let rows: Vec<Value> =
        serde_json::from_str(&ok(&["jobs", "cron", "list", store, "--json"])).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

/// `zodiac jobs cron add STORE s '@hourly' echo --replace ARGS`.
fn replace_hourly(store: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "jobs",
        "cron",
        "add",
        store,
        "s",
        "@hourly",
        "echo",
        "--replace",
    ];
    all.extend_from_slice(args);
    zodiac(&all)
}

/// Seconds since the epoch of an RFC 3339 UTC time ending in `.000000Z`.
fn whole_second(text: &str) -> i64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(t.nanosecond(), 0, "ticks are whole seconds: {text}");
    t.unix_timestamp()
}

#[test]
fn worker_processes_put_one_job_per_tick_while_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.zdb");
    let (server, url) = start_server(&path, dir.path());
    let added = ok(&[
        "jobs",
        "cron",
        "add",
        &url,
        "tick",
        "* * * * * *",
        "echo",
        r#"{"value": 1}"#,
    ]);
    assert!(added.contains("next at"), "{added}");
    let mut workers: Vec<Process> = (0..3)
        .map(|i| start_worker_named(&url, dir.path(), &format!("worker-{i}"), &[]).0)
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    // SIGKILL: the others go on putting the ticks.
    let mut killed = workers.remove(0);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));

    let row = schedule_row(&url);
    let jobs = echo_jobs(&url);
    assert!(jobs.len() >= 5, "a job per second: {}", jobs.len());
    let mut ticks = BTreeSet::new();
    for id in &jobs {
        let job = show(&url, *id);
        assert_eq!(job["schedule"]["name"], "tick", "{job}");
        let tick = whole_second(job["schedule"]["tick"].as_str().unwrap());
        assert!(ticks.insert(tick), "tick {tick} put twice (job {id})");
    }
    // Every tick from the first to the last is a job, or was counted missed
    // (coalesced into the next job, if a stall outlasted a second).
    let (first, last) = (*ticks.first().unwrap(), *ticks.last().unwrap());
    let missed = row["missed"].as_u64().unwrap();
    // Puts since the list above may have added jobs: count those listed.
    assert_eq!(
        jobs.len() as u64 + missed,
        (last - first + 1) as u64,
        "ticks {ticks:?}, {missed} missed"
    );
    assert!(
        missed <= 2,
        "the surviving workers kept up: {missed} missed"
    );
    assert!(row["puts"].as_u64().unwrap() >= jobs.len() as u64);

    // Removed: no more jobs, the put ones stay.
    ok(&["jobs", "cron", "remove", &url, "tick"]);
    std::thread::sleep(Duration::from_millis(300));
    let after_remove = echo_jobs(&url).len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        echo_jobs(&url).len(),
        after_remove,
        "a removed schedule put a job"
    );
    let listed = ok(&["jobs", "cron", "list", &url]);
    assert!(listed.contains("no schedules"), "{listed}");
    // Every job put completed.
    for id in echo_jobs(&url) {
        wait_completed(&url, id);
    }
    for w in workers {
        w.stop();
    }
    server.stop();
}

#[test]
fn bad_schedules_are_refused_before_the_store_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("jobs.zdb");
    let store = store.to_str().unwrap();
    let o = zodiac(&["jobs", "cron", "add", store, "s", "every day", "echo"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cron expression \"every day\" is not valid"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("jobs.zdb").exists(), "nothing was created");
    ok(&["jobs", "cron", "add", store, "s", "@daily", "echo"]);
    let o = zodiac(&["jobs", "cron", "add", store, "s", "@hourly", "echo"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--replace"), "{}", stderr(&o));
    assert!(replace_hourly(store, &[]).status.success());
    assert_eq!(schedule_row(store)["cron"], "@hourly");
    // The jobs' options as `jobs put` takes them; a quota must exist.
    let o = replace_hourly(store, &["--quota", "absent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("zodiac jobs quota"), "{}", stderr(&o));
    ok(&["jobs", "quota", store, "", "one", "1"]);
    let o = replace_hourly(
        store,
        &[
            "--quota",
            "one",
            "--unique",
            "hourly",
            "--unique-for",
            "30m",
            "--priority",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let row = schedule_row(store);
    assert_eq!(row["quotas"], serde_json::json!(["one"]));
    assert_eq!(row["unique"], "hourly");
    assert_eq!(row["unique_for_ms"], 30 * 60 * 1000);
    assert_eq!(row["priority"], 3);
    assert_eq!(row["held"], 0);
    let o = zodiac(&[
        "jobs",
        "cron",
        "add",
        store,
        "t",
        "@hourly",
        "echo",
        "--unique-for",
        "1m",
    ]);
    assert_eq!(o.status.code(), Some(2), "--unique-for needs --unique");
    let o = zodiac(&["jobs", "cron", "remove", store, "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no schedule named \"nope\""),
        "{}",
        stderr(&o)
    );
}
