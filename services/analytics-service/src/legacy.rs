//! Statistics kept by earlier versions: one `stats:<user>` record holding every task the
//! user ever had. Read once per user, when the user has no `user:<id>` aggregate yet: its
//! tasks become `task:<id>` records and its counts the aggregate (see `consumer.rs`), and
//! the old record is then deleted.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::stats::{TaskState, UserStats, day_of};

pub fn legacy_key(user_id: &str) -> String {
    format!("stats:{user_id}")
}

/// The old record, as it was serialised.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegacyStats {
    #[serde(default)]
    created: u64,
    #[serde(default)]
    completed: u64,
    #[serde(default)]
    deleted: u64,
    #[serde(default)]
    tasks: HashMap<Uuid, LegacyTask>,
    #[serde(default)]
    completions_by_day: BTreeMap<NaiveDate, u64>,
    #[serde(default)]
    durations: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct LegacyTask {
    version: i64,
    #[serde(default)]
    completed: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    due: Option<DateTime<Utc>>,
}

impl LegacyStats {
    /// The aggregate these statistics make, and every task's state (as applied `now`).
    pub fn convert(self, now: DateTime<Utc>) -> (UserStats, Vec<(Uuid, TaskState)>) {
        let day = day_of(now);
        let tasks: Vec<(Uuid, TaskState)> = self
            .tasks
            .into_iter()
            .map(|(id, task)| {
                let state = TaskState {
                    version: task.version,
                    completed: task.completed,
                    deleted: task.deleted,
                    due: task.due.map(|due| due.timestamp_micros()),
                    day,
                    rev: 0,
                    // Everything up to `version` was counted.
                    facts: None,
                };
                (id, state)
            })
            .collect();
        let stats = UserStats::restored(
            (self.created, self.completed, self.deleted),
            tasks.iter().map(|(_, state)| state.clone()),
            self.completions_by_day,
            self.durations,
            now,
        );
        (stats, tasks)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn the_old_record_converts_with_its_counts() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        // As the previous version wrote it.
        let old = json!({
            "created": 3, "completed": 2, "deleted": 1,
            "tasks": {
                a.to_string(): {"version": 2, "completed": true, "deleted": false, "due": null},
                b.to_string(): {"version": 1, "completed": false, "deleted": false,
                                "due": "2026-11-22T08:00:00Z"},
                c.to_string(): {"version": 3, "completed": true, "deleted": true, "due": null},
            },
            "completions_by_day": {"2026-11-24": 2},
            "durations": [100, 300]
        });
        let legacy: LegacyStats = serde_json::from_value(old).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (stats, tasks) = legacy.convert(now);
        let report = stats.report("alice", now);
        assert_eq!(
            (
                report.created,
                report.completed,
                report.deleted,
                report.open,
                report.overdue
            ),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(report.completion_rate, 0.5);
        assert_eq!(report.median_seconds_to_complete, Some(200));
        assert_eq!(report.completions_per_day.last().unwrap().completed, 2);
        assert_eq!(tasks.len(), 3);
    }
}
