//! Writes the seed inputs of every fuzz target into `corpus/TARGET/` (or under the
//! directory given as the first argument): valid encodings of each decoder's input,
//! after the flags byte each target reads first.
//!
//! From `fuzz/`: `cargo +nightly run --release --example seeds`, then
//! `cargo +nightly fuzz run TARGET`.

use std::path::{Path, PathBuf};

use zodiac_fuzz::objects::object_seeds;
use zodiac_fuzz::storage::file::{data_file_seeds, saved_index_seeds};
use zodiac_fuzz::storage::net::protocol_seeds;
use zodiac_fuzz::storage::peers::{client_seeds, server_seeds};

fn main() -> std::io::Result<()> {
    let base = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("corpus"), PathBuf::from);
    write(&base, "data_record", &data_file_seeds())?;
    write(&base, "recovery_scan", &data_file_seeds())?;
    write(&base, "saved_index", &saved_index_seeds())?;
    write(&base, "object_record", &object_seeds())?;
    write(&base, "protocol_messages", &protocol_seeds())?;
    write(&base, "server_requests", &server_seeds())?;
    write(&base, "client_replies", &client_seeds())
}

fn write(base: &Path, target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = base.join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}
