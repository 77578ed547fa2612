//! Property tests over bytes for the objects layer's decoders: the `object_record`
//! fuzz target's own check (`fuzz/src/objects.rs`, included by path, so the fuzzer
//! and this suite run one oracle) on seeded random inputs: arbitrary bytes, and the
//! records of a real database mutated (bytes flipped, overwritten, inserted, cut).
//! Every record decodes to a value that encodes back to itself or is refused with a
//! message naming what is wrong, never a panic; three records merge to a valid
//! record or to none.

#[path = "../../fuzz/src/objects.rs"]
mod checks;

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use zodiac_objects::record::{self, RecordError};

/// The seed of every run: the same cases on every machine, every time.
const SEED: [u8; 32] = *b"zodiac object records, bytes, #1";

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}

/// One of `seeds` (a flags byte, then the body) with up to eight edits to its body.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = (u8, Vec<u8>)> {
    let edits = proptest::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 0..8);
    (0..seeds.len(), edits).prop_map(move |(i, edits)| {
        let (flags, body) = seeds[i].split_first().expect("a flags byte");
        let mut body = body.to_vec();
        for (kind, at, value) in edits {
            let at = at % (body.len() + 1);
            match kind {
                0 if at < body.len() => body[at] ^= value | 1,
                1 if at < body.len() => body[at] = value,
                2 => body.insert(at, value),
                _ => body.truncate(at),
            }
        }
        (*flags, body)
    })
}

fn check((flags, body): (u8, Vec<u8>)) -> Result<(), TestCaseError> {
    checks::object_record(flags, &body);
    Ok(())
}

#[test]
fn records_take_any_bytes() {
    let arbitrary = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..256));
    run(512, arbitrary, check);
}

#[test]
fn mutated_records_decode_or_are_refused() {
    run(1024, mutated(checks::object_seeds()), check);
}

/// The checks are not vacuous: the seeds are the records of a real database, every
/// one a valid envelope of a type the check decodes; a cut one is refused by name.
#[test]
fn the_seeds_are_valid_records_and_a_cut_one_is_refused() {
    let seeds = checks::object_seeds();
    let names: Vec<&str> = seeds
        .iter()
        .filter(|s| s[0] == 0)
        .map(|s| record::type_name(&s[1..]).expect("a valid envelope"))
        .collect();
    for name in [
        "zodiac.Root",
        "zodiac.Counter",
        "fuzz.Account",
        "zodiac.BTreeBucket",
    ] {
        assert!(names.contains(&name), "no {name} among {names:?}");
    }
    let account = seeds
        .iter()
        .find(|s| record::type_name(&s[1..]) == Ok("fuzz.Account"))
        .expect("an account");
    let cut = &account[1..8];
    assert!(matches!(
        record::decode(cut),
        Err(RecordError::Truncated {
            what: "type name",
            ..
        })
    ));
}
