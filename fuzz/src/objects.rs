//! The objects layer's record envelope (objects/src/record.rs,
//! docs/objects-format.md) and the payload decoder behind it (objects/src/codec.rs),
//! for the built-in types and an application type with a reference and fields added
//! at the end; and the merge of three records, as a server runs it on records
//! clients sent.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::btree::{BTree, Bucket, Node};
use zodiac_objects::{
    Counter, Database, Merges, PRef, Persistent, Root, decode_value, merge_identity, record,
};
use zodiac_storage::{MemoryStorage, Storage, Tid};

/// An application type: a reference, and fields added later with defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    owner: String,
    balance: i64,
    friend: Option<PRef<Account>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    kind: Kind,
}

/// A field added at the end of [`Account`]: an enum with data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// The default.
    #[default]
    Plain,
    /// Owned with these.
    Joint(Vec<u64>),
}

impl Persistent for Account {
    const TYPE_NAME: &'static str = "fuzz.Account";
}

/// The bytes as a record of each type (`flags` bit 0 clear), or as three records to
/// merge (bit 0 set). A record is decoded or refused with a message; what decodes
/// encodes back to itself; a merge gives a valid record or none.
pub fn object_record(flags: u8, body: &[u8]) {
    if flags & 1 != 0 {
        merge_three(body);
        return;
    }
    envelope(body);
    decode_as::<Root>(body);
    decode_as::<Counter>(body);
    decode_as::<Account>(body);
    decode_as::<BTree<u64, String>>(body);
    decode_as::<Node<u64, String>>(body);
    decode_as::<Bucket<u64, String>>(body);
    decode_as::<Bucket<String, Vec<u8>>>(body);
}

/// The envelope alone: its three readers agree, and an accepted envelope is the
/// bytes it was decoded from.
fn envelope(bytes: &[u8]) {
    let decoded = record::decode(bytes);
    let refs = record::referenced_oids(bytes);
    let name = record::type_name(bytes);
    match &decoded {
        Ok(env) => {
            assert_eq!(refs.as_ref().ok(), Some(&env.refs));
            assert_eq!(name.ok(), Some(env.type_name));
            assert!(env.refs.windows(2).all(|w| w[0] < w[1]));
            let again = record::encode(env.type_name, &env.refs, env.payload);
            assert_eq!(
                again, bytes,
                "an accepted envelope is re-encoded differently"
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(refs.is_err());
        }
    }
}

/// Decodes `bytes` as a `T`; a value that decodes survives a round trip.
fn decode_as<T: Persistent + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    match decode_value::<T>(bytes) {
        Ok(Some(value)) => {
            let env = record::decode(bytes).expect("decoded above");
            let payload = postcard::to_stdvec(&value).expect("a decoded value encodes");
            let again = record::encode(T::TYPE_NAME, &env.refs, &payload);
            assert_eq!(
                decode_value::<T>(&again).ok().flatten().as_ref(),
                Some(&value)
            );
        }
        Ok(None) => {}
        Err(e) => assert!(!e.is_empty()),
    }
}

/// Splits `body` into three records (two length bytes first) and merges them under
/// every registered merge identity.
fn merge_three(body: &[u8]) {
    let [a, b, rest @ ..] = body else { return };
    let (a, b) = (usize::from(*a).min(rest.len()), usize::from(*b));
    let (old, rest) = rest.split_at(a);
    let (committed, mine) = rest.split_at(b.min(rest.len()));
    let mut merges = Merges::new();
    merges.btree::<u64, String>().register::<Account>();
    for identity in [
        merge_identity::<Root>(),
        merge_identity::<Counter>(),
        merge_identity::<Bucket<u64, String>>(),
        merge_identity::<Account>(),
    ] {
        if let Some(merged) = merges.merge(identity, old, committed, mine) {
            record::decode(&merged).expect("a merged record is a valid envelope");
        }
    }
}

/// Seeds of `object_record`: every record of a small database of each type, and
/// three counters to merge.
pub fn object_seeds() -> Vec<Vec<u8>> {
    let storage = Arc::new(MemoryStorage::new());
    let db = Database::open(Arc::clone(&storage) as Arc<dyn Storage>).expect("open");
    db.transact(|tx| {
        let counter = tx.add(Counter::new(41))?;
        tx.set_root_entry("counter", counter)?;
        let ann = Account {
            owner: "ann".into(),
            balance: 5,
            friend: None,
            tags: vec!["t".into()],
            kind: Kind::Joint(vec![3]),
        };
        let a = tx.add(ann.clone())?;
        let b = tx.add(Account {
            owner: "bob".into(),
            friend: Some(a),
            ..ann
        })?;
        tx.set_root_entry("bob", b)?;
        let tree = BTree::<u64, String>::create(tx)?;
        for k in 0..100 {
            BTree::insert(tx, &tree, k, format!("value {k}"))?;
        }
        tx.set_root_entry("tree", tree)
    })
    .expect("commit");
    let mut records = Vec::new();
    let mut counter = None;
    for t in storage.transactions(Tid::ZERO, Tid::MAX).expect("walk") {
        for change in t.expect("a transaction").changes {
            let data = storage.load(change.oid, Tid::MAX).expect("load").data;
            if record::type_name(&data) == Ok(Counter::TYPE_NAME) {
                counter = Some(data.clone());
            }
            records.push([&[0][..], &data].concat());
        }
    }
    let c = counter.expect("a counter was stored");
    records.push([&[1, c.len() as u8, c.len() as u8][..], &c.repeat(3)].concat());
    records
}
