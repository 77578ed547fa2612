//! Catastrophe S7: two processes open the same file for writing. The second gets a
//! clear "locked by process N" error naming the holder; once the holder is gone the
//! file opens again.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use zodiac_storage::{Error, FileOptions};
use zodiac_tests::{KillOnDrop, open_file};

const HOLD_WAIT: Duration = Duration::from_secs(60);

/// Starts `crash_writer hold PATH` and waits until it holds the file.
fn start_holder(path: &Path) -> KillOnDrop {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg("hold")
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn crash_writer hold"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let line = received
        .recv_timeout(HOLD_WAIT)
        .expect("crash_writer hold printed nothing (did its open fail? see its stderr)")
        .expect("read crash_writer's stdout");
    assert_eq!(
        line,
        format!("held {}", child.0.id()),
        "the holder's first line"
    );
    child
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid_until_the_holder_dies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("locked.zodiac");
    let mut holder = start_holder(&path);
    let pid = holder.0.id().to_string();

    let error = match open_file(&path, FileOptions::new()) {
        Ok(_) => panic!("a second writer opened a file held by process {pid}"),
        Err(error) => error,
    };
    let Error::Locked { pid: named, .. } = &error else {
        panic!("expected Error::Locked naming process {pid}, got: {error}");
    };
    assert_eq!(named, &pid, "the error names the holder");
    let message = error.to_string();
    assert!(
        message.contains(&format!("locked by process {pid}")),
        "message: {message}"
    );

    holder.0.kill().expect("kill the holder");
    holder.0.wait().expect("reap the holder");
    let storage = open_file(&path, FileOptions::new())
        .unwrap_or_else(|e| panic!("opening after the holder died failed: {e}"));
    storage.close().expect("close");
}

#[test]
fn a_read_only_opener_shares_a_file_with_its_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared.zodiac");
    let _holder = start_holder(&path);
    let reader = open_file(&path, FileOptions::new().read_only(true))
        .unwrap_or_else(|e| panic!("a read-only open beside the writer failed: {e}"));
    reader.close().expect("close");
}
