//! `zodiac`: the command line of the Zodiac object database.

mod demo;
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match cli.command {
        Command::Demo { dir } => demo::run(dir.as_deref()),
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
        }),
        Command::DemoWriter { path, counter } => demo::writer(&path, counter),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the cause chain joined with ": ".
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
