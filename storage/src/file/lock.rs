//! The writer lock: `PATH.lock`, held with an OS advisory lock (flock) for as
//! long as a writable storage is open, with the holder's pid written inside so a
//! second writer can be told who holds it. The OS drops the lock when the holder
//! dies, so a crashed writer never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct WriterLock {
    _file: File,
}

/// Path of the writer lock file beside a data file (`PATH.lock`).
pub fn lock_path(data_path: &Path) -> PathBuf {
    let mut p = data_path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl WriterLock {
    pub fn acquire(data_path: &Path) -> Result<WriterLock> {
        let path = lock_path(data_path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "opening the lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = holder.trim();
                return Err(Error::Locked {
                    path: data_path.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(&path, "locking the lock file", e));
            }
        }
        // Overwrite in place, padded to a fixed width, rather than truncating: a
        // truncation is a journaled metadata change that would slow every open.
        let pid = format!("{:<20}\n", std::process::id());
        file.write_all_at(pid.as_bytes(), 0)
            .map_err(|e| Error::io(&path, "writing the lock file", e))?;
        Ok(WriterLock { _file: file })
    }
}
