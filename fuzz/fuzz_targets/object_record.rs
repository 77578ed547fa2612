//! The object record envelope, the payload decoder and merges. See `zodiac_fuzz::objects::object_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::objects::object_record(flags, body);
});
