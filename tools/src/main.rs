//! `zodiac`: the command line of the Zodiac object database.

mod analyze;
mod bench;
mod builtins;
mod demo;
mod inspect;
mod jobs;
mod jobs_demo;
mod maintenance;
mod progress;
mod server;
mod store;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// jemalloc instead of the C library's allocator: a client storage's reader thread
/// allocates what other threads free (replies, invalidations), a pattern that sends
/// glibc's malloc down its slow path on every call (see docs/operations.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "zodiac",
    version,
    about = "The Zodiac object database: tools and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to reach a server store (`tcp://HOST:PORT`).
#[derive(Args, Clone, Debug, Default)]
struct ConnectArgs {
    /// Authenticate to the server with the secret in this file.
    #[arg(long, value_name = "F")]
    token_file: Option<PathBuf>,
}

impl ConnectArgs {
    fn connect(self, wait_timeout: Option<std::time::Duration>) -> store::Connect {
        store::Connect {
            token_file: self.token_file,
            wait_timeout,
        }
    }
}

/// How long a `jobs` command (or another short command) waits for an
/// unreachable server.
const JOBS_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Subcommand)]
enum JobsCommand {
    /// Put a job in a queue; print its id. With --wait, wait for its result and
    /// print it: exit 0 if the job succeeded, 1 if it failed, 3 on timeout.
    Put {
        /// A data file path, or tcp://HOST:PORT of a `zodiac server`.
        store: String,
        /// The handler to run (built-in: echo, sleep, fail, incr, shell).
        handler: String,
        /// The handler's arguments: one JSON object.
        #[arg(value_name = "ARGS_JSON", default_value = "{}", value_parser = jobs::parse_arguments)]
        args: serde_json::Value,
        /// The queue (default: the default queue).
        #[arg(long, value_name = "NAME", default_value = "")]
        queue: String,
        /// Not before this time: RFC 3339, or relative to now (+30s, +2h).
        #[arg(long, value_name = "TIME", value_parser = inspect::parse_time)]
        begin_after: Option<zodiac_storage::Tid>,
        /// Fail with a timeout unless started within this long after begin-after.
        #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration)]
        begin_by: Option<std::time::Duration>,
        /// The retry policy.
        #[arg(long, value_parser = ["default", "never", "forever"])]
        retry: Option<String>,
        /// Wait until the job completes and print its result.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 3).
        #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration, requires = "wait")]
        timeout: Option<std::time::Duration>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List jobs held by queues and agents, newest-claimable first per queue.
    List {
        store: String,
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
        /// new, pending, assigned, active, callbacks or completed.
        #[arg(long, value_parser = jobs::parse_status)]
        status: Option<zodiac_async::Status>,
        #[arg(long, value_name = "NAME")]
        handler: Option<String>,
        /// Most jobs listed.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON document (an array).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show one job: arguments, status, result or failure, times, attempts, error
    /// history, retry policy and callbacks.
    Show {
        store: String,
        #[arg(value_parser = inspect::parse_oid)]
        job_id: zodiac_storage::Oid,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Per queue: job counts by status, and the dispatchers (alive or dead, last
    /// ping, agents and their load).
    Status {
        store: String,
        /// A dispatcher not heard from for this long is shown as dead.
        #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration)]
        ping_death_interval: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Cancel a job that has not started: it completes with a `cancelled` failure.
    Cancel {
        store: String,
        #[arg(value_parser = inspect::parse_oid)]
        job_id: zodiac_storage::Oid,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Durable jobs end to end on an embedded store: put jobs (one failing, one
    /// scheduled, one with a callback), run a dispatcher, kill a worker process
    /// mid-job and watch it recover; print results and timings. With --storage:
    /// a tour of the storage instead (snapshots, a conflict, kill -9 and a torn
    /// write, recovery, history).
    Demo {
        /// Directory for the store (created if missing; must not hold a demo store
        /// already). Default: a fresh temporary directory, removed at exit.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        /// Show the storage tour instead of the jobs demo.
        #[arg(long)]
        storage: bool,
    },
    /// Walk and check every record of a data file (CRCs, lengths, back-pointers,
    /// tids) and its saved index; exit 1 when anything is damaged or the index
    /// disagrees. Never modifies the file.
    Verify {
        path: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy every intact transaction into a new data file, keeping tids and
    /// metadata: damaged regions are skipped (the walk resumes at the next valid
    /// transaction) and listed, with every transaction they held.
    Recover {
        path: PathBuf,
        /// The new data file (must not exist).
        #[arg(long, value_name = "NEW_PATH")]
        output: PathBuf,
        /// Copy only the transactions before the first damage; count the intact
        /// ones after it without copying them.
        #[arg(long)]
        stop_at_damage: bool,
    },
    /// Pack a data file offline: keep each object's newest revision at or before
    /// TIME and every later one; drop objects unreachable from the root (GC)
    /// unless --no-gc. The original is kept as PATH.old.
    Pack {
        /// A data file (packed offline: no other process may have it open), or
        /// tcp://HOST:PORT of the `zodiac server` serving it (packed while it serves).
        #[arg(value_name = "PATH")]
        store: String,
        /// The pack time: RFC 3339, or relative to now (-7d, -2h). Default: now.
        #[arg(long, value_name = "TIME", value_parser = inspect::parse_time)]
        before: Option<zodiac_storage::Tid>,
        /// Keep unreachable objects.
        #[arg(long)]
        no_gc: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Per-type object counts and bytes, live (newest revisions) and old.
    Analyze {
        path: PathBuf,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List references from live objects to objects that do not exist, and ids the
    /// job layer's records name outside their reference lists; exit 1 if any.
    Refs { path: PathBuf },
    /// Copy what a data file gained since the last backup point into a backup
    /// directory (everything, the first time), verified. Safe while a server writes.
    Backup {
        path: PathBuf,
        /// The backup directory (created if missing).
        dir: PathBuf,
    },
    /// Rebuild a data file from a backup directory, as of a backup point.
    Restore {
        /// The backup directory.
        dir: PathBuf,
        /// The new data file (must not exist).
        output: PathBuf,
        /// The backup point (default: the last).
        #[arg(long, value_name = "N")]
        at: Option<u64>,
    },
    /// Print every transaction (tid, time, user, description, extension, objects
    /// written), oldest first.
    Dump {
        path: String,
        /// First tid (a number, or an RFC 3339 time).
        #[arg(long, value_name = "TID", value_parser = inspect::parse_tid)]
        from: Option<zodiac_storage::Tid>,
        /// Last tid (a number, or an RFC 3339 time).
        #[arg(long, value_name = "TID", value_parser = inspect::parse_tid)]
        to: Option<zodiac_storage::Tid>,
        /// One JSON document per transaction, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the last transactions, oldest first.
    Tail {
        path: String,
        /// How many.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// One JSON document per transaction, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the revisions of one object, newest first. STORE is a data file or
    /// tcp://HOST:PORT of a `zodiac server`.
    History {
        store: String,
        /// The object id, decimal or 0x-prefixed hex.
        #[arg(value_parser = inspect::parse_oid)]
        oid: zodiac_storage::Oid,
        /// One JSON document.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Serve a data file to `zodiac` clients (client storages) over TCP. Prints
    /// `listening on HOST:PORT` when ready; serves until SIGTERM or SIGINT.
    Server {
        /// The data file (created if missing).
        path: PathBuf,
        /// Address to listen on; port 0 picks a free port (the line printed names it).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8100")]
        listen: String,
        /// Serve without ever writing: the file is opened read-only, commits are refused.
        #[arg(long)]
        read_only: bool,
        /// Require clients to prove they know the secret in this file (its content,
        /// without surrounding whitespace).
        #[arg(long, value_name = "F")]
        token_file: Option<PathBuf>,
        /// Most clients served at once; more are refused.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        max_connections: usize,
        /// Transactions remembered for reconnecting clients to catch up.
        #[arg(long, value_name = "N", default_value_t = 100)]
        invalidation_history: usize,
    },
    /// Run a dispatcher with the built-in handlers (echo, sleep, fail, incr; shell
    /// with --allow-shell). Prints `worker <uuid> ready` when polling; stops
    /// gracefully on SIGTERM or SIGINT (a second signal exits at once).
    Worker {
        /// A data file path (this process then holds its writer lock), or
        /// tcp://HOST:PORT of a `zodiac server` (to share the database).
        store: String,
        /// A queue to poll (repeat for several; default: the default queue).
        #[arg(long = "queue", value_name = "NAME")]
        queues: Vec<String>,
        /// The agent's name in each queue.
        #[arg(long, value_name = "NAME", default_value = zodiac_async::limits::AGENT_NAME)]
        agent: String,
        /// Jobs run at once.
        #[arg(long, value_name = "N", default_value_t = zodiac_async::limits::AGENT_SIZE_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        size: u32,
        /// Jobs a run thread claims, runs one after another and completes in one
        /// commit (at most --size; 1: one job per thread and per commit). Larger
        /// batches cost far fewer commits per job; their jobs wait for each
        /// other's results to commit.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        batch: u32,
        /// The file holding this worker's UUID (created if missing; locked while
        /// the worker runs).
        #[arg(long, value_name = "F")]
        uuid_file: Option<PathBuf>,
        /// Longest wait between polls (a put wakes the worker at once).
        #[arg(long, value_name = "DUR", default_value = "5s", value_parser = inspect::parse_duration)]
        poll_interval: std::time::Duration,
        #[arg(long, value_name = "DUR", default_value = "30s", value_parser = inspect::parse_duration)]
        ping_interval: std::time::Duration,
        /// A dispatcher silent this long is dead; its jobs are recovered.
        #[arg(long, value_name = "DUR", default_value = "60s", value_parser = inspect::parse_duration)]
        ping_death_interval: std::time::Duration,
        /// On stop, how long running jobs may finish before they are handed to recovery.
        #[arg(long, value_name = "DUR", default_value = "30s", value_parser = inspect::parse_duration)]
        grace: std::time::Duration,
        /// Register the `shell` handler (runs `sh -c` commands from job arguments).
        #[arg(long)]
        allow_shell: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Put, list, show and cancel jobs, and show the queues' status.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Run a benchmark workload of workloads.md on fresh stores; print a table row
    /// per workload, or one JSON line with --json.
    #[command(after_help = bench::help())]
    Bench {
        /// The workload, or a group of them (listed below).
        #[arg(value_parser = bench::parse_workload)]
        workload: String,
        /// file, memory, server, tcp://HOST:PORT, or an existing directory (below).
        #[arg(value_parser = bench::parse_store)]
        store: String,
        /// One JSON line per workload instead of a table.
        #[arg(long)]
        json: bool,
        /// Runs of each workload, each on a fresh store; the median is reported.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u64).range(1..=bench::REPS_MAX))]
        reps: u64,
    },
    /// The writer process the demo kills: commits in a loop until killed.
    #[command(hide = true)]
    DemoWriter {
        path: PathBuf,
        /// The object whose counter each transaction increments.
        #[arg(long)]
        counter: u64,
    },
}

fn main() -> ExitCode {
    // Processes a benchmark started (`zodiac bench <hidden mode> ...`) are not
    // commands of this line: the benchmark library runs them.
    if let Some(code) = bench::run_hidden_mode(&std::env::args_os().collect::<Vec<_>>()) {
        return code;
    }
    let cli = Cli::parse();
    // cli.md: RUST_LOG sets the level; the default is info for the server (and, later,
    // the worker), warn for the tools.
    let default_level = match cli.command {
        Command::Server { .. } | Command::Worker { .. } => "info",
        // The demo prints what happens itself (its failing job is on purpose).
        Command::Demo { .. } => "off",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    let result = match cli.command {
        Command::Demo { dir, storage: true } => {
            demo::run(dir.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Command::Demo {
            dir,
            storage: false,
        } => jobs_demo::run(dir.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::DemoWriter { path, counter } => {
            demo::writer(&path, counter).map(|()| ExitCode::SUCCESS)
        }
        Command::Verify { path, json } => maintenance::run_verify(&path, json),
        Command::Backup { path, dir } => maintenance::run_backup(&path, &dir),
        Command::Analyze { path, json } => analyze::run_analyze(&path, json),
        Command::Refs { path } => analyze::run_refs(&path),
        Command::Pack {
            store,
            before,
            no_gc,
            connect,
        } => maintenance::run_pack(
            &store,
            before,
            no_gc,
            &connect.connect(Some(JOBS_CONNECT_WAIT)),
        ),
        Command::Restore { dir, output, at } => maintenance::run_restore(&dir, &output, at),
        Command::Dump {
            path,
            from,
            to,
            json,
        } => inspect::dump(&path, from, to, json).map(|()| ExitCode::SUCCESS),
        Command::Tail { path, n, json } => {
            inspect::tail(&path, n, json).map(|()| ExitCode::SUCCESS)
        }
        Command::History {
            store,
            oid,
            json,
            connect,
        } => inspect::history(&store, oid, json, &connect.connect(Some(JOBS_CONNECT_WAIT)))
            .map(|()| ExitCode::SUCCESS),
        Command::Recover {
            path,
            output,
            stop_at_damage,
        } => maintenance::run_recover(&path, &output, stop_at_damage),
        Command::Server {
            path,
            listen,
            read_only,
            token_file,
            max_connections,
            invalidation_history,
        } => server::run(&server::Args {
            path,
            listen,
            read_only,
            token_file,
            max_connections,
            invalidation_history,
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Worker {
            store,
            queues,
            agent,
            size,
            batch,
            uuid_file,
            poll_interval,
            ping_interval,
            ping_death_interval,
            grace,
            allow_shell,
            connect,
        } => worker::run(worker::Args {
            store,
            queues,
            agent,
            size,
            batch: batch.min(size),
            uuid_file,
            poll_interval,
            ping_interval,
            death_interval: ping_death_interval,
            grace,
            allow_shell,
            connect: connect.connect(None),
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Jobs { command } => run_jobs(command),
        Command::Bench {
            workload,
            store,
            json,
            reps,
        } => bench::run(&workload, &store, json, reps),
    };
    finish(result)
}

fn run_jobs(command: JobsCommand) -> anyhow::Result<ExitCode> {
    let wait = Some(JOBS_CONNECT_WAIT);
    match command {
        JobsCommand::Put {
            store,
            handler,
            args,
            queue,
            begin_after,
            begin_by,
            retry,
            wait: wait_for_result,
            timeout,
            connect,
        } => jobs::put(jobs::Put {
            store,
            handler,
            arguments: args,
            queue,
            begin_after: begin_after.map(|t| zodiac_async::Timestamp::from_micros(t.0)),
            begin_by,
            retry,
            wait: wait_for_result,
            timeout,
            connect: connect.connect(wait),
        }),
        JobsCommand::List {
            store,
            queue,
            status,
            handler,
            limit,
            json,
            connect,
        } => jobs::list(jobs::List {
            store,
            queue,
            status,
            handler,
            limit,
            json,
            connect: connect.connect(wait),
        })
        .map(|()| ExitCode::SUCCESS),
        JobsCommand::Show {
            store,
            job_id,
            json,
            connect,
        } => jobs::show(&store, job_id, json, &connect.connect(wait)).map(|()| ExitCode::SUCCESS),
        JobsCommand::Status {
            store,
            ping_death_interval,
            json,
            connect,
        } => jobs::status(
            &store,
            ping_death_interval.unwrap_or(jobs::STATUS_DEATH_INTERVAL),
            json,
            &connect.connect(wait),
        )
        .map(|()| ExitCode::SUCCESS),
        JobsCommand::Cancel {
            store,
            job_id,
            connect,
        } => jobs::cancel(&store, job_id, &connect.connect(wait)).map(|()| ExitCode::SUCCESS),
    }
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            // One line: the cause chain joined with ": ".
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
