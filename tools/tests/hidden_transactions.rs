//! Zeros over acknowledged transactions, met by the commands a user runs.
//!
//! The story: 120 jobs were put, one `zodiac jobs put` each, and then 64 KiB of the
//! file from a transaction boundary in the middle were zeroed. Every open took the
//! zeros as the end of the data: `zodiac jobs status` showed 59 of the 120 pending
//! jobs and exited 0, the next `jobs put` reused oids and wrote over the history
//! after the zeros, and `verify` then called the rest an incomplete tail. The zeros
//! hide acknowledged transactions: every command must say so, and none may write.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use zodiac_storage::format::{FILE_HEADER_LEN, peek_transaction};

const JOBS: usize = 120;
const ZEROS: u64 = 64 << 10;

fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where each transaction of the file starts.
fn transaction_starts(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = FILE_HEADER_LEN;
    let mut starts = vec![];
    while let Ok((len, _)) = peek_transaction(&bytes, at) {
        starts.push(at);
        at += len;
    }
    starts
}

/// Puts `JOBS` jobs through the command line, one process and one commit each, and
/// zeroes at least `ZEROS` bytes from the start of a transaction near the middle to
/// the start of a later one. Returns the zeroed offset.
fn jobs_then_zeros_in_the_middle(path: &Path) -> u64 {
    let p = path.to_str().unwrap();
    for i in 0..JOBS {
        let out = zodiac(&["jobs", "put", p, "echo", &format!("{{\"value\": {i}}}")]);
        assert!(out.status.success(), "put {i}: {}", text(&out.stderr));
    }
    let out = zodiac(&["jobs", "status", p]);
    assert!(
        text(&out.stdout).contains(&format!("pending {JOBS},")),
        "{}",
        text(&out.stdout)
    );
    let starts = transaction_starts(path);
    let end = *starts.last().unwrap();
    let at = *starts.iter().find(|&&s| s >= end / 2).unwrap();
    let Some(&until) = starts.iter().find(|&&s| s >= at + ZEROS) else {
        panic!(
            "the zeros must leave acknowledged transactions after them ({at} + {ZEROS} >= {end})"
        );
    };
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; (until - at) as usize], at)
        .unwrap();
    f.sync_all().unwrap();
    at
}

fn assert_refused_naming_the_tools(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} must fail on a file whose zeros hide acknowledged transactions; stdout: {}",
        text(&out.stdout)
    );
    assert!(out.status.code().is_some(), "{what} died of a signal");
    let err = text(&out.stderr);
    assert!(
        err.contains("zodiac verify") && err.contains("zodiac recover"),
        "{what}: the error must name verify and recover: {err}"
    );
}

fn check_every_command(path: &Path) {
    let p = path.to_str().unwrap();
    let before = std::fs::read(path).unwrap();

    assert_refused_naming_the_tools(&zodiac(&["jobs", "status", p]), "jobs status");
    assert_refused_naming_the_tools(&zodiac(&["jobs", "list", p]), "jobs list");
    assert_refused_naming_the_tools(
        &zodiac(&["jobs", "put", p, "echo", "{\"value\": 1}"]),
        "jobs put",
    );
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "a refused open must leave the file as it was"
    );

    let out = zodiac(&["verify", p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout) + &text(&out.stderr);
    assert!(
        report.contains("zeros") && report.contains("hidden"),
        "verify must say the zeros hide transactions: {report}"
    );
    assert!(
        !report.contains("incomplete tail"),
        "zeros followed by valid transactions are not a tail: {report}"
    );
}

#[test]
fn zeros_at_a_transaction_boundary_hide_nothing_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.zodiac");
    jobs_then_zeros_in_the_middle(&path);
    check_every_command(&path);

    // Without the saved index (as after a crash) the opens must scan, and still see it.
    std::fs::remove_file(zodiac_storage::offline::index_path(&path)).unwrap();
    check_every_command(&path);

    // recover copies every transaction the zeros did not cover.
    let out_path = dir.path().join("recovered.zodiac");
    let before = transaction_starts(&path).len();
    let out = zodiac(&[
        "recover",
        path.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let copied = transaction_starts(&out_path).len();
    assert!(
        copied > before,
        "recover must copy the transactions after the zeros too ({copied} copied, {before} before them)"
    );
    let out = zodiac(&["verify", out_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}
