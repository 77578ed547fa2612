//! The protocol's frames and messages. See `zodiac_fuzz::storage::net::protocol_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::storage::net::protocol_messages(flags, body);
});
