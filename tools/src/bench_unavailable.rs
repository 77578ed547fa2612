//! `zodiac bench` in a build without the `bench` feature: the product does not link
//! the benchmark harness, so the subcommand only says how to run the benchmarks.
//!
//! Invariants:
//! - Whatever follows `zodiac bench`, nothing runs and nothing is touched: one line
//!   on stderr and exit 2 (a usage error: the command exists, this build lacks it).

use std::process::ExitCode;

/// What to do instead, printed as the error and after `zodiac bench --help`.
const HOW_TO: &str = "`zodiac bench` is not in this build: run the benchmarks with \
`cargo run --release -p zodiac-benches -- WORKLOAD ...`, or build zodiac with `--features bench`";

/// The arguments of `zodiac bench`: anything, since none of them is used.
#[derive(clap::Args)]
pub struct Args {
    /// The arguments a build with the `bench` feature takes (WORKLOAD STORE ...).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// What `zodiac bench --help` shows after the arguments.
pub fn help() -> String {
    format!("{HOW_TO}.")
}

/// Prints how to run the benchmarks; exit 2.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    eprintln!("error: {HOW_TO}");
    Ok(ExitCode::from(2))
}
