//! Opening a data file, with the path in the error.

use std::path::Path;

use anyhow::{Context, Result};
use zodiac_storage::{FileOptions, FileStorage};

/// Opens the data file at `path`.
pub fn open(path: &Path, options: FileOptions) -> Result<FileStorage> {
    FileStorage::open(path, options).with_context(|| format!("{}", path.display()))
}
