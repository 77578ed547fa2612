//! The bytes of the data file, as `docs/format.md` specifies them (format version 2;
//! version-1 files are read and written too).
//!
//! Invariants kept here:
//! - Every integer is little-endian and fixed-width; every offset is a u64.
//! - A transaction record's durable mark (its offset minus its durable lag) never
//!   claims more than was durable: a lag only ever saturates upwards, which claims
//!   less; version-1 records keep the field zero.
//! - Nothing read from disk is trusted: a record is accepted only when its magic,
//!   lengths, trailer, CRC32 and every inner length and back-pointer check out
//!   against the bytes actually present.
//! - Decoders never panic and never allocate more than the bytes present justify.

use std::collections::BTreeMap;

use crate::ids::{Oid, Tid};
use crate::meta::TransactionMeta;

/// The file's first bytes.
pub const FILE_MAGIC: [u8; 8] = *b"ZODIACFS";
/// The format version new files are written in.
///
/// - Version 1: the first format (file header, transaction records with CRC32 and
///   lengths at both ends, data records with back-pointers).
/// - Version 2: each transaction record carries a durable lag (header offset 44,
///   reserved and zero in version 1), so an open can tell the torn last group of a
///   crash from damage to bytes that had been durable.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads (and keeps writing in its own format).
pub const FORMAT_VERSION_OLDEST: u32 = 1;
/// The first format version whose transaction records carry a durable lag.
pub const FORMAT_VERSION_DURABLE_LAG: u32 = 2;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: u64 = 48;

/// A transaction record's first bytes.
pub const TXN_MAGIC: [u8; 4] = *b"ZTXN";
/// A transaction record's trailer magic.
pub const TXN_END_MAGIC: [u8; 4] = *b"ZEND";
/// Status byte of a committed transaction.
pub const STATUS_COMMITTED: u8 = b'C';
/// Status byte of a voted but unfinished transaction. Version-1 writers write a
/// record whole at finish and never write it; readers treat it as incomplete.
pub const STATUS_VOTED: u8 = b'V';
/// Bytes of the transaction header.
pub const TXN_HEADER_LEN: u64 = 48;
/// Bytes of the transaction trailer.
pub const TXN_TRAILER_LEN: u64 = 16;
/// Bytes of a data record's header (before its data).
pub const DATA_HEADER_LEN: u64 = 40;
/// Smallest transaction record (no metadata, no objects).
pub const TXN_MIN_LEN: u64 = TXN_HEADER_LEN + TXN_TRAILER_LEN;
/// Largest transaction record, in bytes.
pub const TXN_BYTES_MAX: u64 = 1 << 32;
/// Offset of the durable lag (u32) in a transaction header.
const TXN_DURABLE_LAG_AT: usize = 44;
/// Offset of the next-oid mark (u64) in a transaction header.
const TXN_NEXT_OID_AT: usize = 24;

const _: () = assert!(TXN_HEADER_LEN.is_multiple_of(8) && DATA_HEADER_LEN.is_multiple_of(8));

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// The format version the file was written in.
    pub version: u32,
    /// Random id binding the saved index (and later backups) to this file.
    pub file_id: u64,
    /// Where the first transaction record starts.
    pub data_start: u64,
}

impl FileHeader {
    /// The header's bytes, as they begin the file.
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN as usize] {
        let mut b = [0u8; FILE_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16: flags, zero in versions 1 and 2.
        b[16..24].copy_from_slice(&self.file_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_start.to_le_bytes());
        // 32..44: reserved, zero.
        let crc = crc32fast::hash(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<FileHeader, String> {
        if b.len() >= FILE_MAGIC.len() && b[0..8] != FILE_MAGIC {
            return Err("not a Zodiac data file (bad magic number)".into());
        }
        if b.len() < FILE_HEADER_LEN as usize {
            return Err(format!(
                "file is {} bytes, shorter than the {FILE_HEADER_LEN}-byte header",
                b.len()
            ));
        }
        if b[0..8] != FILE_MAGIC {
            return Err("not a Zodiac data file (bad magic number)".into());
        }
        if crc32fast::hash(&b[0..44]) != u32_at(b, 44) {
            return Err("file header checksum mismatch".into());
        }
        let version = u32_at(b, 8);
        if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "format version {version} is not supported (this build reads versions \
                 {FORMAT_VERSION_OLDEST} to {FORMAT_VERSION}); open it with a build that reads it"
            ));
        }
        let data_start = u64_at(b, 24);
        if data_start < FILE_HEADER_LEN {
            return Err(format!("data start {data_start} lies inside the header"));
        }
        Ok(FileHeader {
            version,
            file_id: u64_at(b, 16),
            data_start,
        })
    }
}

/// One object write, as the encoder takes it.
pub struct DataToWrite<'a> {
    /// The object written.
    pub oid: Oid,
    /// Position of the object's previous revision's data record, 0 if none.
    pub prev: u64,
    /// The new revision's data.
    pub data: &'a [u8],
}

/// Length of the record `encode_transaction` will produce.
pub fn transaction_len(meta: &TransactionMeta, data_lens: impl Iterator<Item = usize>) -> u64 {
    let body: u64 = data_lens.map(|l| DATA_HEADER_LEN + l as u64).sum();
    TXN_MIN_LEN
        + meta.user.len() as u64
        + meta.description.len() as u64
        + meta.extension_encoded_len() as u64
        + body
}

/// A transaction record encoded for writing.
pub struct EncodedTxn {
    /// The whole record, valid with a durable lag of zero.
    pub bytes: Vec<u8>,
    /// Per object, the position of its data record.
    pub positions: Vec<u64>,
    /// CRC32 of the record's bytes between its header and its trailer, so that
    /// [`stamp_durable_lag`] can renew the record's CRC without hashing them again.
    pub body_crc: u32,
}

/// Encodes a whole committed transaction record to be written at `pos`, with a
/// durable lag of zero (the mark is the record's own offset: claims nothing more).
/// Returns the bytes and, per object, the position of its data record.
pub fn encode_transaction(
    pos: u64,
    tid: Tid,
    next_oid: u64,
    meta: &TransactionMeta,
    objects: &[DataToWrite<'_>],
) -> (Vec<u8>, Vec<u64>) {
    let e = encode_stampable(pos, tid, next_oid, meta, objects);
    (e.bytes, e.positions)
}

/// Like [`encode_transaction`], keeping what [`stamp_durable_lag`] needs.
pub fn encode_stampable(
    pos: u64,
    tid: Tid,
    next_oid: u64,
    meta: &TransactionMeta,
    objects: &[DataToWrite<'_>],
) -> EncodedTxn {
    let len = transaction_len(meta, objects.iter().map(|o| o.data.len()));
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&TXN_MAGIC);
    b.push(STATUS_COMMITTED);
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&tid.0.to_le_bytes());
    b.extend_from_slice(&next_oid.to_le_bytes());
    b.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    b.extend_from_slice(&(meta.user.len() as u16).to_le_bytes());
    b.extend_from_slice(&(meta.description.len() as u16).to_le_bytes());
    b.extend_from_slice(&(meta.extension_encoded_len() as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    debug_assert_eq!(b.len() as u64, TXN_HEADER_LEN);
    b.extend_from_slice(meta.user.as_bytes());
    b.extend_from_slice(meta.description.as_bytes());
    for (key, value) in &meta.extension {
        b.extend_from_slice(&(key.len() as u16).to_le_bytes());
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        b.extend_from_slice(value);
    }
    let mut positions = Vec::with_capacity(objects.len());
    for o in objects {
        let record_start = b.len();
        positions.push(pos + record_start as u64);
        b.extend_from_slice(&[0; 4]); // CRC, filled in below
        b.extend_from_slice(&(o.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&o.oid.0.to_le_bytes());
        b.extend_from_slice(&tid.0.to_le_bytes());
        b.extend_from_slice(&o.prev.to_le_bytes());
        b.extend_from_slice(&pos.to_le_bytes());
        b.extend_from_slice(o.data);
        let crc = crc32fast::hash(&b[record_start + 4..]);
        b[record_start..record_start + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let body_crc = crc32fast::hash(&b[TXN_HEADER_LEN as usize..]);
    b.extend_from_slice(&[0; 4]); // CRC, filled in by the stamp
    b.extend_from_slice(&TXN_END_MAGIC);
    b.extend_from_slice(&len.to_le_bytes());
    debug_assert_eq!(b.len() as u64, len);
    stamp_durable_lag(&mut b, 0, body_crc);
    EncodedTxn {
        bytes: b,
        positions,
        body_crc,
    }
}

/// The durable lag of a record at `pos` whose durable mark is `mark` (`<= pos`):
/// saturates at `u32::MAX`, which puts the mark lower and so claims less.
pub fn durable_lag(pos: u64, mark: u64) -> u32 {
    debug_assert!(
        mark <= pos,
        "a durable mark {mark} beyond its record at {pos}"
    );
    u32::try_from(pos.saturating_sub(mark)).unwrap_or(u32::MAX)
}

/// Sets the durable lag of an encoded record (as [`encode_transaction`] made it,
/// `body_crc` from there) and renews its CRC: the header is hashed again and
/// combined with the body's CRC, so the cost does not grow with the record.
pub fn stamp_durable_lag(record: &mut [u8], lag: u32, body_crc: u32) {
    let header_len = TXN_HEADER_LEN as usize;
    let body_end = record.len() - TXN_TRAILER_LEN as usize;
    record[TXN_DURABLE_LAG_AT..TXN_DURABLE_LAG_AT + 4].copy_from_slice(&lag.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&record[..header_len]);
    crc.combine(&crc32fast::Hasher::new_with_initial_len(
        body_crc,
        (body_end - header_len) as u64,
    ));
    let crc = crc.finalize();
    debug_assert_eq!(crc, crc32fast::hash(&record[..body_end]));
    record[body_end..body_end + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A data record read from the file.
#[derive(Clone, Copy, Debug)]
pub struct DataRecord<'a> {
    /// The object.
    pub oid: Oid,
    /// The transaction that wrote this revision.
    pub tid: Tid,
    /// Position of the previous revision's data record, 0 if none.
    pub prev: u64,
    /// Position of the transaction record this data record is part of.
    pub txn_pos: u64,
    /// The revision's data.
    pub data: &'a [u8],
}

/// Decodes the data record at `pos` of `file` (the whole mapped file), checking it
/// lies inside the file and its CRC. The caller checks what it expects (oid, tid order).
pub fn data_record_at(file: &[u8], pos: u64) -> Result<DataRecord<'_>, String> {
    let (r, end) = data_header_at(file, pos)?;
    let start = pos as usize;
    if crc32fast::hash(&file[start + 4..end]) != u32_at(file, start) {
        return Err(format!(
            "data record at {pos} fails its checksum (damaged bytes)"
        ));
    }
    Ok(r)
}

/// Decodes the data record at `pos` without checking its CRC (for reading its tid
/// where a wrong answer is harmless), and returns it with its end.
pub fn data_header_at(file: &[u8], pos: u64) -> Result<(DataRecord<'_>, usize), String> {
    let start = usize::try_from(pos).map_err(|_| "position beyond address space".to_string())?;
    let header_end = start
        .checked_add(DATA_HEADER_LEN as usize)
        .filter(|&e| e <= file.len())
        .ok_or_else(|| format!("data record header at {pos} runs past the end of the file"))?;
    let h = &file[start..header_end];
    let data_len = u32_at(h, 4) as usize;
    let data_end = header_end
        .checked_add(data_len)
        .filter(|&e| e <= file.len())
        .ok_or_else(|| format!("data record at {pos} claims {data_len} bytes past the end"))?;
    let record = DataRecord {
        oid: Oid(u64_at(h, 8)),
        tid: Tid(u64_at(h, 16)),
        prev: u64_at(h, 24),
        txn_pos: u64_at(h, 32),
        data: &file[header_end..data_end],
    };
    Ok((record, data_end))
}

/// A transaction record that passed every check.
#[derive(Debug)]
pub struct TxnView<'a> {
    /// Where the record starts.
    pub pos: u64,
    /// Its length in bytes, header to trailer.
    pub len: u64,
    /// The transaction's id.
    pub tid: Tid,
    /// The oid allocator's high-water mark when it committed (0: no mark).
    pub next_oid: u64,
    /// Bytes between this record's durable mark and its offset (zero in version 1).
    pub durable_lag: u32,
    /// The committing user, as given.
    pub user: &'a [u8],
    /// The description, as given.
    pub description: &'a [u8],
    /// The encoded extension (key-value metadata).
    pub extension: &'a [u8],
    /// (position, record) of every data record, in record order.
    pub records: Vec<(u64, DataRecord<'a>)>,
}

impl TxnView<'_> {
    /// Where the record ends: the next one starts here.
    pub fn end(&self) -> u64 {
        self.pos + self.len
    }

    /// Every byte of the file before this offset had been made durable before this
    /// record was written (version 1 records claim only their own offset).
    pub fn durable_mark(&self) -> u64 {
        self.pos.saturating_sub(u64::from(self.durable_lag))
    }

    /// The metadata, decoded. Bytes that are not UTF-8 are replaced, not refused:
    /// the CRC already vouched for them.
    pub fn meta(&self) -> TransactionMeta {
        TransactionMeta {
            user: String::from_utf8_lossy(self.user).into_owned(),
            description: String::from_utf8_lossy(self.description).into_owned(),
            extension: decode_extension(self.extension).unwrap_or_default(),
        }
    }
}

fn decode_extension(mut b: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut map = BTreeMap::new();
    while !b.is_empty() {
        if b.len() < 2 {
            return None;
        }
        let klen = u16_at(b, 0) as usize;
        let key = b.get(2..2 + klen)?;
        let rest = &b[2 + klen..];
        if rest.len() < 4 {
            return None;
        }
        let vlen = u32_at(rest, 0) as usize;
        let value = rest.get(4..4 + vlen)?;
        map.insert(String::from_utf8_lossy(key).into_owned(), value.to_vec());
        b = &rest[4 + vlen..];
    }
    Some(map)
}

/// Why a transaction record was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordProblem {
    /// Only zero bytes here: the end of the written data.
    Zeros,
    /// Anything else, with what is wrong.
    Bad(String),
}

impl RecordProblem {
    /// What is wrong, for an error message.
    pub fn describe(self) -> String {
        match self {
            RecordProblem::Zeros => "no transaction record here: only zero bytes".into(),
            RecordProblem::Bad(what) => what,
        }
    }
}

/// Reads the header of the record at `pos`: (length, tid) if its magic and length
/// are plausible and the record fits in `file`. Does not check the CRC.
pub fn peek_transaction(file: &[u8], pos: u64) -> Result<(u64, Tid), RecordProblem> {
    let start = usize::try_from(pos).map_err(|_| RecordProblem::Bad("offset overflow".into()))?;
    let avail = file.len().saturating_sub(start);
    let head =
        &file[start.min(file.len())..start.min(file.len()) + avail.min(TXN_HEADER_LEN as usize)];
    if head.iter().all(|&x| x == 0) {
        return Err(RecordProblem::Zeros);
    }
    if head.len() < TXN_HEADER_LEN as usize {
        return Err(RecordProblem::Bad(format!(
            "transaction header cut short: {} of {TXN_HEADER_LEN} bytes",
            head.len()
        )));
    }
    if head[0..4] != TXN_MAGIC {
        return Err(RecordProblem::Bad(
            "no transaction record starts here (bad magic)".into(),
        ));
    }
    let len = u64_at(head, 8);
    if !(TXN_MIN_LEN..=TXN_BYTES_MAX).contains(&len) {
        return Err(RecordProblem::Bad(format!(
            "implausible transaction length {len}"
        )));
    }
    if len > avail as u64 {
        return Err(RecordProblem::Bad(format!(
            "transaction of {len} bytes cut short: only {avail} bytes follow"
        )));
    }
    Ok((len, Tid(u64_at(head, 16))))
}

/// Decodes and fully checks the transaction record at `pos`.
pub fn transaction_at(file: &[u8], pos: u64) -> Result<TxnView<'_>, RecordProblem> {
    let (len, tid) = peek_transaction(file, pos)?;
    let start = pos as usize;
    let rec = &file[start..start + len as usize];
    let bad = |what: String| Err(RecordProblem::Bad(what));
    let body_end = check_envelope(rec, len, tid).map_err(RecordProblem::Bad)?;
    let next_oid = u64_at(rec, TXN_NEXT_OID_AT);
    let durable_lag = u32_at(rec, TXN_DURABLE_LAG_AT);
    let count = u32_at(rec, 32) as usize;
    let user_len = u16_at(rec, 36) as usize;
    let desc_len = u16_at(rec, 38) as usize;
    let ext_len = u32_at(rec, 40) as usize;
    let meta_end = TXN_HEADER_LEN as usize + user_len + desc_len + ext_len;
    if meta_end > body_end {
        return bad("transaction metadata lengths run past the record".into());
    }
    let user = &rec[TXN_HEADER_LEN as usize..TXN_HEADER_LEN as usize + user_len];
    let description =
        &rec[TXN_HEADER_LEN as usize + user_len..TXN_HEADER_LEN as usize + user_len + desc_len];
    let extension = &rec[meta_end - ext_len..meta_end];
    if decode_extension(extension).is_none() {
        return bad("transaction extension is malformed".into());
    }
    // Each data record takes at least DATA_HEADER_LEN bytes: bound the count first.
    if count > (body_end - meta_end) / DATA_HEADER_LEN as usize {
        return bad(format!(
            "transaction claims {count} objects, more than its bytes can hold"
        ));
    }
    let mut records = Vec::with_capacity(count);
    let mut at = meta_end;
    for _ in 0..count {
        let rpos = pos + at as u64;
        let r = match data_record_at(&rec[..body_end], at as u64) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        check_member(&r, rpos, pos, tid, next_oid).map_err(RecordProblem::Bad)?;
        at += DATA_HEADER_LEN as usize + r.data.len();
        // Re-slice against the whole file so the record borrows `file`.
        let data_start = start + at - r.data.len();
        records.push((
            rpos,
            DataRecord {
                data: &file[data_start..start + at],
                ..r
            },
        ));
    }
    if at != body_end {
        return bad("transaction has bytes after its last data record".into());
    }
    Ok(TxnView {
        pos,
        len,
        tid,
        next_oid,
        durable_lag,
        user,
        description,
        extension,
        records,
    })
}

/// Checks what surrounds a transaction record's body (status, trailer, CRC, tid);
/// returns where the body ends.
#[inline]
fn check_envelope(rec: &[u8], len: u64, tid: Tid) -> Result<usize, String> {
    let status = rec[4];
    if status == STATUS_VOTED {
        return Err("transaction was voted but never finished".into());
    }
    if status != STATUS_COMMITTED {
        return Err(format!("unknown transaction status byte {status:#04x}"));
    }
    let trailer = &rec[rec.len() - TXN_TRAILER_LEN as usize..];
    if trailer[4..8] != TXN_END_MAGIC || u64_at(trailer, 8) != len {
        return Err("transaction trailer does not match its header (torn or damaged)".into());
    }
    let body_end = rec.len() - TXN_TRAILER_LEN as usize;
    if crc32fast::hash(&rec[..body_end]) != u32_at(trailer, 0) {
        return Err("transaction checksum mismatch (damaged bytes)".into());
    }
    if tid == Tid::ZERO {
        return Err("transaction id is zero".into());
    }
    Ok(body_end)
}

/// Checks that the data record `r` at `rpos` belongs to the transaction `tid` at
/// `pos`: its own tid and position, a back-pointer that points backwards, an oid
/// below the transaction's high-water mark.
#[inline]
fn check_member(
    r: &DataRecord<'_>,
    rpos: u64,
    pos: u64,
    tid: Tid,
    next_oid: u64,
) -> Result<(), String> {
    if r.tid != tid || r.txn_pos != pos {
        return Err(format!(
            "data record at {rpos} does not belong to this transaction"
        ));
    }
    if r.prev >= pos && r.prev != 0 {
        return Err(format!(
            "data record at {rpos} points forward to {}",
            r.prev
        ));
    }
    if next_oid != 0 && r.oid.0 >= next_oid {
        return Err(format!(
            "object {} is not below the oid high-water mark {next_oid}",
            r.oid
        ));
    }
    Ok(())
}

/// What the header of a transaction record still tells when the record is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderMarks {
    /// The tid the header claims.
    pub tid: Tid,
    /// The next-oid mark the header claims.
    pub next_oid: u64,
    /// The length it claims (not checked).
    pub len: u64,
}

/// The marks of a transaction header at `pos` whose magic is right, whatever else
/// is wrong with the record (for what a cut tail still tells).
pub fn header_marks(file: &[u8], pos: u64) -> Option<HeaderMarks> {
    let start = usize::try_from(pos).ok()?;
    let head = file.get(start..start.checked_add(TXN_HEADER_LEN as usize)?)?;
    (head[0..4] == TXN_MAGIC).then(|| HeaderMarks {
        tid: Tid(u64_at(head, 16)),
        next_oid: u64_at(head, TXN_NEXT_OID_AT),
        len: u64_at(head, 8),
    })
}

/// Reads the trailer that ends at `end`: the length of the record before it.
pub fn length_before(file: &[u8], end: u64) -> Option<u64> {
    let end = usize::try_from(end).ok()?;
    if end < TXN_TRAILER_LEN as usize || end > file.len() {
        return None;
    }
    let t = &file[end - TXN_TRAILER_LEN as usize..end];
    (t[4..8] == TXN_END_MAGIC).then(|| u64_at(t, 8))
}

#[cfg(test)]
mod tests;
