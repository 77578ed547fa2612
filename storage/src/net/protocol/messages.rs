//! The messages a client and a server exchange, and the limits every decoded one
//! is checked against (docs/protocol.md, "Client messages", "Server messages").
//!
//! Invariants:
//! - Every decoded message passes [`ClientMessage::check`] / [`ServerMessage::check`]
//!   (counts against named limits) before anything acts on it.
//! - Byte fields serialize as bytes (one copy), the same encoding postcard gives a
//!   sequence of `u8`: the bytes on the wire do not depend on the Rust type.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::MERGED_REPLY_BYTES_MAX;
use super::frame::FrameError;
use super::wire::{WireError, WireMeta, WirePackReport, WireTransaction};
use super::{
    HISTORY_REPLY_MAX, INVALIDATION_CHUNK_OIDS_MAX, INVALIDATION_DATA_BYTES_MAX,
    INVALIDATION_DATA_OBJECT_BYTES_MAX, MERGE_IDENTITY_BYTES_MAX, NEW_OIDS_MAX, NONCE_BYTES,
    TRANSACTIONS_PAGE_MAX,
};
use crate::pending::{RECORD_BYTES_MAX, TRANSACTION_OBJECTS_MAX};

/// What a client sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// The first message of every connection (variant 0): who the client is and
    /// what it has cached. The server answers with `Challenge` or `Refused`.
    Hello {
        /// Always [`MAGIC`](super::MAGIC) (`0x49444f5a`); anything else closes the
        /// connection.
        magic: u32,
        /// The client's [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION), or an older one
        /// the server named in a refusal; a server that does not speak it (from
        /// [`PROTOCOL_VERSION_MIN`](super::PROTOCOL_VERSION_MIN) up) answers `Refused`
        /// naming both.
        version: u32,
        /// The client will not commit; the server refuses its commits and packs.
        read_only: bool,
        /// The client has no cache and no snapshot yet: nothing to catch up.
        fresh: bool,
        /// The last tid the client has processed (its cache is current as of it).
        last_tid: u64,
    },
    /// The answer to `Challenge` (variant 1), the second message of a connection.
    Auth {
        /// HMAC-SHA-256 of the challenge nonce under the shared token, if the client has one.
        /// Computed as `HMAC-SHA-256(token, "zodiac auth v1\0" || nonce)`, 32 bytes;
        /// ignored by a server without a token.
        mac: Option<[u8; NONCE_BYTES]>,
    },
    /// A request that gets exactly one `Reply` (variant 2).
    Request {
        /// Chosen by the client, unique among its requests in flight; the `Reply`
        /// carries it back (replies may come in any order).
        id: u64,
        /// What is asked.
        request: Request,
    },
    /// Opens a transaction (variant 3; one-way, no reply). At most
    /// [`TRANSACTIONS_PER_CONNECTION_MAX`](super::TRANSACTIONS_PER_CONNECTION_MAX)
    /// may be open at once on a connection.
    Begin {
        /// The transaction's id on this connection, chosen by the client; beginning
        /// an id that is open closes the connection.
        txn: u64,
        /// Who commits and why.
        meta: WireMeta,
    },
    /// Writes a new revision of an object in an open transaction (variant 4; one-way,
    /// an error is reported by the next `Vote`, `Finish` or `Commit`).
    Store {
        /// The transaction, as named by its `Begin`.
        txn: u64,
        /// The object written.
        oid: u64,
        /// The tid of the revision the client read (0 for a new object); a newer
        /// committed revision makes the vote fail with a conflict.
        base_tid: u64,
        /// The new record, at most [`RECORD_BYTES_MAX`] bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The identity of the merge function for this object's conflicts, when the
        /// client's type has one: a server that registered it merges them at commit.
        /// At most [`MERGE_IDENTITY_BYTES_MAX`] bytes (version 4).
        merge: Option<String>,
    },
    /// Makes the vote fail unless `oid`'s newest revision is still `tid` (variant 5;
    /// one-way): a read the transaction depends on without writing it.
    CheckCurrent {
        /// The transaction, as named by its `Begin`.
        txn: u64,
        /// The object read.
        oid: u64,
        /// The tid of the revision read.
        tid: u64,
    },
    /// Ends a transaction without committing it (variant 6; one-way). Ignored when
    /// the transaction is not open.
    Abort {
        /// The transaction, as named by its `Begin`.
        txn: u64,
    },
}

/// A client request that gets exactly one `Reply` with the same id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// Allocates one oid, answered with `Oid`.
    NewOid,
    /// Reads the newest revision of `oid` at a snapshot, answered with `Revision`.
    Load {
        /// The object read.
        oid: u64,
        /// The snapshot tid; the server reads at the smaller of it and its last tid.
        snapshot: u64,
    },
    /// Reads exactly one revision, answered with `Data`.
    LoadRevision {
        /// The object read.
        oid: u64,
        /// The transaction that wrote the revision.
        tid: u64,
    },
    /// Lists an object's revisions newest first, answered with `History`.
    History {
        /// The object.
        oid: u64,
        /// Most revisions wanted; the server returns at most
        /// [`HISTORY_REPLY_MAX`] whatever it says.
        limit: u64,
    },
    /// One page of committed transactions with `from <= tid <= to`, oldest first,
    /// answered with `Transactions`.
    Transactions {
        /// Lowest tid of the range, inclusive.
        from: u64,
        /// Highest tid of the range, inclusive.
        to: u64,
    },
    /// Votes an open transaction (its conflict checks and limits), answered with
    /// `Voted`; after a failed vote the client sends `Abort`.
    Vote {
        /// The transaction, as named by its `Begin`.
        txn: u64,
    },
    /// Commits a voted transaction, answered with `Finished`; ends the transaction
    /// whatever the outcome.
    Finish {
        /// The transaction, as named by its `Begin`.
        txn: u64,
    },
    /// Answered at once with `Pong`: the client's check that the server still answers.
    Ping,
    /// Allocates `count` oids (1 to `NEW_OIDS_MAX`), answered with `Oids`.
    NewOids {
        /// Oids wanted, 1 to [`NEW_OIDS_MAX`]; anything else closes the connection.
        count: u32,
    },
    /// Vote and finish in one request (a transaction not voted yet), answered with
    /// `Finished`; a failed vote ends the transaction as a failed `Finish` does.
    Commit {
        /// The transaction, as named by its `Begin`.
        txn: u64,
    },
    /// Packs the served storage to `tid`, with garbage collection when `gc`,
    /// answered with `Packed` once the packed file is in place.
    Pack {
        /// Pack time: revisions no longer current at this tid are dropped;
        /// `u64::MAX` packs to now.
        tid: u64,
        /// Also remove objects unreachable from the root (the server needs a
        /// reference reader for it).
        gc: bool,
    },
    /// Writes a transaction copied from another storage with its own tid and
    /// metadata (`Storage::restore`, for `zodiac copy`), answered with `Restored`
    /// once durable (version 5). Refused by a read-only server or connection.
    Restore {
        /// The tid the transaction keeps; greater than the server's last tid.
        tid: u64,
        /// Its metadata, as the source has it.
        meta: WireMeta,
        /// `(oid, record)` of each object it wrote, at most
        /// [`TRANSACTION_OBJECTS_MAX`], each record at most [`RECORD_BYTES_MAX`].
        #[serde(with = "oid_records")]
        records: Vec<(u64, Vec<u8>)>,
    },
}

/// What a server sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The answer to `Hello` (variant 0): the client proves it knows the token
    /// with the next `Auth`.
    Challenge {
        /// [`NONCE_BYTES`] random bytes, new for each connection, that `Auth.mac`
        /// signs.
        nonce: [u8; NONCE_BYTES],
        /// The server has a token: an `Auth` without the right `mac` is refused.
        auth_required: bool,
    },
    /// The end of a successful handshake (variant 1); after it the client may send
    /// requests and transactions.
    Welcome {
        /// The newest tid whose invalidations this connection has been sent.
        last_tid: u64,
        /// The server is read-only: it refuses every commit and pack (a client that
        /// said `read_only` gets them refused too, whatever this says).
        read_only: bool,
        /// How the server judged the client's `Hello.last_tid`, hence what the client
        /// does with its cache.
        catch_up: CatchUp,
        /// The served storage's `Storage::identity` (0: unknown): a client reuses a
        /// persistent cache file only when it was saved under the same identity.
        identity: u64,
    },
    /// The server will not serve this connection (variant 2): another protocol
    /// version, a failed authentication, a message out of order during the handshake,
    /// or too many connections. The server closes the connection after it.
    Refused {
        /// Why, for the operator of the client.
        reason: String,
    },
    /// The answer to one `Request` (variant 3).
    Reply {
        /// The `id` of the request answered.
        id: u64,
        /// The response, or the error the storage reported.
        result: Result<Response, WireError>,
    },
    /// Objects changed by transaction `tid`; `complete` on its last chunk.
    Invalidation {
        /// The committed transaction; every chunk of one transaction carries it.
        tid: u64,
        /// The objects it wrote (this chunk's share), at most
        /// [`INVALIDATION_CHUNK_OIDS_MAX`] per frame.
        oids: Vec<u64>,
        /// This is the transaction's last chunk: the client may now apply it.
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

/// What a successful request is answered with (one variant per request kind).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    /// The oid a `NewOid` allocated.
    Oid(u64),
    /// The revision a `Load` found.
    Revision {
        /// The transaction that wrote it (at or before the snapshot asked for).
        tid: u64,
        /// The record.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The record a `LoadRevision` asked for.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A `History`: `(tid, size in bytes)` of each revision, newest first, at most
    /// [`HISTORY_REPLY_MAX`] entries.
    History(Vec<(u64, u64)>),
    /// One page of a `Transactions` request.
    Transactions {
        /// Transactions oldest first, at most [`TRANSACTIONS_PAGE_MAX`] (fewer once
        /// the page holds about 4 MiB).
        page: Vec<WireTransaction>,
        /// More transactions of the range follow: ask again from after the last tid
        /// of this page.
        more: bool,
    },
    /// The `Vote` succeeded: the transaction will commit when finished.
    Voted,
    /// The `Finish` or `Commit` made the transaction durable.
    Finished {
        /// The tid the transaction committed as.
        tid: u64,
        /// The stores the server replaced by a merge (only a `Commit` merges), with
        /// the merged data while the reply's merged data stays within
        /// [`MERGED_REPLY_BYTES_MAX`].
        merged: Vec<MergedStore>,
    },
    /// The answer to `Ping`.
    Pong,
    /// The oids a `NewOids` allocated: exactly `count`, increasing.
    Oids(Vec<u64>),
    /// What the `Pack` did, sent once the packed file is in place.
    Packed(WirePackReport),
    /// The `Restore` made the copied transaction durable and visible (version 5).
    Restored,
}

/// A store the server merged at commit: what committed for `oid` is `data`, not
/// what the client stored (`None`: the data did not fit the reply; load it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MergedStore {
    /// The object the server merged.
    pub oid: u64,
    /// The merged record that committed, or `None` when the reply's merged data
    /// would pass [`MERGED_REPLY_BYTES_MAX`].
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// What the first bytes of a client frame say it is ([`ClientMessage::peek`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePeek {
    /// A `Request` with this id.
    Request(u64),
    /// A `Store` into this transaction.
    Store(u64),
    /// Any other message, or bytes that are none.
    Other,
}

/// The variant index of `ClientMessage::Request` on the wire.
const REQUEST_VARIANT: u8 = 2;
/// The variant index of `ClientMessage::Store` on the wire.
const STORE_VARIANT: u8 = 4;
/// Smallest `Store` payload decoded in place (smaller ones are copied: cheaper).
const STORE_IN_PLACE_BYTES_MIN: usize = 4096;

/// A `Store`'s fields, its data borrowed from the payload.
#[derive(Deserialize)]
struct StoreRef<'a> {
    txn: u64,
    oid: u64,
    base_tid: u64,
    #[serde(borrow)]
    data: &'a [u8],
    merge: Option<String>,
}

impl ClientMessage {
    /// What a frame whose payload starts with `prefix` is, from its variant and
    /// the varint after it (what a server that cannot buffer a frame answers).
    pub fn peek(prefix: &[u8]) -> FramePeek {
        // Both varints, read as the decoder reads them.
        let Ok((variant, rest)) = postcard::take_from_bytes::<u32>(prefix) else {
            return FramePeek::Other;
        };
        let Ok((number, _)) = postcard::take_from_bytes::<u64>(rest) else {
            return FramePeek::Other;
        };
        match variant {
            v if v == u32::from(REQUEST_VARIANT) => FramePeek::Request(number),
            v if v == u32::from(STORE_VARIANT) => FramePeek::Store(number),
            _ => FramePeek::Other,
        }
    }

    /// Whether [`ClientMessage::decode_owned`] decodes `payload` without copying
    /// its bytes (a large `Store`); other payloads are copied into the message.
    pub fn decodes_in_place(payload: &[u8]) -> bool {
        payload.len() >= STORE_IN_PLACE_BYTES_MIN && payload[0] == STORE_VARIANT
    }

    /// Decodes a whole payload as [`decode`](super::decode) does, but a large
    /// `Store`'s data is moved to the payload's start and kept in its buffer
    /// instead of copied: the server never holds a stored revision twice.
    pub fn decode_owned(mut payload: Vec<u8>) -> Result<ClientMessage, FrameError> {
        if !Self::decodes_in_place(&payload) {
            return super::decode(&payload);
        }
        let (txn, oid, base_tid, merge, start, len) = {
            let store: StoreRef<'_> = super::decode(&payload[1..])?;
            let start = store.data.as_ptr() as usize - payload.as_ptr() as usize;
            (
                store.txn,
                store.oid,
                store.base_tid,
                store.merge,
                start,
                store.data.len(),
            )
        };
        payload.copy_within(start..start + len, 0);
        payload.truncate(len);
        Ok(ClientMessage::Store {
            txn,
            oid,
            base_tid,
            data: payload,
            merge,
        })
    }

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
            ClientMessage::Request {
                request: Request::Restore { records, .. },
                ..
            } => check_restored_records(records),
            _ => Ok(()),
        }
    }
}

/// A `Restore`'s records within the limits a transaction's stores have.
fn check_restored_records(records: &[(u64, Vec<u8>)]) -> Result<(), String> {
    if records.len() > TRANSACTION_OBJECTS_MAX {
        return Err(format!(
            "a restored transaction of {} records, over {TRANSACTION_OBJECTS_MAX}",
            records.len()
        ));
    }
    match records.iter().find(|(_, d)| d.len() > RECORD_BYTES_MAX) {
        Some((oid, d)) => Err(format!(
            "a restored record of object {oid} of {} bytes, over {RECORD_BYTES_MAX}",
            d.len()
        )),
        None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::protocol::{WireRevision, decode, encode};

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

    /// A large `Store` decoded in place is the message the copying decoder gives,
    /// and refuses trailing bytes the same.
    #[test]
    fn stores_decode_in_place_as_they_decode_by_copy() {
        for (len, merge) in [
            (10, None),
            (5000, None),
            (70_000, Some("counter".to_string())),
        ] {
            let message = ClientMessage::Store {
                txn: 300,
                oid: 7,
                base_tid: 1 << 40,
                data: (0..len).map(|i| (i % 251) as u8).collect(),
                merge,
            };
            let payload = crate::net::protocol::encode(&message)[4..].to_vec();
            let copied: ClientMessage = crate::net::protocol::decode(&payload).unwrap();
            assert_eq!(copied, message);
            assert_eq!(
                ClientMessage::decode_owned(payload.clone()).unwrap(),
                message
            );
            assert_eq!(ClientMessage::peek(&payload[..16]), FramePeek::Store(300));
            let mut longer = payload;
            longer.push(0);
            assert!(ClientMessage::decode_owned(longer).is_err());
        }
        let request = ClientMessage::Request {
            id: 1 << 33,
            request: Request::Ping,
        };
        let payload = crate::net::protocol::encode(&request)[4..].to_vec();
        assert_eq!(ClientMessage::peek(&payload), FramePeek::Request(1 << 33));
        let abort = crate::net::protocol::encode(&ClientMessage::Abort { txn: 1 });
        assert_eq!(ClientMessage::peek(&abort[4..]), FramePeek::Other);
        assert_eq!(ClientMessage::peek(&[]), FramePeek::Other);
    }
}
