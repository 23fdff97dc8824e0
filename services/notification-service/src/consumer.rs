//! Task events: keep the task record (once per version), add the notification the change
//! deserves, and move the task's reminder job. Both go to the task's recipient as the
//! event shows it: its assignee, or its owner when there is none.

use std::sync::Arc;

use async_trait::async_trait;
use chrono_tz::Tz;
use taskmesh_shared::callback::{Delivery, Outcome, TopicHandler};
use taskmesh_shared::events::{TaskEventData, TaskEventKind};
use taskmesh_shared::occurrence::next_occurrence;
use taskmesh_shared::recurrence::RecurrenceRule;
use taskmesh_shared::state::StateStore;

use crate::inbox::{Notification, NotificationKind};
use crate::prefs::Preferences;
use crate::records::{Change, decode, inbox_key, prefs_key, task_key};
use crate::reminder::TaskRecord;
use crate::reminders::{Reminders, local_time};

/// How long the record of a completed or deleted task is kept. It stays that long because
/// it is the version mark: a late redelivery of an older event must still find it, or it
/// would bring the task back to life (a job, a reminder). A reopened task's record is kept
/// for good again.
pub const INACTIVE_RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

pub struct TaskEventConsumer<S> {
    kind: TaskEventKind,
    reminders: Arc<Reminders<S>>,
}

impl<S> TaskEventConsumer<S> {
    pub fn new(kind: TaskEventKind, reminders: Arc<Reminders<S>>) -> Self {
        Self { kind, reminders }
    }
}

/// What the stored record said about an event.
enum Seen {
    /// A newer version is applied already.
    Older,
    /// This version is applied already (a redelivery): its effects are made sure of again,
    /// in case the first delivery died half-way.
    Again(TaskRecord),
    New {
        record: TaskRecord,
        had_job: bool,
    },
}

#[async_trait]
impl<S: StateStore> TopicHandler for TaskEventConsumer<S> {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        let event: TaskEventData = match delivery.json() {
            Ok(event) => event,
            Err(drop) => return drop,
        };
        if event.owner_id.is_empty() || event.task.owner_id != event.owner_id {
            return Outcome::Drop(format!("event {} has no consistent owner_id", delivery.id));
        }
        // A user id as task-service accepts one (a record key is made of it).
        if let Some(assignee) = &event.task.assignee_id
            && (assignee.is_empty() || assignee.chars().count() > 128)
        {
            return Outcome::Drop(format!(
                "event {}: assignee_id must be 1 to 128 characters",
                delivery.id
            ));
        }
        let recipient = event.task.recipient();
        // One bulk read for the three records an event may touch. The preferences are the
        // recipient's as of this event; for an older event (which moves no job) unused.
        let keys = [
            task_key(event.task.id),
            inbox_key(recipient),
            prefs_key(recipient),
        ];
        let [task, inbox, prefs] = match self.reminders.records().prefetch(&keys).await {
            Ok(found) => match <[_; 3]>::try_from(found) {
                Ok(found) => found,
                Err(_) => return Outcome::Retry("the bulk read lost a key".into()),
            },
            Err(err) => return Outcome::Retry(err.to_string()),
        };
        let prefs: Preferences = match decode(&keys[2], prefs) {
            Ok((prefs, _)) => prefs.unwrap_or_default(),
            Err(err) => return Outcome::Retry(err.to_string()),
        };
        // The notification goes in first, whatever the task record says: adding it is
        // idempotent (its id is the event's), and it is owed even to an event that arrives
        // after a newer one. Written after the version mark, it would be lost whenever a
        // delivery died in between and a newer event came before the redelivery (which
        // then finds its version older than the mark and does nothing).
        if let Some(notification) = notification_for(self.kind, &event, &delivery.id)
            && let Err(err) = self
                .reminders
                .notify_seeded(recipient, notification, Some(inbox))
                .await
        {
            return Outcome::Retry(err.to_string());
        }
        let seen = self
            .reminders
            .records()
            .update_seeded(
                &keys[0],
                Some(task),
                |current: Option<TaskRecord>| match current {
                    Some(current) if current.version > event.version => Change::Keep(Seen::Older),
                    Some(current) if current.version == event.version => {
                        Change::Keep(Seen::Again(current))
                    }
                    previous => {
                        let had_job = previous.as_ref().is_some_and(|p| p.due_time.is_some());
                        let record = TaskRecord::after(previous.as_ref(), self.kind, &event);
                        let lifetime = (!record.active).then_some(INACTIVE_RECORD_TTL);
                        Change::WriteFor(record.clone(), lifetime, Seen::New { record, had_job })
                    }
                },
            )
            .await;
        let (record, had_job) = match seen {
            Err(err) => return Outcome::Retry(err.to_string()),
            Ok(Seen::Older) => {
                self.reminders.metrics().records.duplicates.inc();
                return Outcome::Success;
            }
            Ok(Seen::Again(record)) => {
                self.reminders.metrics().records.duplicates.inc();
                (record, true)
            }
            Ok(Seen::New { record, had_job }) => {
                self.reminders.metrics().records.applied.inc();
                (record, had_job)
            }
        };
        match self.reminders.sync(&record, had_job, &prefs).await {
            Ok(()) => Outcome::Success,
            Err(err) => Outcome::Retry(err.to_string()),
        }
    }
}

/// Whether the change gave the task to another recipient (assigned, reassigned, or
/// unassigned: back to the owner).
fn reassigned(event: &TaskEventData) -> bool {
    let previous = event
        .previous_assignee_id
        .as_deref()
        .unwrap_or(&event.owner_id);
    event.changed_fields.iter().any(|f| f == "assignee_id") && previous != event.task.recipient()
}

/// The notification a change deserves, if any; its id is the event's, so a redelivery
/// adds nothing. It goes to the recipient the event shows.
pub fn notification_for(
    kind: TaskEventKind,
    event: &TaskEventData,
    event_id: &str,
) -> Option<Notification> {
    let task = &event.task;
    let open = !task.completed && kind != TaskEventKind::Deleted;
    let when = |due| local_time(due, task.time_zone.as_deref());
    let (kind, message, due_time) = match kind {
        TaskEventKind::Created if open => {
            let due = task.due_time?;
            (
                NotificationKind::DueTimeSet,
                format!("{} is due {}", task.title, when(due)),
                Some(due),
            )
        }
        // Given to someone else: the new recipient learns when it is due.
        TaskEventKind::Updated if open && reassigned(event) => {
            let due = task.due_time?;
            (
                NotificationKind::DueTimeSet,
                format!("{} is due {}", task.title, when(due)),
                Some(due),
            )
        }
        TaskEventKind::Updated if open && event.changed_fields.iter().any(|f| f == "due_time") => {
            let due = task.due_time?;
            (
                NotificationKind::DueTimeChanged,
                format!("{} is now due {}", task.title, when(due)),
                Some(due),
            )
        }
        TaskEventKind::Completed => {
            let rule: RecurrenceRule = task.recurrence.as_deref()?.parse().ok()?;
            let tz: Tz = match task.time_zone.as_deref() {
                None => Tz::UTC,
                Some(name) => name.parse().ok()?,
            };
            let next = next_occurrence(&rule, task.due_time?, tz)?;
            (
                NotificationKind::RolledOver,
                format!(
                    "{} is done; the next one is due {}",
                    task.title,
                    when(next.due)
                ),
                Some(next.due),
            )
        }
        _ => return None,
    };
    Some(Notification {
        id: event_id.to_owned(),
        kind,
        task_id: task.id,
        title: task.title.clone(),
        message,
        created_at: event.occurred_at,
        due_time,
        read: false,
    })
}
