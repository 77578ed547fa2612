//! A storage server process for the multi-process tests to kill and restart.
//!
//! `net_server PATH LISTEN [--read-only] [--token-file F] [--history N]
//! [--send-queue-bytes N] [--handshake-timeout-ms N]` opens the data file (durable
//! commits), serves it like `zodiac server`, prints `listening on HOST:PORT` and
//! serves until its standard input closes (then shuts down cleanly) or it is killed.
//! Log lines (closed connections and their reasons) go to standard error.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use zodiac_storage::{FileOptions, FileStorage, Server, ServerOptions, Storage};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("net_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: net_server PATH LISTEN [--read-only] [--token-file F] [--history N] \
                 [--send-queue-bytes N] [--handshake-timeout-ms N]";
    let path = args.next().ok_or(usage)?;
    let listen = args.next().ok_or(usage)?;
    let mut options = ServerOptions::new();
    let number = |value: Option<String>| -> Result<u64, String> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| usage.to_string())
    };
    while let Some(flag) = args.next() {
        options = match flag.as_str() {
            "--read-only" => options.read_only(true),
            "--token-file" => {
                let file = args.next().ok_or(usage)?;
                let token = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                options.token(Some(token.trim().as_bytes().to_vec()))
            }
            "--history" => options.invalidation_history(number(args.next())? as usize),
            "--send-queue-bytes" => options.send_queue_bytes_max(number(args.next())? as usize),
            "--handshake-timeout-ms" => {
                options.handshake_timeout(Duration::from_millis(number(args.next())?))
            }
            _ => return Err(usage.to_string()),
        };
    }
    let storage =
        Arc::new(FileStorage::open(&path, FileOptions::new()).map_err(|e| e.to_string())?);
    let server = Server::start(
        Arc::clone(&storage) as Arc<dyn Storage>,
        listen.as_str(),
        options,
    )
    .map_err(|e| e.to_string())?;
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.shutdown();
    storage.close().map_err(|e| e.to_string())
}
