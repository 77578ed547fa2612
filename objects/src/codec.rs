//! Object encoding: postcard inside the record envelope, and the decoder that makes
//! adding fields at the end of a type possible.
//!
//! postcard is not self-describing: a struct is its fields in declaration order with
//! no names and no count, so plain postcard fails on a record written before a field
//! was added (it runs out of input). The decoder here reads the *top-level* struct
//! of a persistent type through a sequence that ends when the payload is exhausted, so
//! missing trailing fields reach serde as "no more elements" and `#[serde(default)]`
//! fills them in.
//!
//! Invariants:
//! - Only the top-level struct may end early; nested structs, tuples and enums are
//!   plain postcard.
//! - A payload with bytes left after decoding is refused (a newer writer's fields an
//!   older reader would silently drop on its next write).

use std::cell::Cell;
use std::rc::Rc;

use postcard::de_flavors::Flavor;
use serde::de::{self, DeserializeSeed, Visitor};

use crate::persistent::{Persistent, TypeNameCheck};
use crate::pref::collecting_refs;
use crate::record;

/// Encodes `value` as a complete record (envelope and payload).
pub(crate) fn encode<T: Persistent>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let () = TypeNameCheck::<T>::OK;
    let (payload, refs) = collecting_refs(|| postcard::to_stdvec(value));
    Ok(record::encode(T::TYPE_NAME, &refs, &payload?))
}

/// Why a payload did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not valid postcard for the type: a malformed varint, a string
    /// that is not UTF-8, an enum variant index the type does not have, or input
    /// that ends inside a nested value (only the top-level struct may end early).
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    /// The type refused what it read (e.g. a missing field without a default).
    #[error("{0}")]
    Invalid(String),
    /// The type read all its fields and this many payload bytes remained: the record
    /// was most likely written by a newer version of the type with fields added at the
    /// end. Refused, since the next write would drop those fields; upgrade the reader.
    #[error(
        "{0} bytes were left after the last field this type reads (written by a newer version of the type?)"
    )]
    TrailingBytes(usize),
}

impl de::Error for DecodeError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        DecodeError::Invalid(msg.to_string())
    }
}

/// Decodes a payload (the envelope's last part) as a `T`.
pub(crate) fn decode<T: Persistent>(payload: &[u8]) -> Result<T, DecodeError> {
    let remaining = Rc::new(Cell::new(payload.len()));
    let flavor = Counted {
        rest: payload,
        remaining: Rc::clone(&remaining),
    };
    let mut inner = postcard::Deserializer::from_flavor(flavor);
    let value = T::deserialize(TopLevel {
        inner: &mut inner,
        remaining: Rc::clone(&remaining),
    })?;
    match remaining.get() {
        0 => Ok(value),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

/// A slice flavor that publishes how many bytes remain.
struct Counted<'de> {
    rest: &'de [u8],
    remaining: Rc<Cell<usize>>,
}

impl<'de> Flavor<'de> for Counted<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        let (&first, rest) = self
            .rest
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        self.remaining.set(rest.len());
        Ok(first)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.len())
    }

    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        if ct > self.rest.len() {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = self.rest.split_at(ct);
        self.rest = rest;
        self.remaining.set(rest.len());
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<&'de [u8]> {
        Ok(self.rest)
    }
}

type Inner<'de> = postcard::Deserializer<'de, Counted<'de>>;

/// The deserializer for the top-level value: postcard, except that a struct ends
/// when the input does.
struct TopLevel<'a, 'de> {
    inner: &'a mut Inner<'de>,
    remaining: Rc<Cell<usize>>,
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            Ok(self.inner.$method(visitor)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for TopLevel<'_, 'de> {
    type Error = DecodeError;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Ok(self.inner.deserialize_unit_struct(name, visitor)?)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Ok(self.inner.deserialize_newtype_struct(name, visitor)?)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Ok(self.inner.deserialize_tuple(len, visitor)?)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Ok(self.inner.deserialize_tuple_struct(name, len, visitor)?)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Ok(self.inner.deserialize_enum(name, variants, visitor)?)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(FieldsUntilEnd {
            inner: self.inner,
            remaining: self.remaining,
            fields_left: fields.len(),
        })
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The fields of the top-level struct: as many as the type has, or fewer when the
/// payload ends first (fields added later, filled by `#[serde(default)]`).
struct FieldsUntilEnd<'a, 'de> {
    inner: &'a mut Inner<'de>,
    remaining: Rc<Cell<usize>>,
    fields_left: usize,
}

impl<'de> de::SeqAccess<'de> for FieldsUntilEnd<'_, 'de> {
    type Error = DecodeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        if self.fields_left == 0 || self.remaining.get() == 0 {
            return Ok(None);
        }
        self.fields_left -= 1;
        Ok(Some(seed.deserialize(&mut *self.inner)?))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields_left)
    }
}

/// Decodes a complete record (envelope and payload) as a `T`, for tools that read
/// stored records outside a transaction (e.g. to find the ids a value names).
/// `Ok(None)` when the record is of another type; an error names what is wrong.
pub fn decode_value<T: Persistent>(record: &[u8]) -> Result<Option<T>, String> {
    let env = record::decode(record).map_err(|e| e.to_string())?;
    if env.type_name != T::TYPE_NAME {
        return Ok(None);
    }
    decode::<T>(env.payload)
        .map(Some)
        .map_err(|e| format!("a {} record does not decode: {e}", T::TYPE_NAME))
}

/// Decodes a full record as a `T` for conflict resolution; `None` when it is not one.
pub(crate) fn decode_record<T: Persistent>(record: &[u8]) -> Option<T> {
    let env = record::decode(record).ok()?;
    if env.type_name != T::TYPE_NAME {
        return None;
    }
    decode::<T>(env.payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PRef;
    use serde::{Deserialize, Serialize};
    use zodiac_storage::Oid;

    fn oids(list: &[u64]) -> Vec<Oid> {
        list.iter().copied().map(Oid).collect()
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        name: String,
        balance: i64,
    }
    crate::persistent!(V1 = "test.Account");

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        name: String,
        balance: i64,
        #[serde(default)]
        owner: Option<PRef<V1>>,
        #[serde(default)]
        tags: Vec<String>,
    }
    crate::persistent!(V2 = "test.Account2");

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct V2NoDefault {
        name: String,
        balance: i64,
        tags: Vec<String>,
    }
    crate::persistent!(V2NoDefault = "test.Account3");

    fn payload<T: Persistent>(v: &T) -> Vec<u8> {
        let record = encode(v).unwrap();
        record::decode(&record).unwrap().payload.to_vec()
    }

    #[test]
    fn plain_postcard_cannot_read_an_old_record_with_a_new_default_field() {
        // Why the custom decoder exists: serde(default) alone does not help postcard.
        let old = postcard::to_stdvec(&V1 {
            name: "a".into(),
            balance: 7,
        })
        .unwrap();
        assert!(postcard::from_bytes::<V2>(&old).is_err());
    }

    #[test]
    fn adding_default_fields_at_the_end_keeps_old_records_readable() {
        let old = payload(&V1 {
            name: "ann".into(),
            balance: -3,
        });
        let v2: V2 = decode(&old).unwrap();
        assert_eq!(
            v2,
            V2 {
                name: "ann".into(),
                balance: -3,
                owner: None,
                tags: vec![],
            }
        );
        let new = V2 {
            name: "bob".into(),
            balance: 5,
            owner: Some(PRef::from_oid(Oid(9))),
            tags: vec!["x".into()],
        };
        assert_eq!(decode::<V2>(&payload(&new)).unwrap(), new);
    }

    #[test]
    fn a_new_field_without_default_is_an_error_not_garbage() {
        let old = payload(&V1 {
            name: "ann".into(),
            balance: 1,
        });
        let err = decode::<V2NoDefault>(&old).unwrap_err();
        assert!(err.to_string().contains("invalid length 2"), "{err}");
    }

    #[test]
    fn an_older_reader_refuses_a_newer_record() {
        let new = payload(&V2 {
            name: "bob".into(),
            balance: 5,
            owner: None,
            tags: vec![],
        });
        let err = decode::<V1>(&new).unwrap_err();
        assert!(matches!(err, DecodeError::TrailingBytes(2)), "{err}");
    }

    #[test]
    fn the_envelope_lists_every_reference_the_value_holds() {
        let v = V2 {
            name: "n".into(),
            balance: 0,
            owner: Some(PRef::from_oid(Oid(4))),
            tags: vec![],
        };
        let record = encode(&v).unwrap();
        assert_eq!(record::referenced_oids(&record).unwrap(), oids(&[4]));
        let mut root = crate::Root::default();
        root.insert("b", PRef::<V1>::from_oid(Oid(9)));
        root.insert("a", PRef::<V1>::from_oid(Oid(2)));
        root.insert("c", PRef::<V1>::from_oid(Oid(9)));
        let record = encode(&root).unwrap();
        assert_eq!(record::referenced_oids(&record).unwrap(), oids(&[2, 9]));
        assert_eq!(record::type_name(&record).unwrap(), "zodiac.Root");
    }

    #[test]
    fn decode_value_reads_its_own_type_only() {
        let v = V1 {
            name: "ann".into(),
            balance: 4,
        };
        let record = encode(&v).unwrap();
        assert_eq!(decode_value::<V1>(&record), Ok(Some(v)));
        assert_eq!(decode_value::<V2>(&record), Ok(None));
        assert!(decode_value::<V1>(&record[..3]).is_err());
    }

    #[test]
    fn garbage_payloads_are_errors() {
        for bytes in [&[][..], &[0xFF; 12][..], &[3, b'a'][..]] {
            assert!(decode::<V1>(bytes).is_err());
        }
    }
}
