//! The data file's record decoders. See `zodiac_fuzz::storage::file::data_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::storage::file::data_record(flags, body);
});
