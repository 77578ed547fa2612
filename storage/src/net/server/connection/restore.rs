//! A connection's `Restore` requests (protocol version 5): a transaction copied
//! from another storage, written into the served storage with its own tid and
//! metadata (`Storage::restore`).
//!
//! Invariants:
//! - A read-only server or connection refuses it, as it refuses commits.
//! - It runs off the reading thread (it waits for the disk, as a commit does),
//!   and gets exactly one reply, sent once the transaction is durable; its
//!   invalidation reaches every subscribed connection, as a commit's does,
//!   through the storage's commit notifications.

use super::Connection;
use crate::ids::{Oid, Tid};
use crate::net::protocol::{Response, WireError, WireMeta};
use crate::net::server::Job;
use crate::net::server::memory::Reservation;

impl Connection {
    /// Answers a `Restore`: refused at once on a read-only connection, else a job
    /// to run off the reader.
    pub(super) fn restore(
        &self,
        id: u64,
        tid: u64,
        meta: WireMeta,
        records: Vec<(u64, Vec<u8>)>,
        reserved: Reservation,
    ) -> Option<Job> {
        if let Err(e) = self.writable() {
            self.reply(id, Err(e));
            return None;
        }
        let ctx = self.context();
        Some(Box::new(move || {
            // The records hold client memory until they are written.
            let _held = reserved;
            let records: Vec<(Oid, Vec<u8>)> =
                records.into_iter().map(|(o, d)| (Oid(o), d)).collect();
            let result = ctx.shared.storage.restore(Tid(tid), &meta.into(), &records);
            if let Err(e) = &result {
                log::warn!(
                    "{}: restoring transaction {tid} failed: {e}",
                    ctx.outbox.peer
                );
            }
            ctx.reply(
                id,
                result
                    .map(|()| Response::Restored)
                    .map_err(|e| WireError::from(&e)),
            );
        }))
    }
}
