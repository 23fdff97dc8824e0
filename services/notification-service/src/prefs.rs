//! A user's notification preferences and the checks `preferences/set` applies.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The longest lead time a user may ask for.
pub const MAX_LEAD_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Seconds before the due time that the reminder fires (the service default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Must lie under the webhook binding's base URL (`TASKMESH_WEBHOOK_BASE_URL`): users
    /// cannot make the service call arbitrary addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Notifications are still kept, but nothing is e-mailed or posted.
    #[serde(default)]
    pub muted: bool,
}

/// A daily window, in the user's time zone, in which reminders wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// `HH:MM`
    pub start: String,
    /// `HH:MM`; earlier than `start` for a window across midnight.
    pub end: String,
    /// IANA name, e.g. `Europe/Paris`.
    pub time_zone: String,
}

/// One invalid field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: &'static str,
    pub description: String,
}

impl Preferences {
    /// Every problem at once, so that a client can fix them in one go.
    pub fn validate(&self, webhook_base: Option<&str>) -> Result<(), Vec<Violation>> {
        let mut violations = Vec::new();
        let mut bad =
            |field, description: String| violations.push(Violation { field, description });
        if let Some(lead) = self.lead_time_secs
            && lead > MAX_LEAD_SECS
        {
            bad(
                "lead_time_secs",
                format!("at most {MAX_LEAD_SECS} (7 days)"),
            );
        }
        if let Some(email) = &self.email
            && let Err(why) = check_email(email)
        {
            bad("email", why.into());
        }
        if let Some(url) = &self.webhook_url {
            match webhook_base {
                None => bad(
                    "webhook_url",
                    "webhooks are not enabled on this server".into(),
                ),
                Some(base) => {
                    if webhook_path(base, url).is_none() {
                        bad("webhook_url", format!("must start with {base}"));
                    }
                }
            }
        }
        if let Some(quiet) = &self.quiet_hours {
            let start = parse_clock(&quiet.start);
            let end = parse_clock(&quiet.end);
            if start.is_none() {
                bad("quiet_hours.start", "expected HH:MM".into());
            }
            if end.is_none() {
                bad("quiet_hours.end", "expected HH:MM".into());
            }
            if start.is_some() && start == end {
                bad("quiet_hours.end", "must differ from start".into());
            }
            if quiet.time_zone.parse::<Tz>().is_err() {
                bad(
                    "quiet_hours.time_zone",
                    format!("{:?} is not an IANA time zone", quiet.time_zone),
                );
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    pub fn lead(&self, default: Duration) -> Duration {
        self.lead_time_secs
            .and_then(|secs| i64::try_from(secs).ok())
            .map_or(default, Duration::seconds)
    }

    /// When quiet hours are on at `now`, the instant they end.
    pub fn quiet_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let quiet = self.quiet_hours.as_ref()?;
        let (start, end) = (parse_clock(&quiet.start)?, parse_clock(&quiet.end)?);
        let tz: Tz = quiet.time_zone.parse().ok()?;
        let local = now.with_timezone(&tz).naive_local();
        let time = local.time();
        let inside = if start < end {
            start <= time && time < end
        } else {
            time >= start || time < end
        };
        if !inside {
            return None;
        }
        let mut end_local = local.date().and_time(end);
        if end_local <= local {
            end_local += Duration::days(1);
        }
        // A quiet-hours end inside a daylight-saving gap happens at the first instant after it.
        (0..3)
            .find_map(|hours| {
                tz.from_local_datetime(&(end_local + Duration::hours(hours)))
                    .earliest()
            })
            .map(|end| end.with_timezone(&Utc))
    }
}

fn parse_clock(text: &str) -> Option<NaiveTime> {
    if text.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(text, "%H:%M").ok()
}

fn check_email(email: &str) -> Result<(), &'static str> {
    if email.len() > 254 {
        return Err("at most 254 characters");
    }
    // Control characters and spaces would let a value inject mail headers.
    if email
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ',' || c == ';')
    {
        return Err("must be a single address without spaces or separators");
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err("expected name@domain"),
    }
}

/// The path to post to under the webhook binding's base URL, if `url` lies under it.
pub fn webhook_path(base: &str, url: &str) -> Option<String> {
    let base = base.trim_end_matches('/');
    let rest = url.strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with('/')) || rest.contains("..") {
        return None;
    }
    if rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    Some(rest.trim_start_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn quiet(start: &str, end: &str, tz: &str) -> Preferences {
        Preferences {
            quiet_hours: Some(QuietHours {
                start: start.into(),
                end: end.into(),
                time_zone: tz.into(),
            }),
            ..Preferences::default()
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn all_violations_are_reported_by_field() {
        let prefs = Preferences {
            lead_time_secs: Some(MAX_LEAD_SECS + 1),
            email: Some("alice@example.com\r\nBcc: x@evil".into()),
            webhook_url: Some("http://169.254.169.254/latest".into()),
            quiet_hours: Some(QuietHours {
                start: "25:00".into(),
                end: "7:00".into(),
                time_zone: "Mars/Olympus".into(),
            }),
            muted: false,
        };
        let fields: Vec<_> = prefs
            .validate(Some("http://hooks.local/taskmesh"))
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "lead_time_secs",
                "email",
                "webhook_url",
                "quiet_hours.start",
                "quiet_hours.end",
                "quiet_hours.time_zone"
            ]
        );
    }

    #[test]
    fn good_preferences_pass() {
        let prefs = Preferences {
            lead_time_secs: Some(600),
            email: Some("alice@example.com".into()),
            webhook_url: Some("http://hooks.local/taskmesh/alice".into()),
            ..quiet("22:00", "07:00", "Europe/Paris")
        };
        assert_eq!(prefs.validate(Some("http://hooks.local/taskmesh/")), Ok(()));
        let without_webhooks = prefs.validate(None).unwrap_err();
        assert_eq!(without_webhooks[0].field, "webhook_url");
    }

    #[test]
    fn webhook_urls_stay_under_the_base() {
        let base = "http://hooks.local/taskmesh";
        assert_eq!(
            webhook_path(base, "http://hooks.local/taskmesh/a/b").unwrap(),
            "a/b"
        );
        assert_eq!(
            webhook_path(base, "http://hooks.local/taskmesh").unwrap(),
            ""
        );
        for bad in [
            "http://hooks.local/taskmeshevil",
            "http://hooks.local/taskmesh/../admin",
            "http://other/taskmesh/a",
            "http://hooks.local/taskmesh/a b",
        ] {
            assert_eq!(webhook_path(base, bad), None, "{bad}");
        }
    }

    #[test]
    fn quiet_hours_across_midnight_end_the_next_morning_in_the_users_zone() {
        let prefs = quiet("22:00", "07:00", "Europe/Paris");
        // 23:30 in Paris (UTC+1 in January) is quiet until 07:00 Paris = 06:00 UTC.
        assert_eq!(
            prefs.quiet_until(utc("2027-01-10T22:30:00Z")),
            Some(utc("2027-01-11T06:00:00Z"))
        );
        // 06:59 Paris, still quiet, ends a minute later the same day.
        assert_eq!(
            prefs.quiet_until(utc("2027-01-11T05:59:00Z")),
            Some(utc("2027-01-11T06:00:00Z"))
        );
        assert_eq!(prefs.quiet_until(utc("2027-01-11T06:00:00Z")), None);
        assert_eq!(prefs.quiet_until(utc("2027-01-11T12:00:00Z")), None);
    }

    #[test]
    fn quiet_hours_within_a_day_and_across_a_dst_change() {
        let lunch = quiet("12:00", "14:00", "UTC");
        assert_eq!(
            lunch.quiet_until(utc("2027-01-11T13:00:00Z")),
            Some(utc("2027-01-11T14:00:00Z"))
        );
        assert_eq!(lunch.quiet_until(utc("2027-01-11T14:30:00Z")), None);
        // Night of 27-28 March 2027, Paris springs forward: 07:00 is UTC+2, 05:00 UTC.
        let night = quiet("22:00", "07:00", "Europe/Paris");
        assert_eq!(
            night.quiet_until(utc("2027-03-27T23:00:00Z")),
            Some(utc("2027-03-28T05:00:00Z"))
        );
        // An end inside the gap (02:30 does not exist that night) moves past it.
        let gap = quiet("01:00", "02:30", "Europe/Paris");
        assert_eq!(
            gap.quiet_until(utc("2027-03-28T00:30:00Z")),
            Some(utc("2027-03-28T01:30:00Z"))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<Preferences>(serde_json::json!({"mute": true}));
        assert!(err.is_err());
    }
}
