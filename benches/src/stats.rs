//! Order statistics: latency percentiles and the median across repetitions.
//!
//! Percentiles use the peers' rule (index `n * p / 100` of the sorted samples, so
//! p50 is `sorted[n / 2]`), so latency figures compare. The median across
//! repetitions is the usual one: the middle value, or the mean of the two middle
//! values for an even count.

/// Latency samples in microseconds, recorded one per operation.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<f64>,
}

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies {
            micros: Vec::with_capacity(n),
        }
    }

    pub fn record(&mut self, elapsed: std::time::Duration) {
        self.micros.push(elapsed.as_secs_f64() * 1e6);
    }

    /// Adds another set of samples (another writer thread's).
    pub fn extend(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// p50 and p99 in microseconds; `None` without samples.
    pub fn p50_p99(&self) -> Option<(f64, f64)> {
        let mut sorted = self.micros.clone();
        sorted.sort_by(f64::total_cmp);
        Some((percentile(&sorted, 50)?, percentile(&sorted, 99)?))
    }
}

/// The `p`-th percentile of ascending `sorted` by the peers' rule.
pub fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    debug_assert!(p <= 100);
    debug_assert!(sorted.is_sorted_by(|a, b| a <= b));
    if sorted.is_empty() {
        return None;
    }
    let at = (sorted.len() * p / 100).min(sorted.len() - 1);
    Some(sorted[at])
}

/// The median of `values` (in any order); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[4.0]), Some(4.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn percentiles_follow_the_peers_index_rule() {
        let sorted: Vec<f64> = (0..200).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50), Some(100.0));
        assert_eq!(percentile(&sorted, 99), Some(198.0));
        assert_eq!(percentile(&sorted, 100), Some(199.0));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn latencies_sort_before_taking_percentiles() {
        let mut lat = Latencies::with_capacity(3);
        for us in [30, 10, 20] {
            lat.record(Duration::from_micros(us));
        }
        let (p50, p99) = lat.p50_p99().expect("samples");
        assert!((p50 - 20.0).abs() < 1e-9);
        assert!((p99 - 30.0).abs() < 1e-9);
    }
}
