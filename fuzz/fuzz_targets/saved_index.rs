//! The saved index, checked against its data file. See `zodiac_fuzz::storage::file::saved_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::storage::file::saved_index(flags, body);
});
