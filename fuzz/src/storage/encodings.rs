//! Sample data files to seed the checks with, and the resealing that recomputes the
//! checksums of mutated bytes so that a fuzzer reaches the checks behind a record's
//! CRC (lengths, back-pointers, tids, counts) instead of stopping at the checksum
//! every random mutation breaks.

use zodiac_storage::format::{
    self, DATA_HEADER_LEN, DataToWrite, FILE_HEADER_LEN, FileHeader, TXN_HEADER_LEN, TXN_MAGIC,
    TXN_MIN_LEN, TXN_TRAILER_LEN,
};
use zodiac_storage::{Oid, Tid, TransactionMeta};

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header CRC and, walking the transaction records by their own
/// lengths from the data start, every data record's and transaction's CRC. Stops at
/// the first place no plausible record starts. Never panics.
pub fn reseal_data_file(file: &mut [u8]) {
    if file.len() < FILE_HEADER_LEN as usize {
        return;
    }
    let crc = crc32fast::hash(&file[..44]);
    put_u32(file, 44, crc);
    let Some(start) = u64_at(file, 24) else {
        return;
    };
    let mut pos = usize::try_from(start).unwrap_or(usize::MAX);
    while let Some(len) = plausible_record(file, pos) {
        reseal_record(&mut file[pos..pos + len]);
        pos += len;
    }
}

/// The length of the transaction record at `pos` when its magic is right and its
/// length fits the file.
fn plausible_record(file: &[u8], pos: usize) -> Option<usize> {
    let head = file.get(pos..pos.checked_add(TXN_HEADER_LEN as usize)?)?;
    if head[0..4] != TXN_MAGIC {
        return None;
    }
    let len = usize::try_from(u64_at(head, 8)?).ok()?;
    (len >= TXN_MIN_LEN as usize && pos.checked_add(len)? <= file.len()).then_some(len)
}

/// Reseals one transaction record (its bytes exactly).
fn reseal_record(rec: &mut [u8]) {
    let body_end = rec.len() - TXN_TRAILER_LEN as usize;
    let meta = (|| {
        let user = usize::from(u16::from_le_bytes(rec.get(36..38)?.try_into().ok()?));
        let desc = usize::from(u16::from_le_bytes(rec.get(38..40)?.try_into().ok()?));
        let ext = usize::try_from(u32_at(rec, 40)?).ok()?;
        Some(TXN_HEADER_LEN as usize + user + desc + ext)
    })();
    let mut at = meta.unwrap_or(body_end);
    while at + DATA_HEADER_LEN as usize <= body_end {
        let Some(data_len) = u32_at(rec, at + 4).and_then(|l| usize::try_from(l).ok()) else {
            break;
        };
        let end = at + DATA_HEADER_LEN as usize + data_len;
        if end > body_end {
            break;
        }
        let crc = crc32fast::hash(&rec[at + 4..end]);
        put_u32(rec, at, crc);
        at = end;
    }
    let crc = crc32fast::hash(&rec[..body_end]);
    put_u32(rec, body_end, crc);
}

/// Recomputes a saved index's trailing CRC.
pub fn reseal_index(index: &mut [u8]) {
    if let Some(body_len) = index.len().checked_sub(4) {
        let crc = crc32fast::hash(&index[..body_len]);
        put_u32(index, body_len, crc);
    }
}

/// A valid data file: the header and `transactions` transactions of two objects
/// each, the later revisions pointing back at the earlier ones.
pub fn sample_data_file(transactions: u64) -> Vec<u8> {
    let header = FileHeader {
        version: format::FORMAT_VERSION,
        file_id: 0x5eed,
        data_start: FILE_HEADER_LEN,
    };
    let mut file = header.encode().to_vec();
    let mut prev = [0u64; 2];
    for i in 0..transactions {
        let mut meta = TransactionMeta::described(format!("transaction {i}"));
        meta.user = "fuzz".into();
        meta.extension.insert("k".into(), vec![i as u8; 3]);
        let data: Vec<Vec<u8>> = (0..2).map(|o| vec![(i * 2 + o) as u8; 20]).collect();
        let objects: Vec<DataToWrite<'_>> = (0..2)
            .map(|o| DataToWrite {
                oid: Oid(o as u64 + 1),
                prev: prev[o],
                data: &data[o],
            })
            .collect();
        let pos = file.len() as u64;
        let (bytes, positions) = format::encode_transaction(pos, Tid(10 + i), 3, &meta, &objects);
        prev = [positions[0], positions[1]];
        file.extend_from_slice(&bytes);
    }
    file
}
