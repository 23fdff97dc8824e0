//! Per-user statistics as a pure function of the task snapshots seen so far.
//!
//! Effects come from the difference between the stored state of a task and the snapshot
//! an event carries, and an event older than the stored version changes nothing. So a
//! redelivered event is a no-op, and when Redis Streams delivers a task's events out of
//! order, skipping the older one loses nothing: the newer snapshot already contains it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use taskmesh_shared::events::{TaskEventData, TaskEventKind};
use uuid::Uuid;

/// Days of completions kept (and reported).
pub const HISTORY_DAYS: i64 = 30;
/// Durations kept for the median.
const DURATION_SAMPLES: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserStats {
    pub created: u64,
    pub completed: u64,
    pub deleted: u64,
    tasks: HashMap<Uuid, TaskState>,
    completions_by_day: BTreeMap<NaiveDate, u64>,
    /// Seconds from creation to completion, the most recent last.
    durations: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TaskState {
    version: i64,
    completed: bool,
    deleted: bool,
    due: Option<DateTime<Utc>>,
}

/// What `stats/get` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub user_id: String,
    pub created: u64,
    pub completed: u64,
    pub deleted: u64,
    pub open: u64,
    pub overdue: u64,
    /// Completed tasks over tasks that still exist, 0 to 1 (0 with no tasks).
    pub completion_rate: f64,
    /// Oldest first, one entry per day of the last 30, zeros included.
    pub completions_per_day: Vec<DayCount>,
    pub median_seconds_to_complete: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    pub date: NaiveDate,
    pub completed: u64,
}

impl UserStats {
    /// Applies one event; returns whether anything changed (false for duplicates and
    /// events older than what was applied).
    pub fn apply(&mut self, kind: TaskEventKind, data: &TaskEventData) -> bool {
        let id = data.task.id;
        let previous = self.tasks.get(&id).cloned();
        if previous.as_ref().is_some_and(|p| p.version >= data.version) {
            return false;
        }
        let deleted = kind == TaskEventKind::Deleted;
        if previous.is_none() {
            self.created += 1;
        }
        let was_completed = previous.as_ref().is_some_and(|p| p.completed);
        let was_deleted = previous.as_ref().is_some_and(|p| p.deleted);
        if data.task.completed && !was_completed && !deleted {
            self.completed += 1;
            let at = data.task.completed_time.unwrap_or(data.occurred_at);
            *self.completions_by_day.entry(at.date_naive()).or_insert(0) += 1;
            self.durations
                .push((at - data.task.create_time).num_seconds().max(0));
            if self.durations.len() > DURATION_SAMPLES {
                let excess = self.durations.len() - DURATION_SAMPLES;
                self.durations.drain(..excess);
            }
        }
        if deleted && !was_deleted {
            self.deleted += 1;
        }
        self.tasks.insert(
            id,
            TaskState {
                version: data.version,
                completed: data.task.completed,
                deleted: deleted || was_deleted,
                due: data.task.due_time,
            },
        );
        if let Some(cutoff) = data
            .occurred_at
            .date_naive()
            .checked_sub_signed(Duration::days(HISTORY_DAYS))
        {
            self.completions_by_day.retain(|day, _| *day > cutoff);
        }
        true
    }

    pub fn report(&self, user_id: &str, now: DateTime<Utc>) -> Report {
        let live = self.tasks.values().filter(|t| !t.deleted);
        let (mut open, mut overdue, mut done) = (0, 0, 0);
        for task in live {
            if task.completed {
                done += 1;
            } else {
                open += 1;
                if task.due.is_some_and(|due| due < now) {
                    overdue += 1;
                }
            }
        }
        let today = now.date_naive();
        let completions_per_day = (0..HISTORY_DAYS)
            .rev()
            .filter_map(|back| today.checked_sub_signed(Duration::days(back)))
            .map(|date| DayCount {
                date,
                completed: self.completions_by_day.get(&date).copied().unwrap_or(0),
            })
            .collect();
        Report {
            user_id: user_id.to_owned(),
            created: self.created,
            completed: self.completed,
            deleted: self.deleted,
            open,
            overdue,
            completion_rate: if open + done == 0 {
                0.0
            } else {
                done as f64 / (open + done) as f64
            },
            completions_per_day,
            median_seconds_to_complete: median(&self.durations),
        }
    }
}

fn median(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use taskmesh_shared::events::TaskSnapshot;

    use super::*;

    pub fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    pub fn data(id: Uuid, version: i64, completed: bool, when: &str) -> TaskEventData {
        let created = at("2026-11-20T08:00:00Z");
        TaskEventData {
            task: TaskSnapshot {
                id,
                owner_id: "alice".into(),
                title: "t".into(),
                description: String::new(),
                priority: "medium".into(),
                tags: vec![],
                due_time: Some(at("2026-11-22T08:00:00Z")),
                time_zone: None,
                recurrence: None,
                completed,
                completed_time: completed.then(|| at(when)),
                create_time: created,
                update_time: at(when),
                version,
            },
            changed_fields: vec![],
            version,
            owner_id: "alice".into(),
            occurred_at: at(when),
        }
    }

    #[test]
    fn counts_follow_the_lifecycle() {
        let mut stats = UserStats::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let now = at("2026-11-24T12:00:00Z");
        assert!(stats.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z")
        ));
        assert!(stats.apply(
            TaskEventKind::Created,
            &data(b, 1, false, "2026-11-20T08:00:00Z")
        ));
        assert!(stats.apply(
            TaskEventKind::Completed,
            &data(a, 2, true, "2026-11-24T08:00:00Z")
        ));
        let report = stats.report("alice", now);
        assert_eq!(
            (
                report.created,
                report.completed,
                report.open,
                report.overdue
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(report.completion_rate, 0.5);
        assert_eq!(report.median_seconds_to_complete, Some(4 * 86400));
        assert_eq!(report.completions_per_day.len(), 30);
        assert_eq!(report.completions_per_day.last().unwrap().completed, 1);

        assert!(stats.apply(
            TaskEventKind::Deleted,
            &data(b, 2, false, "2026-11-24T09:00:00Z")
        ));
        let report = stats.report("alice", now);
        assert_eq!((report.deleted, report.open, report.overdue), (1, 0, 0));
        assert_eq!(report.completion_rate, 1.0);
    }

    #[test]
    fn duplicates_and_older_events_change_nothing() {
        let mut stats = UserStats::default();
        let a = Uuid::now_v7();
        let completed = data(a, 2, true, "2026-11-24T08:00:00Z");
        // Out of order: the completion arrives before the creation.
        assert!(stats.apply(TaskEventKind::Completed, &completed));
        let snapshot = stats.clone();
        assert!(!stats.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z")
        ));
        for _ in 0..50 {
            assert!(!stats.apply(TaskEventKind::Completed, &completed));
        }
        assert_eq!(stats, snapshot);
        assert_eq!((stats.created, stats.completed), (1, 1));
    }

    #[test]
    fn reopening_and_completing_again_counts_two_completions() {
        let mut stats = UserStats::default();
        let a = Uuid::now_v7();
        stats.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z"),
        );
        stats.apply(
            TaskEventKind::Completed,
            &data(a, 2, true, "2026-11-21T08:00:00Z"),
        );
        stats.apply(
            TaskEventKind::Reopened,
            &data(a, 3, false, "2026-11-22T08:00:00Z"),
        );
        stats.apply(
            TaskEventKind::Completed,
            &data(a, 4, true, "2026-11-23T08:00:00Z"),
        );
        assert_eq!(stats.completed, 2);
    }
}
