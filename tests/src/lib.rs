//! Helpers shared by the multi-process tests: opening a data file as a `Storage`,
//! the record format of the `crash_writer` helper binary, and a seeded RNG.

use std::path::Path;

use zodiac_storage::{FileOptions, FileStorage, Oid, Result, Storage, Tid};

/// Opens a data file as a `dyn Storage`.
pub fn open_file(path: &Path, options: FileOptions) -> Result<Box<dyn Storage>> {
    Ok(Box::new(FileStorage::open(path, options)?))
}

/// Objects each `crash_writer` transaction writes: two new objects and the root.
pub const OBJECTS_PER_TRANSACTION: usize = 3;

/// The user name `crash_writer` commits as.
pub const CRASH_WRITER_USER: &str = "crash_writer";

/// The exact bytes `crash_writer` stores for `oid` in the transaction with sequence
/// number `seq`, run in round `round`: a readable header line, then a filler whose
/// length (0..4095 bytes) and content depend on all three, so a checker can recompute
/// every byte and a torn or misplaced record cannot pass.
pub fn crash_record(round: u64, seq: u64, oid: Oid) -> Vec<u8> {
    let mut data = format!("round={round} seq={seq} oid={}\n", oid.0).into_bytes();
    let mut rng = SplitMix64::new(round ^ (seq << 20) ^ (oid.0 << 42));
    let filler = (rng.next_u64() % 4096) as usize;
    data.extend((0..filler).map(|_| rng.next_u64() as u8));
    data
}

/// Reads back `(round, seq, oid)` from a `crash_record`, checking every byte.
pub fn parse_crash_record(data: &[u8]) -> Option<(u64, u64, Oid)> {
    let line_end = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&data[..line_end]).ok()?;
    let mut fields = line.split(' ');
    let mut field = |name: &str| -> Option<u64> {
        fields
            .next()?
            .strip_prefix(name)?
            .strip_prefix('=')?
            .parse()
            .ok()
    };
    let (round, seq, oid) = (field("round")?, field("seq")?, Oid(field("oid")?));
    (crash_record(round, seq, oid) == data).then_some((round, seq, oid))
}

/// The description of `crash_writer`'s transaction number `seq`.
pub fn crash_description(seq: u64) -> String {
    format!("seq {seq}")
}

/// One line `crash_writer` prints after `finish` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub tid: Tid,
    pub seq: u64,
    pub oids: [Oid; OBJECTS_PER_TRANSACTION],
}

impl Ack {
    pub fn to_line(&self) -> String {
        let [a, b, c] = self.oids;
        format!("ack {} {} {} {} {}", self.tid.0, self.seq, a.0, b.0, c.0)
    }

    pub fn parse(line: &str) -> Option<Ack> {
        let mut words = line.strip_prefix("ack ")?.split(' ');
        let mut number = || -> Option<u64> { words.next()?.parse().ok() };
        let ack = Ack {
            tid: Tid(number()?),
            seq: number()?,
            oids: [Oid(number()?), Oid(number()?), Oid(number()?)],
        };
        words.next().is_none().then_some(ack)
    }
}

/// A small seeded generator (SplitMix64), so a failing run can be repeated.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn in_range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves no process behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_records_round_trip_and_reject_changes() {
        let data = crash_record(3, 17, Oid(42));
        assert_eq!(parse_crash_record(&data), Some((3, 17, Oid(42))));
        let mut torn = data.clone();
        torn.pop();
        assert_eq!(parse_crash_record(&torn), None);
        let mut flipped = data;
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(parse_crash_record(&flipped), None);
        assert_eq!(parse_crash_record(b"round=1 seq=2\n"), None);
    }

    #[test]
    fn ack_lines_round_trip() {
        let ack = Ack {
            tid: Tid(1_764_000_000_000_001),
            seq: 9,
            oids: [Oid(5), Oid(6), Oid(0)],
        };
        assert_eq!(ack.to_line(), "ack 1764000000000001 9 5 6 0");
        assert_eq!(Ack::parse(&ack.to_line()), Some(ack));
        assert_eq!(Ack::parse("ack 1 2 3 4"), None);
        assert_eq!(Ack::parse("ack 1 2 3 4 5 6"), None);
    }

    #[test]
    fn splitmix_is_reproducible_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            let x = a.in_range(20, 150);
            assert_eq!(x, b.in_range(20, 150));
            assert!((20..=150).contains(&x));
        }
    }
}
