//! The wire protocol's frame reader and message decoders
//! (storage/src/net/protocol/), and one frame of every message to seed them with.

use zodiac_storage::protocol::{
    self, CatchUp, ClientMessage, FRAME_BYTES_MAX, HANDSHAKE_FRAME_BYTES_MAX, MergedStore,
    NONCE_BYTES, Request, Response, ServerMessage, WireError, WireMeta, WirePackReport,
    WireRevision, WireTransaction,
};
use zodiac_storage::{Error, PackReport, TransactionInfo, TransactionMeta};

use super::file::with_flags;

/// Most frames read from one input.
const FRAMES_MAX: usize = 32;

/// Frames read one after another from the bytes under the normal limit, or the
/// handshake's (`flags` bit 1), or the bytes as one payload (bit 0). Each payload is
/// decoded as a client and as a server message, checked against the named limits,
/// and its wire values converted to the storage's own. What decodes encodes back to
/// itself; a frame is read whole and nothing past it.
pub fn protocol_messages(flags: u8, body: &[u8]) {
    if flags & 1 != 0 {
        payload(body);
        return;
    }
    let max = if flags & 2 != 0 {
        HANDSHAKE_FRAME_BYTES_MAX
    } else {
        FRAME_BYTES_MAX
    };
    let mut reader = body;
    for _ in 0..FRAMES_MAX {
        let before = reader.len();
        match protocol::read_frame(&mut reader, max) {
            Ok(p) => {
                assert!(p.len() <= max);
                assert_eq!(before - reader.len(), p.len() + 4, "read past its frame");
                payload(&p);
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
}

fn payload(p: &[u8]) {
    // The server's decoder (a large store in place) agrees with the copying one,
    // and what the prefix says the frame is matches what it decodes to.
    let copied = protocol::decode::<ClientMessage>(p).ok();
    assert_eq!(ClientMessage::decode_owned(p.to_vec()).ok(), copied);
    match (
        &copied,
        ClientMessage::peek(&p[..p.len().min(protocol::FRAME_PREFIX_BYTES)]),
    ) {
        (Some(ClientMessage::Store { txn, .. }), peek) => {
            assert_eq!(peek, protocol::FramePeek::Store(*txn))
        }
        (Some(ClientMessage::Request { id, .. }), peek) => {
            assert_eq!(peek, protocol::FramePeek::Request(*id))
        }
        _ => {}
    }
    match protocol::decode::<ClientMessage>(p) {
        Ok(m) => {
            let _ = m.check();
            let again = protocol::encode(&m);
            assert_eq!(
                protocol::decode::<ClientMessage>(&again[4..]).ok(),
                Some(m.clone())
            );
            if let ClientMessage::Begin { meta, .. } = m {
                let _ = TransactionMeta::from(meta);
            }
        }
        Err(e) => assert!(e.to_string().starts_with("undecodable frame")),
    }
    if let Ok(m) = protocol::decode::<ServerMessage>(p) {
        let _ = m.check();
        let again = protocol::encode(&m);
        assert_eq!(
            protocol::decode::<ServerMessage>(&again[4..]).ok(),
            Some(m.clone())
        );
        if let ServerMessage::Reply { result, .. } = m {
            convert(result);
        }
    }
}

/// What a client makes of a reply's values.
fn convert(result: Result<Response, WireError>) {
    match result {
        Err(e) => assert!(!Error::from(e).to_string().is_empty()),
        Ok(Response::Transactions { page, .. }) => {
            for t in page {
                let _ = TransactionInfo::from(t);
            }
        }
        Ok(Response::Packed(report)) => {
            let _ = PackReport::from(report);
        }
        Ok(_) => {}
    }
}

/// Seeds of `protocol_messages`: every client frame in a row, every server frame in
/// a row, and each payload alone.
pub fn protocol_seeds() -> Vec<Vec<u8>> {
    let (client, server) = (client_frames(), server_frames());
    let mut seeds = vec![
        with_flags(0, &client.concat()),
        with_flags(0, &server.concat()),
    ];
    seeds.extend(client.iter().chain(&server).map(|f| with_flags(1, &f[4..])));
    seeds
}

fn meta() -> WireMeta {
    WireMeta {
        user: "u".into(),
        description: "d".into(),
        extension: vec![("k".into(), vec![1, 2])],
    }
}

/// The handshake (the first two) and one of every other client message, as frames.
pub fn client_frames() -> Vec<Vec<u8>> {
    let request = |id, request| protocol::encode(&ClientMessage::Request { id, request });
    let store = |txn, oid, merge: Option<&str>| ClientMessage::Store {
        txn,
        oid,
        base_tid: 0,
        data: b"hello".to_vec(),
        merge: merge.map(String::from),
    };
    vec![
        protocol::encode(&ClientMessage::Hello {
            magic: protocol::MAGIC,
            version: protocol::PROTOCOL_VERSION,
            read_only: false,
            fresh: true,
            last_tid: 0,
        }),
        protocol::encode(&ClientMessage::Auth { mac: None }),
        request(1, Request::NewOids { count: 3 }),
        protocol::encode(&ClientMessage::Begin {
            txn: 1,
            meta: meta(),
        }),
        protocol::encode(&store(1, 1, None)),
        protocol::encode(&ClientMessage::CheckCurrent {
            txn: 1,
            oid: 2,
            tid: 0,
        }),
        request(2, Request::Commit { txn: 1 }),
        protocol::encode(&ClientMessage::Begin {
            txn: 2,
            meta: WireMeta::default(),
        }),
        protocol::encode(&store(2, 2, Some("m"))),
        request(3, Request::Vote { txn: 2 }),
        request(4, Request::Finish { txn: 2 }),
        protocol::encode(&ClientMessage::Abort { txn: 3 }),
        request(
            5,
            Request::Load {
                oid: 1,
                snapshot: u64::MAX,
            },
        ),
        request(6, Request::LoadRevision { oid: 1, tid: 1 }),
        request(7, Request::History { oid: 1, limit: 10 }),
        request(
            8,
            Request::Transactions {
                from: 0,
                to: u64::MAX,
            },
        ),
        request(9, Request::Ping),
        request(10, Request::NewOid),
        request(
            11,
            Request::Pack {
                tid: u64::MAX,
                gc: false,
            },
        ),
    ]
}

/// One of every server message, as frames.
pub fn server_frames() -> Vec<Vec<u8>> {
    let reply = |id, result| protocol::encode(&ServerMessage::Reply { id, result });
    let finished = Response::Finished {
        tid: 9,
        merged: vec![MergedStore {
            oid: 1,
            data: Some(b"m".to_vec()),
        }],
    };
    let conflict = WireError::ConflictWithRevisions {
        oid: 1,
        base_tid: 2,
        current_tid: 3,
        revisions: vec![WireRevision {
            oid: 1,
            tid: 3,
            data: b"n".to_vec(),
        }],
    };
    let limit = WireError::LimitExceeded {
        what: "transaction record".into(),
        len: 9,
        max: 8,
    };
    vec![
        protocol::encode(&ServerMessage::Challenge {
            nonce: [3; NONCE_BYTES],
            auth_required: true,
        }),
        protocol::encode(&welcome(4)),
        protocol::encode(&ServerMessage::Refused {
            reason: "no".into(),
        }),
        protocol::encode(&invalidation(4)),
        reply(1, Ok(Response::Oid(7))),
        reply(
            2,
            Ok(Response::Revision {
                tid: 4,
                data: b"r".to_vec(),
            }),
        ),
        reply(3, Ok(Response::Data(b"d".to_vec()))),
        reply(4, Ok(Response::History(vec![(4, 10), (2, 8)]))),
        reply(
            5,
            Ok(Response::Transactions {
                page: vec![transaction()],
                more: true,
            }),
        ),
        reply(6, Ok(Response::Voted)),
        reply(7, Ok(finished)),
        reply(8, Ok(Response::Pong)),
        reply(9, Ok(Response::Oids(vec![1, 2, 3]))),
        reply(10, Ok(Response::Packed(WirePackReport::default()))),
        reply(
            11,
            Err(WireError::Conflict {
                oid: 1,
                base_tid: 2,
                current_tid: 3,
            }),
        ),
        reply(12, Err(conflict)),
        reply(13, Err(limit)),
        reply(
            14,
            Err(WireError::Server {
                message: "boom".into(),
            }),
        ),
    ]
}

/// A `Welcome` after a catch-up to `last_tid`.
pub fn welcome(last_tid: u64) -> ServerMessage {
    ServerMessage::Welcome {
        last_tid,
        read_only: false,
        catch_up: CatchUp::Behind,
        identity: 1,
    }
}

/// The invalidation of transaction `tid`, with new data for one object.
pub fn invalidation(tid: u64) -> ServerMessage {
    ServerMessage::Invalidation {
        tid,
        oids: vec![1, 2],
        complete: true,
        data: vec![(1, b"new".to_vec())],
    }
}

/// A transaction as a `Transactions` page carries it.
pub fn transaction() -> WireTransaction {
    WireTransaction {
        tid: 4,
        meta: meta(),
        changes: vec![(1, 5)],
    }
}
