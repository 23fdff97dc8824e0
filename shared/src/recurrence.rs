//! The subset of RFC 5545 recurrence rules that Taskmesh supports: FREQ (DAILY, WEEKLY,
//! MONTHLY, YEARLY), INTERVAL, BYDAY, BYMONTHDAY, COUNT and UNTIL.
//!
//! Parsing rejects everything else with a message that says what is unsupported, so a
//! rule that is stored is a rule the recurring service can compute.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A BYDAY entry: a weekday, optionally the n-th of the month or year (`-1FR`, `2MO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByDay {
    pub ordinal: Option<i8>,
    pub weekday: Weekday,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Count(u32),
    Until(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceRule {
    pub freq: Frequency,
    pub interval: u32,
    pub by_day: Vec<ByDay>,
    pub by_month_day: Vec<i8>,
    pub end: Option<End>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecurrenceError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, RecurrenceError> {
    Err(RecurrenceError(msg.into()))
}

const MAX_INTERVAL: u32 = 1000;
const MAX_COUNT: u32 = 10_000;

impl FromStr for RecurrenceRule {
    type Err = RecurrenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let text = text
            .strip_prefix("RRULE:")
            .or_else(|| text.strip_prefix("rrule:"))
            .unwrap_or(text);
        if text.is_empty() {
            return err("recurrence rule is empty");
        }
        if text.len() > 500 {
            return err("recurrence rule is longer than 500 characters");
        }
        let mut freq = None;
        let mut interval = None;
        let mut by_day = None;
        let mut by_month_day = None;
        let mut count = None;
        let mut until = None;
        for part in text.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return err(format!("`{part}` is not KEY=VALUE"));
            };
            let key = key.trim().to_ascii_uppercase();
            let value = value.trim();
            let duplicate = match key.as_str() {
                "FREQ" => freq.replace(parse_freq(value)?).is_some(),
                "INTERVAL" => interval
                    .replace(parse_number(value, "INTERVAL", 1, MAX_INTERVAL)?)
                    .is_some(),
                "COUNT" => count
                    .replace(parse_number(value, "COUNT", 1, MAX_COUNT)?)
                    .is_some(),
                "UNTIL" => until.replace(parse_until(value)?).is_some(),
                "BYDAY" => by_day.replace(parse_list(value, parse_by_day)?).is_some(),
                "BYMONTHDAY" => by_month_day
                    .replace(parse_list(value, parse_month_day)?)
                    .is_some(),
                other => return err(format!("{other} is not supported")),
            };
            if duplicate {
                return err(format!("{key} is given more than once"));
            }
        }
        let Some(freq) = freq else {
            return err("FREQ is required");
        };
        let by_day = by_day.unwrap_or_default();
        let by_month_day = by_month_day.unwrap_or_default();
        if by_day.iter().any(|d| d.ordinal.is_some())
            && !matches!(freq, Frequency::Monthly | Frequency::Yearly)
        {
            return err("BYDAY with an ordinal (e.g. 1MO) needs FREQ=MONTHLY or YEARLY");
        }
        if freq == Frequency::Weekly && !by_month_day.is_empty() {
            return err("BYMONTHDAY cannot be used with FREQ=WEEKLY");
        }
        let end = match (count, until) {
            (Some(_), Some(_)) => return err("COUNT and UNTIL cannot both be given"),
            (Some(c), None) => Some(End::Count(c)),
            (None, Some(u)) => Some(End::Until(u)),
            (None, None) => None,
        };
        Ok(Self {
            freq,
            interval: interval.unwrap_or(1),
            by_day,
            by_month_day,
            end,
        })
    }
}

fn parse_freq(value: &str) -> Result<Frequency, RecurrenceError> {
    match value.to_ascii_uppercase().as_str() {
        "DAILY" => Ok(Frequency::Daily),
        "WEEKLY" => Ok(Frequency::Weekly),
        "MONTHLY" => Ok(Frequency::Monthly),
        "YEARLY" => Ok(Frequency::Yearly),
        "SECONDLY" | "MINUTELY" | "HOURLY" => err(format!("FREQ={value} is not supported")),
        _ => err(format!("FREQ={value} is not a frequency")),
    }
}

fn parse_number(value: &str, key: &str, min: u32, max: u32) -> Result<u32, RecurrenceError> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => err(format!("{key} must be a number from {min} to {max}")),
    }
}

fn parse_list<T>(
    value: &str,
    item: fn(&str) -> Result<T, RecurrenceError>,
) -> Result<Vec<T>, RecurrenceError>
where
    T: PartialEq,
{
    let mut out = Vec::new();
    for raw in value.split(',') {
        let parsed = item(raw.trim())?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

fn parse_weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn weekday_code(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

fn parse_by_day(raw: &str) -> Result<ByDay, RecurrenceError> {
    let upper = raw.to_ascii_uppercase();
    let split = upper.len().saturating_sub(2);
    let (ordinal, code) = upper.split_at_checked(split).unwrap_or(("", &upper));
    let Some(weekday) = parse_weekday(code) else {
        return err(format!("BYDAY `{raw}` is not a weekday (MO, TU, ... SU)"));
    };
    let ordinal = if ordinal.is_empty() {
        None
    } else {
        match ordinal.parse::<i8>() {
            Ok(n) if n != 0 && (-53..=53).contains(&n) => Some(n),
            _ => return err(format!("BYDAY `{raw}` has an invalid ordinal")),
        }
    };
    Ok(ByDay { ordinal, weekday })
}

fn parse_month_day(raw: &str) -> Result<i8, RecurrenceError> {
    match raw.parse::<i8>() {
        Ok(n) if n != 0 && (-31..=31).contains(&n) => Ok(n),
        _ => err(format!("BYMONTHDAY `{raw}` must be 1 to 31 or -31 to -1")),
    }
}

fn parse_until(value: &str) -> Result<DateTime<Utc>, RecurrenceError> {
    let upper = value.to_ascii_uppercase();
    if let Some(stamp) = upper.strip_suffix('Z')
        && let Ok(naive) = NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S")
    {
        return Ok(Utc.from_utc_datetime(&naive));
    }
    if let Ok(date) = NaiveDate::parse_from_str(&upper, "%Y%m%d")
        && upper.len() == 8
        && let Some(end_of_day) = date.and_hms_opt(23, 59, 59)
    {
        return Ok(Utc.from_utc_datetime(&end_of_day));
    }
    err("UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ")
}

impl fmt::Display for RecurrenceRule {
    /// The normalised form that is stored and returned to clients.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let freq = match self.freq {
            Frequency::Daily => "DAILY",
            Frequency::Weekly => "WEEKLY",
            Frequency::Monthly => "MONTHLY",
            Frequency::Yearly => "YEARLY",
        };
        write!(f, "FREQ={freq}")?;
        if self.interval != 1 {
            write!(f, ";INTERVAL={}", self.interval)?;
        }
        if !self.by_day.is_empty() {
            f.write_str(";BYDAY=")?;
            for (i, day) in self.by_day.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                if let Some(n) = day.ordinal {
                    write!(f, "{n}")?;
                }
                f.write_str(weekday_code(day.weekday))?;
            }
        }
        if !self.by_month_day.is_empty() {
            f.write_str(";BYMONTHDAY=")?;
            for (i, day) in self.by_month_day.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{day}")?;
            }
        }
        match self.end {
            Some(End::Count(n)) => write!(f, ";COUNT={n}"),
            Some(End::Until(t)) => write!(f, ";UNTIL={}", t.format("%Y%m%dT%H%M%SZ")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RecurrenceRule, RecurrenceError> {
        s.parse()
    }

    #[test]
    fn normalises_supported_rules() {
        let cases = [
            ("FREQ=DAILY", "FREQ=DAILY"),
            (
                "rrule:freq=weekly;interval=2;byday=mo,we,mo",
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE",
            ),
            (
                "FREQ=MONTHLY;BYMONTHDAY=31,-1;COUNT=12",
                "FREQ=MONTHLY;BYMONTHDAY=31,-1;COUNT=12",
            ),
            ("FREQ=MONTHLY;BYDAY=-1FR", "FREQ=MONTHLY;BYDAY=-1FR"),
            (
                "FREQ=YEARLY;UNTIL=20301231",
                "FREQ=YEARLY;UNTIL=20301231T235959Z",
            ),
            (
                "FREQ=DAILY;UNTIL=20300101T080000Z",
                "FREQ=DAILY;UNTIL=20300101T080000Z",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input).unwrap().to_string(), expected, "{input}");
            assert_eq!(parse(expected).unwrap().to_string(), expected, "{expected}");
        }
    }

    #[test]
    fn rejects_what_is_unsupported_or_malformed() {
        let cases = [
            ("", "empty"),
            ("INTERVAL=2", "FREQ is required"),
            ("FREQ=HOURLY", "not supported"),
            ("FREQ=FORTNIGHTLY", "not a frequency"),
            ("FREQ=DAILY;BYHOUR=9", "BYHOUR is not supported"),
            ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
            ("FREQ=DAILY;COUNT=-1", "COUNT"),
            ("FREQ=DAILY;COUNT=2;UNTIL=20300101", "cannot both"),
            ("FREQ=WEEKLY;BYDAY=1MO", "ordinal"),
            ("FREQ=WEEKLY;BYMONTHDAY=3", "WEEKLY"),
            ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
            ("FREQ=MONTHLY;BYDAY=XX", "weekday"),
            ("FREQ=MONTHLY;BYDAY=0MO", "ordinal"),
            ("FREQ=DAILY;FREQ=WEEKLY", "more than once"),
            ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL"),
            ("FREQ", "KEY=VALUE"),
            ("FREQ=MONTHLY;BYDAY=é", "weekday"),
        ];
        for (input, expected) in cases {
            let message = parse(input).unwrap_err().to_string();
            assert!(message.contains(expected), "{input}: {message}");
        }
    }
}
