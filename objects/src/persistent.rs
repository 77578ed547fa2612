//! The `Persistent` trait, the root object and the built-in conflict-free counter.
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

    pub fn remove(&mut self, name: &str) -> Option<PRef<()>> {
        self.entries.remove(name)
    }

    /// Entry names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
