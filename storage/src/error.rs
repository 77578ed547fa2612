//! The storage's error type. `Display` is written for the operator: what
//! happened, where, and what to do.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::ids::{Oid, Tid};

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A write conflict found at vote: another transaction committed a newer revision of
/// `oid` than the one this transaction started from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "conflict on object {oid}: this transaction read revision {base_tid} but revision {current_tid} \
     was committed since; retry the transaction"
)]
pub struct ConflictError {
    pub oid: Oid,
    /// The revision the transaction started from (`Tid::ZERO` for a new object).
    pub base_tid: Tid,
    /// The newest committed revision when the conflict was found.
    pub current_tid: Tid,
}

/// Everything the storage reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Conflict(#[from] ConflictError),

    #[error("object {oid} has no revision at or before snapshot {snapshot} (it was created later)")]
    NotFoundAtSnapshot { oid: Oid, snapshot: Tid },

    #[error("object {oid} does not exist in this database")]
    NoSuchObject { oid: Oid },

    #[error("object {oid} has no revision {tid}")]
    NoSuchRevision { oid: Oid, tid: Tid },

    #[error("object {oid} was never allocated by new_oid; allocate oids from the storage")]
    UnallocatedOid { oid: Oid },

    #[error("{what} is {len} bytes, over the limit of {max} bytes")]
    LimitExceeded {
        what: &'static str,
        len: u64,
        max: u64,
    },

    #[error("{path}: corrupted at offset {offset}: {what}; {advice}")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
        advice: &'static str,
    },

    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },

    #[error(
        "{path} is locked by process {pid} (another writer); one process writes a file at a time: \
         share a database between processes through `zodiac server`"
    )]
    Locked { path: PathBuf, pid: String },

    #[error("every object id has been handed out: this database cannot create more objects")]
    OidsExhausted,

    #[error("the storage was opened read-only; open it writable to commit")]
    ReadOnly,

    #[error("the storage is closed")]
    Closed,

    #[error(
        "the storage stopped accepting commits after an earlier failure ({cause}); nothing \
         acknowledged was lost: reopen the database"
    )]
    Poisoned { cause: Arc<str> },

    #[error("{path}: {action} failed: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The file system is full (ENOSPC). Nothing was left as a hole; `advice` says
    /// whether the storage must be reopened.
    #[error(
        "{path}: disk full: {action} failed ({source}); free space on its file system, then {advice}"
    )]
    DiskFull {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
        advice: &'static str,
    },

    #[error("{path}: a pack is already running; wait for it to finish")]
    PackInProgress { path: PathBuf },

    #[error(
        "cannot read the references of object {oid} for garbage collection: {what}; pack without GC or repair the object"
    )]
    PackReferences { oid: Oid, what: String },

    #[error(
        "{path}: object {oid}, unreachable when the pack began, was referred to again by a \
         transaction committed during the pack; the pack was abandoned and the file is \
         unchanged: pack again"
    )]
    PackAbandoned { path: PathBuf, oid: Oid },

    #[error("the transaction was already voted; finish or abort it")]
    AlreadyVoted,

    #[error(
        "a copied transaction's tid {tid} is not after the last tid {last}; copy transactions in order into a store that does not have them"
    )]
    TidNotIncreasing { tid: Tid, last: Tid },

    #[error(
        "disconnected from the storage server at {address} ({reason}); the call may or may \
         not have taken effect: retry it (a transaction in progress must be aborted and redone)"
    )]
    Disconnected { address: String, reason: String },

    #[error("the storage server at {address} refused the connection: {reason}")]
    Refused { address: String, reason: String },

    #[error("protocol error with {peer}: {what}; the connection was closed")]
    Protocol { peer: String, what: String },

    #[error("the storage server failed: {message}")]
    Server { message: String },
}

impl Error {
    /// The conflict, when this error is one.
    pub fn as_conflict(&self) -> Option<&ConflictError> {
        match self {
            Error::Conflict(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// [`Error::DiskFull`] when `source` is ENOSPC (or EDQUOT, a full quota), else
    /// [`Error::Io`]; `advice` says what to do once space is free.
    pub(crate) fn io_or_full(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: io::Error,
        advice: &'static str,
    ) -> Error {
        if is_disk_full(&source) {
            Error::DiskFull {
                path: path.into(),
                action,
                source,
                advice,
            }
        } else {
            Error::io(path, action, source)
        }
    }
}

/// Whether an I/O error says the file system (or the user's quota) is full.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
