//! The record envelope: the bytes the objects layer stores as one object revision.
//!
//! Layout (all integers little-endian; `docs/objects-format.md` is the specification):
//!
//! ```text
//! offset  width  field
//! 0       2      magic "Zo" (0x5A 0x6F)
//! 2       1      envelope format version (ENVELOPE_VERSION)
//! 3       1      flags (0; any other value is refused)
//! 4       1      n = type name length in bytes (1..=255)
//! 5       n      type name, UTF-8
//! 5+n     4      r = number of referenced oids (u32)
//! 9+n     8*r    referenced oids (u64 each), ascending, no duplicates
//! 9+n+8r  rest   payload: the object's postcard encoding
//! ```
//!
//! Invariants:
//! - Decoding never panics and never allocates more than the record's own length:
//!   every count is checked against the bytes that remain before it is used.
//! - The reference list is readable without knowing the type, so pack/GC and tools
//!   need nothing but [`referenced_oids`].

use zodiac_storage::Oid;

/// The envelope format version written by this code.
///
/// Version 1: the layout in the module docs.
pub const ENVELOPE_VERSION: u8 = 1;

/// The first two bytes of every record.
pub const MAGIC: [u8; 2] = *b"Zo";

/// Longest type name, in bytes (its length is stored in one byte).
pub const TYPE_NAME_BYTES_MAX: usize = u8::MAX as usize;

/// Bytes of the envelope before the type name.
const PREFIX_BYTES: usize = 5;

/// What is wrong with a record that is not a valid envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record ends inside a part of the envelope; checked before the part is
    /// read, so a damaged count never makes a reader allocate or loop past the end.
    #[error("record is {len} bytes, too short for its {what} at offset {offset} ({need} bytes)")]
    Truncated {
        /// The part: `"header"`, `"type name"`, `"reference count"` or
        /// `"reference list"`.
        what: &'static str,
        /// Where the part starts in the record.
        offset: usize,
        /// Bytes the part needs (for the reference list, 8 per counted reference).
        need: usize,
        /// The record's whole length.
        len: usize,
    },
    /// Bytes 0..2 are not `Zo`: the record was not written by the objects layer.
    #[error("record does not start with the object envelope magic \"Zo\" (found {found:02x?})")]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// Byte 2 is an envelope version other than [`ENVELOPE_VERSION`]: written by
    /// another release of Zodiac.
    #[error(
        "record has envelope format version {version}; this code reads version {ENVELOPE_VERSION} \
         (upgrade zodiac to read it)"
    )]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// Byte 3 (flags) is not 0; version 1 defines no flags.
    #[error("record has unknown envelope flags {flags:#04x}")]
    UnknownFlags {
        /// The flags byte found.
        flags: u8,
    },
    /// Byte 4, the type name length, is 0.
    #[error("record has an empty type name")]
    EmptyTypeName,
    /// The type name bytes (from offset 5) are not valid UTF-8.
    #[error("record's type name is not UTF-8")]
    TypeNameNotUtf8,
    /// A referenced oid is not greater than the one before it.
    #[error("record's reference list is not ascending without duplicates at entry {index}")]
    RefsNotAscending {
        /// Position of the offending oid in the list (0-based; at least 1).
        index: usize,
    },
}

/// A decoded envelope, borrowing from the record bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The writer's `Persistent::TYPE_NAME`: 1 to 255 bytes of UTF-8.
    pub type_name: &'a str,
    /// Every oid the payload holds as a `PRef`, strictly ascending: the object's
    /// outgoing edges for pack/GC.
    pub refs: Vec<Oid>,
    /// The object's postcard encoding, to the end of the record (may be empty).
    pub payload: &'a [u8],
}

/// Builds a record. `refs` must be ascending without duplicates and `type_name`
/// non-empty and at most [`TYPE_NAME_BYTES_MAX`] bytes (programmer errors: panics).
pub fn encode(type_name: &str, refs: &[Oid], payload: &[u8]) -> Vec<u8> {
    assert!(
        !type_name.is_empty() && type_name.len() <= TYPE_NAME_BYTES_MAX,
        "type name {type_name:?} must be 1..={TYPE_NAME_BYTES_MAX} bytes"
    );
    assert!(refs.windows(2).all(|w| w[0] < w[1]), "refs must ascend");
    let count = u32::try_from(refs.len()).expect("fewer than 2^32 references");
    let mut out =
        Vec::with_capacity(PREFIX_BYTES + type_name.len() + 4 + 8 * refs.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(ENVELOPE_VERSION);
    out.push(0);
    out.push(type_name.len() as u8);
    out.extend_from_slice(type_name.as_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for oid in refs {
        out.extend_from_slice(&oid.0.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn take<'a>(
    record: &'a [u8],
    offset: usize,
    need: usize,
    what: &'static str,
) -> Result<&'a [u8], RecordError> {
    record
        .get(offset..)
        .and_then(|rest| rest.get(..need))
        .ok_or(RecordError::Truncated {
            what,
            offset,
            need,
            len: record.len(),
        })
}

/// The header fields without the reference list: type name, refs bytes, payload.
fn split(record: &[u8]) -> Result<(&str, &[u8], &[u8]), RecordError> {
    let prefix = take(record, 0, PREFIX_BYTES, "header")?;
    if prefix[..2] != MAGIC {
        return Err(RecordError::BadMagic {
            found: [prefix[0], prefix[1]],
        });
    }
    if prefix[2] != ENVELOPE_VERSION {
        return Err(RecordError::UnsupportedVersion { version: prefix[2] });
    }
    if prefix[3] != 0 {
        return Err(RecordError::UnknownFlags { flags: prefix[3] });
    }
    let name_len = usize::from(prefix[4]);
    if name_len == 0 {
        return Err(RecordError::EmptyTypeName);
    }
    let name = take(record, PREFIX_BYTES, name_len, "type name")?;
    let name = std::str::from_utf8(name).map_err(|_| RecordError::TypeNameNotUtf8)?;
    let count_at = PREFIX_BYTES + name_len;
    let count = take(record, count_at, 4, "reference count")?;
    let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
    let refs_at = count_at + 4;
    // The multiplication cannot overflow: count < 2^32 and usize is 64 bits here,
    // and `take` checks the length against the record before anything is read.
    let refs = take(record, refs_at, count.saturating_mul(8), "reference list")?;
    let payload = &record[refs_at + refs.len()..];
    Ok((name, refs, payload))
}

fn parse_refs(refs: &[u8]) -> Result<Vec<Oid>, RecordError> {
    let mut out = Vec::with_capacity(refs.len() / 8);
    for (index, chunk) in refs.chunks_exact(8).enumerate() {
        let oid = Oid(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        if out.last().is_some_and(|last: &Oid| *last >= oid) {
            return Err(RecordError::RefsNotAscending { index });
        }
        out.push(oid);
    }
    Ok(out)
}

/// Decodes an envelope.
pub fn decode(record: &[u8]) -> Result<Envelope<'_>, RecordError> {
    let (type_name, refs, payload) = split(record)?;
    Ok(Envelope {
        type_name,
        refs: parse_refs(refs)?,
        payload,
    })
}

/// The oids a record refers to, read from the envelope alone (no type knowledge).
/// This is the reference function the storage's pack/GC and the tools call.
pub fn referenced_oids(record: &[u8]) -> Result<Vec<Oid>, RecordError> {
    let (_, refs, _) = split(record)?;
    parse_refs(refs)
}

/// The type name a record was written with.
pub fn type_name(record: &[u8]) -> Result<&str, RecordError> {
    split(record).map(|(name, _, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_the_documented_bytes() {
        let record = encode("a.B", &[Oid(1), Oid(0x0203)], &[0xAA, 0xBB]);
        let expected: Vec<u8> = [
            &b"Zo"[..],
            &[1, 0, 3],
            b"a.B",
            &[2, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[3, 2, 0, 0, 0, 0, 0, 0],
            &[0xAA, 0xBB],
        ]
        .concat();
        assert_eq!(record, expected);
        let env = decode(&record).unwrap();
        assert_eq!(env.type_name, "a.B");
        assert_eq!(env.refs, vec![Oid(1), Oid(0x203)]);
        assert_eq!(env.payload, &[0xAA, 0xBB]);
        assert_eq!(referenced_oids(&record).unwrap(), env.refs);
        assert_eq!(type_name(&record).unwrap(), "a.B");
    }

    #[test]
    fn damaged_envelopes_are_named_errors() {
        let good = encode("t", &[Oid(5)], b"xyz");
        assert_eq!(
            decode(b"Zp\x01\x00\x01t").unwrap_err(),
            RecordError::BadMagic { found: *b"Zp" }
        );
        let mut v2 = good.clone();
        v2[2] = 2;
        assert_eq!(
            decode(&v2).unwrap_err(),
            RecordError::UnsupportedVersion { version: 2 }
        );
        let mut flags = good.clone();
        flags[3] = 1;
        assert_eq!(
            decode(&flags).unwrap_err(),
            RecordError::UnknownFlags { flags: 1 }
        );
        let mut empty = good.clone();
        empty[4] = 0;
        assert_eq!(decode(&empty).unwrap_err(), RecordError::EmptyTypeName);
        let mut utf = good.clone();
        utf[5] = 0xFF;
        assert_eq!(decode(&utf).unwrap_err(), RecordError::TypeNameNotUtf8);
        // A reference count far beyond the record's length is refused before use.
        let mut count = good.clone();
        count[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode(&count).unwrap_err();
        assert!(matches!(
            err,
            RecordError::Truncated {
                what: "reference list",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "record is {} bytes, too short for its reference list at offset 10 \
                 (34359738360 bytes)",
                good.len()
            )
        );
        let unsorted = [&good[..6], &[2, 0, 0, 0], &[9; 8], &[1; 8]].concat();
        assert_eq!(
            decode(&unsorted).unwrap_err(),
            RecordError::RefsNotAscending { index: 1 }
        );
        for cut in 0..good.len() - 3 {
            assert!(
                matches!(
                    decode(&good[..cut]).unwrap_err(),
                    RecordError::Truncated { .. }
                ),
                "cut at {cut}"
            );
        }
        // The payload may be empty: cutting exactly after the refs is a valid record.
        assert_eq!(decode(&good[..good.len() - 3]).unwrap().payload, b"");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = referenced_oids(&bytes);
        }

        #[test]
        fn garbage_after_a_valid_prefix_never_panics(
            name in "[a-z.]{1,20}",
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut record = encode(&name, &[], &[]);
            record.truncate(PREFIX_BYTES + name.len());
            record.extend_from_slice(&tail);
            if let Ok(env) = decode(&record) {
                prop_assert_eq!(env.type_name, name.as_str());
                prop_assert!(env.refs.len() * 8 <= tail.len());
            }
        }

        #[test]
        fn round_trips(
            name in "[A-Za-z0-9._]{1,40}",
            mut refs in proptest::collection::vec(any::<u64>(), 0..20),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            refs.sort_unstable();
            refs.dedup();
            let refs: Vec<Oid> = refs.into_iter().map(Oid).collect();
            let record = encode(&name, &refs, &payload);
            let env = decode(&record).unwrap();
            prop_assert_eq!(env.type_name, name.as_str());
            prop_assert_eq!(&env.refs, &refs);
            prop_assert_eq!(env.payload, &payload[..]);
        }
    }
}
