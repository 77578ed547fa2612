//! A retry policy's persistent memory, kept in its job (the policies are in
//! `crate::retry`).
//!
//! Invariant: the per-run counters are cleared when a run starts; the life
//! counters never are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A policy's persistent memory, kept in the job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryData {
    /// Counters for the current run; cleared when a run starts.
    pub run: BTreeMap<String, u32>,
    /// Counters for the job's whole life.
    pub life: BTreeMap<String, u32>,
    /// Whatever a custom policy wants to keep.
    pub custom: BTreeMap<String, Vec<u8>>,
}

impl RetryData {
    /// Adds one to the per-run counter `key`; returns the new count.
    pub fn bump_run(&mut self, key: &str) -> u32 {
        let n = self.run.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Adds one to the life counter `key`; returns the new count.
    pub fn bump_life(&mut self, key: &str) -> u32 {
        let n = self.life.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The per-run counter `key`.
    pub fn run_count(&self, key: &str) -> u32 {
        self.run.get(key).copied().unwrap_or(0)
    }

    /// The life counter `key`.
    pub fn life_count(&self, key: &str) -> u32 {
        self.life.get(key).copied().unwrap_or(0)
    }

    pub(crate) fn start_run(&mut self) {
        self.run.clear();
    }
}
