//! `load100` runs a real `zodiac server` process under concurrent loads and commits
//! and reports its figures as one JSON line. The server is the `zodiac` binary of
//! this build: the test builds it first (a no-op when it is up to date) with the
//! cargo that runs the test, and hands it to the harness as `ZODIAC_BIN`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The `zodiac` binary of this build, built if needed: it lives beside the test's
/// `deps/` directory, in the same profile's directory.
fn zodiac_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps/TEST");
    // The profile the tests were built with, so that the build reuses what
    // `cargo test` already compiled.
    let profile = if profile_dir.file_name().is_some_and(|n| n == "release") {
        "release"
    } else {
        "test"
    };
    let mut build = Command::new(env!("CARGO"));
    build.args([
        "build",
        "-p",
        "zodiac",
        "--bin",
        "zodiac",
        "--profile",
        profile,
    ]);
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p zodiac failed");
    let zodiac = profile_dir.join(format!("zodiac{}", std::env::consts::EXE_SUFFIX));
    assert!(zodiac.is_file(), "no {}", zodiac.display());
    zodiac
}

#[test]
fn load100_for_2_s_with_10_connections_reports_its_figures_and_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zodiac-benches"))
        .args(["load100", "--seconds", "2", "--connections", "10", "--json"])
        .env("ZODIAC_BIN", zodiac_binary())
        .env("BENCH_LOCK", dir.path().join("bench.lock"))
        .env_remove("BENCH_LOCKED")
        .output()
        .expect("run zodiac-benches");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let m: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(m["workload"], "load100");
    assert_eq!(m["unit"], "ops/s");
    assert_eq!(m["connections"], 10);
    assert_eq!(m["errors"], 0);
    let seconds = m["seconds"].as_f64().expect("seconds");
    assert!((2.0..10.0).contains(&seconds), "{m}");
    let int = |field: &str| m[field].as_u64().unwrap_or_else(|| panic!("{field}: {m}"));
    let (commits, conflicts, loads) = (int("commits"), int("conflicts"), int("loads"));
    assert!(commits > 0 && conflicts > 0 && loads > 0, "{m}");
    assert_eq!(int("ops"), commits + conflicts + loads, "{m}");
    // One commit in ten is made to conflict: the share is near 10% of all commits.
    let share = conflicts as f64 / (commits + conflicts) as f64;
    assert!((0.03..0.2).contains(&share), "conflict share {share}: {m}");
    for field in [
        "rate",
        "commits_per_s",
        "loads_per_s",
        "commit_p50_us",
        "commit_p99_us",
    ] {
        assert!(m[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {m}");
    }
    assert!(
        m["commit_p99_us"].as_f64() >= m["commit_p50_us"].as_f64(),
        "{m}"
    );
    // The server's own peak memory, read from its /proc status: a real process.
    assert!(int("server_peak_rss_bytes") > 1 << 20, "{m}");
}
