//! The wire protocol between `ClientStorage` and `Server` (specified byte by byte in
//! `docs/protocol.md`): length-prefixed frames (`frame`) carrying postcard-encoded
//! messages (`messages`), whose values travel in their wire forms (`wire`). The
//! handshake that opens every connection is `net::handshake`.
//!
//! Invariants:
//! - A frame's length is checked against the limit in force (handshake or normal)
//!   before any byte of its payload is read; the payload buffer grows only with
//!   bytes actually received.
//! - Every decoded message passes [`ClientMessage::check`] / [`ServerMessage::check`]
//!   (counts against named limits) before anything acts on it.
//! - Errors cross the wire as [`WireError`] and come back as the same
//!   [`Error`](crate::Error) variant with the same fields where the client can act
//!   on them.

mod frame;
mod messages;
mod wire;

pub use frame::{
    FRAME_BYTES_MAX, FRAME_CHUNK_BYTES, FRAME_PREFIX_BYTES, FrameError, HANDSHAKE_FRAME_BYTES_MAX,
    ReservedFrame, decode, encode, read_frame, read_frame_reserving, skip_payload, write_frame,
};
pub use messages::{
    CatchUp, ClientMessage, FramePeek, MergedStore, Request, Response, ServerMessage,
};
pub use wire::{WireError, WireMeta, WirePackReport, WireRevision, WireTransaction};

/// The protocol version this build speaks. Version 1: the first. Version 2: `NewOids`,
/// `Commit` and `Pack` requests. Version 3: conflicts carry revisions
/// (`WireError::ConflictWithRevisions`). Version 4: a store may name its merge
/// function (`Store::merge`) and `Finished` lists what the server merged. Version 5:
/// the `Restore` request (a transaction copied with its own tid), answered `Restored`.
pub const PROTOCOL_VERSION: u32 = 5;
/// The oldest protocol version this build still speaks with: version 5 only added a
/// request, so a version 4 client is served (it never sends `Restore`), and a
/// client connects to a version 4 server speaking version 4 (its `restore` is then
/// refused without asking: that server is too old to take copied transactions).
pub const PROTOCOL_VERSION_MIN: u32 = 4;
/// The first protocol version with the `Restore` request.
pub const PROTOCOL_VERSION_RESTORE: u32 = 5;
/// First field of `Hello`: "ZODI" in little-endian, so a stray client is told apart.
pub const MAGIC: u32 = u32::from_le_bytes(*b"ZODI");
/// Most oids in one `Invalidation` frame; larger transactions are split.
pub const INVALIDATION_CHUNK_OIDS_MAX: usize = 65_536;
/// Largest record an `Invalidation` carries the new data of.
pub const INVALIDATION_DATA_OBJECT_BYTES_MAX: usize = 4096;
/// Most bytes of new data one transaction's `Invalidation` carries.
pub const INVALIDATION_DATA_BYTES_MAX: usize = 64 << 10;
/// Most revisions one `History` reply carries.
pub const HISTORY_REPLY_MAX: usize = 1 << 20;
/// Most transactions one `Transactions` page carries.
pub const TRANSACTIONS_PAGE_MAX: usize = 256;
/// A `Transactions` page stops growing once its changes and metadata reach this size.
pub const TRANSACTIONS_PAGE_BYTES: usize = 4 << 20;
/// Most transactions one connection may have open at once.
pub const TRANSACTIONS_PER_CONNECTION_MAX: usize = 64;
/// Most oids one `NewOids` request may allocate.
pub const NEW_OIDS_MAX: u32 = 1024;
/// Bytes of the authentication nonce and of the MAC.
pub const NONCE_BYTES: usize = 32;
/// Most bytes of merged data one `Finished` reply carries.
pub const MERGED_REPLY_BYTES_MAX: usize = 1 << 20;
/// Most bytes of one merge identity (`Store::merge`).
pub const MERGE_IDENTITY_BYTES_MAX: usize = 1024;
