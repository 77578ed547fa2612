//! The saved index (`PATH.index`, storage/src/file/index.rs): decoded and checked
//! against a valid data file, as an open does before trusting it. Any bytes: the
//! index is used or ignored with a reason, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    static DATA: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let data = DATA.get_or_init(|| {
        [
            zodiac_fuzz::sample_data_file(4),
            zodiac_fuzz::sample_data_file(1),
        ]
    });
    let (flags, body) = zodiac_fuzz::split(input);
    let mut index = body.to_vec();
    if flags & 1 != 0 {
        zodiac_fuzz::reseal_index(&mut index);
    }
    let data = &data[usize::from(flags >> 1 & 1)];
    if let Ok(objects) = zodiac_storage::fuzzing::load_saved_index(&index, data) {
        // Each entry is a record of at least the data header's length.
        assert!(objects <= data.len() as u64 / zodiac_storage::format::DATA_HEADER_LEN);
    }
});
