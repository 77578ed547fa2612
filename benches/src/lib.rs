//! `zodiac-benches`: the storage, object and job workloads of workloads.md, run
//! against Zodiac, printed as a table or as the peers' JSON lines.
//!
//! ```text
//! zodiac-benches WORKLOAD [--dir D] [--json] [--reps N] [--store file|memory|server|tcp://…|postgres://…]
//!   WORKLOAD: phys-fdatasync | w1 | w1-4 | w2 | w3 | w4 | w7 | w7-noindex | storage (all)
//!             j1 | j2 | j3 | j3-single | j4 | j5 | j6 | j3-mix | j3-prio | jobs (phys-fdatasync and all of these)
//!             j3-prio-uniq (j3-prio with half the jobs unique)
//!             j3-compare (j3, j3-prio and j3-prio-uniq in one run, rep by rep)
//!             load100 [--seconds N] [--connections N] (a `zodiac server` process under load)
//! ```
//!
//! The binary is a thin wrapper over [`run_cli`]; `zodiac bench` (the `zodiac`
//! package built with its `bench` feature) calls [`run_workload`]. Some workloads
//! start helper processes (the W6 client processes, the job worker processes): they
//! are the `zodiac-benches` binary re-executed with a helper mode that only
//! [`run_cli`] knows (see `helpers`).
//!
//! Invariants:
//! - The whole run holds an exclusive `flock` on `/tmp/bench.lock` (or `$BENCH_LOCK`),
//!   as the peer harnesses do, so benchmarks never overlap on the shared machine
//!   (see `lock`).
//! - Every run of a workload gets a fresh store in its own directory under `--dir`,
//!   removed after the run; without `--dir` a new temporary directory is used and
//!   removed at exit.
//! - `--reps N` runs each workload N times and reports the median (see `report`).

mod helpers;
mod jobs;
mod load;
mod lock;
mod objects;
mod phys;
mod report;
mod rng;
mod served;
mod server_process;
mod stats;
mod system;
mod target;
mod workloads;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jobs::JobWorkload;
use report::{Measurement, Value};
use target::{StoreKind, StoreUnderTest};
use workloads::Workload;

/// The harness's result type: any error, reported as one line at exit.
pub type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: zodiac-benches WORKLOAD [--dir D] [--json] [--reps N] [--store file|memory|server|tcp://…|postgres://…]
  WORKLOAD  phys-fdatasync | w1 | w1-4 | w2 | w3 | w4 | w5 | w7 | w7-noindex | storage (all of these)
            j1 | j2 | j3 | j3-single | j4 | j5 | j6 | j3-mix | j3-prio | jobs (phys-fdatasync and all of these;
            embedded the workers are threads, over --store server they are
            processes with their own connections, and j5 runs only there;
            j3's workers run batches of 8 jobs per commit, j3-single's one;
            j3-mix: 4 producers put while 4 workers run, with the conflict
            rates, embedded only; j3-prio: J3 with priorities 0-9 mixed)
            j3-prio-uniq (j3-prio with half the jobs unique)
            j3-compare (j3, j3-prio and j3-prio-uniq in one run, rep by rep)
            obj-w1 | obj-w2 | btree | btree-4 | objects (all of these)
            w6-4p (W1 by 4 client processes over the file store served on 127.0.0.1)
            w5-1m (W5's shape at 1,000,000 objects, with the pack's memory)
            load100 (100 connections to a `zodiac server` process, half loads, half
            commits, one commit in ten conflicting, for 60 s; needs the zodiac
            binary beside this one, or $ZODIAC_BIN)
  --dir D   where the stores are created (default: a new directory under the system temp dir)
  --json    one JSON line per workload instead of a table
  --reps N  runs of each workload, each on a fresh store; the median is reported (default 1)
  --store   the storage under test (default: file, with durable commits; server:
            the file store served on 127.0.0.1, through a client storage;
            tcp://HOST:PORT: an existing server, for w1, w1-4, w2, w3 and w4 only;
            postgres://URL: a PostgreSQL database, in a fresh schema per run, dropped
            after it; the job workloads' workers are processes opening it directly)
  --seconds N      load100's duration (default 60)
  --connections N  load100's client connections (default 100)";

/// Upper bound on `--reps`, to catch typos before hours of runs.
const REPS_MAX: usize = 100;

#[derive(Debug, PartialEq)]
struct Options {
    workloads: Vec<Workload>,
    dir: Option<PathBuf>,
    json: bool,
    reps: usize,
    store: StoreKind,
}

/// Parses the arguments after the program name; `Ok(None)` asks for the usage text.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut workloads = None;
    let mut dir = None;
    let mut json = false;
    let mut reps = 1;
    let mut store = StoreKind::File;
    let mut seconds = None;
    let mut connections = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => json = true,
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--reps" => {
                let text = value("--reps")?;
                reps = text
                    .parse()
                    .ok()
                    .filter(|n| (1..=REPS_MAX).contains(n))
                    .ok_or(format!(
                        "--reps takes a number from 1 to {REPS_MAX}, not {text:?}"
                    ))?;
            }
            "--store" => {
                let text = value("--store")?;
                store = StoreKind::parse(&text).ok_or(format!(
                    "--store takes file, memory, server, tcp://HOST:PORT or postgres://URL, not {text:?}"
                ))?;
            }
            "--seconds" => {
                seconds = Some(number(
                    "--seconds",
                    &value("--seconds")?,
                    load::SECONDS_MAX,
                )?)
            }
            "--connections" => {
                let text = value("--connections")?;
                connections = Some(number("--connections", &text, load::CONNECTIONS_MAX)?);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            name if workloads.is_none() => {
                workloads =
                    Some(Workload::select(name).ok_or(format!("unknown workload {name:?}"))?);
            }
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    let mut workloads = workloads.ok_or("no workload given")?;
    if seconds.is_some() || connections.is_some() {
        let [Workload::Load(shape)] = workloads.as_mut_slice() else {
            return Err("--seconds and --connections are options of load100 only".into());
        };
        shape.seconds = seconds.unwrap_or(shape.seconds);
        shape.connections = connections.unwrap_or(shape.connections);
    }
    Ok(Some(Options {
        workloads,
        dir,
        json,
        reps,
        store,
    }))
}

/// `text` as a number from 1 to `max`, for `flag`.
fn number(flag: &str, text: &str, max: u64) -> Result<u64, String> {
    text.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or(format!(
            "{flag} takes a number from 1 to {max}, not {text:?}"
        ))
}

/// The command line: `WORKLOAD [--dir D] [--json] [--reps N] [--store KIND]` (see
/// the usage text, printed for `--help`), or a helper mode used by the processes a
/// workload starts. Prints the results to standard output and errors to standard error.
pub fn run_cli(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.into_iter().collect();
    helpers::mark_running_harness();
    if let Some(code) = helpers::run_mode(&args) {
        return code;
    }
    let options = match parse_args(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("zodiac-benches: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zodiac-benches: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `workload` (a name or a group, as on the command line) `reps` times each
/// against `store`, printing a table or JSON lines; this is what `zodiac bench
/// WORKLOAD STORE` needs. `store` is:
/// - `file`, `memory` or `server` (as `--store`), in a temporary directory;
/// - `tcp://HOST:PORT`: an existing server, for w1, w1-4, w2, w3 and w4;
/// - anything else: a directory in which the durable file stores are created
///   (each run's own, removed after it; as `--dir D --store file`).
pub fn run_workload(workload: &str, store: &str, json: bool, reps: usize) -> Result<()> {
    let workloads = Workload::select(workload).ok_or(format!("unknown workload {workload:?}"))?;
    let (store, dir) = match StoreKind::parse(store) {
        Some(kind) => (kind, None),
        None if store.is_empty() => return Err("no store given".into()),
        None => (StoreKind::File, Some(PathBuf::from(store))),
    };
    if !(1..=REPS_MAX).contains(&reps) {
        return Err(format!("reps is a number from 1 to {REPS_MAX}").into());
    }
    run(&Options {
        workloads,
        dir,
        json,
        reps,
        store,
    })
}

fn run(options: &Options) -> Result<()> {
    let _lock = lock::take()?;
    let base = BaseDir::new(options.dir.as_deref())?;
    let fs_type = system::file_system_type(base.path()).unwrap_or_else(|| "unknown".into());
    let machine = system::machine();
    if options.store == StoreKind::File && options.workloads.iter().any(|w| w.uses_store()) {
        check_file_store(base.path())?;
    }
    if !options.json {
        println!("zodiac benchmarks: store {}, {}", options.store, machine);
        println!(
            "directory {} ({fs_type}), {} run(s) each\n",
            base.path().display(),
            options.reps
        );
        println!("{}", report::table_header());
    }
    let mut active = Vec::new();
    for &workload in &options.workloads {
        match workload.skip_reason(options.store) {
            Some(reason) => eprintln!("skipping {}: {reason}", workload.name()),
            None => active.push(workload),
        }
    }
    // Rep by rep, each workload in turn: a drift of the machine (its disk, its
    // other load) over the runs hits every workload alike.
    let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); active.len()];
    for rep in 1..=options.reps {
        for (i, &workload) in active.iter().enumerate() {
            runs[i].push(run_once(workload, options.store, base.path(), rep)?);
            if rep == options.reps {
                print_summary(workload, &runs[i], options, &fs_type, &machine)?;
            }
        }
    }
    // Each J3 variant against plain J3, paired run by run.
    let plain = active
        .iter()
        .position(|w| *w == Workload::Job(JobWorkload::J3));
    for (i, workload) in active.iter().enumerate() {
        if let (
            Some(p),
            Workload::Job(JobWorkload::J3Priorities | JobWorkload::J3PrioritiesUnique),
        ) = (plain, workload)
        {
            print_paired_ratio(workload.name(), &runs[p], &runs[i], options.json)?;
        }
    }
    Ok(())
}

/// Prints the median of `runs` of `workload`: a table row, or a JSON line.
fn print_summary(
    workload: Workload,
    runs: &[Measurement],
    options: &Options,
    fs_type: &str,
    machine: &str,
) -> Result<()> {
    let mut m = report::summarize(runs);
    // The table's header already names the store, file system and machine.
    let line = if options.json {
        if workload.uses_store() {
            m.set("store", Value::Str(options.store.name().into()));
        }
        m.set("fs", Value::Str(fs_type.into()));
        m.set("machine", Value::Str(machine.into()));
        m.to_json()
    } else {
        report::table_row(&m)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// j3-compare's figures: the rate of each `name` run over the j3 run of the
/// same rep, the median of those ratios (with their range).
fn print_paired_ratio(
    name: &str,
    plain: &[Measurement],
    variant: &[Measurement],
    json: bool,
) -> Result<()> {
    let ratios: Vec<f64> = plain
        .iter()
        .zip(variant)
        .map(|(p, v)| v.rate() / p.rate())
        .collect();
    let median = stats::median(&ratios).expect("at least one run");
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if json {
        println!(
            "{{\"workload\":\"{name}/j3\",\"paired_ratio\":{median:.3},\"min\":{min:.3},\"max\":{max:.3},\"pairs\":{}}}",
            ratios.len()
        );
    } else {
        println!(
            "{name} / j3, paired run by run: median {median:.3} (min {min:.3}, max {max:.3}, {} pairs)",
            ratios.len()
        );
    }
    Ok(())
}

/// One run of `workload` in a fresh directory, removed afterwards.
fn run_once(workload: Workload, kind: StoreKind, base: &Path, rep: usize) -> Result<Measurement> {
    let run_dir = base.join(format!("{}-{rep}", workload.name()));
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir)?;
    }
    fs::create_dir_all(&run_dir)?;
    system::reset_peak_rss();
    let result = if let Workload::Job(job) = workload {
        let mut store = StoreUnderTest::new(kind, &run_dir);
        job.run(&mut store, &run_dir)
    } else if workload.uses_store() {
        let mut store = StoreUnderTest::new(kind, &run_dir);
        workload.run(&mut store)
    } else {
        phys::fdatasync(&run_dir)
    };
    let peak = system::peak_rss_bytes();
    fs::remove_dir_all(&run_dir)?;
    let mut m = result.map_err(|e| format!("{}: {e}", workload.name()))?;
    if let Some(peak) = peak {
        m.set("peak_rss_bytes", Value::Int(peak));
    }
    Ok(m)
}

/// Fails early, before any workload runs, when the file store cannot be opened.
fn check_file_store(base: &Path) -> Result<()> {
    let dir = base.join("open-check");
    fs::create_dir_all(&dir)?;
    let opened = target::open_file_store(&dir.join("data.zdb")).and_then(|storage| {
        storage.close()?;
        Ok(())
    });
    fs::remove_dir_all(&dir)?;
    opened
}

/// The directory the run directories go in; removed on drop when it was created
/// here as a temporary directory.
struct BaseDir {
    path: PathBuf,
    temporary: bool,
}

impl BaseDir {
    fn new(dir: Option<&Path>) -> Result<BaseDir> {
        let (path, temporary) = match dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!("zodiac-benches-{}-{nanos}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        if temporary && path.exists() {
            return Err(format!("{} already exists", path.display()).into());
        }
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(BaseDir { path, temporary })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BaseDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_are_one_durable_file_run_as_a_table() {
        let options = parse(&["w1"]).expect("valid").expect("not help");
        assert_eq!(
            options,
            Options {
                workloads: vec![Workload::W1],
                dir: None,
                json: false,
                reps: 1,
                store: StoreKind::File
            }
        );
    }

    #[test]
    fn every_option_is_read() {
        let options = parse(&[
            "--json", "storage", "--dir", "/d", "--reps", "3", "--store", "memory",
        ])
        .expect("valid")
        .expect("not help");
        assert_eq!(options.workloads.len(), Workload::ALL.len());
        assert_eq!(options.dir.as_deref(), Some(Path::new("/d")));
        assert!(options.json);
        assert_eq!((options.reps, options.store), (3, StoreKind::Memory));
    }

    #[test]
    fn an_existing_server_is_a_store_for_the_workloads_that_only_add_objects() {
        let options = parse(&["w3", "--store", "tcp://127.0.0.1:8100"])
            .expect("valid")
            .expect("not help");
        assert_eq!(options.store, StoreKind::Remote("tcp://127.0.0.1:8100"));
        assert_eq!(options.store.name(), "tcp://127.0.0.1:8100");
        assert!(Workload::W3.skip_reason(options.store).is_none());
        assert!(Workload::W5.skip_reason(options.store).is_some());
        let jobs = Workload::select("jobs").expect("a group");
        assert_eq!(jobs.len(), Workload::JOBS.len());
        assert!(
            jobs[1..]
                .iter()
                .all(|j| j.skip_reason(options.store).is_some())
        );
    }

    #[test]
    fn load100_takes_its_duration_and_connections() {
        let options = parse(&["load100"]).expect("valid").expect("not help");
        assert_eq!(
            options.workloads,
            [Workload::Load(load::LoadShape {
                seconds: 60,
                connections: 100
            })]
        );
        let options = parse(&["load100", "--seconds", "2", "--connections", "10"])
            .expect("valid")
            .expect("not help");
        assert_eq!(
            options.workloads,
            [Workload::Load(load::LoadShape {
                seconds: 2,
                connections: 10
            })]
        );
        assert!(parse(&["w1", "--seconds", "2"]).is_err());
        assert!(parse(&["load100", "--seconds", "0"]).is_err());
        assert!(parse(&["load100", "--connections", "1001"]).is_err());
        assert!(
            Workload::Load(load::LoadShape::default())
                .skip_reason(StoreKind::Memory)
                .is_some()
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["w9"]).is_err());
        assert!(parse(&["w1", "w2"]).is_err());
        assert!(parse(&["w1", "--reps", "0"]).is_err());
        assert!(parse(&["w1", "--store", "redb"]).is_err());
        assert!(parse(&["w1", "--store", "tcp://"]).is_err());
        assert!(parse(&["w1", "--dir"]).is_err());
        assert!(parse(&["w1", "--fast"]).is_err());
        assert_eq!(parse(&["--help"]), Ok(None));
    }
}
