//! Restoring a copied transaction into the served storage (`Storage::restore`
//! through a server: the `Restore` request, protocol version 5).
//!
//! Invariants:
//! - A connection in a protocol version older than the `Restore` request's never
//!   sends it: the call is refused at once, naming the server as too old, so an
//!   old server never meets a message it cannot decode (which would end the
//!   connection and leave the caller retrying).
//! - `restore` returns once the server says the transaction is durable and this
//!   client has applied its invalidation (`last_tid()` reports it), unless the
//!   connection was lost meanwhile.
//! - Spare oids the server allocated to this connection before the restore and
//!   that it may have written are dropped, so `new_oid` never hands one out.

use super::link::Link;
use super::{ClientStorage, unexpected};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::TransactionMeta;
use crate::net::protocol::{
    FRAME_BYTES_MAX, PROTOCOL_VERSION_RESTORE, Request, Response, WireMeta,
};

/// Bytes a `Restore` frame holds besides its records: the request's fields, the
/// metadata (bounded by its own limits) and each record's oid and length.
const RESTORE_FRAME_OVERHEAD_BYTES: usize = 1 << 20;

impl ClientStorage {
    /// `Storage::restore` through the server.
    pub(super) fn restore_remote(
        &self,
        tid: Tid,
        meta: &TransactionMeta,
        records: &[(Oid, Vec<u8>)],
    ) -> Result<()> {
        self.inner.check_open()?;
        meta.validate()?;
        if self.inner.options.read_only || self.server_is_read_only() {
            return Err(Error::ReadOnly);
        }
        let link = self.inner.link()?;
        self.check_takes_restores(&link)?;
        let len: usize = records.iter().map(|(_, d)| d.len() + 16).sum();
        let max = FRAME_BYTES_MAX - RESTORE_FRAME_OVERHEAD_BYTES;
        if len > max {
            return Err(Error::LimitExceeded {
                what: "copied transaction sent to a server (one Restore frame)",
                len: len as u64,
                max: max as u64,
            });
        }
        let request = Request::Restore {
            tid: tid.0,
            meta: WireMeta::from(meta),
            records: records.iter().map(|(o, d)| (o.0, d.clone())).collect(),
        };
        match self.inner.call_on(&link, request)? {
            Response::Restored => {
                let highest = records.iter().map(|(o, _)| o.0).max().unwrap_or(0);
                link.oids.lock().retain(|&o| o > highest);
                self.inner.wait_published(tid, &link);
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Refuses when the connection speaks a version without the `Restore` request.
    fn check_takes_restores(&self, link: &Link) -> Result<()> {
        if link.version >= PROTOCOL_VERSION_RESTORE {
            return Ok(());
        }
        Err(Error::Server {
            message: format!(
                "tcp://{}: this server is too old to take copied transactions (it speaks \
                 protocol version {}; restoring needs version {PROTOCOL_VERSION_RESTORE}): \
                 upgrade `zodiac server` there, or copy into its data file while it is stopped",
                self.inner.address, link.version
            ),
        })
    }
}
