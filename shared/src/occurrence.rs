//! The next occurrence of a recurring task, computed in the task's time zone so that a
//! daily 09:00 task stays at 09:00 local time across daylight-saving changes.
//!
//! The series has no stored start: every task is one occurrence, with its due time as
//! the anchor (RFC 5545's DTSTART). COUNT is carried forward by decrementing it in the
//! next task's rule (`COUNT=1` was the last occurrence); UNTIL ends the series by time;
//! EXDATE dates that have passed are dropped from the next task's rule.
//!
//! The `rrule` crate computes the dates. It is given the anchor's local wall-clock time
//! as if it were UTC, so it works on the calendar alone; the time zone is applied here,
//! once (`to_utc`): the crate, given the zone, would move a 02:30 that a spring change
//! skips to 03:30, where Taskmesh has always used the first valid minute, 03:00.
//! INTERVAL counts periods of the frequency from the anchor's period; a day that a month
//! or year lacks (the 31st, 29 February) is skipped, not moved.
//!
//! Hostile rules cannot loop or take long: a search looks 400 to 800 years ahead at most
//! (`next_date`), the crate also stops one after 100,000 periods without an occurrence
//! (`RRuleSet::limit`), and a series ends after the year 9999 (task-service refuses later
//! due times).

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset as _, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

use crate::recurrence::{End, RecurrenceRule};

/// The years a series may have occurrences in: those task-service accepts as due times,
/// well inside the crate's range (-10,000 to 10,000).
const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// The first year the search is moved to (see `next_date`).
const SEARCH_FROM: i32 = 9200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub due: DateTime<Utc>,
    /// The rule the next task carries (COUNT decremented, past EXDATEs dropped).
    pub rule: RecurrenceRule,
}

/// The occurrence after the one due at `due`, or `None` when the series has ended.
pub fn next_occurrence(rule: &RecurrenceRule, due: DateTime<Utc>, tz: Tz) -> Option<Occurrence> {
    if matches!(rule.end, Some(End::Count(n)) if n <= 1) {
        return None;
    }
    // Checked: near the end of chrono's range (year 262142) the local time may not exist.
    let anchor = due
        .naive_utc()
        .checked_add_offset(tz.offset_from_utc_datetime(&due.naive_utc()).fix())?;
    if !YEARS.contains(&anchor.year()) {
        return None;
    }
    let (date, used) = next_date(rule, anchor)?;
    if !YEARS.contains(&date.year()) {
        return None;
    }
    let end = match rule.end {
        // As in RFC 5545, an occurrence that EXDATE removes still counts.
        Some(End::Count(n)) => Some(End::Count(n.checked_sub(used).filter(|n| *n >= 1)?)),
        other => other,
    };
    let next = to_utc(tz, date.and_time(anchor.time()))?;
    if let Some(End::Until(until)) = rule.end
        && next > until
    {
        return None;
    }
    Some(Occurrence {
        due: next,
        rule: RecurrenceRule {
            end,
            except: rule.except.iter().copied().filter(|d| *d > date).collect(),
            ..rule.clone()
        },
    })
}

/// The first date after the anchor's that the rule allows and EXDATE does not remove,
/// and how many of the rule's dates that took (the ones removed included).
fn next_date(rule: &RecurrenceRule, anchor: NaiveDateTime) -> Option<(NaiveDate, u32)> {
    // The Gregorian calendar repeats every 400 years (weekdays and leap years alike), so
    // the crate is given the anchor moved to a year from 9200 to 9599: its own end, the
    // year 10,000, bounds the search to 400-800 years, as cheap for a rule that never
    // matches (about 10,000 months) as for one that does. Dates are moved back.
    let shift = SEARCH_FROM - anchor.year() + (anchor.year() - SEARCH_FROM).rem_euclid(400);
    // The crate drops sub-second parts; the caller puts the anchor's time back.
    let moved = anchor
        .with_year(anchor.year() + shift)?
        .with_nanosecond(0)?;
    let start = rrule::Tz::UTC.from_utc_datetime(&moved);
    let set = rule.to_rrule(anchor.month()).build(start).ok()?.limit();
    // Every occurrence is at the anchor's time of day, from DTSTART on: at most the first
    // falls on the anchor's date, and each EXDATE removes at most one.
    let mut used = 0;
    for moved_date in (&set)
        .into_iter()
        .take(rule.except.len() + 2)
        .map(|t| t.date_naive())
        .filter(|d| *d > moved.date())
    {
        let date = moved_date.with_year(moved_date.year() - shift)?;
        used += 1;
        if !rule.except.contains(&date) {
            return Some((date, used));
        }
    }
    None
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

    /// `n` occurrences, each from the one before, each as `show` writes it.
    fn walk(
        rule: &str,
        due: &str,
        tz: &str,
        n: usize,
        show: impl Fn(DateTime<Utc>, Tz) -> String,
    ) -> Vec<String> {
        let zone: Tz = tz.parse().unwrap();
        let mut rule: RecurrenceRule = rule.parse().unwrap();
        let mut due = utc(due);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(o) = next_occurrence(&rule, due, zone) else {
                break;
            };
            out.push(show(o.due, zone));
            due = o.due;
            rule = o.rule;
        }
        out
    }

    /// Local dates of `n` occurrences.
    fn series(rule: &str, due: &str, tz: &str, n: usize) -> Vec<String> {
        walk(rule, due, tz, n, |due, zone| {
            due.with_timezone(&zone).format("%Y-%m-%d").to_string()
        })
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
    fn the_ends_of_the_years_end_the_series_without_a_panic() {
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
        // Before the year 1 and after 9999 (which task-service refuses) there is none.
        assert_eq!(
            next_occurrence(&weekly, DateTime::<Utc>::MIN_UTC, Tz::UTC),
            None
        );
        assert_eq!(
            next_occurrence(&daily, utc("9999-12-31T09:00:00Z"), Tz::UTC),
            None
        );
        let last = next_occurrence(&weekly, utc("0001-01-01T09:00:00Z"), Tz::UTC).unwrap();
        assert_eq!(last.due, utc("0001-01-08T09:00:00Z"));
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

    /// Local dates and times, and UTC times, of `n` occurrences.
    fn local_series(rule: &str, due: &str, tz: &str, n: usize) -> Vec<String> {
        walk(rule, due, tz, n, |due, zone| {
            format!(
                "{} {}",
                due.with_timezone(&zone).format("%Y-%m-%d %a %H:%M"),
                due.format("%H:%MZ")
            )
        })
    }

    #[test]
    fn the_last_friday_of_each_month_across_daylight_saving_changes() {
        // Paris leaves summer time on 25 Oct 2026: 09:00 local is 07:00Z before, 08:00Z
        // after.
        assert_eq!(
            local_series(
                "FREQ=MONTHLY;BYDAY=-1FR",
                "2026-09-25T07:00:00Z",
                "Europe/Paris",
                3
            ),
            [
                "2026-10-30 Fri 09:00 08:00Z",
                "2026-11-27 Fri 09:00 08:00Z",
                "2026-12-25 Fri 09:00 08:00Z"
            ]
        );
        // New York starts summer time on 14 Mar 2027: 09:00 local is 14:00Z, then 13:00Z.
        assert_eq!(
            local_series(
                "FREQ=MONTHLY;BYDAY=-1FR",
                "2027-02-26T14:00:00Z",
                "America/New_York",
                2
            ),
            ["2027-03-26 Fri 09:00 13:00Z", "2027-04-30 Fri 09:00 13:00Z"]
        );
    }

    #[test]
    fn the_last_weekday_of_each_month_with_bysetpos() {
        // 31 Oct 2026 is a Saturday, 31 Jan 2027 a Sunday.
        assert_eq!(
            local_series(
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
                "2026-09-30T16:00:00Z",
                "Europe/Paris",
                4
            ),
            [
                "2026-10-30 Fri 18:00 17:00Z",
                "2026-11-30 Mon 18:00 17:00Z",
                "2026-12-31 Thu 18:00 17:00Z",
                "2027-01-29 Fri 18:00 17:00Z"
            ]
        );
        // Anchored mid-month (before New York's change on 14 Mar 2027), the first is that
        // month's last weekday.
        assert_eq!(
            local_series(
                "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=1,-1",
                "2027-03-10T14:00:00Z",
                "America/New_York",
                3
            ),
            [
                "2027-03-31 Wed 09:00 13:00Z",
                "2027-04-01 Thu 09:00 13:00Z",
                "2027-04-30 Fri 09:00 13:00Z"
            ]
        );
    }

    #[test]
    fn every_march_and_september_with_bymonth() {
        // 09:00 in New York: summer time in March (after the second Sunday) and
        // September, winter time in between.
        assert_eq!(
            local_series(
                "FREQ=YEARLY;BYMONTH=3,9",
                "2026-03-15T13:00:00Z",
                "America/New_York",
                3
            ),
            [
                "2026-09-15 Tue 09:00 13:00Z",
                "2027-03-15 Mon 09:00 13:00Z",
                "2027-09-15 Wed 09:00 13:00Z"
            ]
        );
        // The days on which Paris changes its clocks: the last Sunday of March and
        // October. 02:30 does not exist in March (the first valid minute, 03:00, is taken,
        // and is the anchor from then on) and happens twice in October (the first).
        assert_eq!(
            local_series(
                "FREQ=YEARLY;BYMONTH=3,10;BYDAY=-1SU",
                "2026-10-25T00:30:00Z",
                "Europe/Paris",
                3
            ),
            [
                "2027-03-28 Sun 03:00 01:00Z",
                "2027-10-31 Sun 03:00 02:00Z",
                "2028-03-26 Sun 03:00 01:00Z"
            ]
        );
        // MONTHLY limited to two months.
        assert_eq!(
            series(
                "FREQ=MONTHLY;BYMONTH=3,9;BYMONTHDAY=1,15",
                "2026-03-15T09:00:00Z",
                "UTC",
                3
            ),
            ["2026-09-01", "2026-09-15", "2027-03-01"]
        );
    }

    #[test]
    fn exdate_skips_a_date_and_is_dropped_once_passed() {
        let rule: RecurrenceRule = "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20261030,20270129"
            .parse()
            .unwrap();
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let next = next_occurrence(&rule, utc("2026-09-25T07:00:00Z"), paris).unwrap();
        assert_eq!(next.due, utc("2026-11-27T08:00:00Z"));
        assert_eq!(
            next.rule.to_string(),
            "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20270129"
        );
        assert_eq!(
            local_series(
                "FREQ=MONTHLY;BYDAY=-1FR;EXDATE=20261030,20270129",
                "2026-09-25T07:00:00Z",
                "Europe/Paris",
                3
            ),
            [
                "2026-11-27 Fri 09:00 08:00Z",
                "2026-12-25 Fri 09:00 08:00Z",
                "2027-02-26 Fri 09:00 08:00Z"
            ]
        );
        // The date is the local one, on the days the clocks change too: 23:30 on 14 Mar
        // in New York (03:30Z on the 15th) is skipped.
        assert_eq!(
            local_series(
                "FREQ=DAILY;EXDATE=20261025",
                "2026-10-24T07:00:00Z",
                "Europe/Paris",
                1
            ),
            ["2026-10-26 Mon 09:00 08:00Z"]
        );
        assert_eq!(
            local_series(
                "FREQ=DAILY;EXDATE=20270314",
                "2027-03-14T04:30:00Z",
                "America/New_York",
                1
            ),
            ["2027-03-15 Mon 23:30 03:30Z"]
        );
        // As in RFC 5545, a removed date counts: COUNT=4 is this one and three more, of
        // which two are removed.
        assert_eq!(
            local_series(
                "FREQ=YEARLY;COUNT=4;EXDATE=20271225,20281225",
                "2026-12-25T09:00:00Z",
                "UTC",
                3
            ),
            ["2029-12-25 Tue 09:00 09:00Z"]
        );
        let rule: RecurrenceRule = "FREQ=YEARLY;COUNT=3;EXDATE=20271225,20281225"
            .parse()
            .unwrap();
        assert_eq!(
            next_occurrence(&rule, utc("2026-12-25T09:00:00Z"), Tz::UTC),
            None
        );
    }

    #[test]
    fn wkst_decides_which_weeks_an_interval_counts() {
        // RFC 5545's example: from Tuesday 5 Aug 1997, every other week on TU and SU.
        assert_eq!(
            series(
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU;WKST=MO",
                "1997-08-05T09:00:00Z",
                "UTC",
                3
            ),
            ["1997-08-10", "1997-08-19", "1997-08-24"]
        );
        assert_eq!(
            series(
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,SU;WKST=SU",
                "1997-08-05T09:00:00Z",
                "UTC",
                3
            ),
            ["1997-08-17", "1997-08-19", "1997-08-31"]
        );
    }

    #[test]
    fn yearly_byday_without_bymonth_stays_in_the_due_months() {
        assert_eq!(
            series("FREQ=YEARLY;BYDAY=-1FR", "2026-11-27T09:00:00Z", "UTC", 2),
            ["2027-11-26", "2028-11-24"]
        );
        assert_eq!(
            series("FREQ=YEARLY;BYMONTHDAY=1", "2026-11-27T09:00:00Z", "UTC", 2),
            ["2027-11-01", "2028-11-01"]
        );
    }
}
