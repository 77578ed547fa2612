//! The data file's decoders: the record decoders of `zodiac_storage::format`, the
//! opening scan (storage/src/file/recovery.rs) and the saved index
//! (storage/src/file/index.rs), each with its seeds.

use std::sync::OnceLock;

use zodiac_storage::format;
use zodiac_storage::fuzzing;

use super::encodings::{reseal_data_file, reseal_index, sample_data_file};

/// The record decoders on the bytes (resealed when `flags` bit 0): the file header,
/// a transaction record at the data start, at every offset where a record's magic
/// is and a few others, a data record, the header marks of a bad record and the
/// trailer read backwards. What is accepted is consistent with the bytes.
pub fn data_record(flags: u8, body: &[u8]) {
    let mut file = body.to_vec();
    if flags & 1 != 0 {
        reseal_data_file(&mut file);
    }
    let _ = format::FileHeader::decode(&file);
    let mut positions = vec![0, 48, u64::from(flags >> 1), file.len() as u64, u64::MAX];
    positions.extend(
        file.windows(4)
            .enumerate()
            .filter(|(_, w)| *w == format::TXN_MAGIC)
            .map(|(i, _)| i as u64)
            .take(16),
    );
    for pos in positions {
        check_transaction_at(&file, pos);
        if let Ok(r) = format::data_record_at(&file, pos) {
            assert!(pos + format::DATA_HEADER_LEN + r.data.len() as u64 <= file.len() as u64);
        }
        let _ = format::data_header_at(&file, pos);
        if let Err(problem) = format::peek_transaction(&file, pos) {
            assert!(!problem.describe().is_empty());
        }
        let _ = format::header_marks(&file, pos);
        let _ = format::length_before(&file, pos);
    }
}

/// A transaction accepted at `pos` lies inside the file, its trailer names its
/// length, and each of its data records decodes on its own at the position it
/// names, to the same data.
fn check_transaction_at(file: &[u8], pos: u64) {
    let Ok(t) = format::transaction_at(file, pos) else {
        return;
    };
    assert!(t.end() <= file.len() as u64);
    assert_eq!(format::length_before(file, t.end()), Some(t.len));
    let _ = t.meta();
    for (rpos, r) in &t.records {
        let again = format::data_record_at(file, *rpos).expect("a member record decodes alone");
        assert_eq!((again.oid, again.tid, again.data), (r.oid, r.tid, r.data));
        assert_eq!(r.txn_pos, pos);
    }
}

/// The opening scan of the bytes as a whole data file (resealed when `flags` bit 0):
/// a summary or a refusal naming what is wrong. The scan ends inside the file, and
/// a tail to cut starts where the valid records end.
pub fn recovery_scan(flags: u8, body: &[u8]) {
    let mut file = body.to_vec();
    if flags & 1 != 0 {
        reseal_data_file(&mut file);
    }
    match fuzzing::scan_data_file(&file) {
        Ok(summary) => {
            assert!(summary.end <= file.len() as u64);
            assert!(summary.next_oid >= 1);
            if let Some(tail) = summary.tail_at {
                assert_eq!(tail, summary.end);
            }
        }
        Err(what) => assert!(!what.is_empty()),
    }
}

/// The data files a saved index is checked against: four transactions, and one.
fn index_data_files() -> &'static [Vec<u8>; 2] {
    static DATA: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    DATA.get_or_init(|| [sample_data_file(4), sample_data_file(1)])
}

/// The bytes as the saved index (its CRC resealed when `flags` bit 0) of one of two
/// valid data files (`flags` bit 1), decoded and checked as an open does before
/// trusting it: used, or ignored with a reason.
pub fn saved_index(flags: u8, body: &[u8]) {
    let mut index = body.to_vec();
    if flags & 1 != 0 {
        reseal_index(&mut index);
    }
    let data = &index_data_files()[usize::from(flags >> 1 & 1)];
    match fuzzing::load_saved_index(&index, data) {
        // Each entry is a record of at least the data header's length.
        Ok(objects) => assert!(objects <= data.len() as u64 / format::DATA_HEADER_LEN),
        Err(why) => assert!(!why.is_empty()),
    }
}

/// Seeds of `data_record` and `recovery_scan`: a valid file, one with zeros after
/// it, one torn, one damaged in the middle; each as it is and resealed.
pub fn data_file_seeds() -> Vec<Vec<u8>> {
    let valid = sample_data_file(3);
    let mut zeros = valid.clone();
    zeros.resize(valid.len() + 256, 0);
    let torn = valid[..valid.len() - 30].to_vec();
    let mut damaged = valid.clone();
    damaged[150] ^= 0x10;
    [valid, zeros, torn, damaged]
        .iter()
        .flat_map(|f| [with_flags(0, f), with_flags(1, f)])
        .collect()
}

/// Seeds of `saved_index`: the valid index of each of its data files.
pub fn saved_index_seeds() -> Vec<Vec<u8>> {
    let [four, one] = index_data_files();
    [(0, four), (2, one)]
        .iter()
        .map(|(flags, data)| {
            let index = fuzzing::saved_index_of(data).expect("a valid data file");
            with_flags(*flags, &index)
        })
        .collect()
}

/// `body` after the flags byte.
pub fn with_flags(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(body);
    v
}
