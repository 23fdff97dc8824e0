//! Tasks as the service understands them, independent of protobuf and SQL.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use taskmesh_shared::error::{ApiError, Violations};

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
pub const TAGS_MAX: usize = 20;
pub const TAG_MAX_CHARS: usize = 50;
pub const REQUEST_ID_MAX_CHARS: usize = 128;
pub const TITLE_FILTER_MAX_CHARS: usize = 200;
pub const QUERY_MAX_CHARS: usize = 200;
/// Users are named by their tokens' `sub`, which task-service accepts up to this length.
pub const USER_ID_MAX_CHARS: usize = 128;
pub const PAGE_SIZE_DEFAULT: u32 = 50;
pub const PAGE_SIZE_MAX: u32 = 500;

/// The current time at the precision tasks are stored with (microseconds), so that what a
/// write returns equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low = 1,
    Medium = 2,
    High = 3,
    Urgent = 4,
}

impl Priority {
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    pub fn from_i16(value: i16) -> Option<Self> {
        Some(match value {
            1 => Self::Low,
            2 => Self::Medium,
            3 => Self::High,
            4 => Self::Urgent,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: Uuid,
    /// Who created the task.
    pub owner_id: String,
    pub list_id: Uuid,
    pub assignee_id: Option<String>,
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub time_zone: Option<String>,
    pub recurrence: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A validated request to create a task.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub time_zone: Option<String>,
    pub recurrence: Option<String>,
    pub request_id: Option<String>,
    /// `None`: the creator's default list.
    pub list_id: Option<Uuid>,
    pub assignee_id: Option<String>,
}

impl NewTask {
    /// The task, in `list_id` (where the caller checked the creator may create it).
    pub fn into_task(self, owner_id: String, list_id: Uuid, now: DateTime<Utc>) -> Task {
        Task {
            id: Uuid::now_v7(),
            owner_id,
            list_id,
            assignee_id: self.assignee_id,
            title: self.title,
            description: self.description,
            priority: self.priority,
            tags: self.tags,
            due_at: self.due_at,
            time_zone: self.time_zone,
            recurrence: self.recurrence,
            completed_at: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

/// Validated field changes; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<Priority>,
    pub tags: Option<Vec<String>>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub time_zone: Option<Option<String>>,
    pub recurrence: Option<Option<String>>,
    /// Moves the task to another list.
    pub list_id: Option<Uuid>,
    pub assignee_id: Option<Option<String>>,
}

impl TaskPatch {
    /// Whether the patch needs the caller's rights on a second list.
    pub fn moves(&self, task: &Task) -> Option<Uuid> {
        self.list_id.filter(|list| *list != task.list_id)
    }
}

/// What a write does to an existing task.
#[derive(Debug, Clone)]
pub enum Change {
    Update(TaskPatch),
    Complete,
    Reopen,
}

/// The kind of a change, as events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Completed,
    Reopened,
    Deleted,
}

impl Change {
    pub fn kind(&self) -> ChangeKind {
        match self {
            Self::Update(_) => ChangeKind::Updated,
            Self::Complete => ChangeKind::Completed,
            Self::Reopen => ChangeKind::Reopened,
        }
    }
}

impl Task {
    /// Applies `change`; returns whether anything changed. Completing a completed task or
    /// reopening an open one is a no-op, so that clients can retry them safely.
    pub fn apply(&mut self, change: Change, now: DateTime<Utc>) -> Result<bool, ApiError> {
        let before = self.clone();
        match change {
            Change::Complete => {
                if self.completed_at.is_none() {
                    self.completed_at = Some(now);
                }
            }
            Change::Reopen => self.completed_at = None,
            Change::Update(patch) => {
                let TaskPatch {
                    title,
                    description,
                    priority,
                    tags,
                    due_at,
                    time_zone,
                    recurrence,
                    list_id,
                    assignee_id,
                } = patch;
                replace(&mut self.title, title);
                replace(&mut self.description, description);
                replace(&mut self.priority, priority);
                replace(&mut self.tags, tags);
                replace(&mut self.due_at, due_at);
                replace(&mut self.time_zone, time_zone);
                replace(&mut self.recurrence, recurrence);
                replace(&mut self.list_id, list_id);
                replace(&mut self.assignee_id, assignee_id);
                check_cross_fields(self.recurrence.is_some(), self.due_at.is_some())?;
            }
        }
        let changed = *self != before;
        if changed {
            self.updated_at = now.max(self.updated_at);
            self.version += 1;
        }
        Ok(changed)
    }
}

fn replace<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// A recurring series needs an anchor to compute the next occurrence from.
pub fn check_cross_fields(has_recurrence: bool, has_due: bool) -> Result<(), ApiError> {
    let mut v = Violations::new();
    if has_recurrence && !has_due {
        v.add("recurrence", "a recurring task needs a due time");
    }
    v.into_result()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusFilter {
    Open,
    Completed,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderBy {
    CreateTime,
    DueTime,
    Priority,
    /// Best match of the filter's `query` first.
    Relevance,
}

/// Where the previous page ended: the last task's sort key and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub id: Uuid,
}

/// A validated `ListTasks` query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskFilter {
    pub status: StatusFilter,
    pub priority: Option<Priority>,
    pub tag: Option<String>,
    pub due_before: Option<DateTime<Utc>>,
    pub due_after: Option<DateTime<Utc>>,
    pub title_contains: Option<String>,
    /// Only this list's tasks; `None`: every list the caller sees, archived ones excepted.
    pub list_id: Option<Uuid>,
    /// `Some(None)`: only unassigned tasks.
    pub assignee: Option<Option<String>>,
    /// Free-text search over title and description.
    pub query: Option<String>,
    pub order_by: OrderBy,
    pub descending: bool,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: TaskFilter,
    pub page_size: u32,
    pub after: Option<Cursor>,
}

/// The value a task sorts by, shared by the SQL and the page tokens.
pub fn sort_key(task: &Task, order: OrderBy) -> i64 {
    match order {
        OrderBy::CreateTime => task.created_at.timestamp_micros(),
        OrderBy::DueTime => task.due_at.map_or(i64::MAX, |d| d.timestamp_micros()),
        OrderBy::Priority => i64::from(task.priority.as_i16()),
        // Ranks are not part of the task; the store pages relevance on its own key.
        OrderBy::Relevance => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        NewTask {
            title: "t".into(),
            description: String::new(),
            priority: Priority::Medium,
            tags: vec![],
            due_at: None,
            time_zone: None,
            recurrence: None,
            request_id: None,
            list_id: None,
            assignee_id: None,
        }
        .into_task("alice".into(), Uuid::now_v7(), Utc::now())
    }

    #[test]
    fn versions_grow_only_on_real_changes() {
        let mut t = task();
        let now = Utc::now();
        assert!(t.apply(Change::Complete, now).unwrap());
        assert_eq!(t.version, 2);
        assert!(!t.apply(Change::Complete, now).unwrap());
        assert_eq!(t.version, 2);
        let same_title = TaskPatch {
            title: Some("t".into()),
            ..TaskPatch::default()
        };
        assert!(!t.apply(Change::Update(same_title), now).unwrap());
        assert!(t.apply(Change::Reopen, now).unwrap());
        assert_eq!((t.version, t.completed_at), (3, None));
    }

    #[test]
    fn recurrence_needs_a_due_time() {
        let mut t = task();
        let patch = TaskPatch {
            recurrence: Some(Some("FREQ=DAILY".into())),
            ..TaskPatch::default()
        };
        assert!(t.apply(Change::Update(patch), Utc::now()).is_err());
    }
}
