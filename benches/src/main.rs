//! The `zodiac-benches` command: see the library's docs and `--help`.

use std::process::ExitCode;

/// The allocator of the `zodiac` binary, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    zodiac_benches::run_cli(std::env::args().skip(1))
}
