//! `zodiac bench WORKLOAD STORE` (a build with the `bench` feature): the benchmark
//! workloads of workloads.md, run by the `zodiac-benches` harness, printed as a table
//! or as JSON lines.
//!
//! Invariants:
//! - WORKLOAD and STORE are checked before anything runs: a name the library does not
//!   know, or a STORE that is neither a store kind nor an existing directory, is a
//!   usage error (exit 2). A failing run is exit 1.
//! - This program is never re-executed for the harness: the workloads with helper
//!   processes (W6's clients, the job workers over the server store) start the
//!   `zodiac-benches` binary, which must sit beside this one.

use std::path::Path;
use std::process::ExitCode;

/// The workloads and groups `zodiac-benches` knows (its usage text), with what
/// each measures; a test checks the library knows each name.
const WORKLOADS: [(&str, &str); 26] = [
    (
        "phys-fdatasync",
        "the disk's floor: 3,000 x (256-byte write + fdatasync)",
    ),
    ("w1", "10,000 durable transactions of 1 new object"),
    ("w1-4", "W1 by 4 writer threads"),
    ("w2", "100 transactions x 1,000 new objects"),
    ("w3", "100,000 random loads after a reopen"),
    ("w4", "10,000 durable updates of 1 object out of 1,000"),
    ("w5", "pack with GC of 10,000 objects x 10 revisions"),
    ("w5-1m", "W5's shape at 1,000,000 objects"),
    ("w7", "open + first load of 100,000 objects, saved index"),
    ("w7-noindex", "W7 without the saved index"),
    (
        "storage",
        "phys-fdatasync, w1, w1-4, w2, w3, w4, w5, w7, w7-noindex",
    ),
    ("w6-4p", "W1 by 4 client processes over a served file store"),
    (
        "load100",
        "100 connections load and commit for 60 s against this binary's server",
    ),
    ("j1", "put 10,000 jobs, one transaction each"),
    ("j2", "1 worker drains J1's 10,000 jobs"),
    ("j3", "4 workers drain 10,000 jobs"),
    (
        "j4",
        "put-to-start and put-to-done latency of 200 single jobs",
    ),
    ("j5", "kill -9 one of 2 workers mid-run (STORE server only)"),
    ("j6", "1,000 two-step callback chains"),
    (
        "j3-mix",
        "4 producers put 10,000 jobs while 4 workers run them (embedded)",
    ),
    ("jobs", "phys-fdatasync, j1 ... j6, j3-mix"),
    ("obj-w1", "W1 through the objects layer"),
    ("obj-w2", "W2 through the objects layer"),
    (
        "btree",
        "1,000,000 random inserts into a BTree, then lookups",
    ),
    ("btree-4", "4 threads insert into one BTree concurrently"),
    ("objects", "obj-w1, obj-w2, btree, btree-4"),
];

/// Most `--reps` (the library's own bound; a typo should not start hours of runs).
pub const REPS_MAX: u64 = 100;

/// What `zodiac bench --help` shows after the arguments.
pub fn help() -> String {
    let mut text = String::from("Workloads (workloads.md):\n");
    for (name, what) in WORKLOADS {
        text.push_str(&format!("  {name:<16}{what}\n"));
    }
    text.push_str(STORES_HELP);
    text
}

const STORES_HELP: &str = "
STORE (every run gets a fresh store, removed afterwards):
  file            the durable file store, in a temporary directory
  memory          the memory store (no durability; checks the harness)
  server          the file store served on 127.0.0.1, through a client storage;
                  job workers are then separate processes
  tcp://HOST:PORT an existing `zodiac server`, for w1, w1-4, w2, w3 and w4 only
                  (they add new objects to its store)
  DIR             an existing directory: durable file stores are created in it
                  (./file names a directory called like a store kind)

Workloads a STORE cannot run are skipped with a note on stderr. Runs take an
exclusive lock on /tmp/bench.lock ($BENCH_LOCK), so benchmarks never overlap.
Workloads with helper processes (w6-4p; the job workloads over server) start the
zodiac-benches binary, which must be beside this one (cargo build --release -p
zodiac-benches).";

/// Every workload name, groups included.
fn workload_names() -> impl Iterator<Item = &'static str> {
    WORKLOADS.iter().map(|(name, _)| *name)
}

/// Accepts a workload or group name.
pub fn parse_workload(text: &str) -> Result<String, String> {
    if workload_names().any(|name| name == text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a workload; one of: {} (see zodiac bench --help)",
            workload_names().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// Accepts `file`, `memory`, `server`, `tcp://HOST:PORT` or an existing directory.
pub fn parse_store(text: &str) -> Result<String, String> {
    let kind = matches!(text, "file" | "memory" | "server");
    let address = text.strip_prefix("tcp://");
    if kind || address.is_some_and(|a| a.contains(':') && !a.ends_with(':')) {
        return Ok(text.to_string());
    }
    if address.is_some() {
        return Err(format!(
            "{text:?} is not a server address: use tcp://HOST:PORT"
        ));
    }
    if Path::new(text).is_dir() {
        return Ok(text.to_string());
    }
    Err(format!(
        "{text:?} is not a store: use file, memory, server, tcp://HOST:PORT or an existing directory"
    ))
}

/// The arguments of `zodiac bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The workload, or a group of them (listed below).
    #[arg(value_parser = parse_workload)]
    workload: String,
    /// file, memory, server, tcp://HOST:PORT, or an existing directory (below).
    #[arg(value_parser = parse_store)]
    store: String,
    /// One JSON line per workload instead of a table.
    #[arg(long)]
    json: bool,
    /// Runs of each workload, each on a fresh store; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=REPS_MAX))]
    reps: u64,
}

/// Runs the workload `reps` times on fresh stores of the kind asked for, printing a
/// table or JSON lines.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        workload,
        store,
        json,
        reps,
    } = args;
    let reps = usize::try_from(reps)?;
    // The library's errors do not always say what ran where (an I/O error in a
    // run directory is just the OS error).
    zodiac_benches::run_workload(&workload, &store, json, reps).map_err(|e| {
        anyhow::anyhow!(e).context(format!(
            "zodiac bench {workload} {}",
            zodiac_storage::url_without_password(&store)
        ))
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_knows_every_workload_listed() {
        for name in workload_names() {
            // The library reads the name first and stops at --help: success means it
            // selected the workload.
            let code = zodiac_benches::run_cli([name.to_string(), "--help".to_string()]);
            assert_eq!(code, ExitCode::SUCCESS, "{name}");
        }
        let unknown = zodiac_benches::run_cli(["w9".to_string(), "--help".to_string()]);
        assert_eq!(unknown, ExitCode::from(2));
    }

    #[test]
    fn stores_are_kinds_addresses_or_existing_directories() {
        for ok in ["file", "memory", "server", "tcp://127.0.0.1:8100", "."] {
            assert_eq!(parse_store(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "fiel",
            "tcp://",
            "tcp://host",
            "tcp://host:",
            "/no/such/dir",
        ] {
            assert!(parse_store(bad).is_err(), "{bad:?}");
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(parse_store(file.path().to_str().unwrap()).is_err());
        assert_eq!(parse_workload("w2").as_deref(), Ok("w2"));
        let unknown = parse_workload("w9").unwrap_err();
        assert!(unknown.contains("phys-fdatasync, w1,"), "{unknown}");
    }
}
