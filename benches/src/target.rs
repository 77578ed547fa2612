//! The store under test: which `Storage` implementation a workload runs against, and
//! the store's life cycle in one run directory (create, close, reopen).
//!
//! Invariants:
//! - A workload only sees `Arc<dyn Storage>`; nothing else depends on the kind.
//! - The file store is created with default [`FileOptions`], so every commit is
//!   durable (fdatasync before `finish` returns), as workloads.md requires.
//! - Closing a file store calls `close()` and then drops the last reference, so the
//!   index is saved and the writer lock released before the store is reopened.
//! - The memory store cannot be closed and reopened (closing it would end it), so
//!   "close" keeps it aside and "reopen" hands the same instance back.
//! - A PostgreSQL store lives in a schema of its own (`bench_PID_N`), created by
//!   `create` and dropped when the `StoreUnderTest` is dropped, so runs never see
//!   each other's rows.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zodiac_storage::{FileOptions, FileStorage, MemoryStorage, PgOptions, PgStorage, Storage};

use crate::Result;

/// Name of the data file in a run directory.
const DATA_FILE_NAME: &str = "data.zdb";

/// How long a benchmark waits for an existing server (`tcp://`) to answer.
const REMOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Which storage the workloads run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// [`FileStorage`] with default (durable) options.
    File,
    /// [`MemoryStorage`]: no durability; for checking the harness itself.
    Memory,
    /// The file store served on 127.0.0.1, used through a client storage (W6).
    Server,
    /// An existing server at this address (`tcp://HOST:PORT`), used through a
    /// client storage: for the storage workloads that only add objects (W1, W2,
    /// W3, W4). Its store is not fresh; the workloads write new objects only.
    Remote(&'static str),
    /// A PostgreSQL database (`postgres://…`), in a fresh schema per run; the job
    /// workloads' workers are processes that open it directly.
    Postgres(&'static str),
}

impl StoreKind {
    /// `file`, `memory`, `server`, `tcp://HOST:PORT` of an existing server, or
    /// `postgres://…` of a database.
    pub fn parse(name: &str) -> Option<StoreKind> {
        // Parsed once per run: leaking keeps the kind `Copy`.
        let leak = |text: &str| -> &'static str { Box::leak(text.to_string().into_boxed_str()) };
        match name {
            "file" => Some(StoreKind::File),
            "memory" => Some(StoreKind::Memory),
            "server" => Some(StoreKind::Server),
            remote if remote.strip_prefix("tcp://").is_some_and(|a| !a.is_empty()) => {
                Some(StoreKind::Remote(leak(remote)))
            }
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(StoreKind::Postgres(leak(url)))
            }
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Memory => "memory",
            StoreKind::Server => "server",
            StoreKind::Remote(address) => address,
            StoreKind::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens (creating it if needed) the file store at `path` with default options.
pub fn open_file_store(path: &Path) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(FileStorage::open(path, FileOptions::new())?))
}

/// One store in one run directory.
pub struct StoreUnderTest {
    kind: StoreKind,
    data_path: PathBuf,
    /// The memory store between `close` and `reopen`.
    parked: Option<Arc<dyn Storage>>,
    /// The PostgreSQL schema `create` made, dropped with this value.
    pg_schema: Option<String>,
}

impl StoreUnderTest {
    /// A store whose files (for the file store) go into `run_dir`, which must exist.
    pub fn new(kind: StoreKind, run_dir: &Path) -> Self {
        StoreUnderTest {
            kind,
            data_path: run_dir.join(DATA_FILE_NAME),
            parked: None,
            pg_schema: None,
        }
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Creates the empty store.
    pub fn create(&mut self) -> Result<Arc<dyn Storage>> {
        match self.kind {
            StoreKind::File | StoreKind::Server => {
                if self.data_path.exists() {
                    return Err(format!(
                        "{} already exists; each run needs a fresh store",
                        self.data_path.display()
                    )
                    .into());
                }
                self.open()
            }
            StoreKind::Memory => Ok(Arc::new(MemoryStorage::new())),
            StoreKind::Remote(_) => self.open(),
            StoreKind::Postgres(_) => self.create_pg_schema(),
        }
    }

    /// Creates the empty store itself, not served even when the kind is `Server`
    /// (for workloads that serve it themselves).
    pub fn create_unserved(&mut self) -> Result<Arc<dyn Storage>> {
        match self.kind {
            StoreKind::File | StoreKind::Server => {
                if self.data_path.exists() {
                    return Err(format!(
                        "{} already exists; each run needs a fresh store",
                        self.data_path.display()
                    )
                    .into());
                }
                open_file_store(&self.data_path)
            }
            StoreKind::Memory => Ok(Arc::new(MemoryStorage::new())),
            StoreKind::Postgres(_) => self.create_pg_schema(),
            StoreKind::Remote(_) => Err(
                "this workload creates its own store: use --store file, memory or server".into(),
            ),
        }
    }

    /// Creates the empty store as a file storage, for workloads of the file storage
    /// itself (pack).
    pub fn create_file(&mut self) -> Result<FileStorage> {
        if self.kind != StoreKind::File {
            return Err("this workload needs the file store (--store file)".into());
        }
        if self.data_path.exists() {
            return Err(format!(
                "{} already exists; each run needs a fresh store",
                self.data_path.display()
            )
            .into());
        }
        Ok(FileStorage::open(&self.data_path, FileOptions::new())?)
    }

    /// The path of the fresh file store, for workloads that open it in another
    /// process (`load100`'s `zodiac server`).
    pub fn create_path(&mut self) -> Result<PathBuf> {
        if self.kind != StoreKind::File {
            return Err("this workload needs the file store (--store file)".into());
        }
        if self.data_path.exists() {
            return Err(format!(
                "{} already exists; each run needs a fresh store",
                self.data_path.display()
            )
            .into());
        }
        Ok(self.data_path.clone())
    }

    /// Closes the store; `storage` must be its only remaining reference.
    pub fn close(&mut self, storage: Arc<dyn Storage>) -> Result<()> {
        if Arc::strong_count(&storage) != 1 {
            return Err("the store is still in use elsewhere and cannot be closed".into());
        }
        match self.kind {
            StoreKind::File | StoreKind::Server | StoreKind::Remote(_) | StoreKind::Postgres(_) => {
                storage.close()?;
                drop(storage);
            }
            StoreKind::Memory => self.parked = Some(storage),
        }
        Ok(())
    }

    /// Opens the store again after [`close`](Self::close).
    pub fn reopen(&mut self) -> Result<Arc<dyn Storage>> {
        match self.kind {
            StoreKind::File | StoreKind::Server | StoreKind::Remote(_) | StoreKind::Postgres(_) => {
                self.open()
            }
            StoreKind::Memory => self
                .parked
                .take()
                .ok_or_else(|| "the memory store was not closed".into()),
        }
    }

    /// Deletes the saved index beside the data file, so the next open rebuilds it.
    /// Returns whether there was one.
    pub fn remove_saved_index(&self) -> Result<bool> {
        match fs::remove_file(self.index_path()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Size of the saved index file, when there is one.
    pub fn index_file_bytes(&self) -> Option<u64> {
        fs::metadata(self.index_path()).ok().map(|m| m.len())
    }

    /// Bytes of memory the file store's in-memory index takes, and its object count,
    /// measured on a read-only open of the closed store.
    pub fn index_memory(&self) -> Result<(usize, u64)> {
        let storage = FileStorage::open(&self.data_path, FileOptions::new().read_only(true))?;
        Ok((storage.index_memory_bytes(), storage.object_count()))
    }

    /// Size of the data file, when there is one.
    pub fn data_file_bytes(&self) -> Option<u64> {
        fs::metadata(&self.data_path).ok().map(|m| m.len())
    }

    /// Opens the data file, served when the kind is `Server`; connects a new client
    /// to the remote server (a cold cache) when it is `Remote`.
    fn open(&self) -> Result<Arc<dyn Storage>> {
        if let Some(options) = self.pg_options() {
            return Ok(Arc::new(PgStorage::open(options)?));
        }
        if let StoreKind::Remote(address) = self.kind {
            // A benchmark does not wait for a server to come up (a client storage
            // waits 30 s by default): a server that is not there is an error now.
            let options = zodiac_storage::ClientOptions::new().wait_timeout(REMOTE_WAIT);
            let client = zodiac_storage::ClientStorage::connect(address, options).map_err(|e| {
                let why = match e {
                    zodiac_storage::Error::Disconnected { reason, .. } => reason,
                    e => e.to_string(),
                };
                format!(
                    "cannot reach the server at {address} within {REMOTE_WAIT:?}: {why} \
                     (is `zodiac server` running there?)"
                )
            })?;
            return Ok(Arc::new(client));
        }
        let file = open_file_store(&self.data_path)?;
        if self.kind == StoreKind::Server {
            Ok(Arc::new(crate::served::Served::start(file)?))
        } else {
            Ok(file)
        }
    }

    /// The URL of the PostgreSQL store `create` made, with its schema, for
    /// worker processes that open it themselves.
    pub fn pg_url(&self) -> Option<String> {
        let (StoreKind::Postgres(url), Some(schema)) = (self.kind, &self.pg_schema) else {
            return None;
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        Some(format!("{url}{separator}schema={schema}"))
    }

    fn pg_options(&self) -> Option<PgOptions> {
        self.pg_url().map(|url| PgOptions::from_url(&url))
    }

    /// A fresh schema for this run, with the store's tables in it.
    fn create_pg_schema(&mut self) -> Result<Arc<dyn Storage>> {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        if self.pg_schema.is_some() {
            return Err("each run needs a fresh store; this one has its schema".into());
        }
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pg_schema = Some(format!("bench_{}_{run}", std::process::id()));
        self.open()
    }

    fn index_path(&self) -> PathBuf {
        let mut name = self.data_path.clone().into_os_string();
        name.push(".index");
        PathBuf::from(name)
    }
}

impl Drop for StoreUnderTest {
    fn drop(&mut self) {
        let (Some(options), Some(schema)) = (self.pg_options(), &self.pg_schema) else {
            return;
        };
        let dropped = postgres::Client::connect(&options.url, postgres::NoTls)
            .and_then(|mut c| c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")));
        if let Err(e) = dropped {
            eprintln!("warning: could not drop the benchmark's schema {schema}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodiac_storage::{Tid, TransactionMeta};

    #[test]
    fn memory_store_survives_close_and_reopen() -> Result<()> {
        let mut store = StoreUnderTest::new(StoreKind::Memory, Path::new("/nonexistent"));
        let storage = store.create()?;
        let oid = storage.new_oid()?;
        let mut txn = storage.begin(TransactionMeta::default())?;
        txn.store(oid, Tid::ZERO, b"kept".to_vec())?;
        txn.finish()?;
        store.close(storage)?;
        let storage = store.reopen()?;
        assert_eq!(storage.load(oid, Tid::MAX)?.data, b"kept");
        Ok(())
    }

    #[test]
    fn close_refuses_a_shared_store() -> Result<()> {
        let mut store = StoreUnderTest::new(StoreKind::Memory, Path::new("/nonexistent"));
        let storage = store.create()?;
        let other = Arc::clone(&storage);
        assert!(store.close(storage).is_err());
        drop(other);
        Ok(())
    }

    #[test]
    fn index_path_is_beside_the_data_file() {
        let store = StoreUnderTest::new(StoreKind::File, Path::new("/d"));
        assert_eq!(store.index_path(), Path::new("/d/data.zdb.index"));
    }
}
