//! The command line's grammar: every subcommand, its arguments and their help, as
//! clap parses them. What each command does lives in its own module; `main` only
//! routes a parsed [`Command`] there.
//!
//! Invariants:
//! - The help texts are the user's documentation of the command line (cli.md); an
//!   argument's parser checks its value before any command runs, so a bad value is
//!   a usage error (exit 2) that touched nothing.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{arguments, bench, inspect, jobs, store};

#[derive(Parser)]
#[command(
    name = "zodiac",
    version,
    about = "The Zodiac object database: tools and demo"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a server store (`tcp://HOST:PORT`).
#[derive(Args, Clone, Debug, Default)]
pub struct ConnectArgs {
    /// Authenticate to the server with the secret in this file.
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
}

impl ConnectArgs {
    pub fn connect(self, wait_timeout: Option<std::time::Duration>) -> store::Connect {
        store::Connect {
            token_file: self.token_file,
            wait_timeout,
            lock_wait: None,
        }
    }
}

/// How long a command that writes a data file waits for another process's
/// writer lock.
#[derive(Args, Clone, Debug, Default)]
pub struct LockArgs {
    /// When another process holds the data file's writer lock, retry opening it
    /// for up to this long (e.g. 10s) before failing. Default: fail at once.
    #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
    pub wait_lock: Option<std::time::Duration>,
}

impl LockArgs {
    /// `connect`, waiting for the writer lock as asked.
    pub fn apply(self, connect: store::Connect) -> store::Connect {
        store::Connect {
            lock_wait: self.wait_lock,
            ..connect
        }
    }
}

/// How long a `jobs` command (or another short command) waits for an
/// unreachable server.
pub const JOBS_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Put a job in a queue; print its id. With --wait, wait for its result and
    /// print it: exit 0 if the job succeeded, 1 if it failed, 3 on timeout.
    Put {
        /// A data file path, or tcp://HOST:PORT of a `zodiac server`.
        store: String,
        /// The handler to run (built-in: echo, sleep, fail, incr, shell).
        #[arg(value_parser = arguments::handler_name)]
        handler: String,
        /// The handler's arguments: one JSON object, `@FILE` (read from FILE) or
        /// `-` (read from standard input).
        #[arg(value_name = "ARGS_JSON", default_value = "{}", value_parser = arguments::parse)]
        args: serde_json::Value,
        /// The queue (default: the default queue).
        #[arg(long, value_name = "NAME", default_value = "", value_parser = arguments::queue_name)]
        queue: String,
        /// Not before this time: RFC 3339, or relative to now (+30s, +2h; -1m is
        /// in the past, so the job is due at once).
        #[arg(long, value_name = "TIME", value_parser = inspect::parse_time, allow_hyphen_values = true)]
        begin_after: Option<zodiac_storage::Tid>,
        /// Fail with a timeout unless started within this long after begin-after.
        #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
        begin_by: Option<std::time::Duration>,
        /// The retry policy.
        #[arg(long, value_parser = ["default", "never", "forever"])]
        retry: Option<String>,
        /// Wait until the job completes and print its result.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 3).
        #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration,
          allow_hyphen_values = true, requires = "wait")]
        timeout: Option<std::time::Duration>,
        #[command(flatten)]
        extra: crate::jobs_put_options::PutExtraArgs,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List jobs held by queues and agents, newest-claimable first per queue.
    List {
        store: String,
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
        /// new, pending, assigned, active, callbacks or completed; or how a
        /// completed job ended: succeeded, failed, cancelled or timeout.
        #[arg(long, value_parser = jobs::parse_list_status)]
        status: Option<jobs::ListStatus>,
        #[arg(long, value_name = "NAME")]
        handler: Option<String>,
        /// Most jobs listed.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 100,
            allow_negative_numbers = true
        )]
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
    /// Per queue: whether it is paused, job counts by status, completed jobs by
    /// ending (succeeded, failed, cancelled, timeout), and the dispatchers (alive
    /// or dead, last ping, agents and their load).
    Status {
        store: String,
        /// A dispatcher not heard from for this long is shown as dead.
        #[arg(long, value_name = "DUR", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
        ping_death_interval: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Cancel jobs that have not started: each completes with a `cancelled`
    /// failure. By id (all or none), or every pending job selected by --queue,
    /// --handler and --status, in batches of a bounded size; prints the count.
    Cancel {
        store: String,
        #[arg(value_parser = inspect::parse_oid, value_name = "JOB_ID")]
        job_ids: Vec<zodiac_storage::Oid>,
        /// Select the pending jobs of this queue.
        #[arg(long, value_name = "NAME", conflicts_with = "job_ids")]
        queue: Option<String>,
        /// Select the pending jobs of this handler.
        #[arg(long, value_name = "NAME", conflicts_with = "job_ids")]
        handler: Option<String>,
        /// Select jobs in this status (only `pending` can be cancelled).
        #[arg(long, value_parser = jobs::parse_status, conflicts_with = "job_ids")]
        status: Option<zodiac_async::Status>,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Put failed (or cancelled, or timed-out) completed jobs back in their queue,
    /// with a fresh attempt count, in one transaction: by id (all or none), or
    /// every failed one with --all-failed.
    Retry {
        store: String,
        #[arg(value_parser = inspect::parse_oid, value_name = "JOB_ID",
              required_unless_present = "all_failed")]
        job_ids: Vec<zodiac_storage::Oid>,
        /// Every completed job that failed (not cancelled, not timed out).
        #[arg(long, conflicts_with = "job_ids")]
        all_failed: bool,
        /// With --all-failed: only this queue's.
        #[arg(long, value_name = "NAME", requires = "all_failed")]
        queue: Option<String>,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Drop completed jobs from their queue's retained jobs (all or none); the
    /// next pack's garbage collection reclaims them.
    Discard {
        store: String,
        #[arg(value_parser = inspect::parse_oid, value_name = "JOB_ID", required = true)]
        job_ids: Vec<zodiac_storage::Oid>,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Stop claims from a queue ('' is the default queue): running jobs finish,
    /// puts are accepted, workers claim nothing from it until `resume`.
    Pause {
        store: String,
        queue: String,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Create or resize quota NAME of QUEUE: at most SIZE of the jobs put with
    /// `--quota NAME` run at once, across every worker; with --every-job, every
    /// job of the queue (its global concurrency).
    Quota {
        store: String,
        /// The queue ('' is the default queue).
        queue: String,
        name: String,
        /// Jobs held at once (0 holds every job counted against it back).
        size: u32,
        /// Every job of the queue counts against NAME from its next claim on,
        /// whether or not it was put with --quota NAME.
        #[arg(long, conflicts_with = "named_only")]
        every_job: bool,
        /// Only the jobs put with --quota NAME count against it (undoes
        /// --every-job).
        #[arg(long)]
        named_only: bool,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Recurring jobs: add, list and remove schedules.
    Cron {
        #[command(subcommand)]
        command: crate::jobs_cron::CronCommand,
    },
    /// Let workers claim from a paused queue again (at their next poll).
    Resume {
        store: String,
        queue: String,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Subcommand)]
pub enum PgCommand {
    /// Create the Zodiac tables in the URL's schema (nothing changes when they
    /// exist); any store command on postgres://URL needs them.
    Init { url: String },
    /// Check the schema's invariants (head, current rows, revision chains,
    /// references); exit 1 when any is broken.
    Verify { url: String },
}

#[derive(Subcommand)]
pub enum Command {
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
        #[arg(long, value_name = "TIME", value_parser = inspect::parse_time, allow_hyphen_values = true)]
        before: Option<zodiac_storage::Tid>,
        /// Keep unreachable objects.
        #[arg(long)]
        no_gc: bool,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Per-type object counts and bytes, live (newest revisions) and old.
    Analyze {
        /// A data file, tcp://HOST:PORT of a `zodiac server`, or postgres://URL.
        path: String,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List references from live objects to objects that do not exist, and ids the
    /// job layer's records name outside their reference lists; exit 1 if any.
    Refs {
        /// A data file, tcp://HOST:PORT of a `zodiac server`, or postgres://URL.
        path: String,
    },
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
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        at: Option<u64>,
    },
    /// Copy every transaction of SRC into DST, keeping tids and metadata, and
    /// verify each copied record. Each of SRC and DST is a data file path or
    /// tcp://HOST:PORT of a `zodiac server`; DST is created when it is a missing
    /// data file. Incremental: copies only what SRC gained after DST's last
    /// transaction (which must be SRC's too), so an interrupted copy resumes.
    Copy {
        /// The store to copy from (read only).
        src: String,
        /// The store to copy into: new, empty, or an earlier copy of SRC.
        dst: String,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Print every transaction (tid, time, user, description, extension, objects
    /// written), oldest first.
    Dump {
        /// A data file, tcp://HOST:PORT of a `zodiac server`, or postgres://URL.
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
        /// A data file, tcp://HOST:PORT of a `zodiac server`, or postgres://URL.
        path: String,
        /// How many.
        #[arg(short = 'n', default_value_t = 10, allow_negative_numbers = true)]
        n: usize,
        /// One JSON document per transaction, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the revisions of one object, newest first. STORE is a data file,
    /// tcp://HOST:PORT of a `zodiac server`, or postgres://URL.
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
    /// Serve a data file (or PostgreSQL) to `zodiac` clients over TCP. Prints
    /// `listening on HOST:PORT` when ready; serves until SIGTERM or SIGINT.
    Server(ServerArgs),
    /// Run a dispatcher with the built-in handlers (echo, sleep, fail, incr; shell
    /// with --allow-shell). Prints `worker <uuid> ready` when polling; stops
    /// gracefully on SIGTERM or SIGINT (a second signal exits at once).
    Worker(WorkerArgs),
    /// Put, list, show, cancel, retry and discard jobs; pause and resume queues;
    /// show the queues' status.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// PostgreSQL stores: create a schema's tables, check its invariants. URL:
    /// postgres://USER@HOST:PORT/DB, with ?schema=NAME for another schema than
    /// `zodiac`.
    Pg {
        #[command(subcommand)]
        command: PgCommand,
    },
    /// Run a benchmark workload of workloads.md on fresh stores; print a table row
    /// per workload, or one JSON line with --json.
    #[command(after_help = bench::help())]
    Bench(bench::Args),
    /// The writer process the demo kills: commits in a loop until killed.
    #[command(hide = true)]
    DemoWriter {
        path: PathBuf,
        /// The object whose counter each transaction increments.
        #[arg(long)]
        counter: u64,
    },
}

#[derive(Args)]
pub struct ServerArgs {
    /// The data file (created if missing), or postgres://URL: a server in front
    /// of PostgreSQL for clients that speak the protocol.
    pub path: PathBuf,
    /// Address to listen on; port 0 picks a free port (the line printed names it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8100")]
    pub listen: String,
    /// Serve without ever writing: the file is opened read-only, commits are refused.
    #[arg(long)]
    pub read_only: bool,
    /// Require clients to prove they know the secret in this file (its content,
    /// without surrounding whitespace).
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// Most clients served at once (at least 1); more are refused.
    #[arg(long, value_name = "N", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Transactions remembered for reconnecting clients to catch up.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        allow_negative_numbers = true
    )]
    pub invalidation_history: usize,
    #[command(flatten)]
    pub hardening: crate::server::Hardening,
    #[command(flatten)]
    pub lock: LockArgs,
}

impl WorkerArgs {
    /// Checks what the parser cannot check one argument at a time: the usage
    /// error to report, if any.
    pub fn check(&self) -> Result<(), clap::Error> {
        if self.batch > self.size {
            let message = format!(
                "--batch {} is larger than --size {}: a run thread's batch is at most the jobs \
                 the agent runs at once; lower --batch or raise --size",
                self.batch, self.size
            );
            let mut command = <Cli as clap::CommandFactory>::command();
            // Built, so that the worker's usage line names `zodiac worker`.
            command.build();
            let worker = command
                .find_subcommand_mut("worker")
                .expect("the worker subcommand exists");
            return Err(worker.error(clap::error::ErrorKind::ArgumentConflict, message));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    /// A data file path (this process then holds its writer lock),
    /// tcp://HOST:PORT of a `zodiac server` (to share the database), or
    /// postgres://URL (workers on many machines open the database directly).
    pub store: String,
    /// A queue to poll (repeat for several; default: the default queue).
    #[arg(long = "queue", value_name = "NAME", value_parser = arguments::queue_name)]
    pub queues: Vec<String>,
    /// The agent's name in each queue.
    #[arg(long, value_name = "NAME", default_value = zodiac_async::limits::AGENT_NAME)]
    pub agent: String,
    /// Jobs run at once.
    #[arg(long, value_name = "N", default_value_t = zodiac_async::limits::AGENT_SIZE_DEFAULT,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub size: u32,
    /// Jobs a run thread claims, runs one after another and completes in one
    /// commit (at most --size; 1: one job per thread and per commit). Larger
    /// batches cost far fewer commits per job; their jobs wait for each
    /// other's results to commit. A batch larger than --size is refused.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// The file holding this worker's UUID (created if missing; locked while
    /// the worker runs).
    #[arg(long, value_name = "F")]
    pub uuid_file: Option<PathBuf>,
    /// Longest wait between polls (a put wakes the worker at once).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
    pub poll_interval: std::time::Duration,
    /// How often the worker records that it is alive.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
    pub ping_interval: std::time::Duration,
    /// A dispatcher silent this long is dead; its jobs are recovered.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
    pub ping_death_interval: std::time::Duration,
    /// On stop, how long running jobs may finish before they are handed to recovery.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = inspect::parse_duration,
          allow_hyphen_values = true)]
    pub grace: std::time::Duration,
    /// Register the `shell` handler (runs `sh -c` commands from job arguments).
    #[arg(long)]
    pub allow_shell: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}
