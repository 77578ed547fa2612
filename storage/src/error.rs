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
    /// The object both transactions wrote.
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
    /// A vote found that another transaction committed a newer revision of an object
    /// this one stored or checked; the transaction is not committed. Retrying it from
    /// a fresh snapshot usually succeeds.
    #[error(transparent)]
    Conflict(#[from] ConflictError),

    /// A load at `snapshot` asked for object `oid`, whose first revision was committed
    /// after that snapshot: the object exists, but not yet as of the reader's view.
    #[error("object {oid} has no revision at or before snapshot {snapshot} (it was created later)")]
    NotFoundAtSnapshot {
        /// The object asked for.
        oid: Oid,
        /// The snapshot (tid) the load read at.
        snapshot: Tid,
    },

    /// A load or history asked for `oid`, of which the storage holds no revision at all
    /// (never stored, stored only by a transaction not yet visible, or removed by a
    /// pack's garbage collection).
    #[error("object {oid} does not exist in this database")]
    NoSuchObject {
        /// The object asked for.
        oid: Oid,
    },

    /// A load of one exact revision found no revision of `oid` written by `tid` (the
    /// transaction did not write the object, or a pack dropped that revision).
    #[error("object {oid} has no revision {tid}")]
    NoSuchRevision {
        /// The object asked for.
        oid: Oid,
        /// The transaction whose revision was asked for.
        tid: Tid,
    },

    /// A transaction stored an oid at or above the storage's allocation high-water mark
    /// (other than the root): an id the application made up instead of getting it
    /// from `new_oid`.
    #[error("object {oid} was never allocated by new_oid; allocate oids from the storage")]
    UnallocatedOid {
        /// The oid stored.
        oid: Oid,
    },

    /// A value was refused before anything was written because it is larger than a
    /// named limit (a record over `RECORD_BYTES_MAX`, metadata over its field limit,
    /// a transaction over the server's `transaction_bytes_max`, ...).
    #[error("{what} is {len} bytes, over the limit of {max} bytes")]
    LimitExceeded {
        /// The limited quantity, e.g. "object revision" or "transaction user".
        what: &'static str,
        /// Its actual size (bytes, or a count for counted limits).
        len: u64,
        /// The limit, in the same unit as `len`.
        max: u64,
    },

    /// Bytes read from a file failed a check (CRC, length, back-pointer, count
    /// against the file size): the file is damaged. Nothing is repaired in place.
    #[error("{path}: corrupted at offset {offset}: {what}; {advice}")]
    Corrupted {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in that file where the damaged structure starts.
        offset: u64,
        /// Which check failed.
        what: String,
        /// What the operator should do next (verify, recover, restore).
        advice: &'static str,
    },

    /// A file cannot be opened as a Zodiac file at all, before any record is read:
    /// a wrong magic or unsupported format version in its header, a header that
    /// contradicts the file's length, or a data file missing beside its saved index.
    #[error("{path}: {what}")]
    Format {
        /// The file refused.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        what: String,
    },

    /// Opening a data file for writing found its lock file held by another process.
    #[error(
        "{path} is locked by process {pid} (another writer); one process writes a file at a time: \
         share a database between processes through `zodiac server`"
    )]
    Locked {
        /// The data file whose lock is held.
        path: PathBuf,
        /// The process id the lock file names, or "unknown" when it names none.
        pid: String,
    },

    /// `new_oid` was called after the oid allocator reached the largest oid.
    #[error("every object id has been handed out: this database cannot create more objects")]
    OidsExhausted,

    /// A write (begin, vote, commit, pack) reached a storage opened read-only, or a
    /// server or connection that refuses commits.
    #[error(
        "the storage is read-only (opened read-only, or served by `zodiac server --read-only`) \
         and refuses commits and packs; open it writable, or write through a server started \
         without --read-only"
    )]
    ReadOnly,

    /// A call reached a storage after `close` (for a client storage: after it was
    /// closed locally, not after a lost connection, which is `Disconnected`).
    #[error("the storage is closed")]
    Closed,

    /// A commit was attempted after an earlier write or fsync failed (or a background
    /// thread panicked). The storage never retries an fsync, so it refuses every later
    /// commit; reads still work. Reopening recovers to the last durable commit.
    #[error(
        "the storage stopped accepting commits after an earlier failure ({cause}); nothing \
         acknowledged was lost: reopen the database"
    )]
    Poisoned {
        /// The original failure, as it was first reported.
        cause: Arc<str>,
    },

    /// An operating-system call on a file failed (other than a full disk, which is
    /// `DiskFull`). A failed write or sync also poisons the storage.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The file the call was on.
        path: PathBuf,
        /// What the storage was doing, e.g. "reading the file header".
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The file system is full (ENOSPC). Nothing was left as a hole; `advice` says
    /// whether the storage must be reopened.
    #[error(
        "{path}: disk full: {action} failed ({source}); free space on its file system, then {advice}"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// What the storage was doing when space ran out.
        action: &'static str,
        /// The operating system's error (ENOSPC, or EDQUOT for a full quota).
        #[source]
        source: io::Error,
        /// What to do once space is free (retry, or reopen the database).
        advice: &'static str,
    },

    /// A pack was started while another pack of the same file was still running.
    #[error("{path}: a pack is already running; wait for it to finish")]
    PackInProgress {
        /// The data file being packed.
        path: PathBuf,
    },

    /// A pack with garbage collection could not extract the references of `oid`'s
    /// record (the reference reader rejected it), so it cannot tell what is reachable;
    /// the pack stops and the file is unchanged.
    #[error(
        "cannot read the references of object {oid} for garbage collection: {what}; pack without GC or repair the object"
    )]
    PackReferences {
        /// The object whose record could not be read.
        oid: Oid,
        /// Why the reference reader refused the record.
        what: String,
    },

    /// A garbage-collecting pack found, while copying the commits made during it, a
    /// reference to an object it had already judged unreachable and dropped.
    #[error(
        "{path}: object {oid}, unreachable when the pack began, was referred to again by a \
         transaction committed during the pack; the pack was abandoned and the file is \
         unchanged: pack again"
    )]
    PackAbandoned {
        /// The data file being packed.
        path: PathBuf,
        /// The object found unreachable and then referred to again.
        oid: Oid,
    },

    /// `store`, `check_current` or `vote` was called on a transaction after its vote.
    #[error("the transaction was already voted; finish or abort it")]
    AlreadyVoted,

    /// Copying a transaction with its own tid (recovery, restore) found that tid not
    /// greater than the target storage's last tid: the copies are out of order, or the
    /// target already holds that history.
    #[error(
        "a copied transaction's tid {tid} is not after the last tid {last}; copy transactions in order into a store that does not have them"
    )]
    TidNotIncreasing {
        /// The tid the copied transaction carries.
        tid: Tid,
        /// The storage's last committed tid.
        last: Tid,
    },

    /// A client storage's call failed because its connection to the server was lost
    /// while the call was in flight, or no connection came up within `wait_timeout`.
    /// The client keeps reconnecting in the background.
    #[error(
        "disconnected from the storage server at {address} ({reason}); the call may or may \
         not have taken effect: retry it (a transaction in progress must be aborted and redone)"
    )]
    Disconnected {
        /// The server's address, as the client was configured with it.
        address: String,
        /// Why the connection was lost or could not be made.
        reason: String,
    },

    /// The server answered the client's handshake with `Refused` (another protocol
    /// version, a missing or wrong authentication token, too many connections). The
    /// first connect returns it at once instead of retrying.
    #[error("the storage server at {address} refused the connection: {reason}")]
    Refused {
        /// The server's address.
        address: String,
        /// The reason the server gave.
        reason: String,
    },

    /// The peer sent a frame that does not decode, breaks a limit or is not allowed
    /// at that point of the conversation (`docs/protocol.md`); the connection is
    /// closed. The first connect returns it at once instead of retrying.
    #[error("protocol error with {peer}: {what}; the connection was closed")]
    Protocol {
        /// The peer's address.
        peer: String,
        /// What was wrong with what it sent.
        what: String,
    },

    /// A PostgreSQL storage's call failed in the database or on its connection
    /// (`what` says what to do: retry, reconnect, initialize the schema).
    #[error("PostgreSQL {target}: {what}")]
    Postgres {
        /// The database and schema (the URL without its password).
        target: String,
        /// What failed, and what to do.
        what: String,
    },

    /// A PostgreSQL storage lost its connection to the database during the call,
    /// or could not make one (the database is down or unreachable); `what` says
    /// whether anything was committed. The storage reconnects on its next call:
    /// retry (a transaction in progress must be redone). The PostgreSQL
    /// counterpart of [`Error::Disconnected`].
    #[error("PostgreSQL {target}: {what}")]
    PostgresDisconnected {
        /// The database and schema (the URL without its password).
        target: String,
        /// What failed, whether anything was committed, and what to do.
        what: String,
    },

    /// The server reported a failure that has no variant of its own on the wire
    /// (`WireError::Server`): an I/O error, corruption, a refused pack, ...
    #[error("the storage server failed: {message}")]
    Server {
        /// The error as the server displays it to its operator.
        message: String,
    },
}

impl Error {
    /// Whether the call failed because the connection to the shared storage (a
    /// `zodiac server` or PostgreSQL) was lost or could not be made: the storage
    /// reconnects by itself, so the caller retries later.
    pub fn is_disconnected(&self) -> bool {
        matches!(
            self,
            Error::Disconnected { .. } | Error::PostgresDisconnected { .. }
        )
    }

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
