//! The opening scan of a data file. See `zodiac_fuzz::storage::file::recovery_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::storage::file::recovery_scan(flags, body);
});
