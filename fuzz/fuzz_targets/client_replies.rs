//! The client's handling of what a server sends, over TCP. See `zodiac_fuzz::storage::peers::client_replies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::storage::peers::client_replies(flags, body);
});
