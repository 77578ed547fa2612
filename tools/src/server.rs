//! `zodiac server`: serves one data file (or a PostgreSQL schema) to client
//! storages until SIGTERM or SIGINT, then stops accepting, closes the connections
//! and closes the store (a file saves its index).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use zodiac_storage::{FileOptions, Server, ServerOptions, Storage};

pub struct Args {
    pub path: PathBuf,
    pub listen: String,
    pub read_only: bool,
    pub token_file: Option<PathBuf>,
    pub max_connections: usize,
    pub invalidation_history: usize,
    /// How long to retry opening a data file another process holds (`--wait-lock`).
    pub lock_wait: Option<std::time::Duration>,
}

pub fn run(args: &Args) -> Result<()> {
    let token = args
        .token_file
        .as_deref()
        .map(crate::store::read_token)
        .transpose()?;
    // Registered before serving, so a signal during startup is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    // Bound before the data file is opened: an address in use creates no file.
    let listener = Server::bind(args.listen.as_str())
        .with_context(|| format!("listening on {}", args.listen))?;
    let shown = args.path.display().to_string();
    let storage: Arc<dyn Storage> = if crate::store::is_postgres(&shown) {
        // A server in front of PostgreSQL, for clients that speak the protocol.
        crate::pg::open(&shown, !args.read_only)?
    } else {
        Arc::new(crate::store::open_waiting(
            &args.path,
            FileOptions::new()
                .read_only(args.read_only)
                .create(!args.read_only),
            args.lock_wait,
        )?)
    };
    let options = ServerOptions::new()
        .read_only(args.read_only)
        .token(token)
        .connections_max(args.max_connections)
        .invalidation_history(args.invalidation_history)
        // `zodiac pack tcp://…` with GC reads references as the objects layer writes them.
        .references(Some(Arc::new(crate::maintenance::references)))
        // Conflicts on job queues' hot objects merge here, under the commit lock.
        .merge(Some(zodiac_async::merges().into_merge_fn()));
    let server = Server::start_on(Arc::clone(&storage), listener, options)
        .with_context(|| format!("serving {shown}"))?;
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush()?;
    let signal = match signals.forever().next() {
        Some(SIGINT) => "SIGINT",
        Some(_) => "SIGTERM",
        // The iterator ends only when the handle is closed, which nothing here does.
        None => "the end of the signal stream",
    };
    log::info!("{signal}: shutting down");
    server.shutdown();
    storage
        .close()
        .with_context(|| format!("closing {shown}"))?;
    println!("stopped");
    Ok(())
}
