//! Offline tools over a data file that no process has open for writing: verify
//! (read every record and report damage), recover (salvage every intact
//! transaction into a new file), backup and restore, and the names of the files
//! the storage keeps beside a data file. The `zodiac` command line's `verify`,
//! `recover`, `backup` and `restore` are these functions.
//!
//! None of them changes the file it reads.

pub use crate::file::offline::backup::{BackupPoint, BackupReport, backup, read_manifest, restore};
pub use crate::file::offline::salvage::{
    RecoverOptions, RecoverReport, SkippedRegion, SkippedTransaction, recover, recover_with,
};
pub use crate::file::offline::verify::{
    Damage, DamageKind, IndexCheck, VerifyReport, verify, verify_with,
};
pub use crate::file::pack::old_path;
pub use crate::file::{index_path, lock_path};
