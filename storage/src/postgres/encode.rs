//! Values as the tables hold them: oids and tids as `int8` (their u64 bit
//! pattern; every tid and oid the storage hands out is below 2^63), and the
//! transaction extension map as `bytea`.
//!
//! Extension encoding, entry after entry in key order: key length (u16 big
//! endian), key bytes (UTF-8), value length (u32 big endian), value bytes. The
//! empty map is the empty bytea.

use std::collections::BTreeMap;

use crate::ids::{Oid, Tid};

/// A tid as the `int8` columns hold it; tids above `i64::MAX` (only `Tid::MAX`
/// as a snapshot) are clamped, as no stored tid reaches them.
pub(crate) fn tid(tid: Tid) -> i64 {
    i64::try_from(tid.0).unwrap_or(i64::MAX)
}

/// An oid as the `int8` columns hold it, or `None` for an oid no allocation
/// reaches (above `i64::MAX`).
pub(crate) fn oid(oid: Oid) -> Option<i64> {
    i64::try_from(oid.0).ok()
}

/// The extension map's bytea.
pub(crate) fn extension(map: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in map {
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The extension map from its bytea, or what is wrong with it.
pub(crate) fn decode_extension(mut bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut map = BTreeMap::new();
    while !bytes.is_empty() {
        let key = take(&mut bytes, 2).and_then(|len| {
            let len = u16::from_be_bytes([len[0], len[1]]) as usize;
            take(&mut bytes, len)
        })?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| "a key is not UTF-8".to_string())?;
        let value = take(&mut bytes, 4).and_then(|len| {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            take(&mut bytes, len)
        })?;
        map.insert(key, value.to_vec());
    }
    Ok(map)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err(format!(
            "an entry is cut short ({} bytes left, {n} needed)",
            bytes.len()
        ));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_round_trips_and_cut_bytes_are_refused() {
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), b"1".to_vec());
        map.insert("key".to_string(), Vec::new());
        let bytes = extension(&map);
        assert_eq!(
            bytes.len(),
            map.iter()
                .map(|(k, v)| 6 + k.len() + v.len())
                .sum::<usize>()
        );
        assert_eq!(decode_extension(&bytes).unwrap(), map);
        assert!(decode_extension(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_extension(&[]).unwrap().is_empty());
    }
}
