//! `zodiac`: the command line of the Zodiac object database.

mod analyze;
mod demo;
mod inspect;
mod maintenance;
mod progress;
mod server;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
    /// Show what the storage does, step by step, on an embedded file store: commits,
    /// MVCC snapshots, a write conflict, kill -9 and a torn write, recovery, history.
    Demo {
        /// Directory for the store (created if missing; must not hold a demo store
        /// already). Default: a fresh temporary directory, removed at exit.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
    },
    /// Walk and check every record of a data file (CRCs, lengths, back-pointers,
    /// tids); exit 1 when anything is damaged. Never modifies the file.
    Verify {
        path: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy every intact transaction before the first damage into a new data file,
    /// keeping tids and metadata, and report what was lost.
    Recover {
        path: PathBuf,
        /// The new data file (must not exist).
        #[arg(long, value_name = "NEW_PATH")]
        output: PathBuf,
    },
    /// Pack a data file offline: keep each object's newest revision at or before
    /// TIME and every later one; drop objects unreachable from the root (GC)
    /// unless --no-gc. The original is kept as PATH.old.
    Pack {
        path: PathBuf,
        /// The pack time: RFC 3339, or relative to now (-7d, -2h). Default: now.
        #[arg(long, value_name = "TIME", value_parser = inspect::parse_time)]
        before: Option<zodiac_storage::Tid>,
        /// Keep unreachable objects.
        #[arg(long)]
        no_gc: bool,
    },
    /// Per-type object counts and bytes, live (newest revisions) and old.
    Analyze {
        path: PathBuf,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List references from live objects to objects that do not exist; exit 1 if any.
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
    /// Print the revisions of one object, newest first.
    History {
        store: String,
        /// The object id, decimal or 0x-prefixed hex.
        #[arg(value_parser = inspect::parse_oid)]
        oid: zodiac_storage::Oid,
        /// One JSON document.
        #[arg(long)]
        json: bool,
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
    let cli = Cli::parse();
    // cli.md: RUST_LOG sets the level; the default is info for the server (and, later,
    // the worker), warn for the tools.
    let default_level = match cli.command {
        Command::Server { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    let result = match cli.command {
        Command::Demo { dir } => demo::run(dir.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::DemoWriter { path, counter } => {
            demo::writer(&path, counter).map(|()| ExitCode::SUCCESS)
        }
        Command::Verify { path, json } => maintenance::run_verify(&path, json),
        Command::Backup { path, dir } => maintenance::run_backup(&path, &dir),
        Command::Analyze { path, json } => analyze::run_analyze(&path, json),
        Command::Refs { path } => analyze::run_refs(&path),
        Command::Pack {
            path,
            before,
            no_gc,
        } => maintenance::run_pack(&path, before, no_gc),
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
        Command::History { store, oid, json } => {
            inspect::history(&store, oid, json).map(|()| ExitCode::SUCCESS)
        }
        Command::Recover { path, output } => maintenance::run_recover(&path, &output),
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
    };
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
