//! What the service remembers about one task, and which reminder it is owed next. Pure:
//! the consumer and the job handler decide with it, the ports carry out the decision.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use taskmesh_shared::events::{ReminderKind, TaskEventData, TaskEventKind};
use uuid::Uuid;

/// The task as of the newest event applied, and the reminders already sent for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: Uuid,
    pub owner_id: String,
    /// Who the task is assigned to; reminders go to them, to the owner when there is none
    /// (and in records written before assignees existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<String>,
    pub title: String,
    /// The version of the newest event applied: older or equal ones change nothing.
    pub version: i64,
    #[serde(default)]
    pub due_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Open, i.e. neither completed nor deleted.
    pub active: bool,
    /// The due time the due-soon reminder was sent for (a new due time earns a new one).
    #[serde(default)]
    pub reminded_due: Option<DateTime<Utc>>,
    /// The due time the overdue notice was sent for.
    #[serde(default)]
    pub overdue_due: Option<DateTime<Utc>>,
}

/// A reminder and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub kind: ReminderKind,
    pub due: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

impl TaskRecord {
    /// The record after `event`, keeping what was already sent to the same recipient. A
    /// task given to someone else owes its reminders to them: what the previous recipient
    /// was sent does not count for the new one (the task has one job, so the previous one
    /// gets nothing more).
    pub fn after(previous: Option<&Self>, kind: TaskEventKind, event: &TaskEventData) -> Self {
        let task = &event.task;
        let kept = previous.filter(|p| p.recipient() == task.recipient());
        Self {
            task_id: task.id,
            owner_id: event.owner_id.clone(),
            assignee_id: task.assignee_id.clone(),
            title: task.title.clone(),
            version: event.version,
            due_time: task.due_time,
            time_zone: task.time_zone.clone(),
            active: kind != TaskEventKind::Deleted && !task.completed,
            reminded_due: kept.and_then(|p| p.reminded_due),
            overdue_due: kept.and_then(|p| p.overdue_due),
        }
    }

    /// Who the reminders go to: the assignee, or the owner.
    pub fn recipient(&self) -> &str {
        self.assignee_id.as_deref().unwrap_or(&self.owner_id)
    }

    /// The id of `action`'s reminder for this task's recipient (see `reminder_id`).
    pub fn reminder_id(&self, action: Action) -> String {
        let to = (self.recipient() != self.owner_id).then(|| self.recipient());
        reminder_id(action.kind, self.task_id, action.due, to)
    }

    /// The reminder this task is owed next, if any. A due-soon reminder that could only
    /// fire after the due time is skipped in favour of the overdue notice.
    pub fn next_action(&self, now: DateTime<Utc>, lead: Duration) -> Option<Action> {
        let due = self.due_time.filter(|_| self.active)?;
        if self.reminded_due != Some(due) && now < due {
            return Some(Action {
                kind: ReminderKind::DueSoon,
                due,
                at: due - lead,
            });
        }
        (self.overdue_due != Some(due)).then_some(Action {
            kind: ReminderKind::Overdue,
            due,
            at: due,
        })
    }

    /// Records that `action` was carried out.
    pub fn mark_sent(&mut self, action: Action) {
        match action.kind {
            ReminderKind::DueSoon => self.reminded_due = Some(action.due),
            ReminderKind::Overdue => {
                // An overdue notice also settles the due-soon one it replaced.
                self.reminded_due = Some(action.due);
                self.overdue_due = Some(action.due);
            }
        }
    }

    /// The Jobs API job that fires this task's next reminder.
    pub fn job_name(&self) -> String {
        job_name(self.task_id)
    }
}

pub const JOB_PREFIX: &str = "reminder-";

pub fn job_name(task_id: Uuid) -> String {
    format!("{JOB_PREFIX}{task_id}")
}

/// The task id in a job name, `None` for a job this service did not schedule.
pub fn task_of_job(name: &str) -> Option<Uuid> {
    name.strip_prefix(JOB_PREFIX)?.parse().ok()
}

/// A stable id for one reminder of one due time to one recipient: the same reminder fired
/// twice (the scheduler delivers at least once) has the same notification and event id,
/// and the e-mail and webhook claims are made under it. `assignee`: the recipient when it
/// is not the owner, so that a task given to someone else owes them their own reminder
/// (the owner's keeps the id it had before assignees existed: a reminder in flight across
/// the upgrade is not sent twice).
pub fn reminder_id(
    kind: ReminderKind,
    task_id: Uuid,
    due: DateTime<Utc>,
    assignee: Option<&str>,
) -> String {
    let mut name = format!("{}:{task_id}:{}", kind.event_type(), due.timestamp_millis());
    if let Some(assignee) = assignee {
        name.push(':');
        name.push_str(assignee);
    }
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn record(due: Option<i64>) -> TaskRecord {
        TaskRecord {
            task_id: Uuid::nil(),
            owner_id: "alice".into(),
            assignee_id: None,
            title: "Pay rent".into(),
            version: 1,
            due_time: due.map(at),
            time_zone: None,
            active: true,
            reminded_due: None,
            overdue_due: None,
        }
    }

    const LEAD: Duration = Duration::seconds(900);

    #[test]
    fn due_soon_then_overdue_then_nothing() {
        let mut task = record(Some(3600));
        let first = task.next_action(at(0), LEAD).unwrap();
        assert_eq!(first.kind, ReminderKind::DueSoon);
        assert_eq!(first.at, at(2700));
        task.mark_sent(first);
        let second = task.next_action(at(2700), LEAD).unwrap();
        assert_eq!((second.kind, second.at), (ReminderKind::Overdue, at(3600)));
        task.mark_sent(second);
        assert_eq!(task.next_action(at(3600), LEAD), None);
    }

    #[test]
    fn a_late_start_skips_to_overdue_and_a_new_due_time_starts_over() {
        let mut task = record(Some(60));
        let late = task.next_action(at(120), LEAD).unwrap();
        assert_eq!(late.kind, ReminderKind::Overdue);
        task.mark_sent(late);
        assert_eq!(task.next_action(at(120), LEAD), None);
        task.due_time = Some(at(7200));
        assert_eq!(
            task.next_action(at(120), LEAD).unwrap().kind,
            ReminderKind::DueSoon
        );
    }

    #[test]
    fn inactive_or_undated_tasks_are_owed_nothing() {
        assert_eq!(record(None).next_action(at(0), LEAD), None);
        let mut done = record(Some(3600));
        done.active = false;
        assert_eq!(done.next_action(at(0), LEAD), None);
    }

    #[test]
    fn job_names_round_trip_and_reminder_ids_are_stable() {
        let id = Uuid::now_v7();
        assert_eq!(task_of_job(&job_name(id)), Some(id));
        assert_eq!(task_of_job("other-job"), None);
        assert_eq!(task_of_job("reminder-not-a-uuid"), None);
        let a = reminder_id(ReminderKind::DueSoon, id, at(0), None);
        assert_eq!(a, reminder_id(ReminderKind::DueSoon, id, at(0), None));
        assert_ne!(a, reminder_id(ReminderKind::Overdue, id, at(0), None));
        assert_ne!(a, reminder_id(ReminderKind::DueSoon, id, at(1), None));
        assert_ne!(
            a,
            reminder_id(ReminderKind::DueSoon, id, at(0), Some("bob"))
        );
        // The owner's reminder keeps the id earlier versions gave it.
        let name = format!(
            "taskmesh.task.due_soon.v1:{id}:{}",
            at(0).timestamp_millis()
        );
        assert_eq!(
            a,
            Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
        );
    }

    #[test]
    fn a_new_recipient_is_owed_the_reminders_the_previous_one_was_sent() {
        let mut sent = record(Some(3600));
        sent.reminded_due = sent.due_time;
        sent.overdue_due = sent.due_time;
        let event = |assignee: Option<&str>| {
            let json = serde_json::json!({
                "task": {"id": Uuid::nil(), "owner_id": "alice", "title": "Pay rent",
                    "description": "", "priority": "high", "tags": [],
                    "due_time": at(3600), "completed": false,
                    "create_time": at(0), "update_time": at(0), "version": 2,
                    "assignee_id": assignee},
                "changed_fields": ["assignee_id"], "version": 2, "owner_id": "alice",
                "occurred_at": at(0)
            });
            serde_json::from_value::<TaskEventData>(json).unwrap()
        };
        // Still alice's (unassigned, or assigned to her): nothing owed again.
        for same in [None, Some("alice")] {
            let next = TaskRecord::after(Some(&sent), TaskEventKind::Updated, &event(same));
            assert_eq!(next.next_action(at(0), LEAD), None, "{same:?}");
        }
        let bobs = TaskRecord::after(Some(&sent), TaskEventKind::Updated, &event(Some("bob")));
        assert_eq!(bobs.recipient(), "bob");
        let owed = bobs.next_action(at(0), LEAD).unwrap();
        assert_eq!(owed.kind, ReminderKind::DueSoon);
        assert_ne!(bobs.reminder_id(owed), sent.reminder_id(owed));
    }
}
