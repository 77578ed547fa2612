//! The wire protocol between `ClientStorage` and `Server` (specified byte by byte in
//! `docs/protocol.md`): length-prefixed frames carrying postcard-encoded messages.
//!
//! Invariants:
//! - A frame's length is checked against the limit in force (handshake or normal)
//!   before any byte of its payload is read; the payload buffer grows only with
//!   bytes actually received.
//! - Every decoded message passes [`ClientMessage::check`] / [`ServerMessage::check`]
//!   (counts against named limits) before anything acts on it.
//! - Errors cross the wire as [`WireError`] and come back as the same [`Error`]
//!   variant with the same fields where the client can act on them.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ConflictError, Error};
use crate::file::pack::PackReport;
use crate::ids::{Oid, Tid};
use crate::meta::{ChangeInfo, TransactionInfo, TransactionMeta};
use crate::pending::{RECORD_BYTES_MAX, TRANSACTION_OBJECTS_MAX};

/// The protocol version this build speaks. Version 1: the first. Version 2: `NewOids`,
/// `Commit` and `Pack` requests. Version 3: conflicts carry revisions
/// (`WireError::ConflictWithRevisions`). Version 4: a store may name its merge
/// function (`Store::merge`) and `Finished` lists what the server merged.
pub const PROTOCOL_VERSION: u32 = 4;
/// First field of `Hello`: "ZODI" in little-endian, so a stray client is told apart.
pub const MAGIC: u32 = u32::from_le_bytes(*b"ZODI");
/// Largest frame payload once the handshake is done: one object revision of the
/// largest size plus room for the rest of the message.
pub const FRAME_BYTES_MAX: usize = RECORD_BYTES_MAX + (2 << 20);
/// Largest frame payload during the handshake, before the peer is authenticated.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;
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

/// What a client sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Hello {
        magic: u32,
        version: u32,
        read_only: bool,
        /// The client has no cache and no snapshot yet: nothing to catch up.
        fresh: bool,
        /// The last tid the client has processed (its cache is current as of it).
        last_tid: u64,
    },
    Auth {
        /// HMAC-SHA-256 of the challenge nonce under the shared token, if the client has one.
        mac: Option<[u8; NONCE_BYTES]>,
    },
    Request {
        id: u64,
        request: Request,
    },
    Begin {
        txn: u64,
        meta: WireMeta,
    },
    Store {
        txn: u64,
        oid: u64,
        base_tid: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The identity of the merge function for this object's conflicts, when the
        /// client's type has one: a server that registered it merges them at commit.
        merge: Option<String>,
    },
    CheckCurrent {
        txn: u64,
        oid: u64,
        tid: u64,
    },
    Abort {
        txn: u64,
    },
}

/// A client request that gets exactly one `Reply` with the same id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    NewOid,
    Load {
        oid: u64,
        snapshot: u64,
    },
    LoadRevision {
        oid: u64,
        tid: u64,
    },
    History {
        oid: u64,
        limit: u64,
    },
    Transactions {
        from: u64,
        to: u64,
    },
    Vote {
        txn: u64,
    },
    Finish {
        txn: u64,
    },
    /// Answered at once with `Pong`: the client's check that the server still answers.
    Ping,
    /// Allocates `count` oids (1 to `NEW_OIDS_MAX`), answered with `Oids`.
    NewOids {
        count: u32,
    },
    /// Vote and finish in one request (a transaction not voted yet), answered with
    /// `Finished`; a failed vote ends the transaction as a failed `Finish` does.
    Commit {
        txn: u64,
    },
    /// Packs the served storage to `tid`, with garbage collection when `gc`,
    /// answered with `Packed` once the packed file is in place.
    Pack {
        tid: u64,
        gc: bool,
    },
}

/// What a server sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Challenge {
        nonce: [u8; NONCE_BYTES],
        auth_required: bool,
    },
    Welcome {
        /// The newest tid whose invalidations this connection has been sent.
        last_tid: u64,
        read_only: bool,
        catch_up: CatchUp,
        /// The served storage's `Storage::identity` (0: unknown): a client reuses a
        /// persistent cache file only when it was saved under the same identity.
        identity: u64,
    },
    Refused {
        reason: String,
    },
    Reply {
        id: u64,
        result: Result<Response, WireError>,
    },
    /// Objects changed by transaction `tid`; `complete` on its last chunk.
    Invalidation {
        tid: u64,
        oids: Vec<u64>,
        complete: bool,
        /// On the last chunk (version 4): the new records of some of the changed
        /// objects, `(oid, data)`, each at most [`INVALIDATION_DATA_OBJECT_BYTES_MAX`]
        /// and [`INVALIDATION_DATA_BYTES_MAX`] in all: a client that caches such an
        /// object keeps it current instead of loading it again.
        #[serde(with = "oid_records")]
        data: Vec<(u64, Vec<u8>)>,
    },
}

/// `(oid, record)` pairs, each record serialized as bytes (`serde_bytes`): one copy
/// instead of a sequence of `u8`s, the same bytes on the wire in postcard.
mod oid_records {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(pairs: &[(u64, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(pairs.iter().map(|(oid, data)| (*oid, Bytes::new(data))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, Vec<u8>)>, D::Error> {
        let pairs: Vec<(u64, ByteBuf)> = Vec::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(oid, data)| (oid, data.into_vec()))
            .collect())
    }
}

/// How the server answered the client's `last_tid` at connect.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The client said it was fresh.
    Fresh,
    /// The client is current: keep the cache.
    Equal,
    /// The missed invalidations preceded this `Welcome`.
    Behind,
    /// Older than the invalidation history: drop the cache.
    TooFar,
    /// Newer than the server (restored from a backup?): drop the cache.
    Ahead,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    Oid(u64),
    Revision {
        tid: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    History(Vec<(u64, u64)>),
    Transactions {
        page: Vec<WireTransaction>,
        more: bool,
    },
    Voted,
    Finished {
        tid: u64,
        /// The stores the server replaced by a merge (only a `Commit` merges), with
        /// the merged data while the reply's merged data stays within
        /// [`MERGED_REPLY_BYTES_MAX`].
        merged: Vec<MergedStore>,
    },
    Pong,
    Oids(Vec<u64>),
    Packed(WirePackReport),
}

/// A store the server merged at commit: what committed for `oid` is `data`, not
/// what the client stored (`None`: the data did not fit the reply; load it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MergedStore {
    pub oid: u64,
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// Most bytes of merged data one `Finished` reply carries.
pub const MERGED_REPLY_BYTES_MAX: usize = 1 << 20;
/// Most bytes of one merge identity (`Store::merge`).
pub const MERGE_IDENTITY_BYTES_MAX: usize = 1024;

/// What a pack did (`file::pack::PackReport`), field for field.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WirePackReport {
    pub pack_tid: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub transactions_before: u64,
    pub transactions_after: u64,
    pub revisions_before: u64,
    pub revisions_after: u64,
    pub objects_removed: u64,
    pub copied_during_pack: u64,
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

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct WireMeta {
    pub user: String,
    pub description: String,
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

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireTransaction {
    pub tid: u64,
    pub meta: WireMeta,
    /// `(oid, size)` of every object written.
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
    Conflict {
        oid: u64,
        base_tid: u64,
        current_tid: u64,
    },
    NotFoundAtSnapshot {
        oid: u64,
        snapshot: u64,
    },
    NoSuchObject {
        oid: u64,
    },
    NoSuchRevision {
        oid: u64,
        tid: u64,
    },
    UnallocatedOid {
        oid: u64,
    },
    LimitExceeded {
        what: String,
        len: u64,
        max: u64,
    },
    ReadOnly,
    Closed,
    AlreadyVoted,
    /// Anything else, as the operator would read it on the server.
    Server {
        message: String,
    },
    /// A conflict at vote (version 3), with revisions a client merges without
    /// loading them: for stored objects found stale, their newest revision and
    /// the revision they were stored on (see `docs/protocol.md`).
    ConflictWithRevisions {
        oid: u64,
        base_tid: u64,
        current_tid: u64,
        revisions: Vec<WireRevision>,
    },
}

/// One object revision: `data` is the record of `oid` at `tid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRevision {
    pub oid: u64,
    pub tid: u64,
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
        }
    }
}

impl ClientMessage {
    /// Checks counts against the named limits (the frame limit bounds the rest).
    pub fn check(&self) -> Result<(), String> {
        match self {
            ClientMessage::Store { data, .. } if data.len() > RECORD_BYTES_MAX => Err(format!(
                "a stored revision of {} bytes, over {RECORD_BYTES_MAX}",
                data.len()
            )),
            ClientMessage::Store {
                merge: Some(merge), ..
            } if merge.len() > MERGE_IDENTITY_BYTES_MAX => Err(format!(
                "a merge identity of {} bytes, over {MERGE_IDENTITY_BYTES_MAX}",
                merge.len()
            )),
            ClientMessage::Request {
                request: Request::NewOids { count },
                ..
            } if *count == 0 || *count > NEW_OIDS_MAX => Err(format!(
                "a request for {count} new oids, not 1 to {NEW_OIDS_MAX}"
            )),
            _ => Ok(()),
        }
    }
}

impl ServerMessage {
    /// Checks counts against the named limits (the frame limit bounds the rest).
    pub fn check(&self) -> Result<(), String> {
        match self {
            ServerMessage::Invalidation { oids, .. }
                if oids.len() > INVALIDATION_CHUNK_OIDS_MAX =>
            {
                Err(format!(
                    "an invalidation of {} oids, over {INVALIDATION_CHUNK_OIDS_MAX}",
                    oids.len()
                ))
            }
            ServerMessage::Invalidation { data, .. }
                if data.iter().map(|(_, d)| d.len()).sum::<usize>()
                    > INVALIDATION_DATA_BYTES_MAX
                    || data
                        .iter()
                        .any(|(_, d)| d.len() > INVALIDATION_DATA_OBJECT_BYTES_MAX) =>
            {
                Err(format!(
                    "an invalidation carrying more data than {INVALIDATION_DATA_BYTES_MAX} bytes \
                     or a record over {INVALIDATION_DATA_OBJECT_BYTES_MAX}"
                ))
            }
            ServerMessage::Reply {
                result: Ok(Response::History(h)),
                ..
            } if h.len() > HISTORY_REPLY_MAX => Err(format!(
                "a history of {} revisions, over {HISTORY_REPLY_MAX}",
                h.len()
            )),
            ServerMessage::Reply {
                result: Ok(Response::Oids(oids)),
                ..
            } if oids.len() > NEW_OIDS_MAX as usize => {
                Err(format!("{} new oids, over {NEW_OIDS_MAX}", oids.len()))
            }
            ServerMessage::Reply {
                result: Ok(Response::Transactions { page, .. }),
                ..
            } if page.len() > TRANSACTIONS_PAGE_MAX => Err(format!(
                "a page of {} transactions, over {TRANSACTIONS_PAGE_MAX}",
                page.len()
            )),
            ServerMessage::Reply {
                result: Ok(Response::Finished { merged, .. }),
                ..
            } if merged.len() > TRANSACTION_OBJECTS_MAX => Err(format!(
                "a commit reply naming {} merged stores, over {TRANSACTION_OBJECTS_MAX}",
                merged.len()
            )),
            _ => Ok(()),
        }
    }
}

/// Encodes `message` as one frame: u32 LE payload length, then the payload.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    let mut frame = postcard::to_extend(message, std::mem::take(&mut frame))
        .expect("encoding to a Vec cannot fail");
    let len = u32::try_from(frame.len() - 4).expect("frames are far below 4 GiB");
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame
}

/// Why reading a frame failed.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection at a frame boundary.
    Closed,
    Io(io::Error),
    /// The frame is malformed or over the limit: the connection must be closed.
    Bad(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed by the peer"),
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::Bad(what) => write!(f, "{what}"),
        }
    }
}

/// Reads one frame's payload, refusing a length over `max` before reading it.
pub fn read_frame(reader: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::Bad(format!(
            "frame of {len} bytes, over the limit of {max} bytes"
        )));
    }
    // Grows with the bytes that really arrive, so a lying length costs nothing.
    let mut payload = Vec::with_capacity(len.min(64 << 10));
    reader
        .take(len as u64)
        .read_to_end(&mut payload)
        .map_err(FrameError::Io)?;
    if payload.len() < len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(payload)
}

/// Decodes a payload read by [`read_frame`].
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|e| FrameError::Bad(format!("undecodable frame: {e}")))
}

/// Writes one encoded frame.
pub fn write_frame(writer: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame)
}

/// HMAC-SHA-256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The MAC a client answers a challenge with.
pub fn auth_mac(token: &[u8], nonce: &[u8; NONCE_BYTES]) -> [u8; 32] {
    let mut message = b"zodiac auth v1\0".to_vec();
    message.extend_from_slice(nonce);
    hmac_sha256(token, &message)
}

/// Compares two MACs in time independent of where they differ.
pub fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random nonce.
pub fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    nonce[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    nonce[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Byte fields are serialized as bytes (one copy), which in postcard is the same
    /// encoding a sequence of `u8` has: peers of the same version agree, whichever
    /// way they decode.
    #[test]
    fn byte_fields_encode_exactly_as_sequences_of_u8() {
        #[derive(Serialize)]
        struct PlainRevision {
            oid: u64,
            tid: u64,
            data: Vec<u8>,
        }
        #[derive(Serialize)]
        enum PlainResponse {
            Oid(u64),
            Revision { tid: u64, data: Vec<u8> },
            Data(Vec<u8>),
        }
        #[derive(Serialize)]
        struct PlainMerged {
            oid: u64,
            data: Option<Vec<u8>>,
        }
        #[derive(Serialize)]
        enum PlainServerMessage {
            Challenge,
            Welcome,
            Refused,
            Reply,
            Invalidation {
                tid: u64,
                oids: Vec<u64>,
                complete: bool,
                data: Vec<(u64, Vec<u8>)>,
            },
        }
        let data: Vec<u8> = (0..=255).chain(0..40).collect();
        assert_eq!(
            encode(&WireRevision {
                oid: 7,
                tid: 9,
                data: data.clone()
            }),
            encode(&PlainRevision {
                oid: 7,
                tid: 9,
                data: data.clone()
            })
        );
        assert_eq!(
            encode(&Response::Revision {
                tid: 3,
                data: data.clone()
            }),
            encode(&PlainResponse::Revision {
                tid: 3,
                data: data.clone()
            })
        );
        assert_eq!(
            encode(&Response::Data(data.clone())),
            encode(&PlainResponse::Data(data.clone()))
        );
        for merged in [Some(data.clone()), None] {
            assert_eq!(
                encode(&MergedStore {
                    oid: 1,
                    data: merged.clone()
                }),
                encode(&PlainMerged {
                    oid: 1,
                    data: merged
                })
            );
        }
        let pairs = vec![(5, data.clone()), (6, Vec::new())];
        let invalidation = ServerMessage::Invalidation {
            tid: 4,
            oids: vec![5, 6],
            complete: true,
            data: pairs.clone(),
        };
        assert_eq!(
            encode(&invalidation),
            encode(&PlainServerMessage::Invalidation {
                tid: 4,
                oids: vec![5, 6],
                complete: true,
                data: pairs,
            })
        );
        assert_eq!(
            decode::<ServerMessage>(&encode(&invalidation)[4..]).unwrap(),
            invalidation
        );
        let _ = (
            PlainResponse::Oid(0),
            PlainServerMessage::Challenge,
            PlainServerMessage::Welcome,
            PlainServerMessage::Refused,
            PlainServerMessage::Reply,
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn frames_round_trip_and_have_the_documented_layout() {
        let message = ClientMessage::Request {
            id: 7,
            request: Request::Load {
                oid: 1,
                snapshot: 300,
            },
        };
        let frame = encode(&message);
        // Variant 2 (Request), id 7, variant 1 (Load), oid 1, snapshot 300 = ac 02.
        assert_eq!(frame, vec![6, 0, 0, 0, 2, 7, 1, 1, 0xac, 0x02]);
        let payload = read_frame(&mut &frame[..], 100).unwrap();
        assert_eq!(decode::<ClientMessage>(&payload).unwrap(), message);
        // The version 2 requests, as docs/protocol.md shows them.
        let commit = ClientMessage::Request {
            id: 9,
            request: Request::Commit { txn: 5 },
        };
        assert_eq!(encode(&commit), vec![4, 0, 0, 0, 2, 9, 9, 5]);
        let new_oids = ClientMessage::Request {
            id: 3,
            request: Request::NewOids { count: 32 },
        };
        assert_eq!(encode(&new_oids), vec![4, 0, 0, 0, 2, 3, 8, 32]);
        let pack = ClientMessage::Request {
            id: 4,
            request: Request::Pack { tid: 300, gc: true },
        };
        assert_eq!(encode(&pack), vec![6, 0, 0, 0, 2, 4, 10, 0xac, 0x02, 1]);
        let oids = ServerMessage::Reply {
            id: 3,
            result: Ok(Response::Oids(vec![1, 2])),
        };
        assert_eq!(encode(&oids), vec![7, 0, 0, 0, 3, 3, 0, 8, 2, 1, 2]);
    }

    #[test]
    fn frame_limit_is_checked_before_reading_at_its_boundary() {
        let frame = encode(&ClientMessage::Abort { txn: 1 });
        let len = frame.len() - 4;
        assert!(read_frame(&mut &frame[..], len).is_ok());
        match read_frame(&mut &frame[..], len - 1) {
            Err(FrameError::Bad(what)) => assert!(what.contains("over the limit"), "{what}"),
            other => panic!("expected an oversized frame, got {other:?}"),
        }
        // A huge announced length with no payload fails without allocating it.
        let lying = [0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            read_frame(&mut &lying[..], usize::MAX),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut &[][..], 10),
            Err(FrameError::Closed)
        ));
    }

    proptest::proptest! {
        // Any bytes: an error or a message, never a panic; checks never panic either.
        #[test]
        fn any_payload_decodes_or_fails_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(m) = decode::<ClientMessage>(&bytes) {
                let _ = m.check();
            }
            if let Ok(m) = decode::<ServerMessage>(&bytes) {
                let _ = m.check();
            }
        }

        // A frame is returned only whole and within the limit; nothing past it is read.
        #[test]
        fn read_frame_takes_exactly_one_frame_within_the_limit(
            len in 0u32..300,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            max in 0usize..300,
        ) {
            let mut input = len.to_le_bytes().to_vec();
            input.extend_from_slice(&body);
            let mut reader = &input[..];
            match read_frame(&mut reader, max) {
                Ok(payload) => {
                    proptest::prop_assert!(len as usize <= max);
                    proptest::prop_assert_eq!(&payload[..], &body[..len as usize]);
                    proptest::prop_assert_eq!(reader.len(), body.len() - len as usize);
                }
                Err(FrameError::Bad(_)) => proptest::prop_assert!(len as usize > max),
                Err(FrameError::Io(_)) => {
                    proptest::prop_assert!((len as usize) <= max && body.len() < len as usize)
                }
                Err(FrameError::Closed) => proptest::prop_assert!(false, "input was not empty"),
            }
        }
    }

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

    #[test]
    fn invalidation_data_limits_hold_at_their_boundaries() {
        let with = |data: Vec<(u64, Vec<u8>)>| ServerMessage::Invalidation {
            tid: 1,
            oids: vec![1],
            complete: true,
            data,
        };
        let record = vec![0u8; INVALIDATION_DATA_OBJECT_BYTES_MAX];
        let fill = INVALIDATION_DATA_BYTES_MAX / INVALIDATION_DATA_OBJECT_BYTES_MAX;
        assert!(with(vec![(1, record.clone()); fill]).check().is_ok());
        assert!(with(vec![(1, record.clone()); fill + 1]).check().is_err());
        assert!(
            with(vec![(1, vec![0; INVALIDATION_DATA_OBJECT_BYTES_MAX + 1])])
                .check()
                .is_err()
        );
    }

    #[test]
    fn merge_identity_limit_holds_at_its_boundary() {
        let store = |len: usize| ClientMessage::Store {
            txn: 1,
            oid: 1,
            base_tid: 1,
            data: Vec::new(),
            merge: Some("m".repeat(len)),
        };
        assert!(store(MERGE_IDENTITY_BYTES_MAX).check().is_ok());
        assert!(store(MERGE_IDENTITY_BYTES_MAX + 1).check().is_err());
    }

    #[test]
    fn invalidation_chunk_limit_holds_at_its_boundary() {
        let at = ServerMessage::Invalidation {
            tid: 1,
            oids: vec![0; INVALIDATION_CHUNK_OIDS_MAX],
            complete: true,
            data: Vec::new(),
        };
        assert!(at.check().is_ok());
        let over = ServerMessage::Invalidation {
            tid: 1,
            oids: vec![0; INVALIDATION_CHUNK_OIDS_MAX + 1],
            complete: true,
            data: Vec::new(),
        };
        assert!(over.check().is_err());
    }
}
