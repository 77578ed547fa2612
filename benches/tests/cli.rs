//! The `zodiac-benches` command runs the workloads of workloads.md as a user would,
//! including those whose helper processes (job workers, W6's clients) are this
//! binary re-executed in a helper mode.
//!
//! Each test takes its own benchmark lock ($BENCH_LOCK in its temporary directory):
//! these runs are checks, not measurements, and must not wait behind a long
//! benchmark holding the shared /tmp/bench.lock.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn benches(lock_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac-benches"))
        .args(args)
        .env("BENCH_LOCK", lock_dir.join("bench.lock"))
        .env_remove("BENCH_LOCKED")
        .output()
        .expect("run zodiac-benches")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one JSON line a single workload prints with --json.
fn json_line(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn phys_fdatasync_in_a_directory_prints_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let stores = dir.path().join("stores");
    std::fs::create_dir(&stores).unwrap();
    let out = benches(
        dir.path(),
        &[
            "phys-fdatasync",
            "--dir",
            stores.to_str().unwrap(),
            "--json",
        ],
    );
    let m = json_line(&out);
    assert_eq!(m["peer"], "zodiac");
    assert_eq!(m["workload"], "phys-fdatasync");
    assert_eq!(m["ops"], 3000);
    assert_eq!(m["unit"], "writes/s");
    assert_eq!(m["reps"], 1);
    for field in ["seconds", "rate", "p50_us", "p99_us"] {
        assert!(m[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {m}");
    }
    assert!(m["fs"].is_string() && m["machine"].is_string(), "{m}");
    // The run's directory is removed; the one given is kept.
    assert!(stores.is_dir());
    assert_eq!(std::fs::read_dir(&stores).unwrap().count(), 0);
}

#[test]
fn w2_on_the_memory_store_prints_a_table_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = benches(dir.path(), &["w2", "--store", "memory"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("store memory"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("w2 "))
        .unwrap_or_else(|| panic!("no w2 row: {stdout}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[2], "objects/s", "{row}");
    assert_eq!(columns[4], "100000", "{row}");
}

#[test]
fn a_failing_run_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // /proc is a directory no run directory can be created in.
    let out = benches(dir.path(), &["phys-fdatasync", "--dir", "/proc", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("zodiac-benches: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn helper_modes_are_recognised_and_fail_without_their_arguments() {
    let dir = tempfile::tempdir().unwrap();
    // Without its arguments a helper mode fails (exit 1) naming its usage; an
    // unrecognised first argument would be a usage error (exit 2).
    for mode in ["w6-client-process", "job-worker"] {
        let out = benches(dir.path(), &[mode]);
        assert_eq!(out.status.code(), Some(1), "{mode}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("usage: "), "{mode}: {stderr}");
    }
    assert_eq!(benches(dir.path(), &["w9"]).status.code(), Some(2));
}

/// J4 over the server store runs its worker as a separate process: this binary,
/// re-executed as `zodiac-benches job-worker ...`.
#[test]
fn j4_over_the_server_runs_worker_processes_of_the_harness() {
    let dir = tempfile::tempdir().unwrap();
    let out = benches(dir.path(), &["j4", "--store", "server", "--json"]);
    let m = json_line(&out);
    assert_eq!(m["workload"], "j4");
    assert_eq!(m["store"], "server");
    assert_eq!(m["workers_are"], "processes");
    assert_eq!(m["samples"], 200);
    assert_eq!(
        (m["lost"].as_u64(), m["ran_twice"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(m["done_p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{m}");
}

/// W6 with processes runs its 4 clients as this binary re-executed as
/// `zodiac-benches w6-client-process ...`.
#[test]
fn w6_4p_runs_client_processes_of_the_harness() {
    let dir = tempfile::tempdir().unwrap();
    let out = benches(dir.path(), &["w6-4p", "--json"]);
    let m = json_line(&out);
    assert_eq!(m["workload"], "w6-4p");
    assert_eq!(
        (m["clients"].as_u64(), m["ops"].as_u64()),
        (Some(4), Some(10_000))
    );
}

#[test]
fn a_server_that_is_not_there_fails_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Bind and drop a listener: nothing listens on that port now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = std::time::Instant::now();
    let out = benches(dir.path(), &["w2", "--store", &format!("tcp://{addr}")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the server") && stderr.contains("zodiac server"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "waited {:?} for a server that is not there",
        started.elapsed()
    );
}
