//! The wire forms of the storage's values (transaction metadata, transactions,
//! pack reports, revisions, errors) and their conversions both ways.
//!
//! Invariants:
//! - Errors cross the wire as [`WireError`] and come back as the same [`Error`]
//!   variant with the same fields where the client can act on them; a limit error
//!   keeps its `&'static str` name when it is one the storage uses.
//! - A pack report crosses field for field.

use serde::{Deserialize, Serialize};

use crate::error::{ConflictError, Error};
use crate::ids::{Oid, Tid};
use crate::meta::{ChangeInfo, TransactionInfo, TransactionMeta};
use crate::reports::PackReport;

/// What a pack did ([`PackReport`](crate::PackReport)), field for field.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WirePackReport {
    /// The effective pack time: the requested tid, or the last tid if earlier.
    pub pack_tid: u64,
    /// Bytes of data in the file before the pack.
    pub bytes_before: u64,
    /// Bytes of data in the packed file.
    pub bytes_after: u64,
    /// Transactions in the file before the pack.
    pub transactions_before: u64,
    /// Transactions the packed file keeps (the last one always, even when empty).
    pub transactions_after: u64,
    /// Object revisions in the file before the pack.
    pub revisions_before: u64,
    /// Object revisions the packed file keeps.
    pub revisions_after: u64,
    /// Objects dropped as unreachable from the root at the pack time (0 without GC).
    pub objects_removed: u64,
    /// Transactions committed while the pack ran, copied under the commit lock.
    pub copied_during_pack: u64,
    /// The most memory the pack's tables took at once, in bytes.
    pub table_bytes_max: u64,
}

impl From<&PackReport> for WirePackReport {
    fn from(r: &PackReport) -> Self {
        WirePackReport {
            pack_tid: r.pack_tid.0,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            transactions_before: r.transactions_before,
            transactions_after: r.transactions_after,
            revisions_before: r.revisions_before,
            revisions_after: r.revisions_after,
            objects_removed: r.objects_removed,
            copied_during_pack: r.copied_during_pack,
            table_bytes_max: r.table_bytes_max,
        }
    }
}

impl From<WirePackReport> for PackReport {
    fn from(r: WirePackReport) -> Self {
        PackReport {
            pack_tid: Tid(r.pack_tid),
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            transactions_before: r.transactions_before,
            transactions_after: r.transactions_after,
            revisions_before: r.revisions_before,
            revisions_after: r.revisions_after,
            objects_removed: r.objects_removed,
            copied_during_pack: r.copied_during_pack,
            table_bytes_max: r.table_bytes_max,
        }
    }
}

/// Transaction metadata (`TransactionMeta`) as it crosses the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WireMeta {
    /// Who commits; at most `USER_BYTES_MAX` (65 535) bytes of UTF-8.
    pub user: String,
    /// Why; at most `DESCRIPTION_BYTES_MAX` (65 535) bytes of UTF-8.
    pub description: String,
    /// `(key, value)` pairs, as a client sends them: in key order, each key once;
    /// keys at most `EXTENSION_KEY_BYTES_MAX` (65 535) bytes, the pairs at most
    /// `EXTENSION_BYTES_MAX` (1 MiB) in all, counting 6 bytes per pair.
    pub extension: Vec<(String, Vec<u8>)>,
}

impl From<&TransactionMeta> for WireMeta {
    fn from(meta: &TransactionMeta) -> Self {
        WireMeta {
            user: meta.user.clone(),
            description: meta.description.clone(),
            extension: meta
                .extension
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<WireMeta> for TransactionMeta {
    fn from(meta: WireMeta) -> Self {
        TransactionMeta {
            user: meta.user,
            description: meta.description,
            extension: meta.extension.into_iter().collect(),
        }
    }
}

/// A transaction's record (`TransactionInfo`) as it crosses the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireTransaction {
    /// The transaction's tid.
    pub tid: u64,
    /// Who committed it and why.
    pub meta: WireMeta,
    /// `(oid, size)` of every object written, size in bytes of the new revision.
    pub changes: Vec<(u64, u64)>,
}

impl From<TransactionInfo> for WireTransaction {
    fn from(t: TransactionInfo) -> Self {
        WireTransaction {
            tid: t.tid.0,
            meta: WireMeta::from(&t.meta),
            changes: t.changes.iter().map(|c| (c.oid.0, c.size)).collect(),
        }
    }
}

impl From<WireTransaction> for TransactionInfo {
    fn from(t: WireTransaction) -> Self {
        TransactionInfo {
            tid: Tid(t.tid),
            meta: t.meta.into(),
            changes: t
                .changes
                .into_iter()
                .map(|(oid, size)| ChangeInfo {
                    oid: Oid(oid),
                    size,
                })
                .collect(),
        }
    }
}

impl WireTransaction {
    /// Rough encoded size, for filling pages.
    pub fn approximate_bytes(&self) -> usize {
        32 + self.meta.user.len()
            + self.meta.description.len()
            + self
                .meta
                .extension
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
            + self.changes.len() * 12
    }
}

/// An error as it crosses the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WireError {
    /// [`Error::Conflict`]: a vote found a newer committed revision of `oid`.
    Conflict {
        /// The object in conflict.
        oid: u64,
        /// The tid the transaction stored or checked it on (0: a new object).
        base_tid: u64,
        /// The newest committed tid of the object when the conflict was found.
        current_tid: u64,
    },
    /// [`Error::NotFoundAtSnapshot`]: the object was created after the snapshot.
    NotFoundAtSnapshot {
        /// The object asked for.
        oid: u64,
        /// The snapshot tid the load read at.
        snapshot: u64,
    },
    /// [`Error::NoSuchObject`]: the storage holds no revision of the object.
    NoSuchObject {
        /// The object asked for.
        oid: u64,
    },
    /// [`Error::NoSuchRevision`]: the object has no revision written by `tid`.
    NoSuchRevision {
        /// The object asked for.
        oid: u64,
        /// The transaction whose revision was asked for.
        tid: u64,
    },
    /// [`Error::UnallocatedOid`]: a store named an oid the storage never allocated.
    UnallocatedOid {
        /// The oid stored.
        oid: u64,
    },
    /// [`Error::LimitExceeded`]: a value over a named limit of the server.
    LimitExceeded {
        /// The limit's name, e.g. "transaction record"; a client maps a name it does
        /// not know to "a limit of the server".
        what: String,
        /// The value's size (bytes, or a count for counted limits).
        len: u64,
        /// The limit, in the same unit.
        max: u64,
    },
    /// [`Error::ReadOnly`]: the server, or this connection, refuses commits and packs.
    ReadOnly,
    /// [`Error::Closed`]: the served storage was closed.
    Closed,
    /// [`Error::AlreadyVoted`]: the transaction was already voted.
    AlreadyVoted,
    /// Anything else, as the operator would read it on the server.
    Server {
        /// The server-side error's `Display` text.
        message: String,
    },
    /// A conflict at vote (version 3), with revisions a client merges without
    /// loading them: for stored objects found stale, their newest revision and
    /// the revision they were stored on (see `docs/protocol.md`).
    ConflictWithRevisions {
        /// The object in conflict, as in `Conflict`.
        oid: u64,
        /// The tid the transaction stored it on, as in `Conflict`.
        base_tid: u64,
        /// The object's newest committed tid, as in `Conflict`.
        current_tid: u64,
        /// Newest and base revisions of stale stored objects (among the first 4096
        /// stored), each at most 64 KiB and 1 MiB in all; larger ones are left out.
        revisions: Vec<WireRevision>,
    },
    /// [`Error::TidNotIncreasing`] (version 5): a `Restore`'s tid is not after the
    /// server's last tid.
    TidNotIncreasing {
        /// The tid the copied transaction carries.
        tid: u64,
        /// The served storage's last tid.
        last: u64,
    },
}

/// One object revision: `data` is the record of `oid` at `tid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRevision {
    /// The object.
    pub oid: u64,
    /// The transaction that wrote this revision.
    pub tid: u64,
    /// The record.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Conflict(c) => WireError::Conflict {
                oid: c.oid.0,
                base_tid: c.base_tid.0,
                current_tid: c.current_tid.0,
            },
            Error::NotFoundAtSnapshot { oid, snapshot } => WireError::NotFoundAtSnapshot {
                oid: oid.0,
                snapshot: snapshot.0,
            },
            Error::NoSuchObject { oid } => WireError::NoSuchObject { oid: oid.0 },
            Error::NoSuchRevision { oid, tid } => WireError::NoSuchRevision {
                oid: oid.0,
                tid: tid.0,
            },
            Error::UnallocatedOid { oid } => WireError::UnallocatedOid { oid: oid.0 },
            Error::LimitExceeded { what, len, max } => WireError::LimitExceeded {
                what: (*what).to_string(),
                len: *len,
                max: *max,
            },
            Error::ReadOnly => WireError::ReadOnly,
            Error::Closed => WireError::Closed,
            Error::AlreadyVoted => WireError::AlreadyVoted,
            Error::TidNotIncreasing { tid, last } => WireError::TidNotIncreasing {
                tid: tid.0,
                last: last.0,
            },
            other => WireError::Server {
                message: other.to_string(),
            },
        }
    }
}

/// The limit names the storage uses, so a limit error keeps its `&'static str`.
const LIMIT_NAMES: &[&str] = &[
    "object revision",
    "objects in one transaction",
    "transaction user",
    "transaction description",
    "transaction extension key",
    "transaction extension",
    "transaction record",
];

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Conflict {
                oid,
                base_tid,
                current_tid,
            }
            | WireError::ConflictWithRevisions {
                oid,
                base_tid,
                current_tid,
                ..
            } => Error::Conflict(ConflictError {
                oid: Oid(oid),
                base_tid: Tid(base_tid),
                current_tid: Tid(current_tid),
            }),
            WireError::NotFoundAtSnapshot { oid, snapshot } => Error::NotFoundAtSnapshot {
                oid: Oid(oid),
                snapshot: Tid(snapshot),
            },
            WireError::NoSuchObject { oid } => Error::NoSuchObject { oid: Oid(oid) },
            WireError::NoSuchRevision { oid, tid } => Error::NoSuchRevision {
                oid: Oid(oid),
                tid: Tid(tid),
            },
            WireError::UnallocatedOid { oid } => Error::UnallocatedOid { oid: Oid(oid) },
            WireError::LimitExceeded { what, len, max } => Error::LimitExceeded {
                what: LIMIT_NAMES
                    .iter()
                    .find(|n| **n == what)
                    .copied()
                    .unwrap_or("a limit of the server"),
                len,
                max,
            },
            WireError::ReadOnly => Error::ReadOnly,
            WireError::Closed => Error::Closed,
            WireError::AlreadyVoted => Error::AlreadyVoted,
            WireError::Server { message } => Error::Server { message },
            WireError::TidNotIncreasing { tid, last } => Error::TidNotIncreasing {
                tid: Tid(tid),
                last: Tid(last),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_variant_and_fields_across_the_wire() {
        let conflict = Error::Conflict(ConflictError {
            oid: Oid(3),
            base_tid: Tid(4),
            current_tid: Tid(5),
        });
        let back: Error = WireError::from(&conflict).into();
        assert_eq!(back.as_conflict(), conflict.as_conflict());
        let limit = Error::LimitExceeded {
            what: "transaction user",
            len: 10,
            max: 9,
        };
        match Error::from(WireError::from(&limit)) {
            Error::LimitExceeded { what, len, max } => {
                assert_eq!((what, len, max), ("transaction user", 10, 9))
            }
            other => panic!("{other:?}"),
        }
    }
}
