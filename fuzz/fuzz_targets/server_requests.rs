//! The server's handling of what a client sends, over TCP. See `zodiac_fuzz::storage::peers::server_requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    zodiac_fuzz::storage::peers::server_requests(flags, body);
});
