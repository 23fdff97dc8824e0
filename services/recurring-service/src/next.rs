//! The task that follows a completed occurrence of a recurring task.

use chrono_tz::Tz;
use prost_types::Timestamp;
use taskmesh_proto::tasks::v1::{CreateTaskRequest, Priority};
use taskmesh_shared::events::TaskEventData;
use taskmesh_shared::occurrence::next_occurrence;
use taskmesh_shared::recurrence::RecurrenceRule;

/// What to create, and for whom.
#[derive(Debug, Clone, PartialEq)]
pub struct NextTask {
    pub owner_id: String,
    pub request: CreateTaskRequest,
}

/// Why an event cannot yield a next task (poison: dropped to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

/// The next occurrence of the completed task in `event`; `None` when the task does not
/// recur or its series has ended. It is created for the same owner, in the same list, for
/// the same assignee. When the owner can no longer create in that list (removed from it,
/// made a viewer, the list deleted), task-service answers NOT_FOUND or PERMISSION_DENIED:
/// `creator.rs` retries those like any roll-out mistake, then the completion goes to the
/// dead-letter topic, where an operator replays it once the owner has their rights back
/// (or discards it). An assignee no longer a member is refused (INVALID_ARGUMENT), also
/// kept as a dead letter. Events written before lists existed name no list: the
/// owner's default list then.
pub fn next_task(event: &TaskEventData) -> Result<Option<NextTask>, Invalid> {
    let task = &event.task;
    let Some(rule) = task.recurrence.as_deref() else {
        return Ok(None);
    };
    let rule: RecurrenceRule = rule
        .parse()
        .map_err(|err| Invalid(format!("recurrence {rule:?}: {err}")))?;
    let Some(due) = task.due_time else {
        return Err(Invalid("a recurring task without a due time".into()));
    };
    let tz: Tz = match task.time_zone.as_deref() {
        None => Tz::UTC,
        Some(name) => name
            .parse()
            .map_err(|_| Invalid(format!("unknown time zone {name:?}")))?,
    };
    let Some(next) = next_occurrence(&rule, due, tz) else {
        return Ok(None);
    };
    let priority = match task.priority.as_str() {
        "low" => Priority::Low,
        "medium" => Priority::Medium,
        "high" => Priority::High,
        "urgent" => Priority::Urgent,
        other => return Err(Invalid(format!("unknown priority {other:?}"))),
    };
    Ok(Some(NextTask {
        owner_id: event.owner_id.clone(),
        request: CreateTaskRequest {
            title: task.title.clone(),
            description: task.description.clone(),
            priority: priority as i32,
            tags: task.tags.clone(),
            due_time: Some(Timestamp {
                seconds: next.due.timestamp(),
                nanos: i32::try_from(next.due.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            time_zone: task.time_zone.clone(),
            recurrence: Some(next.rule.to_string()),
            // One successor per occurrence: a redelivered completion, or a task completed,
            // reopened and completed again, returns the task the first call created.
            request_id: Some(format!("recurrence-of:{}", task.id)),
            list_id: task.list_id.map(|list| list.to_string()),
            assignee_id: task.assignee_id.clone(),
        },
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{DateTime, Utc};
    use taskmesh_shared::events::TaskSnapshot;
    use uuid::Uuid;

    use super::*;

    pub fn completed(recurrence: Option<&str>, tz: Option<&str>) -> TaskEventData {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        TaskEventData {
            task: TaskSnapshot {
                id: Uuid::now_v7(),
                owner_id: "alice".into(),
                title: "Water plants".into(),
                description: "all of them".into(),
                priority: "high".into(),
                tags: vec!["home".into()],
                due_time: Some(at("2026-11-23T08:00:00Z")),
                time_zone: tz.map(str::to_owned),
                recurrence: recurrence.map(str::to_owned),
                completed: true,
                completed_time: Some(at("2026-11-23T09:00:00Z")),
                create_time: at("2026-11-20T08:00:00Z"),
                update_time: at("2026-11-23T09:00:00Z"),
                version: 2,
                list_id: None,
                assignee_id: None,
            },
            changed_fields: vec!["completed".into()],
            version: 2,
            owner_id: "alice".into(),
            occurred_at: at("2026-11-23T09:00:00Z"),
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        }
    }

    #[test]
    fn copies_the_task_to_its_next_due_time() {
        let event = completed(Some("FREQ=WEEKLY;COUNT=3"), Some("Europe/Paris"));
        let next = next_task(&event).unwrap().unwrap();
        assert_eq!(next.owner_id, "alice");
        let r = &next.request;
        assert_eq!(
            (r.title.as_str(), r.priority),
            ("Water plants", Priority::High as i32)
        );
        assert_eq!(r.tags, ["home"]);
        assert_eq!(
            r.due_time.unwrap().seconds,
            event.task.due_time.unwrap().timestamp() + 7 * 86400
        );
        assert_eq!(r.recurrence.as_deref(), Some("FREQ=WEEKLY;COUNT=2"));
        assert_eq!(r.time_zone.as_deref(), Some("Europe/Paris"));
        assert_eq!(
            r.request_id,
            Some(format!("recurrence-of:{}", event.task.id))
        );
        // Written before lists: no list (the owner's default one), no assignee.
        assert_eq!(
            (r.list_id.as_deref(), r.assignee_id.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn the_next_occurrence_stays_in_the_list_with_the_assignee() {
        let mut event = completed(Some("FREQ=DAILY"), None);
        let list = Uuid::now_v7();
        event.task.list_id = Some(list);
        event.task.assignee_id = Some("bob".into());
        event.actor_id = Some("bob".into());
        let next = next_task(&event).unwrap().unwrap();
        // Created for the owner, who may create in the list; bob is still to do it.
        assert_eq!(next.owner_id, "alice");
        assert_eq!(next.request.list_id, Some(list.to_string()));
        assert_eq!(next.request.assignee_id.as_deref(), Some("bob"));
    }

    #[test]
    fn calendar_rules_keep_the_local_time_and_drop_passed_exdates() {
        // Due Friday 23 Oct 2026 at 09:00 in Paris (07:00Z, summer time); the last Friday
        // of October is the 30th, skipped, and November's is after the clocks changed.
        let mut event = completed(
            Some("FREQ=MONTHLY;BYDAY=-1FR;COUNT=5;EXDATE=20261030,20270129"),
            Some("Europe/Paris"),
        );
        event.task.due_time = Some("2026-10-23T07:00:00Z".parse().unwrap());
        let next = next_task(&event).unwrap().unwrap().request;
        assert_eq!(
            next.due_time.unwrap().seconds,
            "2026-11-27T08:00:00Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            next.recurrence.as_deref(),
            Some("FREQ=MONTHLY;BYDAY=-1FR;COUNT=3;EXDATE=20270129")
        );
    }

    #[test]
    fn ended_or_plain_tasks_have_no_successor_and_bad_rules_are_poison() {
        assert_eq!(next_task(&completed(None, None)).unwrap(), None);
        assert_eq!(
            next_task(&completed(Some("FREQ=DAILY;COUNT=1"), None)).unwrap(),
            None
        );
        assert!(next_task(&completed(Some("FREQ=HOURLY"), None)).is_err());
        assert!(next_task(&completed(Some("FREQ=DAILY"), Some("Mars/Olympus"))).is_err());
        let mut no_due = completed(Some("FREQ=DAILY"), None);
        no_due.task.due_time = None;
        assert!(next_task(&no_due).is_err());
    }
}
