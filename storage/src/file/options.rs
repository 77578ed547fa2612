//! How a data file is opened: durability, read-only, creation, the index save
//! interval, the group-commit wait, and the file-I/O implementation.

use std::sync::Arc;
use std::time::Duration;

use super::io;

/// Whether `finish` waits for the data to reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `finish` returns after fdatasync (shared by concurrent committers). The default.
    #[default]
    Fsync,
    /// No fdatasync: a crash or power loss can lose acknowledged commits. For tests and
    /// bulk loads only; the storage logs a warning when opened this way.
    Off,
}

/// How to open a data file.
#[derive(Clone)]
pub struct FileOptions {
    pub(crate) durability: Durability,
    pub(crate) read_only: bool,
    pub(crate) create: bool,
    pub(crate) index_save_interval_bytes: u64,
    pub(crate) group_commit_wait: Duration,
    pub(crate) data_start: u64,
    pub(crate) io: Arc<dyn io::FileIoFactory>,
    /// Whether opening with durability off warns; false for a storage's own copies
    /// (a pack's new file), written without per-commit syncs and synced at the end.
    pub(crate) warn_durability_off: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            durability: Durability::Fsync,
            read_only: false,
            create: true,
            index_save_interval_bytes: 64 << 20,
            group_commit_wait: Duration::from_micros(500),
            data_start: 0,
            io: Arc::new(io::StdFileIoFactory),
            warn_durability_off: true,
        }
    }
}

impl FileOptions {
    /// The defaults each setter names.
    pub fn new() -> Self {
        Self::default()
    }
    /// Durability of commits (default: [`Durability::Fsync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
    /// Open without taking the writer lock and never modify the file (default: false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
    /// Create the file when it does not exist (default: true).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
    /// Save the index after this many bytes of new data (default: 64 MiB).
    pub fn index_save_interval_bytes(mut self, bytes: u64) -> Self {
        self.index_save_interval_bytes = bytes;
        self
    }
    /// Longest time a group-commit leader waits for other committers already
    /// between begin and write before it syncs (default: 500 µs).
    pub fn group_commit_wait(mut self, wait: Duration) -> Self {
        self.group_commit_wait = wait;
        self
    }
    /// Where the first transaction starts in a new file (0: right after the header).
    /// Leaves a hole (sparse on most file systems); tests use it for 64-bit offsets.
    pub fn data_start(mut self, offset: u64) -> Self {
        self.data_start = offset;
        self
    }
    /// The file-I/O implementation (default: the operating system's files). Tests
    /// pass a fault-injecting one.
    pub fn io(mut self, io: Arc<dyn io::FileIoFactory>) -> Self {
        self.io = io;
        self
    }
    /// For a file the storage writes itself and syncs once at the end: no warning
    /// about durability being off, which is meant for users who choose it.
    pub(crate) fn internal_copy(mut self) -> Self {
        self.warn_durability_off = false;
        self
    }
}
