//! The recurrence rules Taskmesh supports: a subset of RFC 5545 RRULE (FREQ DAILY, WEEKLY,
//! MONTHLY or YEARLY; INTERVAL; BYMONTH; BYDAY; BYMONTHDAY; BYSETPOS; WKST; COUNT; UNTIL)
//! plus the dates to skip (EXDATE).
//!
//! A rule is one string, written either as one line with EXDATE as a Taskmesh extension
//! (`FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20261225`) or as RFC 5545 content lines
//! (`RRULE:FREQ=MONTHLY;BYDAY=-1FR` and `EXDATE;VALUE=DATE:20261225` on separate lines).
//! Both normalise to the one-line form, which is what is stored and returned.
//!
//! Parsing checks the grammar here, with messages a client can act on, then has the
//! `rrule` crate validate the rule as it will compute it (`to_rrule`), so a rule that is
//! stored is a rule the recurring service can compute. Left out on purpose: sub-daily
//! frequencies and BYHOUR/BYMINUTE/BYSECOND (a task's time of day is its due time's),
//! BYYEARDAY/BYWEEKNO, DTSTART (the due time starts the series), RDATE and EXRULE.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Month, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A BYDAY entry: a weekday, optionally the n-th of the month (`-1FR`, `2MO`).
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
    /// Months, 1 to 12, in the order given.
    pub by_month: Vec<u8>,
    pub by_day: Vec<ByDay>,
    pub by_month_day: Vec<i8>,
    /// Which of a period's matching days to keep: 1 is the first, -1 the last.
    pub by_set_pos: Vec<i16>,
    /// The first day of a week, for WEEKLY with an INTERVAL (Monday unless WKST says).
    pub week_start: Weekday,
    pub end: Option<End>,
    /// EXDATE: the dates, in the task's time zone, on which no occurrence falls; sorted.
    pub except: Vec<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecurrenceError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, RecurrenceError> {
    Err(RecurrenceError(msg.into()))
}

const MAX_INTERVAL: u32 = 1000;
const MAX_COUNT: u32 = 10_000;
/// The input's and the stored form's bound (the `recurrence` column is 500 characters).
const MAX_LEN: usize = 500;

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
        if text.len() > MAX_LEN {
            return err(format!(
                "recurrence rule is longer than {MAX_LEN} characters"
            ));
        }
        let mut parts = Parts::default();
        let mut rule_lines = 0;
        for line in content_lines(text) {
            match classify(&line)? {
                Line::Rule(rule) => {
                    rule_lines += 1;
                    if rule_lines > 1 {
                        return err("only one RRULE can be given");
                    }
                    parts.read_rule(rule)?;
                }
                Line::ExDate(values) => {
                    let dates = parse_list(values, parse_exdate)?;
                    parts.except.get_or_insert_default().extend(dates);
                }
            }
        }
        let rule = parts.finish()?;
        // The crate's own checks (e.g. a BYDAY ordinal's range for the frequency).
        rule.to_rrule(1)
            .validate(reference_start())
            .map_err(|e| RecurrenceError(crate_message(&e)))?;
        if rule.to_string().len() > MAX_LEN {
            return err(format!(
                "recurrence rule is longer than {MAX_LEN} characters once normalised"
            ));
        }
        Ok(rule)
    }
}

/// Lines of the input, with RFC 5545 folding (a line starting with a space or tab
/// continues the previous one) undone and empty lines dropped.
fn content_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.lines() {
        match (raw.strip_prefix([' ', '\t']), lines.last_mut()) {
            (Some(rest), Some(last)) => last.push_str(rest),
            _ => lines.push(raw.trim().to_owned()),
        }
    }
    lines.retain(|l| !l.is_empty());
    lines
}

enum Line<'a> {
    /// `FREQ=...;...`, with or without `RRULE:`.
    Rule(&'a str),
    /// The values of an `EXDATE[;params]:values` line.
    ExDate(&'a str),
}

fn classify(line: &str) -> Result<Line<'_>, RecurrenceError> {
    // A content line is `NAME[;params]:value`; a bare rule starts with `KEY=`.
    let name_end = line
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .unwrap_or(line.len());
    let named = match line[name_end..].chars().next() {
        Some(':') => true,
        Some(';') => line.contains(':'),
        _ => false,
    };
    if !named {
        return Ok(Line::Rule(line));
    }
    let (head, value) = line.split_once(':').unwrap_or((line, ""));
    match line[..name_end].to_ascii_uppercase().as_str() {
        "RRULE" if head.len() == name_end => Ok(Line::Rule(value)),
        "RRULE" => err("RRULE parameters are not supported"),
        // Parameters (VALUE=DATE, TZID=...) are allowed: dates are read in the task's
        // time zone whatever they say.
        "EXDATE" => Ok(Line::ExDate(value)),
        "DTSTART" => err("DTSTART is not used: the task's due time starts the series"),
        other => err(format!("{other} is not supported")),
    }
}

#[derive(Default)]
struct Parts {
    freq: Option<Frequency>,
    interval: Option<u32>,
    by_month: Option<Vec<u8>>,
    by_day: Option<Vec<ByDay>>,
    by_month_day: Option<Vec<i8>>,
    by_set_pos: Option<Vec<i16>>,
    week_start: Option<Weekday>,
    count: Option<u32>,
    until: Option<DateTime<Utc>>,
    except: Option<Vec<NaiveDate>>,
}

impl Parts {
    fn read_rule(&mut self, text: &str) -> Result<(), RecurrenceError> {
        for part in text.split(';').filter(|p| !p.trim().is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return err(format!("`{part}` is not KEY=VALUE"));
            };
            let key = key.trim().to_ascii_uppercase();
            let value = value.trim();
            let duplicate = match key.as_str() {
                "FREQ" => self.freq.replace(parse_freq(value)?).is_some(),
                "INTERVAL" => self
                    .interval
                    .replace(parse_number(value, "INTERVAL", 1, MAX_INTERVAL)?)
                    .is_some(),
                "COUNT" => self
                    .count
                    .replace(parse_number(value, "COUNT", 1, MAX_COUNT)?)
                    .is_some(),
                "UNTIL" => self.until.replace(parse_until(value)?).is_some(),
                "BYMONTH" => self
                    .by_month
                    .replace(parse_list(value, parse_month)?)
                    .is_some(),
                "BYDAY" => self
                    .by_day
                    .replace(parse_list(value, parse_by_day)?)
                    .is_some(),
                "BYMONTHDAY" => self
                    .by_month_day
                    .replace(parse_list(value, parse_month_day)?)
                    .is_some(),
                "BYSETPOS" => self
                    .by_set_pos
                    .replace(parse_list(value, parse_set_pos)?)
                    .is_some(),
                "WKST" => self.week_start.replace(parse_wkst(value)?).is_some(),
                "EXDATE" => self
                    .except
                    .replace(parse_list(value, parse_exdate)?)
                    .is_some(),
                other => return err(format!("{other} is not supported")),
            };
            if duplicate {
                return err(format!("{key} is given more than once"));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<RecurrenceRule, RecurrenceError> {
        let Some(freq) = self.freq else {
            return err("FREQ is required");
        };
        let by_day = self.by_day.unwrap_or_default();
        let by_month_day = self.by_month_day.unwrap_or_default();
        let by_month = self.by_month.unwrap_or_default();
        let by_set_pos = self.by_set_pos.unwrap_or_default();
        if by_day.iter().any(|d| d.ordinal.is_some())
            && !matches!(freq, Frequency::Monthly | Frequency::Yearly)
        {
            return err("BYDAY with an ordinal (e.g. 1MO) needs FREQ=MONTHLY or YEARLY");
        }
        if freq == Frequency::Weekly && !by_month_day.is_empty() {
            return err("BYMONTHDAY cannot be used with FREQ=WEEKLY");
        }
        if !by_set_pos.is_empty() && by_day.is_empty() && by_month_day.is_empty() {
            return err("BYSETPOS needs BYDAY or BYMONTHDAY to pick from");
        }
        let end = match (self.count, self.until) {
            (Some(_), Some(_)) => return err("COUNT and UNTIL cannot both be given"),
            (Some(c), None) => Some(End::Count(c)),
            (None, Some(u)) => Some(End::Until(u)),
            (None, None) => None,
        };
        let mut except = self.except.unwrap_or_default();
        except.sort_unstable();
        except.dedup();
        Ok(RecurrenceRule {
            freq,
            interval: self.interval.unwrap_or(1),
            by_month,
            by_day,
            by_month_day,
            by_set_pos,
            week_start: self.week_start.unwrap_or(Weekday::Mon),
            end,
            except,
        })
    }
}

impl RecurrenceRule {
    /// The rule for the `rrule` crate, without COUNT, UNTIL and EXDATE (the caller
    /// applies them: COUNT is carried from task to task, UNTIL is an instant).
    ///
    /// A YEARLY rule with BYDAY or BYMONTHDAY and no BYMONTH applies them within
    /// `anchor_month` (the due time's month): Taskmesh's meaning since before BYMONTH was
    /// supported, which keeps stored rules meaning what they meant. RFC 5545 would apply
    /// them to the whole year.
    pub(crate) fn to_rrule(&self, anchor_month: u32) -> rrule::RRule<rrule::Unvalidated> {
        let freq = match self.freq {
            Frequency::Daily => rrule::Frequency::Daily,
            Frequency::Weekly => rrule::Frequency::Weekly,
            Frequency::Monthly => rrule::Frequency::Monthly,
            Frequency::Yearly => rrule::Frequency::Yearly,
        };
        let mut months: Vec<Month> = self.by_month.iter().filter_map(|m| month(*m)).collect();
        if self.freq == Frequency::Yearly
            && months.is_empty()
            && (!self.by_day.is_empty() || !self.by_month_day.is_empty())
        {
            months.extend(u8::try_from(anchor_month).ok().and_then(month));
        }
        let by_day = self
            .by_day
            .iter()
            .map(|d| rrule::NWeekday::new(d.ordinal.map(i16::from), d.weekday))
            .collect();
        rrule::RRule::new(freq)
            // Bounded by MAX_INTERVAL when parsed.
            .interval(u16::try_from(self.interval).unwrap_or(u16::MAX))
            .week_start(self.week_start)
            .by_month(&months)
            .by_weekday(by_day)
            .by_month_day(self.by_month_day.clone())
            .by_set_pos(self.by_set_pos.iter().copied().map(i32::from).collect())
    }
}

fn month(number: u8) -> Option<Month> {
    Month::try_from(number).ok()
}

/// Any start will do to validate a rule without UNTIL: only UNTIL is checked against it.
fn reference_start() -> DateTime<rrule::Tz> {
    rrule::Tz::UTC.from_utc_datetime(&NaiveDateTime::default())
}

fn crate_message(error: &rrule::RRuleError) -> String {
    match error {
        rrule::RRuleError::ValidationError(e) => e.to_string(),
        other => other.to_string(),
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

fn parse_wkst(value: &str) -> Result<Weekday, RecurrenceError> {
    parse_weekday(&value.to_ascii_uppercase()).map_or_else(
        || err(format!("WKST `{value}` is not a weekday (MO, TU, ... SU)")),
        Ok,
    )
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
        // Ordinals count within a month (a YEARLY rule always has one: BYMONTH or the
        // due time's), which has at most five of a weekday.
        match ordinal.parse::<i8>() {
            Ok(n) if n != 0 && (-5..=5).contains(&n) => Some(n),
            _ => {
                return err(format!(
                    "BYDAY `{raw}` has an invalid ordinal (1 to 5 or -1 to -5, e.g. -1FR)"
                ));
            }
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

fn parse_month(raw: &str) -> Result<u8, RecurrenceError> {
    match raw.parse::<u8>() {
        Ok(n) if (1..=12).contains(&n) => Ok(n),
        _ => err(format!("BYMONTH `{raw}` must be 1 to 12")),
    }
}

fn parse_set_pos(raw: &str) -> Result<i16, RecurrenceError> {
    match raw.parse::<i16>() {
        Ok(n) if n != 0 && (-366..=366).contains(&n) => Ok(n),
        _ => err(format!("BYSETPOS `{raw}` must be 1 to 366 or -366 to -1")),
    }
}

/// A date (`20261225`), or a local date-time whose date is taken (`20261225T090000`, as
/// calendars export `EXDATE;TZID=...`). A UTC time (`...Z`) is refused: which local date
/// it falls on depends on the task's time zone, which a rule does not know.
fn parse_exdate(raw: &str) -> Result<NaiveDate, RecurrenceError> {
    let upper = raw.to_ascii_uppercase();
    let date = match upper.split_once('T') {
        None if upper.len() == 8 => NaiveDate::parse_from_str(&upper, "%Y%m%d").ok(),
        Some((date, time))
            if date.len() == 8
                && time.len() == 6
                && chrono::NaiveTime::parse_from_str(time, "%H%M%S").is_ok() =>
        {
            NaiveDate::parse_from_str(date, "%Y%m%d").ok()
        }
        _ => None,
    };
    date.map_or_else(
        || {
            err(format!(
                "EXDATE `{raw}` must be a date, YYYYMMDD (or YYYYMMDDTHHMMSS local time)"
            ))
        },
        Ok,
    )
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

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    items: &[T],
    item: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, ";{key}=")?;
    for (i, value) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        item(f, value)?;
    }
    Ok(())
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
        write_list(f, "BYMONTH", &self.by_month, |f, m| write!(f, "{m}"))?;
        write_list(f, "BYDAY", &self.by_day, |f, day| {
            if let Some(n) = day.ordinal {
                write!(f, "{n}")?;
            }
            f.write_str(weekday_code(day.weekday))
        })?;
        write_list(f, "BYMONTHDAY", &self.by_month_day, |f, d| write!(f, "{d}"))?;
        write_list(f, "BYSETPOS", &self.by_set_pos, |f, p| write!(f, "{p}"))?;
        if self.week_start != Weekday::Mon {
            write!(f, ";WKST={}", weekday_code(self.week_start))?;
        }
        match self.end {
            Some(End::Count(n)) => write!(f, ";COUNT={n}")?,
            Some(End::Until(t)) => write!(f, ";UNTIL={}", t.format("%Y%m%dT%H%M%SZ"))?,
            None => {}
        }
        write_list(f, "EXDATE", &self.except, |f, d| {
            write!(f, "{}", d.format("%Y%m%d"))
        })
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
            ("FREQ=MONTHLY;BYDAY=+2MO", "FREQ=MONTHLY;BYDAY=2MO"),
            (
                "FREQ=YEARLY;UNTIL=20301231",
                "FREQ=YEARLY;UNTIL=20301231T235959Z",
            ),
            (
                "FREQ=DAILY;UNTIL=20300101T080000Z",
                "FREQ=DAILY;UNTIL=20300101T080000Z",
            ),
            (
                "FREQ=MONTHLY;BYSETPOS=-1;BYDAY=MO,TU,WE,TH,FR",
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            ),
            ("FREQ=YEARLY;BYMONTH=3,9", "FREQ=YEARLY;BYMONTH=3,9"),
            (
                "FREQ=WEEKLY;INTERVAL=2;WKST=SU;BYDAY=SA,SU",
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=SA,SU;WKST=SU",
            ),
            ("FREQ=WEEKLY;WKST=MO", "FREQ=WEEKLY"),
            (
                "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20270129,20261225,20261225",
                "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20261225,20270129",
            ),
            // RFC 5545 content lines, as calendars export them (CRLF, a folded line).
            (
                "RRULE:FREQ=MONTHLY;BYDAY=-1FR\r\nEXDATE;VALUE=DATE:20261225\r\n\
                 EXDATE;TZID=Europe/Paris:20270129T090000,\r\n 20270226T090000",
                "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20261225,20270129,20270226",
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
            ("FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO is not supported"),
            ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
            ("FREQ=DAILY;COUNT=-1", "COUNT"),
            ("FREQ=DAILY;COUNT=2;UNTIL=20300101", "cannot both"),
            ("FREQ=WEEKLY;BYDAY=1MO", "ordinal"),
            ("FREQ=WEEKLY;BYMONTHDAY=3", "WEEKLY"),
            ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY"),
            ("FREQ=MONTHLY;BYDAY=XX", "weekday"),
            ("FREQ=MONTHLY;BYDAY=0MO", "ordinal"),
            ("FREQ=MONTHLY;BYDAY=6MO", "ordinal"),
            // The rrule crate's bound for a month counted from its end.
            ("FREQ=MONTHLY;BYDAY=-5MO", "-4..=5"),
            ("FREQ=DAILY;FREQ=WEEKLY", "more than once"),
            ("FREQ=DAILY;UNTIL=tomorrow", "UNTIL"),
            ("FREQ", "KEY=VALUE"),
            ("FREQ=MONTHLY;BYDAY=é", "weekday"),
            ("FREQ=YEARLY;BYMONTH=13", "BYMONTH `13`"),
            ("FREQ=YEARLY;BYMONTH=0", "BYMONTH"),
            ("FREQ=MONTHLY;BYSETPOS=-1", "BYSETPOS needs"),
            ("FREQ=MONTHLY;BYSETPOS=0;BYDAY=MO", "BYSETPOS `0`"),
            ("FREQ=MONTHLY;BYSETPOS=40;BYDAY=MO", "BYSETPOS"),
            ("FREQ=WEEKLY;WKST=XX", "WKST"),
            ("FREQ=DAILY;EXDATE=20261301", "EXDATE `20261301`"),
            ("FREQ=DAILY;EXDATE=20261225T090000Z", "EXDATE"),
            ("FREQ=DAILY;EXDATE=2026-12-25", "EXDATE"),
            (
                "FREQ=DAILY;EXDATE=20261225;EXDATE=20261226",
                "more than once",
            ),
            ("RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY", "only one RRULE"),
            ("EXDATE:20261225", "FREQ is required"),
            ("DTSTART:20261225T090000Z\nRRULE:FREQ=DAILY", "DTSTART"),
            ("RRULE:FREQ=DAILY\nRDATE:20261225", "RDATE is not supported"),
            ("RRULE;X=1:FREQ=DAILY", "RRULE parameters"),
        ];
        for (input, expected) in cases {
            let message = parse(input).unwrap_err().to_string();
            assert!(message.contains(expected), "{input}: {message}");
        }
    }

    #[test]
    fn long_rules_are_refused_before_and_after_normalising() {
        let days = vec!["MO"; 161].join(",");
        assert!(parse(&format!("FREQ=DAILY;BYDAY={days}")).is_ok());
        let message = parse(&format!("FREQ=DAILY;BYDAY={days},TU"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("longer than 500"), "{message}");
        // UNTIL=YYYYMMDD is written out with a time (8 more characters): 52 dates fit in
        // 500 characters as given, not once normalised (the column holds 500).
        let rule = |n: usize| {
            let dates: Vec<String> = (1..=n)
                .map(|d| format!("2030{:02}{:02}", d / 28 + 1, d % 28 + 1))
                .collect();
            format!("FREQ=DAILY;UNTIL=20301231;EXDATE={}", dates.join(","))
        };
        assert_eq!(parse(&rule(51)).unwrap().to_string().len(), 499);
        assert_eq!(rule(52).len(), 500);
        let message = parse(&rule(52)).unwrap_err().to_string();
        assert!(message.contains("once normalised"), "{message}");
    }
}
