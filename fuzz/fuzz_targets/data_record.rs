//! The data file's record decoders (`zodiac_storage::format`): the file header, a
//! transaction record at any offset, a data record, the header marks of a bad record
//! and the trailer read backwards. Any bytes: `Ok` or `Err`, never a panic; what is
//! accepted is consistent with the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zodiac_storage::format;

fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    let mut file = body.to_vec();
    if flags & 1 != 0 {
        zodiac_fuzz::reseal_data_file(&mut file);
    }
    let _ = format::FileHeader::decode(&file);
    // The data start, every offset where a record's magic is, and a few others.
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
        let _ = format::peek_transaction(&file, pos);
        let _ = format::header_marks(&file, pos);
        let _ = format::length_before(&file, pos);
    }
});

/// A transaction accepted at `pos` lies inside the file, and each of its data
/// records decodes on its own at the position it names, to the same data.
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
