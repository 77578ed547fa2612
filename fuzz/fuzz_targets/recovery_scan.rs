//! The opening scan of a data file (storage/src/file/recovery.rs) with the header
//! decode before it: walks the records, judges a bad tail or damage in the middle,
//! and builds the index. Any bytes: a summary or a refusal, never a panic; every
//! index entry the scan made reads back as a record of its object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    let mut file = body.to_vec();
    if flags & 1 != 0 {
        zodiac_fuzz::reseal_data_file(&mut file);
    }
    if let Ok(summary) = zodiac_storage::fuzzing::scan_data_file(&file) {
        assert!(summary.end <= file.len() as u64);
        assert!(summary.next_oid >= 1);
        if let Some(tail) = summary.tail_at {
            assert_eq!(tail, summary.end);
        }
    }
});
