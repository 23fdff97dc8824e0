//! The event each change implies, built from the task before and after it.

use chrono::{DateTime, Utc};
use taskmesh_shared::events::{TaskEvent, TaskEventData, TaskEventKind, TaskSnapshot};

use crate::domain::{ChangeKind, Priority, Task};

pub fn kind(change: ChangeKind) -> TaskEventKind {
    match change {
        ChangeKind::Created => TaskEventKind::Created,
        ChangeKind::Updated => TaskEventKind::Updated,
        ChangeKind::Completed => TaskEventKind::Completed,
        ChangeKind::Reopened => TaskEventKind::Reopened,
        ChangeKind::Deleted => TaskEventKind::Deleted,
    }
}

/// The event for a creation (`before` is `None`) or a change of an existing task, made by
/// `actor`.
pub fn changed(change: ChangeKind, before: Option<&Task>, after: &Task, actor: &str) -> TaskEvent {
    let changed_fields = match before {
        Some(before) => changed_fields(before, after),
        None => ALL_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
    };
    let moved_from = before
        .map(|before| before.list_id)
        .filter(|list| *list != after.list_id);
    let reassigned_from = before
        .filter(|before| before.assignee_id != after.assignee_id)
        .and_then(|before| before.assignee_id.clone());
    TaskEvent::task(
        kind(change),
        TaskEventData {
            task: snapshot(after),
            changed_fields,
            version: after.version,
            owner_id: after.owner_id.clone(),
            occurred_at: after.updated_at,
            actor_id: Some(actor.to_owned()),
            previous_list_id: moved_from,
            previous_assignee_id: reassigned_from,
        },
    )
}

/// The event for a deletion by `actor`: the last state of the task, one version later.
pub fn deleted(task: &Task, now: DateTime<Utc>, actor: &str) -> TaskEvent {
    TaskEvent::task(
        TaskEventKind::Deleted,
        TaskEventData {
            task: snapshot(task),
            changed_fields: Vec::new(),
            version: task.version + 1,
            owner_id: task.owner_id.clone(),
            occurred_at: now,
            actor_id: Some(actor.to_owned()),
            previous_list_id: None,
            previous_assignee_id: None,
        },
    )
}

const ALL_FIELDS: [&str; 10] = [
    "title",
    "description",
    "priority",
    "tags",
    "due_time",
    "time_zone",
    "recurrence",
    "completed",
    "list_id",
    "assignee_id",
];

fn changed_fields(before: &Task, after: &Task) -> Vec<String> {
    let flags = [
        before.title != after.title,
        before.description != after.description,
        before.priority != after.priority,
        before.tags != after.tags,
        before.due_at != after.due_at,
        before.time_zone != after.time_zone,
        before.recurrence != after.recurrence,
        before.completed_at.is_some() != after.completed_at.is_some(),
        before.list_id != after.list_id,
        before.assignee_id != after.assignee_id,
    ];
    ALL_FIELDS
        .iter()
        .zip(flags)
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

pub fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Low => "low",
        Priority::Medium => "medium",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    }
}

fn snapshot(task: &Task) -> TaskSnapshot {
    TaskSnapshot {
        id: task.id,
        owner_id: task.owner_id.clone(),
        title: task.title.clone(),
        description: task.description.clone(),
        priority: priority_name(task.priority).to_owned(),
        tags: task.tags.clone(),
        due_time: task.due_at,
        time_zone: task.time_zone.clone(),
        recurrence: task.recurrence.clone(),
        completed: task.completed_at.is_some(),
        completed_time: task.completed_at,
        create_time: task.created_at,
        update_time: task.updated_at,
        version: task.version,
        list_id: Some(task.list_id),
        assignee_id: task.assignee_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::{Change, NewTask, TaskPatch};

    fn task() -> Task {
        NewTask {
            title: "Water plants".into(),
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
        .into_task("alice".into(), uuid::Uuid::now_v7(), crate::domain::now())
    }

    #[test]
    fn updates_name_exactly_the_fields_they_changed() {
        let before = task();
        let mut after = before.clone();
        let patch = TaskPatch {
            title: Some("Water all plants".into()),
            priority: Some(Priority::High),
            ..TaskPatch::default()
        };
        after
            .apply(Change::Update(patch), crate::domain::now())
            .unwrap();
        let event = changed(ChangeKind::Updated, Some(&before), &after, "bob");
        assert_eq!(event.event_type, "taskmesh.task.updated.v1");
        assert_eq!(event.data.changed_fields, ["title", "priority"]);
        assert_eq!(event.data.version, 2);
        assert_eq!(event.data.actor_id.as_deref(), Some("bob"));
        assert_eq!(event.data.previous_list_id, None);
        assert_eq!(
            event.subject.as_deref(),
            Some(after.id.to_string().as_str())
        );
    }

    #[test]
    fn deletion_is_one_version_newer_than_the_last_state() {
        let task = task();
        let event = deleted(&task, crate::domain::now(), "alice");
        assert_eq!(event.data.version, task.version + 1);
        assert_eq!(event.data.task.version, task.version);
        assert!(event.data.changed_fields.is_empty());
    }
}
