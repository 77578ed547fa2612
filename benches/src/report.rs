//! Results: one [`Measurement`] per workload run, the median across repetitions, and
//! the two output forms (one JSON line per workload, or a readable table).
//!
//! The JSON line is the peers' format:
//! `{"peer":"zodiac","workload":"w1","seconds":..,"ops":..,"rate":..,"unit":"..", extras}`
//! with `rate = ops / seconds` and extras in the order they were added. Across
//! repetitions `seconds` is the median, `rate` is `ops` over that median, and `min` and
//! `max` are the extreme rates; other numeric extras are medians, except the peaks
//! (`peak_rss_bytes`), which are maxima.

use std::fmt::Write as _;

use crate::stats::median;

/// The peer name of every line this harness prints.
pub const PEER: &str = "zodiac";

/// The value of one extra field.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    /// A float printed with this many decimals.
    Float(f64, usize),
    Str(String),
}

impl Value {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(n) => Some(*n as f64),
            Value::Float(x, _) => Some(*x),
            Value::Str(_) => None,
        }
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Int(n) => write!(out, "{n}").expect("write to String"),
            Value::Float(x, decimals) => write_json_f64(out, *x, *decimals),
            Value::Str(s) => write_json_str(out, s),
        }
    }

    fn write_plain(&self, out: &mut String) {
        match self {
            Value::Int(n) => write!(out, "{n}").expect("write to String"),
            Value::Float(x, decimals) => write!(out, "{x:.decimals$}").expect("write to String"),
            Value::Str(s) => out.push_str(s),
        }
    }
}

/// One run of one workload.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub workload: String,
    pub seconds: f64,
    pub ops: u64,
    pub unit: &'static str,
    pub extras: Vec<(&'static str, Value)>,
}

impl Measurement {
    pub fn new(workload: &str, seconds: f64, ops: u64, unit: &'static str) -> Self {
        Measurement {
            workload: workload.to_string(),
            seconds,
            ops,
            unit,
            extras: Vec::new(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    /// Adds (or replaces) an extra field.
    pub fn set(&mut self, key: &'static str, value: Value) -> &mut Self {
        match self.extras.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.extras.push((key, value)),
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.extras.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The JSON line, without a trailing newline.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("{\"peer\":");
        write_json_str(&mut out, PEER);
        out.push_str(",\"workload\":");
        write_json_str(&mut out, &self.workload);
        out.push_str(",\"seconds\":");
        write_json_f64(&mut out, self.seconds, 9);
        write!(out, ",\"ops\":{}", self.ops).expect("write to String");
        out.push_str(",\"rate\":");
        write_json_f64(&mut out, self.rate(), 3);
        out.push_str(",\"unit\":");
        write_json_str(&mut out, self.unit);
        for (key, value) in &self.extras {
            out.push(',');
            write_json_str(&mut out, key);
            out.push(':');
            value.write_json(&mut out);
        }
        out.push('}');
        out
    }
}

/// Extras that are peaks: across repetitions the maximum is reported, not the median.
const PEAK_KEYS: &[&str] = &["peak_rss_bytes"];

/// Folds the runs of one workload into one measurement (see the module doc).
///
/// Panics when `runs` is empty or the runs are of different workloads.
pub fn summarize(runs: &[Measurement]) -> Measurement {
    let first = runs.first().expect("at least one run to summarize");
    assert!(
        runs.iter()
            .all(|r| r.workload == first.workload && r.ops == first.ops)
    );
    let seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let rates: Vec<f64> = runs.iter().map(Measurement::rate).collect();
    let mut out = Measurement::new(
        &first.workload,
        median(&seconds).expect("non-empty"),
        first.ops,
        first.unit,
    );
    for (key, value) in &first.extras {
        let numbers: Option<Vec<f64>> = runs
            .iter()
            .map(|r| r.get(key).and_then(Value::as_f64))
            .collect();
        let folded = match (value, numbers) {
            (Value::Str(_), _) | (_, None) => value.clone(),
            (_, Some(xs)) if PEAK_KEYS.contains(key) => {
                let peak = xs.iter().copied().fold(f64::MIN, f64::max);
                same_kind(value, peak)
            }
            (_, Some(xs)) => same_kind(value, median(&xs).expect("non-empty")),
        };
        out.set(key, folded);
    }
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    out.set("reps", Value::Int(runs.len() as u64));
    out.set("min", Value::Float(min, 3));
    out.set("max", Value::Float(max, 3));
    out
}

/// `x` as a value of the same kind as `like` (integers stay integers).
fn same_kind(like: &Value, x: f64) -> Value {
    match like {
        Value::Int(_) => Value::Int(x.round() as u64),
        Value::Float(_, decimals) => Value::Float(x, *decimals),
        Value::Str(s) => Value::Str(s.clone()),
    }
}

/// The table header for [`table_row`].
pub fn table_header() -> String {
    format!(
        "{:<15} {:>14} {:<10} {:>12} {:>8}  extras\n{}",
        "workload",
        "rate",
        "unit",
        "seconds",
        "ops",
        "-".repeat(73)
    )
}

/// One readable line for a measurement.
pub fn table_row(m: &Measurement) -> String {
    let mut out = format!(
        "{:<15} {:>14} {:<10} {:>12.9} {:>8} ",
        m.workload,
        group_thousands(m.rate()),
        m.unit,
        m.seconds,
        m.ops
    );
    for (key, value) in &m.extras {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        value.write_plain(&mut out);
    }
    out
}

/// `x` with a comma between thousands, or with two decimals below 100.
fn group_thousands(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x.abs() < 100.0 {
        return format!("{x:.2}");
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if x < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A JSON number; JSON has no NaN or infinity, so those become `null`.
fn write_json_f64(out: &mut String, x: f64, decimals: usize) {
    if x.is_finite() {
        write!(out, "{x:.decimals$}").expect("write to String");
    } else {
        out.push_str("null");
    }
}

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                write!(out, "\\u{:04x}", u32::from(c)).expect("write to String")
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seconds: f64, p50: f64, rss: u64) -> Measurement {
        let mut m = Measurement::new("w1", seconds, 10_000, "commits/s");
        m.set("writers", Value::Int(1));
        m.set("p50_us", Value::Float(p50, 1));
        m.set("peak_rss_bytes", Value::Int(rss));
        m.set("store", Value::Str("memory".into()));
        m
    }

    #[test]
    fn json_line_has_the_peers_fields_in_order() {
        let line = run(2.0, 150.25, 1000).to_json();
        assert_eq!(
            line,
            "{\"peer\":\"zodiac\",\"workload\":\"w1\",\"seconds\":2.000000000,\"ops\":10000,\
             \"rate\":5000.000,\"unit\":\"commits/s\",\"writers\":1,\"p50_us\":150.2,\
             \"peak_rss_bytes\":1000,\"store\":\"memory\"}"
        );
    }

    #[test]
    fn summary_takes_medians_peaks_and_the_rate_spread() {
        let runs = [
            run(4.0, 300.0, 10),
            run(1.0, 100.0, 30),
            run(2.0, 200.0, 20),
        ];
        let s = summarize(&runs);
        assert_eq!(s.seconds, 2.0);
        assert_eq!(s.rate(), 5_000.0);
        assert_eq!(s.get("p50_us"), Some(&Value::Float(200.0, 1)));
        assert_eq!(s.get("peak_rss_bytes"), Some(&Value::Int(30)));
        assert_eq!(s.get("writers"), Some(&Value::Int(1)));
        assert_eq!(s.get("reps"), Some(&Value::Int(3)));
        assert_eq!(s.get("min"), Some(&Value::Float(2_500.0, 3)));
        assert_eq!(s.get("max"), Some(&Value::Float(10_000.0, 3)));
    }

    #[test]
    fn strings_are_escaped_and_non_finite_numbers_are_null() {
        let mut m = Measurement::new("w\"7", 0.0, 1, "opens/s");
        m.set("note", Value::Str("a\\b\n".into()));
        let line = m.to_json();
        assert!(line.contains("\"workload\":\"w\\\"7\""), "{line}");
        assert!(line.contains("\"rate\":null"), "{line}");
        assert!(line.contains("\"note\":\"a\\\\b\\n\""), "{line}");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(1_234_567.4), "1,234,567");
        assert_eq!(group_thousands(999.0), "999");
        assert_eq!(group_thousands(12.345), "12.35");
    }
}
