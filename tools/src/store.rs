//! Opening a data file as a `dyn Storage`.

use std::cell::Cell;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use zodiac_storage::{FileOptions, FileStorage, Storage};

/// Opens the data file at `path` as a `dyn Storage`.
#[allow(
    clippy::needless_borrow,
    reason = "the borrow selects the fallback below"
)]
pub fn open(path: &Path, options: FileOptions) -> Result<Box<dyn Storage>> {
    let storage = FileStorage::open(path, options)?;
    // Until `FileStorage` implements `Storage` this resolves to the fallback below and
    // reports so; once it does, the `Storage` impl is picked. Then this can become
    // `Ok(Box::new(storage))`.
    (&AsStorage(Cell::new(Some(storage))))
        .take_storage()
        .with_context(|| format!("{}", path.display()))
}

// Exactly one of the two traits below is used, depending on `FileStorage`.
struct AsStorage<T>(Cell<Option<T>>);

#[allow(dead_code, reason = "used only while FileStorage implements Storage")]
trait IsStorage {
    fn take_storage(&self) -> Result<Box<dyn Storage>>;
}

impl<T: Storage + 'static> IsStorage for AsStorage<T> {
    fn take_storage(&self) -> Result<Box<dyn Storage>> {
        Ok(Box::new(self.0.take().expect("converted once")))
    }
}

#[allow(
    dead_code,
    reason = "used only while FileStorage does not implement Storage"
)]
trait NotStorage {
    fn take_storage(&self) -> Result<Box<dyn Storage>>;
}

impl<T> NotStorage for &AsStorage<T> {
    fn take_storage(&self) -> Result<Box<dyn Storage>> {
        Err(anyhow!(
            "this build's file storage cannot read or write data files yet (FileStorage does \
             not implement Storage)"
        ))
    }
}
