//! Transaction metadata and the records the storage reports back.
//!
//! Invariant: every `TransactionMeta` that reaches a storage has passed
//! [`TransactionMeta::validate`], so its parts fit the on-disk and wire widths.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};

/// Longest `user` field, in bytes.
pub const USER_BYTES_MAX: usize = u16::MAX as usize;
/// Longest `description` field, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = u16::MAX as usize;
/// Largest extension map, counting every key and value byte plus 6 bytes per entry.
pub const EXTENSION_BYTES_MAX: usize = 1 << 20;
/// Longest extension key, in bytes.
pub const EXTENSION_KEY_BYTES_MAX: usize = u16::MAX as usize;

/// Who committed a transaction and why, as in ZODB: user, description, and a free-form
/// extension map of key/value bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionMeta {
    /// Who committed, free-form; at most [`USER_BYTES_MAX`] bytes of UTF-8.
    pub user: String,
    /// Why, free-form; at most [`DESCRIPTION_BYTES_MAX`] bytes of UTF-8.
    pub description: String,
    /// Application-defined key/value bytes, sorted by key; keys at most
    /// [`EXTENSION_KEY_BYTES_MAX`] bytes, the whole map at most [`EXTENSION_BYTES_MAX`]
    /// encoded.
    pub extension: BTreeMap<String, Vec<u8>>,
}

impl TransactionMeta {
    /// Metadata with only a description.
    pub fn described(description: impl Into<String>) -> Self {
        TransactionMeta {
            description: description.into(),
            ..Default::default()
        }
    }

    /// Bytes the extension map takes in its encoded form.
    pub fn extension_encoded_len(&self) -> usize {
        self.extension
            .iter()
            .map(|(k, v)| 6 + k.len() + v.len())
            .sum()
    }

    /// Checks every part against its limit.
    pub fn validate(&self) -> Result<()> {
        let too_large = |what: &'static str, len: usize, max: usize| {
            if len > max {
                Err(Error::LimitExceeded {
                    what,
                    len: len as u64,
                    max: max as u64,
                })
            } else {
                Ok(())
            }
        };
        too_large("transaction user", self.user.len(), USER_BYTES_MAX)?;
        too_large(
            "transaction description",
            self.description.len(),
            DESCRIPTION_BYTES_MAX,
        )?;
        for key in self.extension.keys() {
            too_large(
                "transaction extension key",
                key.len(),
                EXTENSION_KEY_BYTES_MAX,
            )?;
        }
        too_large(
            "transaction extension",
            self.extension_encoded_len(),
            EXTENSION_BYTES_MAX,
        )
    }
}

/// One revision of an object, as a load returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The transaction that wrote this revision.
    pub tid: Tid,
    /// The object's record, as it was stored.
    pub data: Vec<u8>,
}

/// One entry of an object's history (newest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The transaction that wrote the revision.
    pub tid: Tid,
    /// Length of the revision's data in bytes.
    pub size: u64,
}

/// One object written by a transaction, as transaction iteration reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeInfo {
    /// The object written.
    pub oid: Oid,
    /// Length of the revision's data in bytes.
    pub size: u64,
}

/// A committed transaction: its tid, metadata and the objects it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    /// The transaction's id, which orders it among all commits.
    pub tid: Tid,
    /// Who committed it and why.
    pub meta: TransactionMeta,
    /// The objects it wrote, with the size of each new revision.
    pub changes: Vec<ChangeInfo>,
}

/// A transaction copied from another storage, as `Storage::restore_batch` takes
/// it: its tid and metadata as the source has them, and each object's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedTransaction {
    /// The tid the transaction keeps.
    pub tid: Tid,
    /// Its metadata, as the source has it.
    pub meta: TransactionMeta,
    /// The records it wrote: each object and its data.
    pub records: Vec<(Oid, Vec<u8>)>,
}

/// What a commit notification says: a transaction became durable and visible,
/// and these objects changed. Delivered in commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEvent {
    /// The committed transaction; once delivered, a snapshot at it sees its writes.
    pub tid: Tid,
    /// The objects it wrote (a reader caching any of them must drop or refresh them).
    pub oids: Arc<[Oid]>,
}
