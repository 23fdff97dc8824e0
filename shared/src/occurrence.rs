//! The next occurrence of a recurring task, computed in the task's time zone so that a
//! daily 09:00 task stays at 09:00 local time across daylight-saving changes.
//!
//! The series has no stored start: every task is one occurrence, with its due time as
//! the anchor. COUNT is carried forward by decrementing it in the next task's rule
//! (`COUNT=1` was the last occurrence); UNTIL ends the series by time.
//!
//! Semantics follow RFC 5545 for the supported subset: INTERVAL counts periods of the
//! frequency from the anchor's period; BYDAY and BYMONTHDAY limit the days within a
//! period (both must match when both are given); without them a period's day is the
//! anchor's (weekday, day of month, or month and day), and a month or year without that
//! day is skipped (the 31st skips short months, 29 February skips common years). A YEARLY
//! rule with BYDAY/BYMONTHDAY applies them within the anchor's month, as if BYMONTH were
//! the anchor's month. Ordinals in BYDAY (`2MO`, `-1FR`) count within the month.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset as _, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::recurrence::{ByDay, End, Frequency, RecurrenceRule};

/// How far ahead to look before deciding a rule has no further occurrence.
const HORIZON_DAYS: i64 = 366 * 400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub due: DateTime<Utc>,
    /// The rule the next task carries (COUNT decremented).
    pub rule: RecurrenceRule,
}

/// The occurrence after the one due at `due`, or `None` when the series has ended.
pub fn next_occurrence(rule: &RecurrenceRule, due: DateTime<Utc>, tz: Tz) -> Option<Occurrence> {
    let next_rule = match rule.end {
        Some(End::Count(n)) if n <= 1 => return None,
        Some(End::Count(n)) => RecurrenceRule {
            end: Some(End::Count(n - 1)),
            ..rule.clone()
        },
        _ => rule.clone(),
    };
    // Checked: near the end of chrono's range (year 262142) the local time may not exist.
    let anchor = due
        .naive_utc()
        .checked_add_offset(tz.offset_from_utc_datetime(&due.naive_utc()).fix())?;
    let start = anchor.date();
    let interval = i64::from(rule.interval.max(1));
    let mut day = start;
    for _ in 0..HORIZON_DAYS {
        day = day.succ_opt()?;
        if in_active_period(rule.freq, interval, start, day) && day_matches(rule, start, day) {
            let next = to_utc(tz, day.and_time(anchor.time()))?;
            if let Some(End::Until(until)) = rule.end
                && next > until
            {
                return None;
            }
            return Some(Occurrence {
                due: next,
                rule: next_rule,
            });
        }
    }
    None
}

fn in_active_period(freq: Frequency, interval: i64, start: NaiveDate, day: NaiveDate) -> bool {
    let periods = match freq {
        Frequency::Daily => (day - start).num_days(),
        // Days between the weeks' Mondays, without stepping back past the first date.
        Frequency::Weekly => {
            ((day - start).num_days() - weekday_index(day) + weekday_index(start)) / 7
        }
        Frequency::Monthly => months(day) - months(start),
        Frequency::Yearly => i64::from(day.year() - start.year()),
    };
    periods % interval == 0
}

fn day_matches(rule: &RecurrenceRule, start: NaiveDate, day: NaiveDate) -> bool {
    if rule.freq == Frequency::Yearly && day.month() != start.month() {
        return false;
    }
    let by_day = rule.by_day.is_empty() || rule.by_day.iter().any(|b| by_day_matches(*b, day));
    let by_month_day = rule.by_month_day.is_empty()
        || rule.by_month_day.iter().any(|d| month_day_matches(*d, day));
    if !(by_day && by_month_day) {
        return false;
    }
    if !rule.by_day.is_empty() || !rule.by_month_day.is_empty() {
        return true;
    }
    match rule.freq {
        Frequency::Daily => true,
        Frequency::Weekly => day.weekday() == start.weekday(),
        Frequency::Monthly | Frequency::Yearly => day.day() == start.day(),
    }
}

fn by_day_matches(by: ByDay, day: NaiveDate) -> bool {
    if day.weekday() != by.weekday {
        return false;
    }
    match by.ordinal {
        None => true,
        Some(n) if n > 0 => (day.day0() / 7) + 1 == u32::from(n.unsigned_abs()),
        Some(n) => {
            let from_end = (days_in_month(day) - day.day()) / 7 + 1;
            from_end == u32::from(n.unsigned_abs())
        }
    }
}

fn month_day_matches(wanted: i8, day: NaiveDate) -> bool {
    let wanted = i64::from(wanted);
    let actual = i64::from(day.day());
    if wanted > 0 {
        actual == wanted
    } else {
        actual == i64::from(days_in_month(day)) + 1 + wanted
    }
}

fn days_in_month(day: NaiveDate) -> u32 {
    let (y, m) = (day.year(), day.month());
    let first_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    first_next
        .and_then(|d| d.pred_opt())
        .map_or(28, |last| last.day())
}

fn months(day: NaiveDate) -> i64 {
    i64::from(day.year()) * 12 + i64::from(day.month0())
}

fn weekday_index(day: NaiveDate) -> i64 {
    i64::from(day.weekday().num_days_from_monday())
}

/// Local wall-clock time to UTC: the earlier instant when the clock repeats (autumn), and
/// the first valid minute after the gap when it skips (spring).
fn to_utc(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    for shift in 0..=180 {
        match tz.from_local_datetime(&local.checked_add_signed(Duration::minutes(shift))?) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(early, _) => return Some(early.with_timezone(&Utc)),
            LocalResult::None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(rule: &str, due: &str, tz: &str) -> Option<String> {
        let rule: RecurrenceRule = rule.parse().unwrap();
        let tz: Tz = tz.parse().unwrap();
        next_occurrence(&rule, utc(due), tz).map(|o| {
            format!(
                "{} {}",
                o.due.with_timezone(&tz).format("%Y-%m-%d %H:%M %a"),
                o.rule
            )
        })
    }

    fn series(rule: &str, due: &str, tz: &str, n: usize) -> Vec<String> {
        let tz_: Tz = tz.parse().unwrap();
        let mut rule: RecurrenceRule = rule.parse().unwrap();
        let mut due = utc(due);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(o) = next_occurrence(&rule, due, tz_) else {
                break;
            };
            out.push(o.due.with_timezone(&tz_).format("%Y-%m-%d").to_string());
            due = o.due;
            rule = o.rule;
        }
        out
    }

    #[test]
    fn daily_weekly_with_interval_and_byday() {
        assert_eq!(
            next("FREQ=DAILY", "2026-11-24T08:00:00Z", "UTC").unwrap(),
            "2026-11-25 08:00 Wed FREQ=DAILY"
        );
        assert_eq!(
            series("FREQ=DAILY;INTERVAL=3", "2026-11-24T08:00:00Z", "UTC", 3),
            ["2026-11-27", "2026-11-30", "2026-12-03"]
        );
        // Tuesday 24 Nov 2026; MO,WE every other week.
        assert_eq!(
            series(
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE",
                "2026-11-24T08:00:00Z",
                "UTC",
                4
            ),
            ["2026-11-25", "2026-12-07", "2026-12-09", "2026-12-21"]
        );
        assert_eq!(
            series("FREQ=WEEKLY", "2026-11-24T08:00:00Z", "UTC", 2),
            ["2026-12-01", "2026-12-08"]
        );
    }

    #[test]
    fn the_31st_skips_short_months_and_negative_days_count_from_the_end() {
        assert_eq!(
            series("FREQ=MONTHLY", "2026-01-31T09:00:00Z", "UTC", 4),
            ["2026-03-31", "2026-05-31", "2026-07-31", "2026-08-31"]
        );
        assert_eq!(
            series(
                "FREQ=MONTHLY;BYMONTHDAY=-1",
                "2026-01-31T09:00:00Z",
                "UTC",
                3
            ),
            ["2026-02-28", "2026-03-31", "2026-04-30"]
        );
        assert_eq!(
            series("FREQ=MONTHLY;BYDAY=-1FR", "2026-11-27T09:00:00Z", "UTC", 2),
            ["2026-12-25", "2027-01-29"]
        );
        assert_eq!(
            series("FREQ=MONTHLY;BYDAY=2MO", "2026-11-09T09:00:00Z", "UTC", 2),
            ["2026-12-14", "2027-01-11"]
        );
        assert_eq!(
            series("FREQ=YEARLY", "2028-02-29T09:00:00Z", "UTC", 2),
            ["2032-02-29", "2036-02-29"]
        );
    }

    #[test]
    fn count_and_until_end_the_series() {
        assert_eq!(
            next("FREQ=DAILY;COUNT=3", "2026-11-24T08:00:00Z", "UTC").unwrap(),
            "2026-11-25 08:00 Wed FREQ=DAILY;COUNT=2"
        );
        assert_eq!(
            next("FREQ=DAILY;COUNT=1", "2026-11-24T08:00:00Z", "UTC"),
            None
        );
        assert_eq!(
            series("FREQ=DAILY;COUNT=3", "2026-11-24T08:00:00Z", "UTC", 10).len(),
            2
        );
        assert_eq!(
            series(
                "FREQ=DAILY;UNTIL=20261126T080000Z",
                "2026-11-24T08:00:00Z",
                "UTC",
                10
            ),
            ["2026-11-25", "2026-11-26"]
        );
    }

    #[test]
    fn the_ends_of_chronos_range_end_the_series_without_a_panic() {
        let daily: RecurrenceRule = "FREQ=DAILY".parse().unwrap();
        let weekly: RecurrenceRule = "FREQ=WEEKLY;BYDAY=MO".parse().unwrap();
        // A task event may carry any time chrono parses: the last instant's local time in
        // a zone east of UTC does not exist.
        let vostok: Tz = "Antarctica/Vostok".parse().unwrap();
        assert_eq!(
            next_occurrence(&daily, DateTime::<Utc>::MAX_UTC, vostok),
            None
        );
        assert_eq!(
            next_occurrence(&daily, "+262142-12-31T09:00:00Z".parse().unwrap(), Tz::UTC),
            None
        );
        // The first day is a Thursday, whose week starts before the first date chrono has.
        let first = DateTime::<Utc>::MIN_UTC;
        let next = next_occurrence(&weekly, first, Tz::UTC).unwrap();
        assert_eq!(next.due.weekday(), chrono::Weekday::Mon);
        assert!((next.due - first).num_days() < 7);
    }

    #[test]
    fn local_time_holds_across_daylight_saving_changes() {
        // Europe/Paris leaves summer time on Sunday 25 Oct 2026: 09:00 local moves from
        // 07:00Z to 08:00Z.
        let rule: RecurrenceRule = "FREQ=DAILY".parse().unwrap();
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let next = next_occurrence(&rule, utc("2026-10-24T07:00:00Z"), tz).unwrap();
        assert_eq!(next.due, utc("2026-10-25T08:00:00Z"));
        // 02:30 does not exist on 29 Mar 2026 in Paris: the first valid minute after it.
        let night = next_occurrence(&rule, utc("2026-03-28T01:30:00Z"), tz).unwrap();
        assert_eq!(
            night.due.with_timezone(&tz).format("%H:%M").to_string(),
            "03:00"
        );
        // New York, spring forward 8 Mar 2026: 09:00 local stays 09:00.
        let ny: Tz = "America/New_York".parse().unwrap();
        let next = next_occurrence(&rule, utc("2026-03-07T14:00:00Z"), ny).unwrap();
        assert_eq!(next.due, utc("2026-03-08T13:00:00Z"));
    }
}
