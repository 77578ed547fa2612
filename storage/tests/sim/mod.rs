//! The seeded simulation runner shared by the storage and job simulations: a small
//! deterministic PRNG, the seed selection from the environment, and the report of
//! a failing seed (its number, the command that replays it, its step log).
//!
//! Invariants:
//! - A run is a pure function of its seed: every random choice comes from [`Rng`]
//!   seeded with it, so `ZODIAC_SIM_SEED=S` replays exactly the run that failed
//!   (up to thread interleavings a simulation says it does not control).
//! - Every seed of a run is tried, even after a failure, so a long run names every
//!   failing seed; the test fails if any did.
//! - A panic inside a seed (in the code under test or in a check) is a failure of
//!   that seed, reported like any other.

// Each simulation uses a different subset of these helpers.
#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Environment variable: run this many seeds (a long run).
pub const SEEDS_VAR: &str = "ZODIAC_SIM_SEEDS";
/// Environment variable: replay this one seed.
pub const SEED_VAR: &str = "ZODIAC_SIM_SEED";
/// Lines of a failing seed's step log printed, from the end.
pub const LOG_LINES_MAX: usize = 400;

/// SplitMix64: tiny, fast and good enough to drive a workload.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Mix the seed so that neighbouring seeds start far apart.
        let mut r = Rng(seed ^ 0x5a0d_1ac5_eed5_0001);
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A uniformly chosen element (`items` not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index chosen with the given weights (not all zero).
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        unreachable!("x < total")
    }
}

/// The step log of one seed's run, printed when the seed fails.
#[derive(Default)]
pub struct Log {
    lines: Vec<String>,
}

impl Log {
    pub fn step(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn tail(&self) -> String {
        let skip = self.lines.len().saturating_sub(LOG_LINES_MAX);
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("  ... {skip} earlier steps\n"));
        }
        for (i, line) in self.lines.iter().enumerate().skip(skip) {
            out.push_str(&format!("  {i:4} {line}\n"));
        }
        out
    }
}

/// A check failed: what was expected and what happened.
pub type Outcome = Result<(), String>;

/// Fails the current seed with a message unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The seeds to run: `ZODIAC_SIM_SEED` alone, else `1..=ZODIAC_SIM_SEEDS`, else
/// `1..=default_seeds`.
pub fn seeds(default_seeds: u64) -> Vec<u64> {
    let read = |name: &str| -> Option<u64> {
        let value = std::env::var(name).ok()?;
        Some(value.trim().parse().unwrap_or_else(|_| {
            panic!("{name}={value:?} is not a number: give a seed count or one seed")
        }))
    };
    if let Some(seed) = read(SEED_VAR) {
        return vec![seed];
    }
    (1..=read(SEEDS_VAR).unwrap_or(default_seeds)).collect()
}

/// Runs `case` for every selected seed; panics naming each failing seed, the
/// command replaying the first one and its step log. `replay` is the cargo command
/// that runs this test (the seed variable is put in front of it).
pub fn run(replay: &str, default_seeds: u64, case: impl Fn(u64, &mut Log) -> Outcome) {
    let seeds = seeds(default_seeds);
    let started = std::time::Instant::now();
    let mut failures: Vec<(u64, String, Log)> = Vec::new();
    for &seed in &seeds {
        let mut log = Log::default();
        let outcome = catch_unwind(AssertUnwindSafe(|| case(seed, &mut log)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&*panic))));
        if let Err(what) = outcome {
            eprintln!("seed {seed} FAILED: {what}");
            failures.push((seed, what, log));
        }
    }
    eprintln!(
        "{} seeds in {:.1} s, {} failed",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if let Some((seed, what, log)) = failures.first() {
        let all: Vec<String> = failures.iter().map(|f| f.0.to_string()).collect();
        panic!(
            "simulation failed for seed(s) {}\nfirst failing seed {seed}: {what}\n\
             replay: {SEED_VAR}={seed} {replay}\nstep log of seed {seed}:\n{}",
            all.join(", "),
            log.tail()
        );
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}
