//! `zodiac`: the command line of the Zodiac object database.
//!
//! `main` parses the command line ([`cli`]), sets the log level the command asks
//! for, routes the command to its module and turns the outcome into the exit code.
//!
//! Invariants:
//! - An error is printed as one line (its cause chain joined with ": ") and exits 1;
//!   usage errors exit 2 (clap's, and `zodiac bench` in a build without it).
//! - Output cut short by its reader (`zodiac dump FILE | head -1`) ends the process
//!   as it ends `cat`: killed by SIGPIPE, with no message ([`quiet_on_broken_pipe`]),
//!   once the command's destructors ran (temporary directories removed, child
//!   processes stopped, files closed).
//! - This binary has no hidden modes handled before the command line is parsed: the
//!   processes it starts itself (the demo's writer) are ordinary subcommands.

mod analyze;
mod arguments;
#[cfg(feature = "bench")]
mod bench;
#[cfg(not(feature = "bench"))]
#[path = "bench_unavailable.rs"]
mod bench;
mod builtins;
mod cli;
mod copy;
mod demo;
mod inspect;
mod jobs;
mod jobs_admin;
mod jobs_cron;
mod jobs_demo;
mod jobs_put_options;
mod maintenance;
mod pg;
mod progress;
mod server;
mod store;
mod wait_hint;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, JOBS_CONNECT_WAIT, JobsCommand, PgCommand, ServerArgs, WorkerArgs};

/// jemalloc instead of the C library's allocator: a client storage's reader thread
/// allocates what other threads free (replies, invalidations), a pattern that sends
/// glibc's malloc down its slow path on every call (see docs/operations.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    if let Command::Worker(args) = &cli.command
        && let Err(e) = args.check()
    {
        e.exit();
    }
    init_logging(&cli.command);
    // The broken-pipe panic unwinds to here (see `quiet_on_broken_pipe`).
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli.command))) {
        Ok(result) => finish(result),
        Err(payload) if is_broken_pipe(panic_message(&*payload)) => die_of_sigpipe(),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Rust ignores SIGPIPE, so a write to a pipe whose reader has gone fails, and
/// `println!` panics on that failure ("failed printing to stdout: Broken pipe"),
/// as `eprintln!` does on stderr.
/// This hook turns that one panic into what a Unix tool does when its reader
/// stops reading: the default action of SIGPIPE, a silent death by that signal
/// (the shell shows exit status 141), so a pipeline (with `pipefail`) can still
/// tell the output was cut short. Every other panic keeps the default report.
///
/// Restoring SIGPIPE's default action at start would do the same for stdout, but
/// also kill the process on a write to any other closed pipe (a `shell` job's
/// child, a socket), and would kill it at once, skipping destructors. Here the
/// panic of the main thread, where the commands print, unwinds silently to
/// `main` first: the demo's temporary directory is removed and its worker
/// processes are stopped, a `jobs put --wait` closes its data file. Only a
/// printing thread other than the main one dies by the signal at once.
fn quiet_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(panic_message(info.payload())) {
            default_hook(info);
        } else if cfg!(panic = "abort") || std::thread::current().name() != Some("main") {
            // Nothing unwinds to `main` from here.
            die_of_sigpipe();
        }
    }));
}

/// A panic's message, when it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("")
}

/// Whether a panic is `println!`'s on a closed stdout, or `eprintln!`'s on a
/// closed stderr (`zodiac jobs put … --wait 2>&1 | head -1`, then a hint).
fn is_broken_pipe(message: &str) -> bool {
    (message.starts_with("failed printing to stdout")
        || message.starts_with("failed printing to stderr"))
        && message.contains("Broken pipe")
}

/// Ends the process by the default action of SIGPIPE, as `cat` ends.
fn die_of_sigpipe() -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
    // Only if the signal could not be raised: the status a shell gives it.
    std::process::exit(128 + signal_hook::consts::SIGPIPE);
}

/// cli.md: RUST_LOG sets the level; the default is info for the server and the
/// worker, warn for the tools.
fn init_logging(command: &Command) {
    let default_level = match command {
        Command::Server(_) | Command::Worker(_) => "info",
        // The demo prints what happens itself (its failing job is on purpose).
        Command::Demo { .. } => "off",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
}

/// Runs one parsed command: the exit code it asks for, or the error that stopped it.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    let short_wait = Some(JOBS_CONNECT_WAIT);
    match command {
        Command::Demo { dir, storage: true } => demo::run(dir.as_deref()).map(done),
        Command::Demo {
            dir,
            storage: false,
        } => jobs_demo::run(dir.as_deref()).map(done),
        Command::DemoWriter { path, counter } => demo::writer(&path, counter).map(done),
        Command::Verify { path, json } => maintenance::run_verify(&path, json),
        Command::Backup { path, dir } => maintenance::run_backup(&path, &dir),
        Command::Analyze { path, json } => analyze::run_analyze(&path, json),
        Command::Refs { path } => analyze::run_refs(&path),
        Command::Pack {
            store,
            before,
            no_gc,
            lock,
            connect,
        } => maintenance::run_pack(
            &store,
            before,
            no_gc,
            &lock.apply(connect.connect(short_wait)),
        ),
        Command::Restore { dir, output, at } => maintenance::run_restore(&dir, &output, at),
        Command::Copy {
            src,
            dst,
            lock,
            connect,
        } => copy::run_copy(&src, &dst, &lock.apply(connect.connect(short_wait))).map(done),
        Command::Dump {
            path,
            from,
            to,
            json,
        } => inspect::dump(&path, from, to, json).map(done),
        Command::Tail { path, n, json } => inspect::tail(&path, n, json).map(done),
        Command::History {
            store,
            oid,
            json,
            connect,
        } => inspect::history(&store, oid, json, &connect.connect(short_wait)).map(done),
        Command::Recover {
            path,
            output,
            stop_at_damage,
        } => maintenance::run_recover(&path, &output, stop_at_damage),
        Command::Server(args) => server::run(&server_args(args)).map(done),
        Command::Worker(args) => worker::run(worker_args(args)).map(done),
        Command::Jobs { command } => run_jobs(command),
        Command::Bench(args) => bench::run(args),
        Command::Pg { command } => match command {
            PgCommand::Init { url } => pg::init(&url).map(done),
            PgCommand::Verify { url } => pg::verify(&url).map(done),
        },
    }
}

fn server_args(args: ServerArgs) -> server::Args {
    server::Args {
        path: args.path,
        listen: args.listen,
        read_only: args.read_only,
        token_file: args.token_file,
        max_connections: args.max_connections,
        invalidation_history: args.invalidation_history,
        lock_wait: args.lock.wait_lock,
        hardening: args.hardening,
    }
}

fn worker_args(args: WorkerArgs) -> worker::Args {
    worker::Args {
        store: args.store,
        queues: args.queues,
        agent: args.agent,
        size: args.size,
        // `WorkerArgs::check` refused a batch larger than the agent's size.
        batch: args.batch,
        uuid_file: args.uuid_file,
        poll_interval: args.poll_interval,
        ping_interval: args.ping_interval,
        death_interval: args.ping_death_interval,
        grace: args.grace,
        allow_shell: args.allow_shell,
        // A worker waits for its server to start as long as it takes (see
        // `worker::run`); once connected, a restarted server as any client does.
        connect: args.lock.apply(args.connect.connect(None)),
    }
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
            extra,
            lock,
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
            extra,
            connect: lock.apply(connect.connect(wait)),
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
        JobsCommand::Cron { command } => jobs_cron::run(command, wait).map(|()| ExitCode::SUCCESS),
        other => jobs_admin::run(other, wait).map(|()| ExitCode::SUCCESS),
    }
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The cause chain joined with ": ", each cause once. An error that shows its
/// cause in its own message and also returns it as `source()` (a storage error
/// around an `io::Error`) would otherwise print "... (os error 2): No such file or
/// directory (os error 2)": a cause the message before it already shows is left out.
fn one_line(error: &anyhow::Error) -> String {
    let mut shown: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if shown.last().is_some_and(|parent| parent.contains(&text)) {
            continue;
        }
        shown.push(text);
    }
    shown.join(": ")
}
