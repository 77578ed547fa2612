//! The writes of one transaction before vote, shared by every backend.
//!
//! Invariant: each oid appears at most once in `stores` (a second store of the
//! same oid replaces the first, keeping its base tid from the first store, which
//! is the revision the transaction really started from).

use crate::error::{Error, Result};
use crate::ids::{Oid, OidMap, Tid};

/// Largest single object revision, in bytes.
pub const RECORD_BYTES_MAX: usize = 256 << 20;
/// Most objects one transaction may write.
pub const TRANSACTION_OBJECTS_MAX: usize = 1 << 24;

/// One object write: the oid, the revision it was based on, the new data.
#[derive(Debug, Clone)]
pub(crate) struct PendingStore {
    pub oid: Oid,
    pub base_tid: Tid,
    pub data: Vec<u8>,
}

#[derive(Default, Debug)]
pub(crate) struct PendingWrites {
    pub stores: Vec<PendingStore>,
    slot_of: OidMap<usize>,
    pub checks: Vec<(Oid, Tid)>,
}

impl PendingWrites {
    pub fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()> {
        if data.len() > RECORD_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "object revision",
                len: data.len() as u64,
                max: RECORD_BYTES_MAX as u64,
            });
        }
        if let Some(&slot) = self.slot_of.get(&oid) {
            self.stores[slot].data = data;
            return Ok(());
        }
        if self.stores.len() >= TRANSACTION_OBJECTS_MAX {
            return Err(Error::LimitExceeded {
                what: "objects in one transaction",
                len: self.stores.len() as u64 + 1,
                max: TRANSACTION_OBJECTS_MAX as u64,
            });
        }
        self.slot_of.insert(oid, self.stores.len());
        self.stores.push(PendingStore {
            oid,
            base_tid,
            data,
        });
        Ok(())
    }

    pub fn check_current(&mut self, oid: Oid, tid: Tid) {
        self.checks.push((oid, tid));
    }

    /// Every (oid, expected newest tid) the vote must validate: stores then checks.
    pub fn expectations(&self) -> impl Iterator<Item = (Oid, Tid)> + '_ {
        self.stores
            .iter()
            .map(|s| (s.oid, s.base_tid))
            .chain(self.checks.iter().copied())
    }

    /// Replaces stores by their merges: each `(oid, current tid, merged data)` is
    /// now stored on `current tid`. Returns the merged oids, in order.
    pub fn apply_merges(&mut self, merged: Vec<(Oid, Tid, Vec<u8>)>) -> Vec<Oid> {
        let mut oids = Vec::with_capacity(merged.len());
        for (oid, current_tid, data) in merged {
            let slot = self.slot_of[&oid];
            let store = &mut self.stores[slot];
            store.base_tid = current_tid;
            store.data = data;
            oids.push(oid);
        }
        oids
    }

    pub fn oids(&self) -> Vec<Oid> {
        self.stores.iter().map(|s| s.oid).collect()
    }
}
