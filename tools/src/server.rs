//! `zodiac server`: serves one data file (or a PostgreSQL schema) to client
//! storages until SIGTERM or SIGINT, then stops accepting, closes the connections
//! and closes the store (a file saves its index).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use zodiac_storage::{FileOptions, Server, ServerOptions, ServerTls, Storage};

pub struct Args {
    pub path: PathBuf,
    pub listen: String,
    pub read_only: bool,
    pub token_file: Option<PathBuf>,
    pub max_connections: usize,
    pub invalidation_history: usize,
    pub hardening: Hardening,
    /// How long to retry opening a data file another process holds (`--wait-lock`).
    pub lock_wait: Option<std::time::Duration>,
}

/// The server's options against hostile or runaway clients (`zodiac server`).
#[derive(clap::Args, Clone, Debug)]
pub struct Hardening {
    /// Most memory held for all clients together: partial frames, stores of
    /// transactions not yet committed and send queues (e.g. 256MiB, 1GiB). When it
    /// is reached clients wait, then their stores or requests are refused with an
    /// error saying so.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_client_memory: usize,
    /// A second secret, in this file, that lets clients read but not write: their
    /// commits are refused, saying so (`--token-file` is the read-write one).
    #[arg(long, value_name = "F")]
    pub read_only_token_file: Option<PathBuf>,
    /// Serve over TLS with the certificate chain in this PEM file (with
    /// --tls-key); clients then connect to tls://HOST:PORT?ca=FILE (or
    /// ?fingerprint=SHA256 of the certificate).
    #[arg(long, value_name = "F", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, a PEM file.
    #[arg(long, value_name = "F", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A size as people write it: bytes, or a number with KiB, MiB, GiB (or K, M, G,
/// KB, MB, GB, all powers of 1024).
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256MiB, 1GiB, 65536)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a size this machine can hold, or is zero"))
}

pub fn run(args: &Args) -> Result<()> {
    let token = args
        .token_file
        .as_deref()
        .map(crate::store::read_token)
        .transpose()?;
    let read_only_token = args
        .hardening
        .read_only_token_file
        .as_deref()
        .map(crate::store::read_token)
        .transpose()?;
    if token.is_some() && token == read_only_token {
        anyhow::bail!(
            "--token-file and --read-only-token-file hold the same secret: a client with it \
             could write; give the read-only clients a secret of their own"
        );
    }
    let tls = match (&args.hardening.tls_cert, &args.hardening.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_pem_files(cert, key)?),
        _ => None,
    };
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
        .read_only_token(read_only_token)
        .tls(tls)
        .connections_max(args.max_connections)
        .invalidation_history(args.invalidation_history)
        .client_memory_bytes_max(args.hardening.max_client_memory)
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_as_written() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64 kb"), Ok(64 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3TiB").is_err());
    }
}
