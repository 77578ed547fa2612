//! The offline tools: they read a data file that no storage needs to have open,
//! never through `FileStorage`'s reads, and never modify it.
//!
//! - `walk`: the one record walker they step through a file with;
//! - `verify`: check every byte and the saved index, and report the damage;
//! - `salvage`: copy every intact transaction into a new file (`recover`);
//! - `backup`: incremental backups of the append-only file, and restore.

pub mod backup;
pub mod salvage;
pub mod verify;
mod walk;
