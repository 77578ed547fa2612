//! The objects layer's record envelope (objects/src/record.rs, docs/objects-format.md)
//! and the payload decoder behind it (objects/src/codec.rs), for the built-in types
//! and an application type with a reference and fields added at the end; then the
//! merge of three records, as a server runs it on records clients sent. Any bytes:
//! `Ok` or a clear `Err`, never a panic; what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use zodiac_objects::btree::{BTree, Bucket, Node};
use zodiac_objects::{
    Counter, Merges, PRef, Persistent, Root, decode_value, merge_identity, record,
};

/// An application type: a reference, and fields added later with defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    friend: Option<PRef<Account>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    kind: Kind,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
enum Kind {
    #[default]
    Plain,
    Joint(Vec<u64>),
}

impl Persistent for Account {
    const TYPE_NAME: &'static str = "fuzz.Account";
}

fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
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
});

/// The envelope alone: its three readers agree with each other.
fn envelope(record: &[u8]) {
    let decoded = record::decode(record);
    let refs = record::referenced_oids(record);
    let name = record::type_name(record);
    match &decoded {
        Ok(env) => {
            assert_eq!(refs.as_ref().ok(), Some(&env.refs));
            assert_eq!(name.ok(), Some(env.type_name));
            assert!(env.refs.windows(2).all(|w| w[0] < w[1]));
            let again = record::encode(env.type_name, &env.refs, env.payload);
            assert_eq!(
                again, record,
                "an accepted envelope is re-encoded differently"
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(
                refs.is_err()
                    || name.is_err()
                    || matches!(e, record::RecordError::RefsNotAscending { .. })
            );
        }
    }
}

/// Decodes `record` as a `T`; a value that decodes survives a round trip.
fn decode_as<T: Persistent + PartialEq + std::fmt::Debug>(record: &[u8]) {
    match decode_value::<T>(record) {
        Ok(Some(value)) => {
            let env = record::decode(record).expect("decoded above");
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
