//! The options of `zodiac jobs put` beyond the first issue's: how many attempts
//! a failing handler gets and the wait between them, the job's priority, and its
//! unique key.
//!
//! Invariant: every option is checked while the command line is parsed, before
//! the store is opened: a job is put with all of its options or not at all.

use std::time::Duration;

use clap::Args;
use zodiac_async::{AttemptLimit, Backoff, PutOptions, ScheduleSpec, Unique};

use crate::inspect::parse_duration;

/// The largest wait of `--backoff exp:DUR` when it names none.
const EXPONENTIAL_MAX_DEFAULT: Duration = Duration::from_secs(300);

/// The options of a job beyond its handler and arguments, taken by `jobs put`
/// and (for each job it puts) `jobs cron add`.
#[derive(Args, Clone, Debug, Default)]
pub struct PutExtraArgs {
    /// 0 (the highest, the default) to 9: workers claim a queue's due jobs of a
    /// higher priority first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// Runs the handler gets when it fails (its error or panic), 1 to 1000;
    /// each failed attempt is kept in the job's error history.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: Option<u32>,
    /// The wait between attempts: DUR (fixed), or `exp:DUR[:MAX]` (doubling from
    /// DUR up to MAX, default 5m, jittered). Default: exp:1s:5m.
    #[arg(long, value_name = "DUR", value_parser = parse_backoff, requires = "max_attempts")]
    pub backoff: Option<Backoff>,
    /// Put no job while another job of the queue holds KEY (not completed yet,
    /// or put within --unique-for); `jobs put` prints that job's id instead.
    #[arg(long, value_name = "KEY")]
    pub unique: Option<String>,
    /// With --unique: the key stays held this long after the put, even once
    /// the job completed.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "unique")]
    pub unique_for: Option<Duration>,
    /// Count against quota NAME of the queue while held (repeatable; each must
    /// exist: `zodiac jobs quota`).
    #[arg(long, value_name = "NAME")]
    pub quota: Vec<String>,
}

impl PutExtraArgs {
    /// `options` with these.
    pub fn apply(&self, mut options: PutOptions) -> anyhow::Result<PutOptions> {
        if let Some(p) = self.priority {
            options = options.priority(p);
        }
        for name in &self.quota {
            options = options.quota(name.clone());
        }
        if let Some(unique) = self.unique() {
            options = options.unique(unique);
        }
        if let Some(limit) = self.attempt_limit()? {
            options = options.attempt_limit(limit);
        }
        Ok(options)
    }

    /// `spec` with these, for each job the schedule puts.
    pub fn apply_to_schedule(&self, spec: &mut ScheduleSpec) -> anyhow::Result<()> {
        spec.priority = self.priority.unwrap_or(0);
        spec.quota_names = self.quota.clone();
        spec.unique = self.unique();
        spec.attempt_limit = self.attempt_limit()?;
        Ok(())
    }

    fn unique(&self) -> Option<Unique> {
        let mut unique = Unique::new(self.unique.clone()?);
        if let Some(period) = self.unique_for {
            unique = unique.for_period(period);
        }
        Some(unique)
    }

    fn attempt_limit(&self) -> anyhow::Result<Option<AttemptLimit>> {
        let Some(n) = self.max_attempts else {
            return Ok(None);
        };
        Ok(Some(AttemptLimit::new(
            n,
            self.backoff.unwrap_or_default(),
        )?))
    }
}

/// Parses `DUR` (a fixed wait) or `exp:DUR[:MAX]`.
pub fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let Some(rest) = text.strip_prefix("exp:") else {
        return parse_duration(text).map(Backoff::Fixed);
    };
    let (initial, max) = match rest.split_once(':') {
        Some((initial, max)) => (parse_duration(initial)?, parse_duration(max)?),
        None => (parse_duration(rest)?, EXPONENTIAL_MAX_DEFAULT),
    };
    if initial > max {
        return Err(format!(
            "{text:?}: the first wait is longer than the largest (exp:FIRST:MAX)"
        ));
    }
    Ok(Backoff::Exponential { initial, max })
}

/// How `jobs show` names a backoff, as `--backoff` takes it.
pub fn backoff_text(backoff: &Backoff) -> String {
    let text = |d: &Duration| format!("{}ms", d.as_millis());
    match backoff {
        Backoff::Fixed(d) => text(d),
        Backoff::Exponential { initial, max } => format!("exp:{}:{}", text(initial), text(max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_parse_fixed_and_exponential() {
        let s = Duration::from_secs;
        assert_eq!(parse_backoff("30s"), Ok(Backoff::Fixed(s(30))));
        assert_eq!(
            parse_backoff("exp:2s"),
            Ok(Backoff::Exponential {
                initial: s(2),
                max: s(300)
            })
        );
        assert_eq!(
            parse_backoff("exp:100ms:1m"),
            Ok(Backoff::Exponential {
                initial: Duration::from_millis(100),
                max: s(60)
            })
        );
        assert!(parse_backoff("exp:1m:1s").is_err());
        assert!(parse_backoff("soon").is_err());
        assert_eq!(
            backoff_text(&parse_backoff("exp:1s:5m").unwrap()),
            "exp:1000ms:300000ms"
        );
    }
}
