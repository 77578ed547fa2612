//! Typed references between persistent objects.
//!
//! A [`PRef<T>`] is an oid with a type attached at compile time. It serializes as the
//! bare oid (a postcard varint), and loading is lazy: nothing is read until a
//! transaction asks for the object. The type is checked on load against the type name
//! the record was written with.
//!
//! Invariants:
//! - While an object is being encoded, every `PRef` it serializes is reported to the
//!   encoder (a thread-local collector), so the record envelope lists exactly the
//!   references the payload holds.
//! - A `PRef` serializes as a newtype struct named [`PREF_SERDE_NAME`] around the
//!   oid. postcard writes a newtype struct as its inner value, so the bytes are the
//!   bare oid (a varint) as before; the name lets a checking serializer tell a
//!   reference from any other number (the job layer's "no oid outside a reference"
//!   check relies on it).

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zodiac_storage::Oid;

/// A reference to a persistent object of type `T`, stored as its oid.
pub struct PRef<T> {
    oid: Oid,
    _type: PhantomData<fn() -> T>,
}

impl<T> PRef<T> {
    /// A reference to `oid`, claimed to hold a `T` (checked when it is loaded).
    pub fn from_oid(oid: Oid) -> Self {
        PRef {
            oid,
            _type: PhantomData,
        }
    }

    /// The oid of the object referred to.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The same oid seen as another type (checked when it is loaded).
    pub fn cast<U>(self) -> PRef<U> {
        PRef::from_oid(self.oid)
    }
}

impl<T> Clone for PRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PRef<T> {}
impl<T> PartialEq for PRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.oid == other.oid
    }
}
impl<T> Eq for PRef<T> {}
impl<T> Hash for PRef<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.oid.hash(state);
    }
}
impl<T> PartialOrd for PRef<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for PRef<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.oid.cmp(&other.oid)
    }
}
impl<T> fmt::Debug for PRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PRef({})", self.oid)
    }
}

/// The serde newtype name a [`PRef`] serializes under (see the module docs).
pub const PREF_SERDE_NAME: &str = "zodiac.PRef";

thread_local! {
    static COLLECTOR: RefCell<Option<Vec<Oid>>> = const { RefCell::new(None) };
}

/// Runs `f` (an encoding) and returns its result with the oids of every `PRef`
/// serialized meanwhile on this thread, ascending and without duplicates.
pub(crate) fn collecting_refs<R>(f: impl FnOnce() -> R) -> (R, Vec<Oid>) {
    /// Puts the outer collector back even if `f` panics.
    struct Restore(Option<Option<Vec<Oid>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                COLLECTOR.with(|c| *c.borrow_mut() = outer);
            }
        }
    }
    let outer = COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new()));
    let restore = Restore(Some(outer));
    let result = f();
    let mut refs = COLLECTOR
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    drop(restore);
    refs.sort_unstable();
    refs.dedup();
    (result, refs)
}

impl<T> Serialize for PRef<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        COLLECTOR.with(|c| {
            if let Some(refs) = c.borrow_mut().as_mut() {
                refs.push(self.oid);
            }
        });
        serializer.serialize_newtype_struct(PREF_SERDE_NAME, &self.oid.0)
    }
}

impl<'de, T> Deserialize<'de> for PRef<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OidVisitor;
        impl<'de> serde::de::Visitor<'de> for OidVisitor {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an oid")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
                u64::deserialize(d)
            }
        }
        deserializer
            .deserialize_newtype_struct(PREF_SERDE_NAME, OidVisitor)
            .map(|oid| PRef::from_oid(Oid(oid)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_nests_and_survives_a_panic() {
        let r = |n| PRef::<()>::from_oid(Oid(n));
        let ((), outer) = collecting_refs(|| {
            postcard::to_stdvec(&r(3)).unwrap();
            let ((), inner) = collecting_refs(|| {
                postcard::to_stdvec(&vec![r(2), r(1), r(2)]).unwrap();
            });
            assert_eq!(inner, [Oid(1), Oid(2)]);
            postcard::to_stdvec(&r(3)).unwrap();
        });
        assert_eq!(outer, [Oid(3)]);
        let panicked = std::panic::catch_unwind(|| {
            collecting_refs(|| {
                postcard::to_stdvec(&r(9)).unwrap();
                panic!("encoding failed");
            })
        });
        assert!(panicked.is_err());
        // No collector is left behind: serializing outside an encoding collects nothing.
        COLLECTOR.with(|c| assert!(c.borrow().is_none()));
    }

    #[test]
    fn a_pref_is_stored_as_the_bare_oid_varint() {
        // The newtype name must not change the bytes of the records already stored.
        for oid in [0u64, 1, 127, 128, 0x21, u64::MAX] {
            let r = PRef::<()>::from_oid(Oid(oid));
            let bytes = postcard::to_stdvec(&r).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&oid).unwrap());
            assert_eq!(postcard::from_bytes::<PRef<()>>(&bytes).unwrap(), r);
        }
    }
}
