//! The harness's helper processes: W6's client processes and the job worker
//! processes over the server store are the `zodiac-benches` binary re-executed with a
//! helper mode as its first argument.
//!
//! Invariants:
//! - Helper modes are handled by the harness's own command line ([`crate::run_cli`]),
//!   never by the product: the `zodiac` binary has no hidden modes.
//! - A helper process is always the `zodiac-benches` binary: the running program when
//!   it is the harness command, else the `zodiac-benches` beside the running
//!   executable; when there is none the workload fails with what to build, before
//!   any process starts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{jobs, served};

/// The harness binary's name (without the platform's executable suffix).
const HARNESS_BINARY: &str = "zodiac-benches";

/// Set once the running program is the harness command ([`crate::run_cli`]), which
/// handles the helper modes itself.
static RUNNING_HARNESS: AtomicBool = AtomicBool::new(false);

/// Records that the running program is the harness command.
pub(crate) fn mark_running_harness() {
    RUNNING_HARNESS.store(true, Ordering::Relaxed);
}

/// The program a helper process runs: the `zodiac-benches` binary.
pub(crate) fn program() -> crate::Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the benchmark binary: {e}"))?;
    if RUNNING_HARNESS.load(Ordering::Relaxed) {
        return Ok(exe);
    }
    let beside = exe.with_file_name(format!("{HARNESS_BINARY}{}", std::env::consts::EXE_SUFFIX));
    if beside.is_file() {
        return Ok(beside);
    }
    Err(format!(
        "this workload starts helper processes of the {HARNESS_BINARY} binary, and there is none beside {}: \
         run it with `cargo run --release -p zodiac-benches -- WORKLOAD ...`",
        exe.display()
    )
    .into())
}

/// Runs the helper process `args` asks for (`MODE ARGS...`) and returns its exit
/// code; `None` when `args` does not start with a helper mode.
pub(crate) fn run_mode(args: &[String]) -> Option<ExitCode> {
    let result = match args.first().map(String::as_str) {
        Some(served::CLIENT_MODE) => served::client_process(&args[1..]),
        Some(jobs::WORKER_MODE) => jobs::worker_process(&args[1..]),
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zodiac-benches {}: {e}", args[0]);
            ExitCode::FAILURE
        }
    })
}
