//! Runs the `zodiac` binary as a user would.

use std::process::{Command, Output};

fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

#[test]
fn demo_runs_every_step_and_keeps_the_store_in_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path");
    let out = zodiac(&["demo", "--storage", "--dir", dir_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    for expected in [
        "object 0x1 = \"balance: 100\"",
        "(its first commit): \"balance: 100\"",
        "(the newest): \"balance: 175\"",
        "refused: conflict on object 0x1",
        "object 0x1 now reads \"balance: 200\"",
        "killed it with SIGKILL",
        "the storage cut an incomplete transaction at the end",
        "all present, data exact",
        "alice: \"open account\"  wrote 0x0, 0x1",
        "whole demo",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        dir.path().join("demo.zodiac").is_file(),
        "the store was not kept"
    );

    // A second run refuses to touch the existing store: one line on stderr, exit 1.
    let again = zodiac(&["demo", "--dir", dir_arg]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already exists"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn the_jobs_demo_runs_every_step_and_checks_its_claims() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path");
    let out = zodiac(&["demo", "--dir", dir_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    for expected in [
        "43/43 jobs completed",
        "COMPLETED with a failure: \"user error: card declined\" after 1 attempt",
        "echo (scheduled): \"the nightly report\", started 1.",
        "its callback `notify` ran after it: \"notified with {",
        "counter = 40 (exactly once each)",
        "killed it with SIGKILL",
        "re-ran it: 1500 (attempt 2, interruptions 1)",
        "whole demo",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stderr.is_empty(), "the demo logs nothing: {stderr}");
    assert!(dir.path().join("demo.zodiac").is_file());
}

#[test]
fn usage_errors_exit_2() {
    let out = zodiac(&["demo", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = zodiac(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo"));
}
