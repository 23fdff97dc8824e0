//! Per-user statistics as a pure function of task events, in a record whose size does not
//! depend on how many tasks the user has.
//!
//! One event may count for up to three users (`shares`): the task's owner (its creator)
//! for what the task is (created, open, done, deleted, due), the user who completed it
//! (`actor_id`, the owner in older events) for a completion, and the user it was just
//! assigned to for an assignment. What a user's statistics counted of a task (its
//! `TaskState`) is kept in a record of its own (see `consumer.rs`), not here: the caller
//! hands it in, `UserStats::apply` turns the event into counter changes and the new state.
//!
//! Two kinds of counting, each idempotent:
//! - **What the task is** follows the newest snapshot: "prior -> the event's snapshot".
//!   An event not newer than the prior state changes none of it, so a redelivery is a
//!   no-op, and an older event delivered late (Redis Streams does not keep order) loses
//!   nothing: the newer snapshot already contains its effect.
//! - **What happened** (a completion, an assignment) is counted once per event version,
//!   in whatever order the versions arrive: the state keeps the versions it counted
//!   (`Facts`). An older event's completion is counted when it comes, however many newer
//!   events came first.
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
/// A finished (completed or deleted) task's record is kept this long after its last event,
/// and the record of another user's task (a completion, an assignment) this long after its
/// last write.
pub const FORGET_AFTER: Duration = Duration::days(30);
/// Versions of one task counted for one user, kept one by one (see `Facts`).
pub const FACTS_KEPT: usize = 64;

/// What one user's statistics counted of one task: enough to tell what an event changes.
/// For the owner, what the task is (`version` is the newest snapshot applied); for anyone
/// else only `facts` and `version` (the newest event counted) mean anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The day (since the epoch, by the consumer's clock) this state's snapshot was
    /// applied: its record expires `FORGET_AFTER` later at the earliest.
    #[serde(rename = "d", default)]
    pub day: i32,
    /// Grows by one with every change of this state, also one that only counts an older
    /// event's facts: with `version`, it orders the writes of the state (`progress`).
    #[serde(rename = "r", default)]
    pub rev: u64,
    /// The event versions whose completion or assignment was counted. Absent in states
    /// written before facts were kept: everything up to `version` was counted then.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
}

impl TaskState {
    /// A state that counted nothing yet (another user's task, first seen).
    fn unseen() -> Self {
        Self {
            version: 0,
            completed: false,
            deleted: false,
            due: None,
            day: 0,
            rev: 0,
            facts: Some(Facts::default()),
        }
    }

    /// The owner's record is kept for good while the task is open; a finished task's
    /// record expires `FORGET_AFTER` after its last event (see `UserStats::forgotten` for
    /// what a later event of it then finds). Another user's record (`own` false) only
    /// holds facts, and expires `FORGET_AFTER` after its last write: an event of the task
    /// comes within minutes, a replayed dead letter within 14 days.
    pub fn ttl(&self, own: bool) -> Option<std::time::Duration> {
        (!own || self.completed || self.deleted).then(|| FORGET_AFTER.to_std().unwrap_or_default())
    }

    /// Orders two states of one record: the later write is the greater.
    pub fn progress(&self) -> (i64, u64) {
        (self.version, self.rev)
    }

    fn facts(&self) -> Facts {
        self.facts.clone().unwrap_or(Facts {
            upto: self.version,
            above: Vec::new(),
        })
    }

    fn live(&self) -> bool {
        !self.deleted
    }
}

/// Which versions of a task had their facts counted for a user: every version up to
/// `upto`, and those in `above`. Bounded: beyond `FACTS_KEPT` versions in `above`, the
/// oldest moves into `upto`, so an event older than the newest 64 counted for this user of
/// this task would be taken as counted. Events arrive within seconds of each other; that
/// many later completions and assignments of one task to one user before it are not a
/// case that happens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    #[serde(rename = "u", default)]
    upto: i64,
    /// Ascending, each above `upto + 1`.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    above: Vec<i64>,
}

impl Facts {
    /// Counts `version`: false if it was counted already.
    fn insert(&mut self, version: i64) -> bool {
        if version <= self.upto {
            return false;
        }
        let Err(at) = self.above.binary_search(&version) else {
            return false;
        };
        self.above.insert(at, version);
        // Contiguous versions from `upto` on say no more than `upto` does.
        while self.above.first() == Some(&(self.upto + 1)) {
            self.upto = self.above.remove(0);
        }
        while self.above.len() > FACTS_KEPT {
            self.upto = self.above.remove(0);
        }
        true
    }
}

/// What one event counts for one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// The user owns (created) the task: what it is.
    pub owner: bool,
    /// The user completed it (this is a completion event).
    pub completed: bool,
    /// The task was just assigned to the user.
    pub assigned: bool,
}

/// The users an event counts for, the owner first, each once.
pub fn shares(kind: TaskEventKind, data: &TaskEventData) -> Vec<(String, Share)> {
    let mut shares = vec![(
        data.owner_id.clone(),
        Share {
            owner: true,
            ..Share::default()
        },
    )];
    let mut add = |user: &str, set: fn(&mut Share)| match shares.iter_mut().find(|(u, _)| u == user)
    {
        Some((_, share)) => set(share),
        None => {
            let mut share = Share::default();
            set(&mut share);
            shares.push((user.to_owned(), share));
        }
    };
    if kind == TaskEventKind::Completed {
        let actor = data.actor_id.as_deref().unwrap_or(&data.owner_id);
        add(actor, |share| share.completed = true);
    }
    if let Some(assignee) = assigned_to(kind, data) {
        add(assignee, |share| share.assigned = true);
    }
    shares
}

/// The user the change assigned the task to: a creation with an assignee, or a change of
/// the assignee to someone (not an unassignment).
fn assigned_to(kind: TaskEventKind, data: &TaskEventData) -> Option<&str> {
    let assignee = data.task.assignee_id.as_deref()?;
    let changed =
        kind == TaskEventKind::Created || data.changed_fields.iter().any(|f| f == "assignee_id");
    (kind != TaskEventKind::Deleted
        && changed
        && data.previous_assignee_id.as_deref() != Some(assignee))
    .then_some(assignee)
}

/// What a task was before an event.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Tasks the user created.
    pub created: u64,
    /// Completions the user made (of any task they could change).
    pub completed: u64,
    /// Times a task was assigned to the user.
    #[serde(default)]
    pub assigned: u64,
    /// The user's tasks deleted (by anyone).
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
    /// The user's completions by day.
    #[serde(default)]
    completions_by_day: BTreeMap<NaiveDate, u64>,
    /// Seconds from creation to completion of the user's completions, the most recent
    /// last.
    #[serde(default)]
    durations: VecDeque<i64>,
}

/// What `stats/get` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub user_id: String,
    /// Tasks the user created.
    pub created: u64,
    /// Completions the user made, of their own tasks and of tasks shared with them.
    pub completed: u64,
    /// Times a task was assigned to the user.
    #[serde(default)]
    pub assigned: u64,
    /// From here on, the tasks the user created: deleted, open, overdue, completion rate.
    pub deleted: u64,
    pub open: u64,
    /// Exact while the user's open tasks have at most `DUE_BUCKETS` distinct future due
    /// times (see `DueIndex`); beyond, estimated within the one bucket that straddles now.
    pub overdue: u64,
    /// Completed tasks over tasks that still exist, 0 to 1 (0 with no tasks).
    pub completion_rate: f64,
    /// The user's completions, oldest first, one entry per day of the last 30, zeros
    /// included.
    pub completions_per_day: Vec<DayCount>,
    /// Of the user's completions.
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
    fn prior(&self, stored: Option<&TaskState>, data: &TaskEventData) -> Prior {
        let old = data
            .task
            .create_time
            .checked_add_signed(FORGET_AFTER)
            .is_some_and(|forgotten| forgotten < data.occurred_at);
        match stored {
            Some(state) => Prior::Known(state.clone()),
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

    /// Applies `share`, what one event counts for this user, to the state the user's
    /// statistics counted of the task (`stored`, `None` when they have none), at wall-clock
    /// `now`. Returns the task's new state, or `None` when the event changes nothing (a
    /// duplicate, or an older snapshot with no fact left to count).
    pub fn apply(
        &mut self,
        stored: Option<&TaskState>,
        kind: TaskEventKind,
        data: &TaskEventData,
        share: Share,
        now: DateTime<Utc>,
    ) -> Option<TaskState> {
        let today = day_of(now);
        self.roll(today);
        let (mut state, mut changed) = if share.owner {
            self.apply_snapshot(stored, kind, data, now)
        } else {
            (stored.cloned().unwrap_or_else(TaskState::unseen), false)
        };
        if share.completed || share.assigned {
            let mut facts = state.facts();
            if facts.insert(data.version) {
                state.facts = Some(facts);
                state.version = state.version.max(data.version);
                if share.completed {
                    self.count_completion(data);
                }
                if share.assigned {
                    self.assigned += 1;
                }
                changed = true;
            }
        }
        changed.then(|| {
            state.rev += 1;
            state
        })
    }

    /// What the task is, for its owner: the transition from the prior state to the event's
    /// snapshot when it is newer. The state after (the prior one when nothing changed), and
    /// whether it changed.
    fn apply_snapshot(
        &mut self,
        stored: Option<&TaskState>,
        kind: TaskEventKind,
        data: &TaskEventData,
        now: DateTime<Utc>,
    ) -> (TaskState, bool) {
        let prior = self.prior(stored, data);
        let (before, facts) = match prior {
            Prior::Known(state) if state.version >= data.version => return (state, false),
            Prior::Known(ref state) => (Some(state.clone()), state.facts()),
            Prior::Unseen => (None, Facts::default()),
            // Its events up to this one were all applied long ago.
            Prior::Forgotten => (
                Some(TaskState {
                    version: 0,
                    completed: true,
                    deleted: false,
                    due: None,
                    day: i32::MIN,
                    rev: 0,
                    facts: None,
                }),
                Facts {
                    upto: data.version - 1,
                    above: Vec::new(),
                },
            ),
        };
        self.due.fold(micros(now));
        if prior == Prior::Unseen {
            self.created += 1;
        }
        let was_deleted = before.as_ref().is_some_and(|b| b.deleted);
        let deleted = kind == TaskEventKind::Deleted;
        if deleted && !was_deleted {
            self.deleted += 1;
        }
        let after = TaskState {
            version: data.version,
            completed: data.task.completed,
            deleted: deleted || was_deleted,
            due: data.task.due_time.map(micros),
            day: day_of(now),
            rev: before.as_ref().map_or(0, |b| b.rev),
            facts: Some(facts),
        };
        if let Some(before) = &before {
            self.count(before, false);
        }
        self.count(&after, true);
        (after, true)
    }

    /// One completion the user made: counted by day (when the task says it was completed)
    /// and, for the median, how long after its creation.
    fn count_completion(&mut self, data: &TaskEventData) {
        self.completed += 1;
        let at = data.task.completed_time.unwrap_or(data.occurred_at);
        *self.completions_by_day.entry(at.date_naive()).or_insert(0) += 1;
        if data.task.completed {
            self.durations
                .push_back((at - data.task.create_time).num_seconds().max(0));
            while self.durations.len() > DURATION_SAMPLES {
                self.durations.pop_front();
            }
        }
        if let Some(cutoff) = data
            .occurred_at
            .date_naive()
            .checked_sub_signed(Duration::days(HISTORY_DAYS))
        {
            self.completions_by_day.retain(|day, _| *day > cutoff);
        }
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
            assigned: self.assigned,
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
                list_id: None,
                assignee_id: None,
            },
            changed_fields: vec![],
            version,
            owner_id: "alice".into(),
            occurred_at: at(when),
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        }
    }

    const OWNER: Share = Share {
        owner: true,
        completed: false,
        assigned: false,
    };

    /// The records `consumer.rs` keeps, in maps: alice's statistics, everyone else's, and
    /// what each user's statistics counted of each task.
    #[derive(Default)]
    struct Model {
        stats: UserStats,
        others: HashMap<String, UserStats>,
        tasks: HashMap<(Uuid, String), TaskState>,
    }

    impl Model {
        /// Applies `data` for every user it counts for; whether anything changed.
        fn apply(&mut self, kind: TaskEventKind, data: &TaskEventData) -> bool {
            let mut changed = false;
            for (user, share) in shares(kind, data) {
                let key = (data.task.id, user.clone());
                let stats = if user == "alice" {
                    &mut self.stats
                } else {
                    self.others.entry(user).or_default()
                };
                if let Some(state) =
                    stats.apply(self.tasks.get(&key), kind, data, share, data.occurred_at)
                {
                    self.tasks.insert(key, state);
                    changed = true;
                }
            }
            changed
        }

        fn of(&self, user: &str) -> UserStats {
            self.others.get(user).cloned().unwrap_or_default()
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
        assert_eq!(model.stats.completed, 0);
        assert!(model.apply(
            TaskEventKind::Completed,
            &data(a, 2, true, "2026-11-21T08:00:00Z")
        ));
        // b: created, completed (v2), deleted (v3); the deletion arrives first.
        assert!(model.apply(
            TaskEventKind::Deleted,
            &data(b, 3, true, "2026-11-22T08:00:00Z")
        ));
        assert!(model.apply(
            TaskEventKind::Completed,
            &data(b, 2, true, "2026-11-22T07:00:00Z")
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
        // Each completion says when it happened.
        assert_eq!(stats.durations.len(), 2);
        // Redelivered, in any order, nothing counts twice.
        for (kind, version, completed) in [
            (TaskEventKind::Completed, 2, true),
            (TaskEventKind::Reopened, 3, false),
        ] {
            assert!(!model.apply(kind, &data(a, version, completed, "2026-11-21T08:00:00Z")));
        }
        assert_eq!(model.stats.completed, 2);
    }

    /// The review's case: versions k+1..k+4 of one task (completed, reopened, completed,
    /// reopened), k+4 first. Every completion is counted, whatever the order, once.
    #[test]
    fn completions_count_once_each_in_any_order() {
        let history: Vec<(TaskEventKind, bool)> = (0..8)
            .map(|i| {
                if i % 2 == 0 {
                    (TaskEventKind::Completed, true)
                } else {
                    (TaskEventKind::Reopened, false)
                }
            })
            .collect();
        // Every order of the first four, and for the rest a few shuffles (a small LCG).
        let mut orders: Vec<Vec<usize>> = Vec::new();
        for first in 0..4 {
            let mut order = vec![first];
            order.extend((0..4).rev().filter(|i| *i != first));
            order.extend(4..8);
            orders.push(order);
        }
        let mut seed = 7u64;
        for _ in 0..50 {
            let mut order: Vec<usize> = (0..8).collect();
            for i in (1..order.len()).rev() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                order.swap(i, (seed >> 33) as usize % (i + 1));
            }
            orders.push(order);
        }
        for order in orders {
            let mut model = Model::default();
            let a = Uuid::now_v7();
            model.apply(
                TaskEventKind::Created,
                &data(a, 1, false, "2026-11-20T08:00:00Z"),
            );
            // Each delivered twice, the second time after everything else.
            for &i in order.iter().chain(&order) {
                let (kind, completed) = history[i];
                let when = format!("2026-11-21T{:02}:00:00Z", i + 1);
                model.apply(kind, &data(a, i as i64 + 2, completed, &when));
            }
            let stats = &model.stats;
            assert_eq!(
                (
                    stats.completed,
                    stats.open,
                    stats.done,
                    stats.durations.len()
                ),
                (4, 1, 0, 4),
                "order {order:?}"
            );
        }
    }

    /// alice creates a task for bob; bob completes it; she gives it to carol, then back
    /// to bob. Each counts what they did, once, redeliveries included.
    #[test]
    fn each_user_counts_what_they_created_completed_and_were_assigned() {
        let mut model = Model::default();
        let a = Uuid::now_v7();
        let event = |version: i64, completed: bool, assignee: &str, previous: Option<&str>| {
            let mut event = data(a, version, completed, "2026-11-21T08:00:00Z");
            event.task.assignee_id = Some(assignee.into());
            event.previous_assignee_id = previous.map(str::to_owned);
            event.changed_fields = vec!["assignee_id".into()];
            event
        };
        let created = event(1, false, "bob", None);
        let mut done = event(2, true, "bob", None);
        done.changed_fields = vec!["completed".into()];
        done.actor_id = Some("bob".into());
        let mut reopened = event(3, false, "bob", None);
        reopened.changed_fields = vec!["completed".into()];
        reopened.actor_id = Some("alice".into());
        let to_carol = event(4, false, "carol", Some("bob"));
        let to_bob = event(5, false, "bob", Some("carol"));
        let mut retitled = event(6, false, "bob", None);
        retitled.changed_fields = vec!["title".into()];
        let steps = [
            (TaskEventKind::Created, &created),
            (TaskEventKind::Completed, &done),
            (TaskEventKind::Reopened, &reopened),
            (TaskEventKind::Updated, &to_carol),
            (TaskEventKind::Updated, &to_bob),
            (TaskEventKind::Updated, &retitled),
        ];
        for _ in 0..2 {
            for (kind, event) in steps.iter().rev() {
                model.apply(*kind, event);
            }
        }
        let counts = |stats: &UserStats| {
            (
                stats.created,
                stats.completed,
                stats.assigned,
                stats.open,
                stats.done,
            )
        };
        assert_eq!(counts(&model.stats), (1, 0, 0, 1, 0));
        assert_eq!(counts(&model.of("bob")), (0, 1, 2, 0, 0));
        assert_eq!(counts(&model.of("carol")), (0, 0, 1, 0, 0));
        let report = model.of("bob").report("bob", at("2026-11-22T00:00:00Z"));
        assert_eq!((report.completed, report.assigned), (1, 2));
        assert_eq!(report.completions_per_day.last().unwrap().completed, 0);
        assert_eq!(report.median_seconds_to_complete, Some(86_400));
    }

    #[test]
    fn an_event_counts_for_its_owner_first_and_each_user_once() {
        let mut event = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");
        let users = |kind, event: &TaskEventData| -> Vec<(String, Share)> { shares(kind, event) };
        let owner = ("alice".to_owned(), OWNER);
        assert_eq!(
            users(TaskEventKind::Created, &event),
            std::slice::from_ref(&owner)
        );
        // Created for herself: she is owner and assignee.
        event.task.assignee_id = Some("alice".into());
        let both = Share {
            assigned: true,
            ..OWNER
        };
        assert_eq!(
            users(TaskEventKind::Created, &event),
            [("alice".to_owned(), both)]
        );
        // A completion by bob of a task assigned to him earlier: bob's completion only.
        event.task.assignee_id = Some("bob".into());
        event.changed_fields = vec!["completed".into()];
        event.actor_id = Some("bob".into());
        let completed = Share {
            completed: true,
            ..Share::default()
        };
        assert_eq!(
            users(TaskEventKind::Completed, &event),
            [owner.clone(), ("bob".to_owned(), completed)]
        );
        // Older events have no actor: the owner completed it.
        event.actor_id = None;
        assert_eq!(
            users(TaskEventKind::Completed, &event)[0].1,
            Share {
                completed: true,
                ..OWNER
            }
        );
        // Unassigned, or deleted: no one is assigned anything.
        event.task.assignee_id = None;
        event.changed_fields = vec!["assignee_id".into()];
        event.previous_assignee_id = Some("bob".into());
        assert_eq!(
            users(TaskEventKind::Updated, &event),
            std::slice::from_ref(&owner)
        );
        event.task.assignee_id = Some("bob".into());
        event.previous_assignee_id = None;
        assert_eq!(users(TaskEventKind::Deleted, &event), [owner]);
    }

    #[test]
    fn facts_stay_bounded_and_forget_only_the_oldest() {
        let mut facts = Facts::default();
        // Every other version (the others were someone else's facts).
        for v in (1..=400).map(|i| i * 2) {
            assert!(facts.insert(v));
            assert!(!facts.insert(v));
        }
        assert_eq!(facts.above.len(), FACTS_KEPT);
        // The newest 64 are known one by one: an odd version among them still counts.
        assert!(facts.insert(799));
        assert!(!facts.insert(1));
        // Contiguous versions fold into `upto`.
        let mut facts = Facts::default();
        for v in [3, 1, 2, 5] {
            assert!(facts.insert(v));
        }
        assert_eq!((facts.upto, facts.above.clone()), (3, vec![5]));
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
            OWNER,
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
        model.tasks.remove(&(a, "alice".into()));
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
