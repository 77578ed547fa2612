//! Writes the seed inputs of every fuzz target into `corpus/TARGET/` (or the
//! directory given as the first argument): valid encodings of each decoder's input,
//! with the flags byte each target reads first.
//!
//! `cargo +nightly run --example seeds` (from `fuzz/`), then `cargo +nightly fuzz run TARGET`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::btree::BTree;
use zodiac_objects::{Counter, Database, PRef, Persistent};
use zodiac_storage::protocol::{
    self, CatchUp, ClientMessage, MergedStore, NONCE_BYTES, Request, Response, ServerMessage,
    WireError, WireMeta, WirePackReport, WireRevision, WireTransaction,
};
use zodiac_storage::{MemoryStorage, Storage, Tid};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    friend: Option<PRef<Account>>,
}

impl Persistent for Account {
    const TYPE_NAME: &'static str = "fuzz.Account";
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("corpus"), PathBuf::from);
    let files = data_files();
    let data_seeds: Vec<Vec<u8>> = files
        .iter()
        .flat_map(|f| [with_flags(0, f), with_flags(1, f)])
        .collect();
    write(&base, "data_record", &data_seeds)?;
    write(&base, "recovery_scan", &data_seeds)?;
    let index = [
        with_flags(
            0,
            &zodiac_storage::fuzzing::saved_index_of(&zodiac_fuzz::sample_data_file(4))?,
        ),
        with_flags(
            2,
            &zodiac_storage::fuzzing::saved_index_of(&zodiac_fuzz::sample_data_file(1))?,
        ),
    ];
    write(&base, "saved_index", &index)?;
    write(&base, "object_record", &object_records()?)?;
    let (client, server) = (client_frames(), server_frames());
    let mut protocol = vec![
        with_flags(0, &client.concat()),
        with_flags(0, &server.concat()),
    ];
    protocol.extend(client.iter().chain(&server).map(|f| with_flags(1, &f[4..])));
    write(&base, "protocol_messages", &protocol)?;
    write(
        &base,
        "server_requests",
        &[with_flags(0, &client[2..].concat())],
    )?;
    write(&base, "client_replies", &client_replies())?;
    Ok(())
}

fn with_flags(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(body);
    v
}

fn write(base: &Path, target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = base.join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

/// A valid file, one with zeros after it, one torn, one damaged in the middle.
fn data_files() -> Vec<Vec<u8>> {
    let valid = zodiac_fuzz::sample_data_file(3);
    let mut zeros = valid.clone();
    zeros.resize(valid.len() + 256, 0);
    let torn = valid[..valid.len() - 30].to_vec();
    let mut damaged = valid.clone();
    damaged[150] ^= 0x10;
    vec![valid, zeros, torn, damaged]
}

/// Every record a small database of each built-in type and an application type holds,
/// and three counters to merge.
fn object_records() -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    let storage = Arc::new(MemoryStorage::new());
    let db = Database::open(Arc::clone(&storage) as Arc<dyn Storage>)?;
    db.transact(|tx| {
        let counter = tx.add(Counter::new(41))?;
        tx.set_root_entry("counter", counter)?;
        let a = tx.add(Account {
            owner: "ann".into(),
            balance: 5,
            friend: None,
        })?;
        let b = tx.add(Account {
            owner: "bob".into(),
            balance: -3,
            friend: Some(a),
        })?;
        tx.set_root_entry("bob", b)?;
        let tree = BTree::<u64, String>::create(tx)?;
        for k in 0..100 {
            BTree::insert(tx, &tree, k, format!("value {k}"))?;
        }
        tx.set_root_entry("tree", tree)
    })?;
    let mut records = Vec::new();
    for t in storage.transactions(Tid::ZERO, Tid::MAX)? {
        for change in t?.changes {
            records.push(with_flags(0, &storage.load(change.oid, Tid::MAX)?.data));
        }
    }
    let counter = records
        .iter()
        .find(|r| r.windows(7).any(|w| w == b"Counter"))
        .cloned();
    if let Some(c) = counter {
        let c = &c[1..];
        let mut merge = vec![1, c.len() as u8, c.len() as u8];
        merge.extend_from_slice(&c.repeat(3));
        records.push(merge);
    }
    Ok(records)
}

fn meta() -> WireMeta {
    WireMeta {
        user: "u".into(),
        description: "d".into(),
        extension: vec![("k".into(), vec![1, 2])],
    }
}

/// The handshake and one of every other client message, as frames.
fn client_frames() -> Vec<Vec<u8>> {
    let request = |id, request| protocol::encode(&ClientMessage::Request { id, request });
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
        protocol::encode(&ClientMessage::Store {
            txn: 1,
            oid: 1,
            base_tid: 0,
            data: b"hello".to_vec(),
            merge: None,
        }),
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
        protocol::encode(&ClientMessage::Store {
            txn: 2,
            oid: 2,
            base_tid: 0,
            data: b"x".to_vec(),
            merge: Some("m".into()),
        }),
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
fn server_frames() -> Vec<Vec<u8>> {
    let reply = |id, result| protocol::encode(&ServerMessage::Reply { id, result });
    vec![
        protocol::encode(&ServerMessage::Challenge {
            nonce: [3; NONCE_BYTES],
            auth_required: true,
        }),
        protocol::encode(&welcome()),
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
        reply(
            7,
            Ok(Response::Finished {
                tid: 9,
                merged: vec![MergedStore {
                    oid: 1,
                    data: Some(b"m".to_vec()),
                }],
            }),
        ),
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
        reply(
            12,
            Err(WireError::ConflictWithRevisions {
                oid: 1,
                base_tid: 2,
                current_tid: 3,
                revisions: vec![WireRevision {
                    oid: 1,
                    tid: 3,
                    data: b"n".to_vec(),
                }],
            }),
        ),
        reply(
            13,
            Err(WireError::LimitExceeded {
                what: "transaction record".into(),
                len: 9,
                max: 8,
            }),
        ),
        reply(
            14,
            Err(WireError::Server {
                message: "boom".into(),
            }),
        ),
    ]
}

fn welcome() -> ServerMessage {
    ServerMessage::Welcome {
        last_tid: 4,
        read_only: false,
        catch_up: CatchUp::Behind,
        identity: 1,
    }
}

fn invalidation(tid: u64) -> ServerMessage {
    ServerMessage::Invalidation {
        tid,
        oids: vec![1, 2],
        complete: true,
        data: vec![(1, b"new".to_vec())],
    }
}

fn transaction() -> WireTransaction {
    WireTransaction {
        tid: 4,
        meta: meta(),
        changes: vec![(1, 5)],
    }
}

/// Per client operation (flags >> 1), the reply it waits for, with an invalidation
/// before it; and a catch-up (flags bit 0) ending in a `Welcome`.
fn client_replies() -> Vec<Vec<u8>> {
    let reply = |id, response| {
        protocol::encode(&ServerMessage::Reply {
            id,
            result: Ok(response),
        })
    };
    let answers = [
        reply(
            1,
            Response::Revision {
                tid: 4,
                data: b"r".to_vec(),
            },
        ),
        reply(1, Response::Data(b"d".to_vec())),
        reply(1, Response::History(vec![(4, 10)])),
        reply(
            1,
            Response::Transactions {
                page: vec![transaction()],
                more: false,
            },
        ),
        reply(1, Response::Oids(vec![1, 2, 3])),
        reply(
            2,
            Response::Finished {
                tid: 9,
                merged: vec![],
            },
        ),
        reply(1, Response::Packed(WirePackReport::default())),
        reply(
            1,
            Response::Revision {
                tid: 3,
                data: b"r".to_vec(),
            },
        ),
    ];
    let mut seeds: Vec<Vec<u8>> = answers
        .iter()
        .enumerate()
        .map(|(op, answer)| {
            let mut body = protocol::encode(&invalidation(2));
            body.extend_from_slice(answer);
            with_flags((op as u8) << 1, &body)
        })
        .collect();
    let mut catch_up = protocol::encode(&invalidation(3));
    catch_up.extend(protocol::encode(&welcome()));
    seeds.push(with_flags(1, &catch_up));
    seeds
}
