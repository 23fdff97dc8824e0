//! The task events task-service publishes on `task-events`, as CloudEvents 1.0 with JSON
//! data. The schema is documented in `docs/events.md`; a breaking change is a new `.v2`
//! type, while new optional fields may be added to `.v1` (consumers ignore unknown fields).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const TASK_EVENTS_TOPIC: &str = "task-events";
/// Each subscriber has its own dead-letter topic, `<prefix>.<app id>`
/// (`dead_letter_topic`), so that what one app failed is kept and replayed by that app.
pub const DEAD_LETTER_TOPIC_PREFIX: &str = "task-events-deadletter";
/// The dead-letter topic of app `app_id`: `task-events-deadletter.recurring-service`.
pub fn dead_letter_topic(prefix: &str, app_id: &str) -> String {
    format!("{prefix}.{app_id}")
}

/// The CloudEvent `source` of every event task-service emits.
pub const TASK_SERVICE_SOURCE: &str = "taskmesh/task-service";
/// Publishing with this content type makes daprd pass our envelope through unchanged, so
/// our `id`, `type` and `subject` reach the subscribers.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEventKind {
    Created,
    Updated,
    Completed,
    Reopened,
    Deleted,
}

impl TaskEventKind {
    pub const ALL: [Self; 5] = [
        Self::Created,
        Self::Updated,
        Self::Completed,
        Self::Reopened,
        Self::Deleted,
    ];

    /// The CloudEvent `type`, e.g. `taskmesh.task.created.v1`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Created => "taskmesh.task.created.v1",
            Self::Updated => "taskmesh.task.updated.v1",
            Self::Completed => "taskmesh.task.completed.v1",
            Self::Reopened => "taskmesh.task.reopened.v1",
            Self::Deleted => "taskmesh.task.deleted.v1",
        }
    }

    /// The kind of a CloudEvent `type`; `None` for types (or versions) this build does
    /// not know, which consumers drop to the dead-letter topic.
    pub fn from_event_type(event_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.event_type() == event_type)
    }
}

/// A task as it is after the change (before it, for a deletion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    pub id: Uuid,
    pub owner_id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// `low`, `medium`, `high` or `urgent`.
    pub priority: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<String>,
    pub completed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub version: i64,
    /// The list the task is in. Absent only in events written before lists existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_id: Option<Uuid>,
    /// The member of the list the task is assigned to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<String>,
}

impl TaskSnapshot {
    /// Who reminders and due notifications go to: the assignee, or the creator.
    pub fn recipient(&self) -> &str {
        self.assignee_id.as_deref().unwrap_or(&self.owner_id)
    }
}

/// The `data` of every `taskmesh.task.*.v1` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEventData {
    pub task: TaskSnapshot,
    /// Names of the fields this change set (empty for deletions); every field for creations.
    #[serde(default)]
    pub changed_fields: Vec<String>,
    /// The task's version after the change. A deletion counts as a change, so it carries
    /// the last version plus one; consumers ignore an event older than what they applied.
    pub version: i64,
    pub owner_id: String,
    pub occurred_at: DateTime<Utc>,
    /// The user who made the change (absent in events written before lists existed, and
    /// for changes no user made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// The list the task was in before this change, when the change moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_list_id: Option<Uuid>,
    /// The assignee before this change, when the change reassigned the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_assignee_id: Option<String>,
}

/// A CloudEvents 1.0 envelope in its JSON format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    pub data: T,
    /// W3C trace context of the change that caused the event (distributed tracing
    /// extension), so a subscriber's span joins the caller's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Dapr's older name for `traceparent`, carrying the same value. The sidecar keeps a
    /// published envelope's trace context only when `traceid` is present; without it, it
    /// overwrites `traceparent` with its own span's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceid: Option<String>,
}

impl<T> CloudEvent<T> {
    /// Sets the trace context that subscribers continue (both fields, see `traceid`).
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceid.clone_from(&traceparent);
        self.traceparent = traceparent;
        self
    }
}

pub type TaskEvent = CloudEvent<TaskEventData>;

impl TaskEvent {
    /// A new event about `data.task` with a fresh id.
    pub fn task(kind: TaskEventKind, data: TaskEventData) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: Uuid::now_v7().to_string(),
            source: TASK_SERVICE_SOURCE.to_owned(),
            event_type: kind.event_type().to_owned(),
            subject: Some(data.task.id.to_string()),
            time: Some(data.occurred_at),
            datacontenttype: Some(JSON_CONTENT_TYPE.to_owned()),
            data,
            traceparent: None,
            traceid: None,
        }
    }
}

/// The topic notification-service publishes fired reminders on.
pub const TASK_REMINDERS_TOPIC: &str = "task-reminders";
/// The CloudEvent `source` of reminders.
pub const NOTIFICATION_SERVICE_SOURCE: &str = "taskmesh/notification-service";

/// What a fired reminder says (`taskmesh.task.due_soon.v1` and `taskmesh.task.overdue.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderData {
    pub task_id: Uuid,
    pub owner_id: String,
    pub title: String,
    pub due_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How long before the due time the reminder was meant to fire.
    pub lead_time_secs: u64,
    pub fired_at: DateTime<Utc>,
}

/// Which reminder fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderKind {
    DueSoon,
    Overdue,
}

impl ReminderKind {
    pub fn event_type(self) -> &'static str {
        match self {
            Self::DueSoon => "taskmesh.task.due_soon.v1",
            Self::Overdue => "taskmesh.task.overdue.v1",
        }
    }
}

pub type ReminderEvent = CloudEvent<ReminderData>;

impl ReminderEvent {
    /// A reminder event; `id` is derived from the task and due time by the caller, so the
    /// same reminder fired twice carries the same id.
    pub fn reminder(kind: ReminderKind, id: String, data: ReminderData) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id,
            source: NOTIFICATION_SERVICE_SOURCE.to_owned(),
            event_type: kind.event_type().to_owned(),
            subject: Some(data.task_id.to_string()),
            time: Some(data.fired_at),
            datacontenttype: Some(JSON_CONTENT_TYPE.to_owned()),
            data,
            traceparent: None,
            traceid: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn data() -> TaskEventData {
        let at = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        TaskEventData {
            task: TaskSnapshot {
                id: Uuid::nil(),
                owner_id: "alice".into(),
                title: "Pay rent".into(),
                description: String::new(),
                priority: "high".into(),
                tags: vec!["home".into()],
                due_time: Some(at),
                time_zone: Some("Europe/Paris".into()),
                recurrence: Some("FREQ=MONTHLY".into()),
                completed: false,
                completed_time: None,
                create_time: at,
                update_time: at,
                version: 1,
                list_id: None,
                assignee_id: None,
            },
            changed_fields: vec!["title".into()],
            version: 1,
            owner_id: "alice".into(),
            occurred_at: at,
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        }
    }

    #[test]
    fn types_round_trip_and_unknown_versions_are_refused() {
        for kind in TaskEventKind::ALL {
            assert_eq!(
                TaskEventKind::from_event_type(kind.event_type()),
                Some(kind)
            );
        }
        assert_eq!(
            TaskEventKind::from_event_type("taskmesh.task.created.v2"),
            None
        );
    }

    #[test]
    fn envelope_carries_cloudevents_attributes() {
        let event = TaskEvent::task(TaskEventKind::Completed, data());
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "taskmesh.task.completed.v1");
        assert_eq!(json["subject"], Uuid::nil().to_string());
        assert_eq!(json["data"]["task"]["due_time"], "2026-09-21T14:13:20Z");
        assert!(json.get("traceparent").is_none());
        let back: TaskEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn consumers_tolerate_added_fields() {
        let mut json =
            serde_json::to_value(TaskEvent::task(TaskEventKind::Created, data())).unwrap();
        json["data"]["task"]["colour"] = "red".into();
        json["data"]["new_field"] = 1.into();
        assert!(serde_json::from_value::<TaskEvent>(json).is_ok());
    }
}
