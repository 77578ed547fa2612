//! The client's persistent cache file: the object cache saved at close and loaded
//! at the next connect, so a restarted client does not start cold (docs/protocol.md,
//! "The persistent cache file").
//!
//! Invariants:
//! - A file holds one consistent claim: "as of `last_tid`, in the database named
//!   `identity`, these are the newest revisions of these objects". The claim stays
//!   true forever; reconnecting catches up from `last_tid` like any reconnect, and a
//!   different `identity` (another database, or this one packed or restored) drops it.
//! - A file is written whole to a temporary name and renamed over the old one, so a
//!   reader sees an old file or a new one, never a mix; its CRC catches anything else.
//! - Reading never trusts a length before checking it against the bytes left, so a
//!   damaged file costs a warning and a cold cache, never a panic or a huge allocation.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ids::{Oid, Tid};

/// The first bytes of a cache file.
pub const CACHE_FILE_MAGIC: [u8; 8] = *b"ZDCACHE\0";
/// The format version written, and the only one read.
pub const CACHE_FILE_VERSION: u32 = 1;
/// Header: magic, version, identity, last tid, entry count.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;
/// Per entry before its data: oid, tid, data length.
const ENTRY_HEADER_BYTES: usize = 8 + 8 + 4;

/// A saved cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCache {
    /// The database the entries are from (`Storage::identity` of the server's storage).
    pub identity: u64,
    /// The entries are the newest revisions as of this tid.
    pub last_tid: Tid,
    pub entries: Vec<(Oid, Tid, Vec<u8>)>,
}

/// Encodes `saved` in the cache file format.
pub fn encode(saved: &SavedCache) -> Vec<u8> {
    let data: usize = saved.entries.iter().map(|(_, _, d)| d.len()).sum();
    let mut out =
        Vec::with_capacity(HEADER_BYTES + saved.entries.len() * ENTRY_HEADER_BYTES + data + 4);
    out.extend_from_slice(&CACHE_FILE_MAGIC);
    out.extend_from_slice(&CACHE_FILE_VERSION.to_le_bytes());
    out.extend_from_slice(&saved.identity.to_le_bytes());
    out.extend_from_slice(&saved.last_tid.0.to_le_bytes());
    out.extend_from_slice(&(saved.entries.len() as u64).to_le_bytes());
    for (oid, tid, data) in &saved.entries {
        out.extend_from_slice(&oid.0.to_le_bytes());
        out.extend_from_slice(&tid.0.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes a cache file; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<SavedCache, String> {
    if bytes.len() < HEADER_BYTES + 4 {
        return Err(format!("{} bytes: too short for a cache file", bytes.len()));
    }
    if bytes[..8] != CACHE_FILE_MAGIC {
        return Err("not a zodiac cache file (wrong magic)".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != CACHE_FILE_VERSION {
        return Err(format!(
            "cache file version {version}; this client reads version {CACHE_FILE_VERSION}"
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("CRC mismatch: the file is damaged".into());
    }
    let identity = u64_at(body, 12);
    let last_tid = Tid(u64_at(body, 20));
    let count = u64_at(body, 28);
    let mut at = HEADER_BYTES;
    let mut entries = Vec::new();
    for n in 0..count {
        if body.len() - at < ENTRY_HEADER_BYTES {
            return Err(format!("entry {n} of {count} is cut short"));
        }
        let oid = Oid(u64_at(body, at));
        let tid = Tid(u64_at(body, at + 8));
        let len = u32::from_le_bytes(body[at + 16..at + 20].try_into().expect("4 bytes")) as usize;
        at += ENTRY_HEADER_BYTES;
        if body.len() - at < len {
            return Err(format!(
                "entry {n} of {count} claims {len} bytes past the end"
            ));
        }
        if tid > last_tid {
            return Err(format!(
                "entry {n} is newer ({tid}) than the file ({last_tid})"
            ));
        }
        entries.push((oid, tid, body[at..at + len].to_vec()));
        at += len;
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - at));
    }
    Ok(SavedCache {
        identity,
        last_tid,
        entries,
    })
}

/// Reads the cache file at `path`: `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<SavedCache>, String> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

/// Writes `saved` to `path` through a temporary file renamed over it.
pub fn write(path: &Path, saved: &SavedCache) -> std::io::Result<()> {
    let mut temp = PathBuf::from(path);
    temp.set_file_name(format!(
        "{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(&encode(saved))?;
    drop(file);
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedCache {
        SavedCache {
            identity: 0xfeed,
            last_tid: Tid(50),
            entries: vec![
                (Oid(1), Tid(10), b"one".to_vec()),
                (Oid(7), Tid(50), Vec::new()),
            ],
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode(&encode(&sample())), Ok(sample()));
    }

    #[test]
    fn the_layout_is_as_documented() {
        let bytes = encode(&sample());
        assert_eq!(&bytes[..8], b"ZDCACHE\0");
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(&bytes[12..20], &0xfeedu64.to_le_bytes());
        assert_eq!(&bytes[20..28], &50u64.to_le_bytes());
        assert_eq!(&bytes[28..36], &2u64.to_le_bytes());
        // First entry: oid 1, tid 10, 3 bytes, "one".
        assert_eq!(&bytes[36..44], &1u64.to_le_bytes());
        assert_eq!(&bytes[44..52], &10u64.to_le_bytes());
        assert_eq!(&bytes[52..56], &3u32.to_le_bytes());
        assert_eq!(&bytes[56..59], b"one");
        assert_eq!(bytes.len(), 36 + 23 + 20 + 4);
    }

    #[test]
    fn every_damage_is_refused_without_panicking() {
        let good = encode(&sample());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at}");
        }
        // A huge claimed count or length with a valid CRC is refused too.
        let mut huge = encode(&sample());
        huge.truncate(huge.len() - 4);
        huge[28..36].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&huge);
        huge.extend_from_slice(&crc.to_le_bytes());
        assert!(decode(&huge).unwrap_err().contains("cut short"));
    }

    #[test]
    fn write_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.cache");
        assert_eq!(read(&path), Ok(None));
        write(&path, &sample()).unwrap();
        assert_eq!(read(&path), Ok(Some(sample())));
        let empty = SavedCache {
            identity: 1,
            last_tid: Tid(2),
            entries: Vec::new(),
        };
        write(&path, &empty).unwrap();
        assert_eq!(read(&path), Ok(Some(empty)));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
