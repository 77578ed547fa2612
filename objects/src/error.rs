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

    /// `transact` gave up.
    #[error(
        "gave up after {attempts} attempts; the last one conflicted on object {} (read revision \
         {}, committed revision {}); the object is too contended for the retry policy",
        conflict.oid, conflict.base_tid, conflict.current_tid
    )]
    RetriesExhausted {
        attempts: u32,
        conflict: ConflictError,
    },

    #[error(
        "object {oid} is a {stored:?} but was read as a {requested:?}; fix the reference's type"
    )]
    WrongType {
        oid: Oid,
        stored: String,
        requested: &'static str,
    },

    #[error("object {oid}: damaged record: {source}")]
    DamagedRecord {
        oid: Oid,
        #[source]
        source: RecordError,
    },

    #[error("object {oid}: cannot decode its {type_name:?} record: {source}")]
    Decode {
        oid: Oid,
        type_name: &'static str,
        #[source]
        source: DecodeError,
    },

    #[error("object {oid}: cannot encode its {type_name:?} value: {source}")]
    Encode {
        oid: Oid,
        type_name: &'static str,
        #[source]
        source: postcard::Error,
    },

    #[error("the savepoint belongs to another transaction")]
    ForeignSavepoint,

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
