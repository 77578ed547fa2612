//! The benchmark lock: one exclusive `flock` on a file shared with the peer
//! harnesses, so that two benchmark runs never overlap on the shared machine.
//!
//! Invariants:
//! - Only the harness takes it, for a whole run (of `zodiac-benches`, or of `zodiac
//!   bench` in a build with the `bench` feature); the product's default build does
//!   not link the harness at all.
//! - `BENCH_LOCKED=1` means a parent process (e.g. the peers' `run.sh`) holds it
//!   already: taking it again would wait forever.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use crate::Result;

/// Default lock file shared with the peer harnesses.
const BENCH_LOCK_PATH: &str = "/tmp/bench.lock";

/// The exclusive lock on the shared benchmark lock file, held until dropped; `None`
/// when a parent process holds it for us (`BENCH_LOCKED=1`).
pub(crate) fn take() -> Result<Option<File>> {
    if std::env::var_os("BENCH_LOCKED").is_some_and(|v| v == "1") {
        return Ok(None);
    }
    let path = std::env::var_os("BENCH_LOCK").map_or(PathBuf::from(BENCH_LOCK_PATH), PathBuf::from);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!(
            "waiting for {} (another benchmark is running)",
            path.display()
        );
        file.lock()?;
    }
    Ok(Some(file))
}
