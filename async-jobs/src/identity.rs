//! A worker's identity: the dispatcher UUID, kept in a file that the running
//! process holds with an OS lock.
//!
//! Invariants:
//! - While a [`WorkerIdentity`] lives, its process holds an exclusive advisory lock
//!   on the file; the OS drops it when the process exits however it exits, so a
//!   lock never outlives its holder.
//! - The UUID is written once, when the file is created, with the name of the host
//!   that created it (`UUID\nhost=NAME\n`), and never changed.
//! - Taking the lock of a file that already holds a UUID, on the host that created
//!   it, means the previous process with that UUID is gone
//!   ([`WorkerIdentity::restarted`]): its jobs may be recovered at once, without
//!   waiting for the death interval. A file created on another host (copied, e.g.
//!   with a machine image) proves nothing about the process there: that is left to
//!   the ping check. A file without a host line (older) counts as this host's.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a worker keeps its UUID by default (relative to its working directory).
pub const WORKER_ID_PATH_DEFAULT: &str = "zodiac-worker.uuid";
/// Most bytes read from an identity file (a UUID and a host name fit easily).
pub const WORKER_ID_FILE_BYTES_MAX: u64 = 512;

/// This machine's host name (Linux: the kernel's; elsewhere `$HOSTNAME`), or
/// `"unknown"`.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A worker's dispatcher UUID, with the lock on its file.
#[derive(Debug)]
pub struct WorkerIdentity {
    id: uuid::Uuid,
    path: PathBuf,
    restarted: bool,
    _file: File,
}

fn io(path: &Path, action: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

impl WorkerIdentity {
    /// Takes the identity in `path`, creating it with a new UUID if the file does
    /// not exist. Fails with [`Error::IdentityInUse`] if another process (or
    /// another identity in this one) holds it.
    pub fn acquire(path: impl AsRef<Path>) -> Result<WorkerIdentity> {
        WorkerIdentity::acquire_on_host(path, &this_host())
    }

    /// [`WorkerIdentity::acquire`] for a process that runs on host `host` (tests
    /// simulate several hosts on one machine with it).
    pub fn acquire_on_host(path: impl AsRef<Path>, host: &str) -> Result<WorkerIdentity> {
        let path = path.as_ref();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io(path, "opening the worker identity file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::IdentityInUse {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io(path, "locking the worker identity file", e));
            }
        }
        let mut text = String::new();
        (&mut file)
            .take(WORKER_ID_FILE_BYTES_MAX)
            .read_to_string(&mut text)
            .map_err(|e| io(path, "reading the worker identity file", e))?;
        let mut lines = text.lines();
        let text = lines.next().unwrap_or("").trim();
        let created_on = lines.next().and_then(|l| l.trim().strip_prefix("host="));
        let (id, restarted) = if text.is_empty() {
            let id = uuid::Uuid::new_v4();
            file.write_all(format!("{id}\nhost={host}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| io(path, "writing the worker identity file", e))?;
            (id, false)
        } else {
            let id = uuid::Uuid::parse_str(text).map_err(|_| Error::BadIdentityFile {
                path: path.to_path_buf(),
                content: text.chars().take(64).collect(),
            })?;
            let here = created_on.is_none_or(|h| h == host);
            if !here {
                log::warn!(
                    target: "zodiac_async::events",
                    "{}: worker identity {id} was created on host {:?}, this is {host:?} (a \
                     copied file?); its jobs are recovered only once its dispatcher is dead",
                    path.display(),
                    created_on.unwrap_or_default()
                );
            }
            (id, here)
        };
        Ok(WorkerIdentity {
            id,
            path: path.to_path_buf(),
            restarted,
            _file: file,
        })
    }

    /// The dispatcher UUID, as text.
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// The identity file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file already held this UUID: an earlier process with it has
    /// stopped (it no longer holds the lock).
    pub fn restarted(&self) -> bool {
        self.restarted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_a_uuid_that_later_runs_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WORKER_ID_PATH_DEFAULT);
        let first = WorkerIdentity::acquire(&path).unwrap();
        assert!(!first.restarted());
        let id = first.id();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        // Held: a second taker (here, in the same process) is refused.
        let err = WorkerIdentity::acquire(&path).unwrap_err();
        assert!(matches!(err, Error::IdentityInUse { .. }));
        assert!(err.to_string().contains("already activated"), "{err}");
        drop(first);
        let again = WorkerIdentity::acquire(&path).unwrap();
        assert_eq!(again.id(), id);
        assert!(again.restarted());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{id}\nhost={}\n", this_host())
        );
    }

    #[test]
    fn a_file_from_another_host_is_not_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let id = WorkerIdentity::acquire_on_host(&path, "a").unwrap().id();
        let copy = WorkerIdentity::acquire_on_host(&path, "b").unwrap();
        assert_eq!(copy.id(), id);
        assert!(
            !copy.restarted(),
            "host b cannot know host a's process is gone"
        );
        drop(copy);
        assert!(
            WorkerIdentity::acquire_on_host(&path, "a")
                .unwrap()
                .restarted()
        );
        // An older file, with no host line: this host's.
        std::fs::write(&path, format!("{id}\n")).unwrap();
        assert!(
            WorkerIdentity::acquire_on_host(&path, "b")
                .unwrap()
                .restarted()
        );
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a uuid").unwrap();
        let err = WorkerIdentity::acquire(&path).unwrap_err();
        assert!(matches!(err, Error::BadIdentityFile { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a uuid");
    }
}
