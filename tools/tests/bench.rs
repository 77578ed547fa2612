//! `zodiac bench`. A default build does not link the benchmark harness: the
//! subcommand says how to run the benchmarks and exits 2. A build with the `bench`
//! feature (`cargo test -p zodiac --features bench`) runs the workloads of
//! workloads.md as a user would; the harness's own command and its helper
//! processes are tested in `benches/tests/cli.rs`.
//!
//! Each run takes its own benchmark lock ($BENCH_LOCK in its temporary directory):
//! these runs are checks, not measurements, and must not wait behind a long
//! benchmark holding the shared /tmp/bench.lock.

#[cfg(not(feature = "bench"))]
#[test]
fn without_the_bench_feature_bench_says_how_to_run_the_benchmarks_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[][..],
        &["w1", "file", "--json"],
        &["j3", "server", "--reps", "3"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .arg("bench")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run zodiac");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: `zodiac bench` is not in this build")
                && stderr.contains("cargo run --release -p zodiac-benches -- ")
                && stderr.contains("--features bench"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Nothing ran: no store, no lock file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[cfg(feature = "bench")]
mod with_the_harness {
    use std::path::Path;
    use std::process::{Command, Output};

    use serde_json::Value;

    fn bench(lock_dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .arg("bench")
            .args(args)
            .env("BENCH_LOCK", lock_dir.join("bench.lock"))
            .env_remove("BENCH_LOCKED")
            .output()
            .expect("run zodiac")
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
        let out = bench(
            dir.path(),
            &["phys-fdatasync", stores.to_str().unwrap(), "--json"],
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
        let out = bench(dir.path(), &["w2", "memory"]);
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
    fn usage_errors_exit_2_with_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        for (args, says) in [
            (
                &["w9", "memory"][..],
                "\"w9\" is not a workload; one of: phys-fdatasync",
            ),
            (&["w2", "fiel"], "\"fiel\" is not a store"),
            (&["w2", "tcp://"], "is not a server address"),
            (&["w2", "memory", "--reps", "0"], "--reps"),
            (&["w2"], "required arguments were not provided"),
        ] {
            let out = bench(dir.path(), args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let stderr = text(&out.stderr);
            let first = stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("error: ") && first.contains(says),
                "{args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        let help = bench(dir.path(), &["--help"]);
        assert!(help.status.success());
        let help = text(&help.stdout);
        for name in [
            "phys-fdatasync",
            "w7-noindex",
            "j6",
            "btree-4",
            "w6-4p",
            "w5-1m",
        ] {
            assert!(help.contains(&format!("\n  {name} ")), "{name}: {help}");
        }
        assert!(help.contains("tcp://HOST:PORT"), "{help}");
    }

    #[test]
    fn a_failing_run_exits_1() {
        let dir = tempfile::tempdir().unwrap();
        // /proc is a directory no run directory can be created in.
        let out = bench(dir.path(), &["phys-fdatasync", "/proc", "--json"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("error: zodiac bench phys-fdatasync /proc: "),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
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
        let out = bench(dir.path(), &["w2", &format!("tcp://{addr}")]);
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
}
