//! Cron expressions, read by the `croner` crate and evaluated in UTC.
//!
//! An expression has five fields (minute hour day-of-month month day-of-week,
//! ticking at second 0) or six (a seconds field first), or is one of the
//! nicknames `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; croner's
//! extensions (`L`, `W`, `#`, names of months and days) are accepted.
//!
//! Invariants:
//! - Times are UTC, to the second: a tick is a whole second, and
//!   [`CronExpr::next_after`] returns the first tick strictly after its argument.
//! - [`UtcSecond`] holds only seconds that `time` can represent as a date (years
//!   -9999 to 9999), so converting it to a civil date never fails; a search that
//!   would leave that range ends with no tick.

use std::cmp::Ordering;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Most bytes of a cron expression.
pub const CRON_EXPRESSION_BYTES_MAX: usize = 255;

/// A parsed cron expression.
#[derive(Clone, Debug)]
pub struct CronExpr {
    cron: Cron,
}

impl CronExpr {
    /// Parses `text` (see the module docs); an error names what is wrong.
    pub fn parse(text: &str) -> Result<CronExpr> {
        if text.len() > CRON_EXPRESSION_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "a cron expression (bytes)",
                len: text.len(),
                max: CRON_EXPRESSION_BYTES_MAX,
            });
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser.parse(text).map_err(|e| Error::BadCron {
            expression: text.to_string(),
            why: e.to_string(),
        })?;
        Ok(CronExpr { cron })
    }

    /// The first tick strictly after `t`, if there is one before the year 10000.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let second = i64::try_from(t.as_micros() / 1_000_000).ok()?;
        let start = UtcSecond::new(second)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let micros = u64::try_from(next.0).ok()?.checked_mul(1_000_000)?;
        Some(Timestamp::from_micros(micros))
    }
}

/// A UTC second since the Unix epoch that `time` can represent as a date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UtcSecond(i64);

impl UtcSecond {
    fn new(second: i64) -> Option<UtcSecond> {
        OffsetDateTime::from_unix_timestamp(second).ok()?;
        Some(UtcSecond(second))
    }

    fn date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.0).expect("a UtcSecond is in range")
    }
}

impl CronDateTime for UtcSecond {
    fn to_civil(&self) -> CivilDateTime {
        let t = self.date_time();
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(t.year(), u8::from(t.month()).into(), t.day().into()),
            CivilTime::from_parts_unchecked(t.hour().into(), t.minute().into(), t.second().into()),
        )
    }

    fn civil_weekday(&self) -> Weekday {
        Weekday::from_days_from_sunday(self.date_time().weekday().number_days_from_sunday().into())
    }

    fn resolve_civil(
        &self,
        civil: CivilDateTime,
    ) -> std::result::Result<Resolution<Self>, CronError> {
        let month = u8::try_from(civil.month())
            .ok()
            .and_then(|m| Month::try_from(m).ok())
            .ok_or(CronError::InvalidDate)?;
        let day = u8::try_from(civil.day()).map_err(|_| CronError::InvalidDate)?;
        let date = Date::from_calendar_date(civil.year(), month, day)
            .map_err(|_| CronError::InvalidDate)?;
        let hms = |v: u32| u8::try_from(v).map_err(|_| CronError::InvalidTime);
        let time = Time::from_hms(
            hms(civil.hour())?,
            hms(civil.minute())?,
            hms(civil.second())?,
        )
        .map_err(|_| CronError::InvalidTime)?;
        // UTC has no gaps and no repeated hours.
        let second = PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp();
        Ok(Resolution::Single(UtcSecond(second)))
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        UtcSecond::new(self.0.checked_add(seconds)?)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        let t =
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        Timestamp::from_micros(u64::try_from(t.unix_timestamp_nanos() / 1000).unwrap())
    }

    #[test]
    fn five_fields_tick_at_second_zero_and_six_fields_every_second() {
        let every_minute = CronExpr::parse("* * * * *").unwrap();
        assert_eq!(
            every_minute.next_after(at("2026-12-07T21:30:15.5Z")),
            Some(at("2026-12-07T21:31:00Z"))
        );
        let every_second = CronExpr::parse("* * * * * *").unwrap();
        assert_eq!(
            every_second.next_after(at("2026-12-07T21:30:15.5Z")),
            Some(at("2026-12-07T21:30:16Z"))
        );
        // Strictly after: a tick is not its own successor.
        assert_eq!(
            every_second.next_after(at("2026-12-07T21:30:16Z")),
            Some(at("2026-12-07T21:30:17Z"))
        );
    }

    #[test]
    fn calendar_fields_and_nicknames_follow_the_utc_calendar() {
        let weekdays_at_nine = CronExpr::parse("0 9 * * MON-FRI").unwrap();
        // 2026-12-05 is a Saturday: the next weekday is Monday the 7th.
        assert_eq!(
            weekdays_at_nine.next_after(at("2026-12-05T10:00:00Z")),
            Some(at("2026-12-07T09:00:00Z"))
        );
        let last_day = CronExpr::parse("0 0 L * *").unwrap();
        assert_eq!(
            last_day.next_after(at("2028-02-03T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        let daily = CronExpr::parse("@daily").unwrap();
        assert_eq!(
            daily.next_after(at("2026-12-31T23:59:59Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_what_is_wrong() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "*/0 * * * *",
            "hello",
        ] {
            let err = CronExpr::parse(bad).unwrap_err().to_string();
            assert!(err.contains("cron expression"), "{bad:?}: {err}");
        }
        let long = "*".repeat(CRON_EXPRESSION_BYTES_MAX + 1);
        assert!(matches!(
            CronExpr::parse(&long),
            Err(Error::LimitExceeded { .. })
        ));
    }

    #[test]
    fn a_tick_past_the_year_9999_is_none() {
        let yearly = CronExpr::parse("@yearly").unwrap();
        assert_eq!(yearly.next_after(at("9999-06-01T00:00:00Z")), None);
        assert_eq!(yearly.next_after(Timestamp::from_micros(u64::MAX)), None);
    }
}
