//! Merge functions a storage server runs: a registry of persistent types by merge
//! identity, so a server merges conflicts on hot objects (counters, B-tree buckets)
//! under its commit lock instead of sending every conflict back to a client, which
//! merges and retries a round trip later (and over a network often loses the race
//! again).
//!
//! Invariants:
//! - A merge identity names one Rust type with its generic arguments
//!   ([`merge_identity`]): two types never share one, whatever their `TYPE_NAME`
//!   (every `BTree` bucket type shares one `TYPE_NAME`).
//! - A registered merge is the type's own [`Persistent::resolve_conflict`] on the
//!   three decoded records, so a server merges exactly as the client would have.
//! - Records that do not decode as the type (another type, a newer version of it with
//!   more fields: see the crate's schema evolution rule) do not merge: the conflict
//!   goes back to the client, whose own code merges it.

use std::collections::HashMap;
use std::sync::Arc;

use zodiac_storage::MergeFn;

use crate::Counter;
use crate::codec;
use crate::persistent::{Persistent, Root};

/// The identity a store of `T` names for its merge function: the Rust type name
/// with its generic arguments, e.g.
/// `zodiac_objects::btree::Bucket<u64, alloc::string::String>`. A server built from
/// other sources than its clients may name a type otherwise; it then merges none
/// of its conflicts, and the clients merge them.
pub fn merge_identity<T: Persistent>() -> &'static str {
    std::any::type_name::<T>()
}

type RecordMerge = fn(&[u8], &[u8], &[u8]) -> Option<Vec<u8>>;

/// The merge functions a server runs, by merge identity. [`Merges::new`] has the
/// built-in merging types ([`Root`], [`Counter`]); register the others, such as
/// each B-tree's bucket type with [`Merges::btree`], and hand
/// [`Merges::into_merge_fn`] to `ServerOptions::merge`.
#[derive(Clone)]
pub struct Merges {
    by_identity: HashMap<&'static str, RecordMerge>,
}

impl Default for Merges {
    fn default() -> Self {
        Merges::new()
    }
}

impl std::fmt::Debug for Merges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.by_identity.keys().collect();
        names.sort();
        f.debug_set().entries(names).finish()
    }
}

impl Merges {
    /// A registry of the built-in merging types: [`Root`] and [`Counter`].
    pub fn new() -> Merges {
        let mut merges = Merges {
            by_identity: HashMap::new(),
        };
        merges.register::<Root>();
        merges.register::<Counter>();
        merges
    }

    /// Registers `T`'s merge (a type whose [`Persistent::MERGES`] is false merges
    /// nothing, and its stores name no identity: registering it does nothing).
    pub fn register<T: Persistent>(&mut self) -> &mut Merges {
        if T::MERGES {
            self.by_identity
                .insert(merge_identity::<T>(), merge_records::<T>);
        }
        self
    }

    /// Registers the bucket type of [`BTree<K, V>`](crate::BTree): concurrent changes to different
    /// keys of one bucket merge.
    pub fn btree<K: crate::btree::BTreeKey, V: crate::btree::BTreeValue>(&mut self) -> &mut Merges {
        self.register::<crate::btree::Bucket<K, V>>()
    }

    /// Whether `identity` is registered.
    pub fn contains(&self, identity: &str) -> bool {
        self.by_identity.contains_key(identity)
    }

    /// Merges the records `old`, `committed` and `mine` of the type `identity`
    /// names: the merged record, or `None` (not registered, not decodable, or the
    /// changes do not merge).
    pub fn merge(
        &self,
        identity: &str,
        old: &[u8],
        committed: &[u8],
        mine: &[u8],
    ) -> Option<Vec<u8>> {
        let merge = self.by_identity.get(identity)?;
        merge(old, committed, mine)
    }

    /// The registry as a server's merge function (`ServerOptions::merge`).
    pub fn into_merge_fn(self) -> MergeFn {
        Arc::new(
            move |identity: &str, old: &[u8], committed: &[u8], mine: &[u8]| {
                self.merge(identity, old, committed, mine)
            },
        )
    }
}

/// `T::resolve_conflict` on three records of `T`.
fn merge_records<T: Persistent>(old: &[u8], committed: &[u8], mine: &[u8]) -> Option<Vec<u8>> {
    let old = codec::decode_record::<T>(old)?;
    let committed = codec::decode_record::<T>(committed)?;
    let mine = codec::decode_record::<T>(mine)?;
    let merged = T::resolve_conflict(&old, &committed, &mine)?;
    codec::encode(&merged).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<T: Persistent>(value: &T) -> Vec<u8> {
        codec::encode(value).unwrap()
    }

    #[test]
    fn a_registered_counter_merges_its_records() {
        let merges = Merges::new();
        let identity = merge_identity::<Counter>();
        let merged = merges
            .merge(
                identity,
                &record(&Counter::new(10)),
                &record(&Counter::new(13)),
                &record(&Counter::new(11)),
            )
            .unwrap();
        assert_eq!(
            codec::decode_record::<Counter>(&merged),
            Some(Counter::new(14))
        );
    }

    #[test]
    fn unknown_identities_and_foreign_records_do_not_merge() {
        let merges = Merges::new();
        let c = record(&Counter::new(1));
        assert_eq!(merges.merge("no.such.Type", &c, &c, &c), None);
        // A record of another type under the counter's identity.
        let root = record(&Root::default());
        assert_eq!(
            merges.merge(merge_identity::<Counter>(), &root, &c, &c),
            None
        );
        assert_eq!(merges.merge(merge_identity::<Counter>(), &[], &c, &c), None);
    }

    #[test]
    fn bucket_types_get_distinct_identities() {
        let mut merges = Merges::new();
        merges.btree::<u64, u64>();
        assert!(merges.contains(merge_identity::<crate::btree::Bucket<u64, u64>>()));
        assert!(!merges.contains(merge_identity::<crate::btree::Bucket<u64, String>>()));
    }
}
