//! The `zodiac-benches` command: see the library's docs and `--help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    zodiac_benches::run_cli(std::env::args().skip(1))
}
