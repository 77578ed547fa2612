//! The index: oid → position of the newest data record of that oid, in memory,
//! and its saved copy beside the data file (`PATH.index`, format in docs/format.md).
//!
//! Invariants:
//! - Position 0 means "no revision" (offset 0 is the file header, never a record).
//! - Oids are allocated densely from 1, so most live in `dense` (8 bytes each);
//!   an oid far beyond the dense range (possible only through a huge allocation
//!   gap) goes to `sparse`, so a damaged or hostile file cannot make the index
//!   allocate memory out of proportion to the records it holds.
//! - A saved index is a cache, never trusted blindly: it is used only when its own
//!   checksum, the data file's id, its covered end and last tid, the bounds of every
//!   entry and a sample of their records agree with the data file (see
//!   [`check_saved`]); otherwise it is
//!   ignored and the index is rebuilt by scanning. Its size is bounded by the data
//!   file's before it is read.
//! - Limit: an entry pointing at an older revision of its own object is a record of
//!   that object like the right one. Only the transactions of the last
//!   [`SAVED_TAIL_CHECK_BYTES`] before the covered end are checked for a newer
//!   revision; `zodiac verify` compares every entry with a full scan.

use std::collections::HashMap;
use std::path::Path;

use crate::ids::{Oid, Tid};

use super::format;
use super::io::FileIoFactory;

/// How far back from a saved index's covered end the transactions are read to
/// check that no entry misses a newer revision of its object.
pub const SAVED_TAIL_CHECK_BYTES: u64 = 1 << 20;

/// How many entries of a saved index, spread evenly, have their record read at open.
pub const SAVED_SAMPLE_ENTRIES: u64 = 256;

/// The dense part may cover oids up to twice the object count plus this many.
const DENSE_GROWTH_SLACK: u64 = 1 << 20;

#[derive(Clone, Default, Debug)]
pub struct Index {
    dense: Vec<u64>,
    sparse: HashMap<u64, u64>,
    /// Number of oids with a position.
    count: u64,
}

impl Index {
    pub fn get(&self, oid: Oid) -> Option<u64> {
        let pos = match self.dense.get(oid.0 as usize) {
            Some(&p) => p,
            None => *self.sparse.get(&oid.0)?,
        };
        (pos != 0).then_some(pos)
    }

    pub fn set(&mut self, oid: Oid, pos: u64) {
        debug_assert!(pos != 0);
        let slot = oid.0;
        if slot < self.dense.len() as u64 {
            if self.dense[slot as usize] == 0 {
                self.count += 1;
            }
            self.dense[slot as usize] = pos;
            return;
        }
        // Grow the dense part only as far as the objects it holds justify, so its size
        // stays proportional to the object count however far apart the oids are.
        if slot <= 2 * self.count + DENSE_GROWTH_SLACK {
            // Grow by half at a time (not Vec's doubling): at most 12 bytes per object.
            let new_len = (slot as usize + 1).max(self.dense.len() * 3 / 2);
            self.dense.reserve_exact(new_len - self.dense.len());
            self.dense.resize(new_len, 0);
            // Pull sparse entries that now fall in the dense range.
            let moved: Vec<u64> = self
                .sparse
                .keys()
                .copied()
                .filter(|&o| o < new_len as u64)
                .collect();
            for o in moved {
                let p = self.sparse.remove(&o).expect("listed above");
                self.dense[o as usize] = p;
            }
            if self.dense[slot as usize] == 0 {
                self.count += 1;
            }
            self.dense[slot as usize] = pos;
            return;
        }
        if self.sparse.insert(slot, pos).is_none() {
            self.count += 1;
        }
    }

    /// Number of objects with a revision.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Highest oid with a revision, if any.
    pub fn max_oid(&self) -> Option<Oid> {
        let sparse_max = self.sparse.keys().max().copied();
        let dense_max = self.dense.iter().rposition(|&p| p != 0).map(|i| i as u64);
        sparse_max.max(dense_max).map(Oid)
    }

    /// Bytes of memory the index uses (capacity, not just length).
    pub fn memory_bytes(&self) -> usize {
        self.dense.capacity() * 8 + self.sparse.capacity() * 17
    }

    /// Every (oid, position), dense part first.
    pub fn entries(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter(|(_, p)| **p != 0)
            .map(|(o, p)| (Oid(o as u64), *p))
            .chain(self.sparse.iter().map(|(o, p)| (Oid(*o), *p)))
    }
}

/// The saved index file's first bytes.
pub const INDEX_MAGIC: [u8; 8] = *b"ZODIACIX";
/// Saved index format version 1.
pub const INDEX_VERSION: u32 = 1;
const INDEX_HEADER_LEN: usize = 64;

/// What a saved index claims about the data file it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedIndexHeader {
    pub file_id: u64,
    /// The data file's logical end when the index was saved: every record before it
    /// is reflected in the index.
    pub covered_end: u64,
    /// Tid of the last transaction before `covered_end`.
    pub last_tid: Tid,
    /// The oid allocator's high-water mark at that point.
    pub next_oid: u64,
}

/// Encodes a saved index.
pub fn encode_saved(header: &SavedIndexHeader, index: &Index) -> Vec<u8> {
    let dense_len = index
        .dense
        .iter()
        .rposition(|&p| p != 0)
        .map_or(0, |i| i + 1);
    let mut b = Vec::with_capacity(INDEX_HEADER_LEN + dense_len * 8 + index.sparse.len() * 16 + 4);
    b.extend_from_slice(&INDEX_MAGIC);
    b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&header.file_id.to_le_bytes());
    b.extend_from_slice(&header.covered_end.to_le_bytes());
    b.extend_from_slice(&header.last_tid.0.to_le_bytes());
    b.extend_from_slice(&header.next_oid.to_le_bytes());
    b.extend_from_slice(&(dense_len as u64).to_le_bytes());
    b.extend_from_slice(&(index.sparse.len() as u64).to_le_bytes());
    debug_assert_eq!(b.len(), INDEX_HEADER_LEN);
    for p in &index.dense[..dense_len] {
        b.extend_from_slice(&p.to_le_bytes());
    }
    let mut sparse: Vec<_> = index.sparse.iter().collect();
    sparse.sort_unstable();
    for (o, p) in sparse {
        b.extend_from_slice(&o.to_le_bytes());
        b.extend_from_slice(&p.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a saved index, checking its own structure and checksum (not yet
/// whether it matches the data file: the caller spot-checks that).
pub fn decode_saved(b: &[u8]) -> Result<(SavedIndexHeader, Index), String> {
    if b.len() < INDEX_HEADER_LEN + 4 {
        return Err("index file too short".into());
    }
    if b[0..8] != INDEX_MAGIC {
        return Err("not a Zodiac index file (bad magic)".into());
    }
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != INDEX_VERSION {
        return Err(format!("index format version {version} is not supported"));
    }
    let body_len = b.len() - 4;
    let crc = u32::from_le_bytes(b[body_len..].try_into().expect("4 bytes"));
    if crc32fast::hash(&b[..body_len]) != crc {
        return Err("index checksum mismatch".into());
    }
    let header = SavedIndexHeader {
        file_id: word(16),
        covered_end: word(24),
        last_tid: Tid(word(32)),
        next_oid: word(40),
    };
    let dense_len = word(48);
    let sparse_len = word(56);
    let expected = dense_len
        .checked_mul(8)
        .and_then(|d| sparse_len.checked_mul(16).and_then(|s| d.checked_add(s)))
        .and_then(|n| n.checked_add(INDEX_HEADER_LEN as u64));
    if expected != Some(body_len as u64) {
        return Err("index entry counts do not match its length".into());
    }
    let dense_end = INDEX_HEADER_LEN + dense_len as usize * 8;
    let dense: Vec<u64> = b[INDEX_HEADER_LEN..dense_end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let mut count = dense.iter().filter(|&&p| p != 0).count() as u64;
    let mut sparse = HashMap::with_capacity(sparse_len as usize);
    for c in b[dense_end..body_len].chunks_exact(16) {
        let oid = u64::from_le_bytes(c[0..8].try_into().expect("8 bytes"));
        let pos = u64::from_le_bytes(c[8..16].try_into().expect("8 bytes"));
        if oid < dense.len() as u64 || pos == 0 || sparse.insert(oid, pos).is_some() {
            return Err("index has an invalid sparse entry".into());
        }
        count += 1;
    }
    Ok((
        header,
        Index {
            dense,
            sparse,
            count,
        },
    ))
}

/// Largest saved index a data file of `data_len` bytes can have: every entry is
/// a data record of at least [`format::DATA_HEADER_LEN`] bytes, and the dense part
/// covers at most three oids per object plus its growth slack (see `Index::set`).
pub fn saved_len_max(data_len: u64) -> u64 {
    let records = data_len / format::DATA_HEADER_LEN;
    let dense = records
        .saturating_mul(3)
        .saturating_add(2 * DENSE_GROWTH_SLACK + 2);
    (INDEX_HEADER_LEN as u64 + 4)
        .saturating_add(dense.saturating_mul(8))
        .saturating_add(records.saturating_mul(16))
}

/// Reads the saved index at `path` with `pread` (a map of a file another program
/// may truncate could crash the process), if there is one and it is at most
/// `len_max` bytes. `Ok(None)` when absent.
pub fn read_saved(
    io: &dyn FileIoFactory,
    path: &Path,
    len_max: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let file = match io.open(path, false, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    if len > len_max {
        return Err(std::io::Error::other(format!(
            "it is {len} bytes, more than the {len_max} an index of this data file can need"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_at(&mut bytes, 0)?;
    Ok(Some(bytes))
}

/// Checks a decoded saved index against the data file `map` (from its data start
/// `data_start` on): its covered end is the end of a valid transaction with the
/// recorded last tid, every entry lies inside the covered region, and a sample of
/// [`SAVED_SAMPLE_ENTRIES`] entries point at a data record of their object, with a
/// tid at most the last tid, in a transaction before it. Then the transactions of the last
/// [`SAVED_TAIL_CHECK_BYTES`] before the covered end are read: none may hold a
/// revision newer than its object's entry. The error says what disagrees.
///
/// Cost: one pass over the entries in memory, the sampled record headers and the
/// tail; measured in docs/format.md.
pub fn check_saved(
    saved: &SavedIndexHeader,
    index: &Index,
    map: &[u8],
    data_start: u64,
) -> Result<(), String> {
    let covered_end = saved.covered_end;
    if covered_end < data_start || covered_end > map.len() as u64 {
        return Err(format!(
            "it covers {covered_end} bytes but the file holds {}",
            map.len()
        ));
    }
    let covered = &map[..covered_end as usize];
    if covered_end > data_start {
        let last = format::length_before(covered, covered_end)
            .and_then(|len| covered_end.checked_sub(len))
            .filter(|&pos| pos >= data_start)
            .map(|pos| format::transaction_at(covered, pos));
        match last {
            Some(Ok(t)) if t.tid == saved.last_tid => {}
            _ => return Err("its last transaction does not match the data file".into()),
        }
    }
    let records_max = (covered_end - data_start) / format::DATA_HEADER_LEN;
    if index.len() > records_max {
        return Err(format!(
            "it has {} entries, more than the {records_max} records its covered region can hold",
            index.len()
        ));
    }
    // Every entry must lie inside the covered region (cheap: no record is read).
    let record_end_max = covered_end.saturating_sub(format::DATA_HEADER_LEN);
    if let Some((oid, pos)) = index
        .entries()
        .find(|&(_, pos)| pos < data_start || pos > record_end_max)
    {
        return Err(format!(
            "its entry for object {oid} (offset {pos}) lies outside the region it covers"
        ));
    }
    // A sample of entries must point at a revision of their object. Reading every
    // entry's record would touch a page per object (measured: W7's open went from
    // 0.4 to 2.7 ms and its memory per object from 14 to 142 bytes) and still not
    // find an entry naming an older revision of its own object, which only a full
    // scan can (`zodiac verify`); every load and vote checks the record's oid, so a
    // wrong entry outside the sample fails loudly as damage, never silently.
    let step = (index.len() / SAVED_SAMPLE_ENTRIES).max(1) as usize;
    for (oid, pos) in index.entries().step_by(step) {
        let ok = format::data_header_at(covered, pos).is_ok_and(|(r, _)| {
            r.oid == oid && r.tid <= saved.last_tid && r.txn_pos >= data_start && r.txn_pos < pos
        });
        if !ok {
            return Err(format!(
                "its entry for object {oid} (offset {pos}) does not point at a revision of that \
                 object in the region it covers"
            ));
        }
    }
    check_tail(saved, index, covered, data_start)
}

/// No transaction of the last [`SAVED_TAIL_CHECK_BYTES`] before the covered end
/// holds a revision newer than the index's entry for its object.
fn check_tail(
    saved: &SavedIndexHeader,
    index: &Index,
    covered: &[u8],
    data_start: u64,
) -> Result<(), String> {
    let stop = saved
        .covered_end
        .saturating_sub(SAVED_TAIL_CHECK_BYTES)
        .max(data_start);
    let mut at = saved.covered_end;
    // Each step moves `at` strictly back (a transaction is never empty), so the
    // walk ends.
    while at > stop {
        let t = format::length_before(covered, at)
            .and_then(|len| at.checked_sub(len))
            .filter(|&pos| pos >= data_start && pos < at)
            .and_then(|pos| format::transaction_at(covered, pos).ok())
            .ok_or_else(|| format!("no valid transaction ends at offset {at} of its region"))?;
        for (rpos, r) in &t.records {
            if index.get(r.oid).is_none_or(|p| p < *rpos) {
                return Err(format!(
                    "its entry for object {} misses the revision at offset {rpos}",
                    r.oid
                ));
            }
        }
        at = t.pos;
    }
    Ok(())
}

/// Writes the saved index atomically: a temporary file, fdatasync, rename, sync
/// of the directory.
pub fn write_saved(io: &dyn FileIoFactory, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("index-tmp");
    let _ = io.remove(&tmp);
    let written = (|| {
        let file = io.open(&tmp, true, true)?;
        file.set_len(0)?;
        file.write_at(bytes, 0)?;
        file.sync_data()
    })();
    if let Err(e) = written {
        // On a full disk the partial copy holds space the data file may need.
        let _ = io.remove(&tmp);
        return Err(e);
    }
    io.rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        io.sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_entries_round_trip() {
        let mut idx = Index::default();
        idx.set(Oid(1), 100);
        idx.set(Oid(5), 200);
        idx.set(Oid(1 << 40), 300);
        idx.set(Oid(1), 150);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.get(Oid(1)), Some(150));
        assert_eq!(idx.get(Oid(2)), None);
        assert_eq!(idx.get(Oid(1 << 40)), Some(300));
        assert_eq!(idx.max_oid(), Some(Oid(1 << 40)));
        let h = SavedIndexHeader {
            file_id: 7,
            covered_end: 999,
            last_tid: Tid(5),
            next_oid: 9,
        };
        let bytes = encode_saved(&h, &idx);
        let (h2, idx2) = decode_saved(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(idx2.get(Oid(5)), Some(200));
        assert_eq!(idx2.get(Oid(1 << 40)), Some(300));
        assert_eq!(idx2.len(), 3);
    }

    #[test]
    fn damaged_saved_index_is_refused() {
        let mut idx = Index::default();
        idx.set(Oid(3), 100);
        let h = SavedIndexHeader {
            file_id: 7,
            covered_end: 999,
            last_tid: Tid(5),
            next_oid: 9,
        };
        let bytes = encode_saved(&h, &idx);
        for i in 0..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 0x10;
            assert!(decode_saved(&d).is_err(), "flip at {i} accepted");
        }
        assert!(decode_saved(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A saved index is read only when it is no larger than an index of the data
    /// file can be: an index file blown up by damage is not read into memory.
    #[test]
    fn a_saved_index_larger_than_the_data_file_justifies_is_not_read() {
        use crate::file::io::StdFileIoFactory;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.zdb.index");
        let max = saved_len_max(4000);
        assert_eq!(
            max,
            68 + 8 * (3 * 100 + 2 * DENSE_GROWTH_SLACK + 2) + 16 * 100
        );
        std::fs::write(&path, vec![0u8; max as usize]).unwrap();
        let read = read_saved(&StdFileIoFactory, &path, max).unwrap().unwrap();
        assert_eq!(read.len() as u64, max);
        std::fs::write(&path, vec![0u8; max as usize + 1]).unwrap();
        let err = read_saved(&StdFileIoFactory, &path, max).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn dense_part_costs_eight_bytes_per_object() {
        let mut idx = Index::default();
        for i in 1..=100_000u64 {
            idx.set(Oid(i), i * 100);
        }
        assert!(
            idx.memory_bytes() <= 100_001 * 8 * 3 / 2 + 64,
            "{}",
            idx.memory_bytes()
        );
    }
}
