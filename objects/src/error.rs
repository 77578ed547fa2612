//! The objects layer's error type. `Display` says what happened, on which object,
//! and what to do.

use zodiac_storage::{ConflictError, Oid};

use crate::codec::DecodeError;
use crate::record::RecordError;

/// Result with the objects [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the objects layer reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write conflict that conflict resolution could not merge.
    #[error(transparent)]
    Conflict(ConflictError),

    /// `transact` gave up: every one of the retry policy's
    /// [`attempts_max`](crate::RetryPolicy::attempts_max) attempts ended in a conflict
    /// no type could merge. Nothing of the last attempt was written.
    #[error(
        "gave up after {attempts} attempts; the last one conflicted on object {} (read revision \
         {}, committed revision {}); the object is too contended for the retry policy",
        conflict.oid, conflict.base_tid, conflict.current_tid
    )]
    RetriesExhausted {
        /// Attempts made, the first included.
        attempts: u32,
        /// The last attempt's conflict: the object's oid, the revision the attempt
        /// read (`base_tid`) and the one committed since (`current_tid`).
        conflict: ConflictError,
    },

    /// An object was read, changed or checked through a `PRef<T>` whose
    /// `T::TYPE_NAME` is not the type name its record (or this transaction's change
    /// to it) carries; or the name matches but the value is another instantiation of
    /// a generic type (a [`BTree`](crate::BTree) with other key or value types), and
    /// `stored` then says "with other type parameters". Opening a database reports
    /// it too when oid 0 is not a `zodiac.Root`.
    #[error(
        "object {oid} is a {stored:?} but was read as a {requested:?}; fix the reference's type"
    )]
    WrongType {
        /// The object.
        oid: Oid,
        /// The type name found: in the record, or in this transaction's change.
        stored: String,
        /// The `TYPE_NAME` of the type it was read as.
        requested: &'static str,
    },

    /// An object's stored bytes are not a valid record envelope
    /// (`docs/objects-format.md`): damage the storage's checksum did not catch, a
    /// record written by a newer envelope version, or bytes stored by something other
    /// than this layer.
    #[error("object {oid}: damaged record: {source}")]
    DamagedRecord {
        /// The object whose record was read.
        oid: Oid,
        /// The first envelope check that failed, with its offset in the record.
        #[source]
        source: RecordError,
    },

    /// An object's envelope names the requested type but its payload does not decode
    /// as that type: the type changed incompatibly since the record was written
    /// (fields removed, reordered or retyped), a newer version added fields this
    /// reader does not know, or a generic type is read with other parameters.
    #[error("object {oid}: cannot decode its {type_name:?} record: {source}")]
    Decode {
        /// The object whose record was read.
        oid: Oid,
        /// The `TYPE_NAME` it was read as.
        type_name: &'static str,
        /// What postcard or the type's `Deserialize` refused.
        #[source]
        source: DecodeError,
    },

    /// A changed or new object could not be encoded at commit (or the root object
    /// when a database is first opened): its `Serialize` implementation failed, or it
    /// uses something postcard cannot write, such as a sequence of unknown length.
    /// Nothing was written.
    #[error("object {oid}: cannot encode its {type_name:?} value: {source}")]
    Encode {
        /// The object being written.
        oid: Oid,
        /// Its type's `TYPE_NAME`.
        type_name: &'static str,
        /// postcard's error.
        #[source]
        source: postcard::Error,
    },

    /// [`Transaction::rollback_to`](crate::Transaction::rollback_to) or
    /// [`Transaction::commit_or_rollback_to`](crate::Transaction::commit_or_rollback_to)
    /// was given a savepoint taken in another transaction (a programming error in
    /// the caller). Nothing was rolled back, and `commit_or_rollback_to` wrote
    /// nothing.
    #[error("the savepoint belongs to another transaction")]
    ForeignSavepoint,

    /// Any other error of the storage underneath: I/O, corruption, a poisoned or
    /// closed storage, a lost server connection, or a limit exceeded (such as the
    /// transaction metadata's). Its message is the storage's.
    #[error(transparent)]
    Storage(zodiac_storage::Error),
}

impl Error {
    /// The conflict, when this error is one (not after retries were exhausted).
    pub fn as_conflict(&self) -> Option<&ConflictError> {
        match self {
            Error::Conflict(c) => Some(c),
            _ => None,
        }
    }
}

impl From<zodiac_storage::Error> for Error {
    fn from(e: zodiac_storage::Error) -> Self {
        match e {
            zodiac_storage::Error::Conflict(c) => Error::Conflict(c),
            other => Error::Storage(other),
        }
    }
}
