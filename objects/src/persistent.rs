//! The `Persistent` trait and the root object.
//!
//! Invariant: a type's `TYPE_NAME` is what its records carry; it must stay the same for
//! the life of the data (renaming the Rust type is fine, renaming `TYPE_NAME` is not),
//! and two different Rust types must never share one.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pref::PRef;

/// A type whose values can be stored as persistent objects.
///
/// Values are encoded with postcard inside a record envelope naming `TYPE_NAME`.
/// See the crate docs for the schema evolution rule.
pub trait Persistent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stable name records of this type carry, e.g. `"bank.Account"`
    /// (1 to 255 bytes of UTF-8).
    const TYPE_NAME: &'static str;

    /// Three-way merge for a write conflict: `old` is the state this transaction
    /// started from, `committed` the state another transaction committed since, and
    /// `mine` this transaction's state. Return the merged state, or `None` when the
    /// changes cannot be merged (the conflict is then reported). The default merges
    /// nothing.
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let _ = (old, committed, mine);
        None
    }

    /// Whether [`resolve_conflict`](Self::resolve_conflict) merges anything. A store
    /// of a merging type names its merge identity ([`crate::merge_identity`]), so a
    /// storage server that registered the type ([`crate::Merges`]) merges its
    /// conflicts at commit, under its commit lock, instead of sending them back.
    /// Set it with `resolve_conflict` (`false` by default).
    const MERGES: bool = false;
}

/// Implements [`Persistent`] with a type name, e.g.
/// `zodiac_objects::persistent!(Account = "bank.Account");`.
#[macro_export]
macro_rules! persistent {
    ($($ty:ty = $name:literal),+ $(,)?) => {
        $(impl $crate::Persistent for $ty {
            const TYPE_NAME: &'static str = $name;
        })+
    };
}

/// Fails to compile a use of a type whose name does not fit the envelope.
pub(crate) struct TypeNameCheck<T>(T);
impl<T: Persistent> TypeNameCheck<T> {
    pub(crate) const OK: () = assert!(
        !T::TYPE_NAME.is_empty() && T::TYPE_NAME.len() <= crate::record::TYPE_NAME_BYTES_MAX,
        "TYPE_NAME must be 1 to 255 bytes"
    );
}

/// The root object (oid 0): named entries pointing at other objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    entries: BTreeMap<String, PRef<()>>,
}

impl Persistent for Root {
    const TYPE_NAME: &'static str = "zodiac.Root";
    const MERGES: bool = true;

    /// Concurrent changes to different entries merge; an entry changed differently
    /// by both sides is a conflict.
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        let mut names: Vec<&String> = old
            .entries
            .keys()
            .chain(committed.entries.keys())
            .chain(mine.entries.keys())
            .collect();
        names.sort();
        names.dedup();
        let mut entries = BTreeMap::new();
        for name in names {
            let (o, c, m) = (
                old.entries.get(name),
                committed.entries.get(name),
                mine.entries.get(name),
            );
            let merged = if c == o {
                m
            } else if m == o || m == c {
                c
            } else {
                return None;
            };
            if let Some(target) = merged {
                entries.insert(name.clone(), *target);
            }
        }
        Some(Root { entries })
    }
}

impl Root {
    /// The entry `name` as a reference to a `T` (the type is checked when loaded).
    pub fn get<T>(&self, name: &str) -> Option<PRef<T>> {
        self.entries.get(name).map(|r| r.cast())
    }

    /// Sets entry `name`; returns the reference it replaced.
    pub fn insert<T>(&mut self, name: impl Into<String>, target: PRef<T>) -> Option<PRef<()>> {
        self.entries.insert(name.into(), target.cast())
    }

    /// Removes entry `name`; returns the reference it held. The object it named stays
    /// stored until pack/GC finds it unreachable from the root.
    pub fn remove(&mut self, name: &str) -> Option<PRef<()>> {
        self.entries.remove(name)
    }

    /// Entry names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodiac_storage::Oid;

    fn root(entries: &[(&str, u64)]) -> Root {
        let mut r = Root::default();
        for (name, oid) in entries {
            r.insert(*name, PRef::<()>::from_oid(Oid(*oid)));
        }
        r
    }

    #[test]
    fn root_merges_changes_to_different_entries() {
        let old = root(&[("a", 1), ("b", 2)]);
        let committed = root(&[("a", 1), ("b", 2), ("c", 3)]);
        let mine = root(&[("b", 5)]);
        assert_eq!(
            Root::resolve_conflict(&old, &committed, &mine),
            Some(root(&[("b", 5), ("c", 3)]))
        );
        let theirs = root(&[("a", 7), ("b", 2)]);
        let mine = root(&[("a", 8), ("b", 2)]);
        assert_eq!(Root::resolve_conflict(&old, &theirs, &mine), None);
    }
}
