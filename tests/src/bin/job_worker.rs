//! A job worker process for the multi-process job tests (`tests/jobs_processes.rs`).
//!
//! `job_worker ADDR UUID_FILE DIR [--queue Q] [--agent-size N] [--batch-size N]
//! [--poll-ms N] [--ping-ms N] [--death-ms N] [--grace-ms N] [--wait-ms N] [--host NAME]`
//!
//! Connects to the storage server at ADDR, takes the worker identity in UUID_FILE
//! (refused, exit 2, while another process holds it; `--host` names the host it
//! runs on, to simulate several hosts) and runs one dispatcher on
//! queue Q (default `""`) with the fixture's handlers:
//! - `f(key: String) -> 42`: appends `start KEY JOB ATTEMPT PID` to `DIR/f.log`, then
//!   blocks until the file `DIR/release-KEY` exists (polled every 10 ms).
//! - `record(tag: String)`, a callback: appends `callback TAG RESULT PID` to
//!   `DIR/callbacks.log`, RESULT being the parent's value or `failure:KIND`.
//!
//! Each line is appended with one write to a file opened with O_APPEND, so lines
//! of several processes never mix. Prints `worker UUID ready` once polling. SIGTERM
//! or SIGINT stop it gracefully: no new claims, running jobs get the grace period,
//! then what is still running goes to recovery (`Worker::shutdown`).
//! Logs (env_logger, default level `info`) go to standard error.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use zodiac_async::{
    Error, Handlers, Outcome, Policies, Runner, Worker, WorkerIdentity, WorkerOptions,
};
use zodiac_objects::Database;
use zodiac_storage::{ClientOptions, ClientStorage};

const USAGE: &str = "usage: job_worker ADDR UUID_FILE DIR [--queue Q] [--agent-size N] \
                     [--batch-size N] [--poll-ms N] [--ping-ms N] [--death-ms N] [--grace-ms N] [--wait-ms N] \
                     [--host NAME]";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("job_worker: {message}");
            ExitCode::from(code)
        }
    }
}

/// Appends `line` and a newline to `path` in one write.
fn append(path: &Path, line: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open a log file");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("append to a log file");
}

fn handlers(dir: PathBuf) -> Handlers {
    let pid = std::process::id();
    let mut h = Handlers::new();
    let d = dir.clone();
    h.register("f", move |ctx, key: String| {
        let line = format!("start {key} {} {} {pid}", ctx.job.0, ctx.attempt);
        append(&d.join("f.log"), &line);
        while !d.join(format!("release-{key}")).exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(42i64)
    });
    h.register("record", move |ctx, tag: String| {
        let result = match &ctx.parent_result {
            Some(Outcome::Value(bytes)) => match postcard::from_bytes::<i64>(bytes) {
                Ok(n) => n.to_string(),
                Err(_) => format!("{bytes:?}"),
            },
            Some(Outcome::Failure(f)) => format!("failure:{}", f.kind),
            None => "none".to_string(),
        };
        append(
            &dir.join("callbacks.log"),
            &format!("callback {tag} {result} {pid}"),
        );
        Ok(())
    });
    h
}

fn run() -> Result<(), (u8, String)> {
    let usage = || (1, USAGE.to_string());
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or_else(usage)?;
    let uuid_file = args.next().ok_or_else(usage)?;
    let dir = PathBuf::from(args.next().ok_or_else(usage)?);
    let mut options = WorkerOptions {
        agent_size: 3,
        poll_interval: Duration::from_millis(100),
        ping_interval: Duration::from_millis(200),
        death_interval: Duration::from_secs(1),
        grace_period: Duration::from_secs(30),
        ..WorkerOptions::default()
    };
    let mut wait = Duration::from_secs(1);
    let mut host = None;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(usage)?;
        let ms = || {
            value
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| usage())
        };
        match flag.as_str() {
            "--queue" => options.queues = vec![value.clone()],
            "--agent-size" => options.agent_size = value.parse().map_err(|_| usage())?,
            "--batch-size" => options.batch_size = value.parse().map_err(|_| usage())?,
            "--poll-ms" => options.poll_interval = ms()?,
            "--ping-ms" => options.ping_interval = ms()?,
            "--death-ms" => options.death_interval = ms()?,
            "--grace-ms" => options.grace_period = ms()?,
            "--wait-ms" => wait = ms()?,
            "--host" => host = Some(value.clone()),
            _ => return Err(usage()),
        }
    }

    let identity = match &host {
        Some(host) => WorkerIdentity::acquire_on_host(&uuid_file, host),
        None => WorkerIdentity::acquire(&uuid_file),
    };
    let identity = identity.map_err(|e| match e {
        Error::IdentityInUse { .. } => (2, format!("refusing to start: {e}")),
        e => (1, e.to_string()),
    })?;
    options.restarted = identity.restarted();
    let client_options = ClientOptions::new()
        .wait_timeout(wait)
        .reconnect_delay(Duration::from_millis(20), Duration::from_millis(200));
    let storage = ClientStorage::connect(&addr, client_options).map_err(|e| (1, e.to_string()))?;
    let db = Database::open(Arc::new(storage)).map_err(|e| (1, e.to_string()))?;
    let runner = Runner::new(db.clone(), handlers(dir), Policies::new());

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| (1, e.to_string()))?;
    }
    let mut worker = Worker::new(db, identity.id(), runner, options);
    // Activate (and, after a restart, recover) before saying ready.
    if let Err(e) = worker.poll_once() {
        log::error!("first poll failed: {e}");
    }
    println!("worker {} ready", identity.id());
    std::io::stdout().flush().map_err(|e| (1, e.to_string()))?;
    worker.run(&stop).map_err(|e| (1, e.to_string()))?;
    log::info!("worker {} stopped", identity.id());
    Ok(())
}
