//! The peers' deterministic inputs: the SplitMix64 generator and the 100-byte object
//! values.
//!
//! Both must stay bit-for-bit equal to the peer harnesses (`rustpeers` and
//! `bench_zodb.py`): the same seed must pick the same object indices, otherwise the
//! figures do not compare. The tests pin the first outputs for the seeds in use.

/// Length of every object value, in bytes.
pub const VALUE_BYTES: usize = 100;

/// Seed of the W3 read indices.
pub const W3_SEED: u64 = 42;
/// Seed of the W4 update indices.
pub const W4_SEED: u64 = 7;

/// SplitMix64 (Steele, Lea and Flood), as the peers define it.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`, by modulo as the peers do (its slight bias is part of the
    /// definition).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value");
        self.next_u64() % n
    }
}

/// The value of object `index` at revision `rev`: the index and the revision as
/// little-endian u64s, then `x` up to 100 bytes.
pub fn val(index: u64, rev: u64) -> Vec<u8> {
    let mut v = vec![b'x'; VALUE_BYTES];
    v[..8].copy_from_slice(&index.to_le_bytes());
    v[8..16].copy_from_slice(&rev.to_le_bytes());
    v
}

/// The object index a value written by [`val`] carries.
pub fn index_of(value: &[u8]) -> Option<u64> {
    let head: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values come from the Python generator of bench_zodb.py, an
    // implementation independent of this one.
    #[test]
    fn first_outputs_match_the_peers_generator() {
        let mut zero = SplitMix64::new(0);
        assert_eq!(zero.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(zero.next_u64(), 0x6e78_9e6a_a1b9_65f4);

        let mut w3 = SplitMix64::new(W3_SEED);
        assert_eq!(w3.next_u64(), 0xbdd7_3226_2feb_6e95);
        assert_eq!(w3.next_u64(), 0x28ef_e333_b266_f103);
        assert_eq!(w3.next_u64(), 0x4752_6757_130f_9f52);

        let mut w4 = SplitMix64::new(W4_SEED);
        assert_eq!(w4.next_u64(), 0x63cb_e1e4_5932_0dd7);
        assert_eq!(w4.next_u64(), 0x044c_3cd7_f43c_661c);
    }

    #[test]
    fn below_picks_the_peers_indices() {
        let mut w3 = SplitMix64::new(W3_SEED);
        let picks: Vec<u64> = (0..5).map(|_| w3.below(100_000)).collect();
        assert_eq!(picks, [75_413, 92_291, 63_858, 55_764, 63_250]);

        let mut w4 = SplitMix64::new(W4_SEED);
        let picks: Vec<u64> = (0..5).map(|_| w4.below(1_000)).collect();
        assert_eq!(picks, [487, 804, 346, 203, 674]);
    }

    #[test]
    fn w3_indices_have_the_published_distinct_count() {
        let mut rng = SplitMix64::new(W3_SEED);
        let mut seen = vec![false; 100_000];
        for _ in 0..100_000 {
            seen[rng.below(100_000) as usize] = true;
        }
        assert_eq!(seen.iter().filter(|s| **s).count(), 63_168);
    }

    #[test]
    fn values_are_100_bytes_and_carry_index_and_revision() {
        let v = val(0x0102, 7);
        assert_eq!(v.len(), VALUE_BYTES);
        assert_eq!(index_of(&v), Some(0x0102));
        assert_eq!(&v[8..16], &7u64.to_le_bytes());
        assert!(v[16..].iter().all(|b| *b == b'x'));
    }
}
