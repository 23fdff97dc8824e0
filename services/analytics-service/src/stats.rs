//! Per-user statistics as a pure function of task transitions, in a record whose size does
//! not depend on how many tasks the user has.
//!
//! What a task was before an event (its `TaskState`) is kept in a record of its own (see
//! `consumer.rs`), not here: the caller hands the prior state in, `UserStats::apply`
//! turns "prior -> the event's snapshot" into counter changes. An event not newer than
//! the prior state changes nothing, so a redelivered event is a no-op, and when Redis
//! Streams delivers a task's events out of order, skipping the older one loses nothing:
//! the newer snapshot already contains it.
//!
//! Everything here is bounded: counters, 30 days of completions, the last 1,000 durations,
//! and at most `DUE_BUCKETS` buckets of open tasks' due times (`DueIndex`).

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use taskmesh_shared::events::{TaskEventData, TaskEventKind};

/// Days of completions kept (and reported).
pub const HISTORY_DAYS: i64 = 30;
/// Durations kept for the median.
const DURATION_SAMPLES: usize = 1000;
/// Buckets of open tasks' due times kept; beyond, the two closest merge (see `DueIndex`).
pub const DUE_BUCKETS: usize = 128;
/// A finished (completed or deleted) task's record is kept this long after its last event.
pub const FORGET_AFTER: Duration = Duration::days(30);

/// What we know of one task: enough to tell what an event changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    #[serde(rename = "v")]
    pub version: i64,
    #[serde(rename = "c", default)]
    pub completed: bool,
    #[serde(rename = "x", default)]
    pub deleted: bool,
    /// Due time in microseconds since the epoch (the events' precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<i64>,
    /// The day (since the epoch, by the consumer's clock) this state was applied: its
    /// record expires `FORGET_AFTER` later at the earliest.
    #[serde(rename = "d", default)]
    pub day: i32,
}

impl TaskState {
    /// Kept for good while the task is open; a finished task's record expires
    /// `FORGET_AFTER` after its last event (see `UserStats::forgotten` for what a later
    /// event of it then finds).
    pub fn ttl(&self) -> Option<std::time::Duration> {
        (self.completed || self.deleted).then(|| FORGET_AFTER.to_std().unwrap_or_default())
    }

    fn live(&self) -> bool {
        !self.deleted
    }
}

/// What a task was before an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prior {
    /// Never seen: the event is (or stands in for) its creation.
    Unseen,
    /// Seen, completed, and its record expired (see `UserStats::forgotten`).
    Forgotten,
    Known(TaskState),
}

/// A day number (since the epoch) by `at`'s clock.
pub fn day_of(at: DateTime<Utc>) -> i32 {
    i32::try_from(at.timestamp().div_euclid(86_400)).unwrap_or(i32::MAX)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserStats {
    pub created: u64,
    pub completed: u64,
    pub deleted: u64,
    /// Live (not deleted) tasks, not completed.
    #[serde(default)]
    pub open: u64,
    /// Live tasks, completed.
    #[serde(default)]
    pub done: u64,
    /// `done` by the day their state was applied, for the last `FORGET_AFTER` days.
    #[serde(default)]
    done_by_day: BTreeMap<i32, u64>,
    /// The rest of `done`: live completed tasks whose records have expired (or, within
    /// the day, are about to). A task with no record that is old enough is one of them,
    /// as long as there is one (see `prior`).
    #[serde(default)]
    forgotten: u64,
    /// Days before this one are counted in `forgotten`.
    #[serde(default)]
    forgotten_before: i32,
    /// Due times of the open tasks that have one.
    #[serde(default)]
    due: DueIndex,
    #[serde(default)]
    completions_by_day: BTreeMap<NaiveDate, u64>,
    /// Seconds from creation to completion, the most recent last.
    #[serde(default)]
    durations: VecDeque<i64>,
}

/// What `stats/get` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub user_id: String,
    pub created: u64,
    pub completed: u64,
    pub deleted: u64,
    pub open: u64,
    /// Exact while the user's open tasks have at most `DUE_BUCKETS` distinct future due
    /// times (see `DueIndex`); beyond, estimated within the one bucket that straddles now.
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

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

impl UserStats {
    /// The prior state of an event's task from what is stored (`None`: no record). A task
    /// with no record, created more than `FORGET_AFTER` before the event, while some
    /// completed tasks' records have expired, is one of those: every event of a task
    /// arrives within minutes of its change (so one of its events was applied), and only
    /// a finished task's record expires (a deleted task has no later events). Otherwise it
    /// was never seen.
    fn prior(&self, stored: Option<TaskState>, data: &TaskEventData) -> Prior {
        let old = data
            .task
            .create_time
            .checked_add_signed(FORGET_AFTER)
            .is_some_and(|forgotten| forgotten < data.occurred_at);
        match stored {
            Some(state) => Prior::Known(state),
            None if old && self.forgotten > 0 => Prior::Forgotten,
            None => Prior::Unseen,
        }
    }

    /// Statistics carried over from counts and task states kept elsewhere (`legacy.rs`), as
    /// if every task had been applied `now` (so each state's `day` is `now`'s).
    pub fn restored(
        (created, completed, deleted): (u64, u64, u64),
        tasks: impl Iterator<Item = TaskState>,
        completions_by_day: BTreeMap<NaiveDate, u64>,
        durations: Vec<i64>,
        now: DateTime<Utc>,
    ) -> Self {
        let skip = durations.len().saturating_sub(DURATION_SAMPLES);
        let mut stats = Self {
            created,
            completed,
            deleted,
            completions_by_day,
            durations: durations.into_iter().skip(skip).collect(),
            ..Self::default()
        };
        stats.roll(day_of(now));
        stats.due.fold(micros(now));
        for state in tasks {
            stats.count(&state, true);
        }
        stats
    }

    /// Moves the completed tasks applied `FORGET_AFTER` days ago or earlier into
    /// `forgotten`: a record written on day `d` expires on day `d + 30` at the earliest,
    /// so from that day on it counts there, and every record that expired does.
    fn roll(&mut self, today: i32) {
        let before = today.saturating_sub(FORGET_AFTER.num_days() as i32 - 1);
        if before <= self.forgotten_before {
            return;
        }
        let kept = self.done_by_day.split_off(&before);
        self.forgotten += self.done_by_day.values().sum::<u64>();
        self.done_by_day = kept;
        self.forgotten_before = before;
    }

    /// Applies one event to a task that was `prior`, at wall-clock `now`. Returns the
    /// task's new state, or `None` when the event is not newer than `prior` (a duplicate
    /// or an older event): then nothing changed.
    pub fn apply(
        &mut self,
        stored: Option<TaskState>,
        kind: TaskEventKind,
        data: &TaskEventData,
        now: DateTime<Utc>,
    ) -> Option<TaskState> {
        let today = day_of(now);
        self.roll(today);
        let prior = self.prior(stored, data);
        let before = match prior {
            Prior::Known(state) if state.version >= data.version => return None,
            Prior::Known(state) => Some(state),
            Prior::Unseen => None,
            Prior::Forgotten => Some(TaskState {
                version: 0,
                completed: true,
                deleted: false,
                due: None,
                day: i32::MIN,
            }),
        };
        self.due.fold(micros(now));
        if prior == Prior::Unseen {
            self.created += 1;
        }
        let was_completed = before.is_some_and(|b| b.completed);
        let was_deleted = before.is_some_and(|b| b.deleted);
        let deleted = kind == TaskEventKind::Deleted;
        // A completion event is one completion (completing a completed task publishes
        // nothing, so one seen completed before was reopened since). And a completion we
        // did not see is still counted when an event shows it happened: the task is
        // completed now (also in a deletion's snapshot, the task as it was), or this is a
        // reopening (only a completed task is reopened). Redis Streams may deliver a
        // completion after the task's next event, and then it changes nothing itself.
        let reopened = kind == TaskEventKind::Reopened;
        let completion = kind == TaskEventKind::Completed
            || ((data.task.completed || reopened) && !was_completed);
        if completion {
            self.completed += 1;
            let at = data.task.completed_time.unwrap_or(data.occurred_at);
            *self.completions_by_day.entry(at.date_naive()).or_insert(0) += 1;
            // A reopening does not say when the task was completed: no duration then.
            if data.task.completed {
                self.durations
                    .push_back((at - data.task.create_time).num_seconds().max(0));
                while self.durations.len() > DURATION_SAMPLES {
                    self.durations.pop_front();
                }
            }
        }
        if deleted && !was_deleted {
            self.deleted += 1;
        }
        let after = TaskState {
            version: data.version,
            completed: data.task.completed,
            deleted: deleted || was_deleted,
            due: data.task.due_time.map(micros),
            day: today,
        };
        if let Some(before) = before {
            self.count(&before, false);
        }
        self.count(&after, true);
        if let Some(cutoff) = data
            .occurred_at
            .date_naive()
            .checked_sub_signed(Duration::days(HISTORY_DAYS))
        {
            self.completions_by_day.retain(|day, _| *day > cutoff);
        }
        Some(after)
    }

    /// Adds (or takes away) a task's share of `open`, `done` and the due index.
    fn count(&mut self, state: &TaskState, add: bool) {
        fn step(counter: &mut u64, add: bool) {
            *counter = if add {
                *counter + 1
            } else {
                counter.saturating_sub(1)
            };
        }
        if !state.live() {
            return;
        }
        if state.completed {
            step(&mut self.done, add);
            if state.day < self.forgotten_before {
                step(&mut self.forgotten, add);
            } else {
                let day = self.done_by_day.entry(state.day).or_insert(0);
                step(day, add);
                if *day == 0 {
                    self.done_by_day.remove(&state.day);
                }
            }
            return;
        }
        step(&mut self.open, add);
        if let Some(due) = state.due {
            if add {
                self.due.add(due);
            } else {
                self.due.remove(due);
            }
        }
    }

    pub fn report(&self, user_id: &str, now: DateTime<Utc>) -> Report {
        let today = now.date_naive();
        let completions_per_day = (0..HISTORY_DAYS)
            .rev()
            .filter_map(|back| today.checked_sub_signed(Duration::days(back)))
            .map(|date| DayCount {
                date,
                completed: self.completions_by_day.get(&date).copied().unwrap_or(0),
            })
            .collect();
        let (open, done) = (self.open, self.done);
        Report {
            user_id: user_id.to_owned(),
            created: self.created,
            completed: self.completed,
            deleted: self.deleted,
            open,
            overdue: self.due.overdue(micros(now)).min(open),
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

/// How many open tasks are due before a given time, in bounded space.
///
/// Open tasks with a due time are counted in buckets `[start, end)` (microseconds, sorted,
/// disjoint). A new due time gets an exact bucket `[due, due + 1)`; buckets that ended
/// before the last event (`folded_at`) fold into one count, `past`, since whatever is
/// asked later finds them overdue. So only future due times take room, and while there are
/// at most `DUE_BUCKETS` distinct ones the overdue count is exact. Beyond, the two adjacent
/// buckets spanning the shortest time merge: the answer is then estimated (linearly) only
/// while now lies inside a merged bucket, which is as short as the user's due times are
/// dense. A task leaving the index is taken from the bucket that contains its due time, or
/// from `past` when none does (merges never cover time before `folded_at`, so a due time
/// counted in `past` never falls in a bucket).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DueIndex {
    #[serde(default)]
    past: u64,
    #[serde(default)]
    folded_at: i64,
    /// `[start, end, count]`.
    #[serde(default)]
    buckets: Vec<[i64; 3]>,
}

impl DueIndex {
    fn fold(&mut self, now: i64) {
        if now <= self.folded_at {
            return;
        }
        let mut folded = 0;
        self.buckets.retain(|b| {
            let keep = b[1] > now;
            if !keep {
                folded += b[2] as u64;
            }
            keep
        });
        self.past += folded;
        self.folded_at = now;
    }

    fn find(&self, due: i64) -> Option<usize> {
        let after = self.buckets.partition_point(|b| b[0] <= due);
        (after > 0 && due < self.buckets[after - 1][1]).then(|| after - 1)
    }

    fn add(&mut self, due: i64) {
        if let Some(i) = self.find(due) {
            self.buckets[i][2] += 1;
        } else if due < self.folded_at {
            self.past += 1;
        } else {
            let at = self.buckets.partition_point(|b| b[0] < due);
            self.buckets.insert(at, [due, due.saturating_add(1), 1]);
            if self.buckets.len() > DUE_BUCKETS {
                self.merge_closest();
            }
        }
    }

    fn remove(&mut self, due: i64) {
        match self.find(due) {
            Some(i) => {
                self.buckets[i][2] -= 1;
                if self.buckets[i][2] <= 0 {
                    self.buckets.remove(i);
                }
            }
            None => self.past = self.past.saturating_sub(1),
        }
    }

    fn merge_closest(&mut self) {
        let Some(i) = (0..self.buckets.len().saturating_sub(1))
            .min_by_key(|&i| self.buckets[i + 1][1].saturating_sub(self.buckets[i][0]))
        else {
            return;
        };
        let right = self.buckets.remove(i + 1);
        self.buckets[i][1] = right[1];
        self.buckets[i][2] += right[2];
    }

    /// Open tasks due before `now`.
    fn overdue(&self, now: i64) -> u64 {
        let mut overdue = self.past as f64;
        for &[start, end, count] in &self.buckets {
            if end <= now {
                overdue += count as f64;
            } else if start < now {
                // In floating point: a bucket may span more than i64 microseconds can.
                overdue += count as f64 * (now as f64 - start as f64) / (end as f64 - start as f64);
            }
        }
        overdue.round() as u64
    }
}

fn median(values: &VecDeque<i64>) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<i64> = values.iter().copied().collect();
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

    use std::collections::HashMap;

    use taskmesh_shared::events::TaskSnapshot;
    use uuid::Uuid;

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

    /// The per-task records `consumer.rs` keeps, in a map.
    #[derive(Default)]
    struct Model {
        stats: UserStats,
        tasks: HashMap<Uuid, TaskState>,
    }

    impl Model {
        fn apply(&mut self, kind: TaskEventKind, data: &TaskEventData) -> bool {
            let stored = self.tasks.get(&data.task.id).copied();
            match self.stats.apply(stored, kind, data, data.occurred_at) {
                Some(state) => {
                    self.tasks.insert(data.task.id, state);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn counts_follow_the_lifecycle() {
        let mut model = Model::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let now = at("2026-11-24T12:00:00Z");
        assert!(model.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z")
        ));
        assert!(model.apply(
            TaskEventKind::Created,
            &data(b, 1, false, "2026-11-20T08:00:00Z")
        ));
        assert!(model.apply(
            TaskEventKind::Completed,
            &data(a, 2, true, "2026-11-24T08:00:00Z")
        ));
        let report = model.stats.report("alice", now);
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

        assert!(model.apply(
            TaskEventKind::Deleted,
            &data(b, 2, false, "2026-11-24T09:00:00Z")
        ));
        let report = model.stats.report("alice", now);
        assert_eq!((report.deleted, report.open, report.overdue), (1, 0, 0));
        assert_eq!(report.completion_rate, 1.0);
    }

    #[test]
    fn duplicates_and_older_events_change_nothing() {
        let mut model = Model::default();
        let a = Uuid::now_v7();
        let completed = data(a, 2, true, "2026-11-24T08:00:00Z");
        // Out of order: the completion arrives before the creation.
        assert!(model.apply(TaskEventKind::Completed, &completed));
        let snapshot = model.stats.clone();
        assert!(!model.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z")
        ));
        for _ in 0..50 {
            assert!(!model.apply(TaskEventKind::Completed, &completed));
        }
        assert_eq!(model.stats, snapshot);
        assert_eq!((model.stats.created, model.stats.completed), (1, 1));
    }

    #[test]
    fn reopening_and_completing_again_counts_two_completions() {
        let mut model = Model::default();
        let a = Uuid::now_v7();
        for (kind, version, completed, when) in [
            (TaskEventKind::Created, 1, false, "2026-11-20T08:00:00Z"),
            (TaskEventKind::Completed, 2, true, "2026-11-21T08:00:00Z"),
            (TaskEventKind::Reopened, 3, false, "2026-11-22T08:00:00Z"),
            (TaskEventKind::Completed, 4, true, "2026-11-23T08:00:00Z"),
        ] {
            assert!(model.apply(kind, &data(a, version, completed, when)));
        }
        assert_eq!(model.stats.completed, 2);
        assert_eq!((model.stats.open, model.stats.done), (0, 1));
    }

    #[test]
    fn a_completion_delivered_after_the_next_event_is_still_counted() {
        let mut model = Model::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        model.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z"),
        );
        // a: completed (v2), reopened (v3); the reopening arrives first.
        assert!(model.apply(
            TaskEventKind::Reopened,
            &data(a, 3, false, "2026-11-21T09:00:00Z")
        ));
        assert!(!model.apply(
            TaskEventKind::Completed,
            &data(a, 2, true, "2026-11-21T08:00:00Z")
        ));
        // b: created, completed (v2), deleted (v3); only the deletion arrives.
        assert!(model.apply(
            TaskEventKind::Deleted,
            &data(b, 3, true, "2026-11-22T08:00:00Z")
        ));
        let stats = &model.stats;
        assert_eq!(
            (
                stats.created,
                stats.completed,
                stats.deleted,
                stats.open,
                stats.done
            ),
            (2, 2, 1, 1, 0)
        );
        // Only b's completion says when it happened.
        assert_eq!(stats.durations.len(), 1);

        // a: completed (v4), reopened (v5), completed (v6); v6 arrives first. Completing a
        // completed task publishes nothing, so v6 is a completion of its own.
        assert!(model.apply(
            TaskEventKind::Completed,
            &data(a, 4, true, "2026-11-23T08:00:00Z")
        ));
        assert!(model.apply(
            TaskEventKind::Completed,
            &data(a, 6, true, "2026-11-23T10:00:00Z")
        ));
        assert!(!model.apply(
            TaskEventKind::Reopened,
            &data(a, 5, false, "2026-11-23T09:00:00Z")
        ));
        assert_eq!((model.stats.completed, model.stats.done), (4, 1));
    }

    #[test]
    fn a_forgotten_task_is_neither_created_nor_completed_again() {
        let mut model = Model::default();
        let a = Uuid::now_v7();
        model.apply(
            TaskEventKind::Created,
            &data(a, 1, false, "2026-11-20T08:00:00Z"),
        );
        model.apply(
            TaskEventKind::Completed,
            &data(a, 2, true, "2026-11-21T08:00:00Z"),
        );
        // 30 days after its completion its record expired; then it is reopened.
        model.tasks.clear();
        assert!(model.apply(
            TaskEventKind::Reopened,
            &data(a, 3, false, "2027-01-10T08:00:00Z")
        ));
        let report = model.stats.report("alice", at("2027-01-10T09:00:00Z"));
        assert_eq!(
            (
                report.created,
                report.completed,
                report.open,
                report.overdue
            ),
            (1, 1, 1, 1)
        );
        assert_eq!((model.stats.done, model.stats.forgotten), (0, 0));
    }

    #[test]
    fn an_old_task_never_seen_is_created_while_nothing_was_forgotten() {
        let mut model = Model::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        model.apply(
            TaskEventKind::Completed,
            &data(a, 1, true, "2026-11-20T08:00:00Z"),
        );
        // b was created on the 20th and deleted 40 days later: a's record has not expired
        // (a was completed 40 days ago by the event's clock, but just now by ours), so b
        // is new and a stays done.
        let mut late = data(b, 2, false, "2026-12-30T08:00:00Z");
        late.occurred_at = at("2026-12-30T08:00:00Z");
        model.stats.apply(
            None,
            TaskEventKind::Deleted,
            &late,
            at("2026-11-20T09:00:00Z"),
        );
        let stats = &model.stats;
        assert_eq!(
            (stats.created, stats.done, stats.deleted, stats.open),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn done_tasks_roll_into_forgotten_and_leave_it_exactly() {
        let mut model = Model::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [a, b] {
            model.apply(
                TaskEventKind::Completed,
                &data(id, 1, true, "2026-11-20T08:00:00Z"),
            );
        }
        assert_eq!(model.stats.done_by_day.values().sum::<u64>(), 2);
        // 30 days on, both are counted as forgotten: a's record expired, b's is still
        // there (expiry and our clock need not agree to the second).
        model.tasks.remove(&a);
        let c = Uuid::now_v7();
        model.apply(
            TaskEventKind::Created,
            &data(c, 1, false, "2026-12-20T08:00:00Z"),
        );
        assert_eq!((model.stats.forgotten, model.stats.done), (2, 2));
        // b, still known, is reopened; a, forgotten, is deleted.
        model.apply(
            TaskEventKind::Reopened,
            &data(b, 2, false, "2026-12-20T09:00:00Z"),
        );
        model.apply(
            TaskEventKind::Deleted,
            &data(a, 2, true, "2026-12-20T10:00:00Z"),
        );
        let stats = &model.stats;
        assert_eq!(
            (
                stats.created,
                stats.forgotten,
                stats.done,
                stats.open,
                stats.deleted
            ),
            (3, 0, 0, 2, 1)
        );
    }

    #[test]
    fn overdue_is_exact_up_to_the_bucket_limit_and_close_beyond() {
        let start = at("2026-11-20T08:00:00Z");
        for tasks in [DUE_BUCKETS, 5 * DUE_BUCKETS] {
            let mut model = Model::default();
            let mut dues = Vec::new();
            for i in 0..tasks {
                let mut event = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");
                // One due time every 37 minutes from a day on.
                let due = start + Duration::days(1) + Duration::minutes(37 * i as i64);
                event.task.due_time = Some(due);
                dues.push(due);
                assert!(model.apply(TaskEventKind::Created, &event));
            }
            assert!(model.stats.due.buckets.len() <= DUE_BUCKETS);
            for hours in [0, 30, 47, 100, 200, 1000, 10_000] {
                let now = start + Duration::hours(hours) + Duration::seconds(1);
                let truth = dues.iter().filter(|d| **d < now).count() as i64;
                let got = model.stats.report("alice", now).overdue as i64;
                if tasks <= DUE_BUCKETS {
                    assert_eq!(got, truth, "{tasks} tasks, {hours} h");
                } else {
                    // Merged buckets span about 5 due times: the estimate is within them.
                    assert!((got - truth).abs() <= 5, "{got} vs {truth} at {hours} h");
                }
            }
        }
    }

    #[test]
    fn overdue_follows_completions_of_folded_and_bucketed_tasks() {
        let mut model = Model::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut first = data(a, 1, false, "2026-11-20T08:00:00Z");
        first.task.due_time = Some(at("2026-11-21T08:00:00Z"));
        let mut second = data(b, 1, false, "2026-11-20T08:00:00Z");
        second.task.due_time = Some(at("2026-11-30T08:00:00Z"));
        model.apply(TaskEventKind::Created, &first);
        model.apply(TaskEventKind::Created, &second);
        // An event on the 25th folds a's bucket into `past`.
        let mut moved = data(b, 2, false, "2026-11-25T08:00:00Z");
        moved.task.due_time = Some(at("2026-12-05T08:00:00Z"));
        model.apply(TaskEventKind::Updated, &moved);
        assert_eq!(model.stats.due.past, 1);
        let report = model.stats.report("alice", at("2026-12-01T00:00:00Z"));
        assert_eq!(report.overdue, 1);
        let report = model.stats.report("alice", at("2026-12-06T00:00:00Z"));
        assert_eq!(report.overdue, 2);
        // Completing both empties the index, folded or not.
        let mut done_a = data(a, 2, true, "2026-11-26T08:00:00Z");
        done_a.task.due_time = first.task.due_time;
        model.apply(TaskEventKind::Completed, &done_a);
        let mut done_b = data(b, 3, true, "2026-11-26T09:00:00Z");
        done_b.task.due_time = moved.task.due_time;
        model.apply(TaskEventKind::Completed, &done_b);
        assert_eq!(
            model.stats.due,
            DueIndex {
                past: 0,
                folded_at: micros(at("2026-11-26T09:00:00Z")),
                buckets: vec![],
            }
        );
        assert_eq!(
            model
                .stats
                .report("alice", at("2027-01-01T00:00:00Z"))
                .overdue,
            0
        );
    }
}
