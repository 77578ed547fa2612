//! The checks the fuzz targets run, shared with the property tests of the ordinary
//! test suite (`storage/tests/decoders.rs` and `objects/tests/decoders.rs` include
//! these modules by path), so both run the same oracle over the same decoders; and
//! the seed inputs of each target.
//!
//! Each check takes the input's first byte as flags (bit 0: reseal checksums before
//! decoding, or the target's other mode; the other bits are the target's own) and
//! the rest as the bytes to decode. A check returns normally for any input; it
//! panics only when a decoder broke its contract (a panic, a hang, an accepted value
//! that contradicts its bytes), which is what the fuzzer reports.

pub mod objects;
pub mod storage;

/// Splits a fuzz input into its flags byte and the bytes to decode.
pub fn split(input: &[u8]) -> (u8, &[u8]) {
    match input.split_first() {
        Some((&flags, rest)) => (flags, rest),
        None => (0, &[]),
    }
}
