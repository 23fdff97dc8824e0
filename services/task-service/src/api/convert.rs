//! Protobuf requests to validated domain values and back. Every rule about what a field
//! may hold lives here, and every broken rule becomes a field violation.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use prost_types::Timestamp;
use taskmesh_proto::tasks::v1 as pb;
use taskmesh_shared::error::{ApiError, Violations};
use taskmesh_shared::recurrence::RecurrenceRule;
use uuid::Uuid;

use crate::domain::{self, NewTask, OrderBy, Priority, StatusFilter, Task, TaskFilter, TaskPatch};

pub fn task_to_proto(task: Task) -> pb::Task {
    pb::Task {
        id: task.id.to_string(),
        owner_id: task.owner_id,
        title: task.title,
        description: task.description,
        priority: priority_to_proto(task.priority) as i32,
        tags: task.tags,
        due_time: task.due_at.map(timestamp),
        time_zone: task.time_zone,
        recurrence: task.recurrence,
        completed: task.completed_at.is_some(),
        completed_time: task.completed_at.map(timestamp),
        create_time: Some(timestamp(task.created_at)),
        update_time: Some(timestamp(task.updated_at)),
        version: task.version,
        list_id: task.list_id.to_string(),
        assignee_id: task.assignee_id,
    }
}

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn priority_to_proto(priority: Priority) -> pb::Priority {
    match priority {
        Priority::Low => pb::Priority::Low,
        Priority::Medium => pb::Priority::Medium,
        Priority::High => pb::Priority::High,
        Priority::Urgent => pb::Priority::Urgent,
    }
}

/// `Ok(None)` for PRIORITY_UNSPECIFIED.
fn priority(value: i32) -> Result<Option<Priority>, String> {
    match pb::Priority::try_from(value) {
        Ok(pb::Priority::Unspecified) => Ok(None),
        Ok(pb::Priority::Low) => Ok(Some(Priority::Low)),
        Ok(pb::Priority::Medium) => Ok(Some(Priority::Medium)),
        Ok(pb::Priority::High) => Ok(Some(Priority::High)),
        Ok(pb::Priority::Urgent) => Ok(Some(Priority::Urgent)),
        Err(_) => Err(format!("{value} is not a priority")),
    }
}

pub fn task_id(v: &mut Violations, raw: &str) -> Option<Uuid> {
    uuid_field(v, "id", raw)
}

pub fn uuid_field(v: &mut Violations, field: &str, raw: &str) -> Option<Uuid> {
    v.take(field, uuid(raw))
}

pub fn uuid(raw: &str) -> Result<Uuid, String> {
    Uuid::try_parse(raw.trim()).map_err(|_| format!("{raw:?} is not a UUID"))
}

/// A user named by another user (an assignee, a member): a token's `sub` as it is.
pub fn user_id(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        Err("must not be empty".into())
    } else if raw.chars().count() > domain::USER_ID_MAX_CHARS {
        Err(format!(
            "longer than {} characters",
            domain::USER_ID_MAX_CHARS
        ))
    } else if raw.chars().any(char::is_control) || raw.trim() != raw {
        Err("must not contain control characters or surrounding spaces".into())
    } else {
        Ok(raw.to_owned())
    }
}

fn title(raw: &str) -> Result<String, String> {
    let title = raw.trim();
    if title.is_empty() {
        Err("must not be empty".into())
    } else if title.chars().count() > domain::TITLE_MAX_CHARS {
        Err(format!(
            "longer than {} characters",
            domain::TITLE_MAX_CHARS
        ))
    } else {
        Ok(title.to_owned())
    }
}

fn description(raw: String) -> Result<String, String> {
    if raw.chars().count() > domain::DESCRIPTION_MAX_CHARS {
        Err(format!(
            "longer than {} characters",
            domain::DESCRIPTION_MAX_CHARS
        ))
    } else {
        Ok(raw)
    }
}

/// Trims, lower-cases and de-duplicates, keeping the first occurrence's position.
fn tags(v: &mut Violations, field: &str, raw: Vec<String>) -> Option<Vec<String>> {
    if raw.len() > domain::TAGS_MAX {
        v.add(field, format!("more than {} tags", domain::TAGS_MAX));
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, tag) in raw.iter().enumerate() {
        match tag_value(tag) {
            Ok(tag) if !out.contains(&tag) => out.push(tag),
            Ok(_) => {}
            Err(reason) => {
                v.add(format!("{field}[{i}]"), reason);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn tag_value(raw: &str) -> Result<String, String> {
    let tag = raw.trim().to_lowercase();
    if tag.is_empty() {
        Err("must not be empty".into())
    } else if tag.chars().count() > domain::TAG_MAX_CHARS {
        Err(format!("longer than {} characters", domain::TAG_MAX_CHARS))
    } else if tag.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(tag)
    }
}

fn time(raw: &Timestamp) -> Result<DateTime<Utc>, String> {
    let nanos = u32::try_from(raw.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or("nanos must be 0 to 999,999,999")?;
    let time = DateTime::from_timestamp(raw.seconds, nanos)
        .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or("must be between the years 1 and 9999")?;
    // Stored with microsecond precision.
    Ok(DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time))
}

fn time_zone(raw: &str) -> Result<String, String> {
    raw.trim()
        .parse::<Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| format!("{raw:?} is not an IANA time zone"))
}

fn recurrence(raw: &str) -> Result<String, String> {
    raw.parse::<RecurrenceRule>()
        .map(|rule| rule.to_string())
        .map_err(|err| err.to_string())
}

/// Empty means "clear" in updates.
fn clearable<T>(
    raw: Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Result<Option<T>, String>> {
    raw.map(|raw| {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            parse(&raw).map(Some)
        }
    })
}

pub fn request_id(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    if id.is_empty() {
        Err("must not be empty when set".into())
    } else if id.chars().count() > domain::REQUEST_ID_MAX_CHARS {
        Err(format!(
            "longer than {} characters",
            domain::REQUEST_ID_MAX_CHARS
        ))
    } else {
        Ok(id.to_owned())
    }
}

pub fn new_task(req: pb::CreateTaskRequest) -> Result<NewTask, ApiError> {
    let mut v = Violations::new();
    let title = v.take("title", title(&req.title));
    let description = v.take("description", description(req.description));
    let priority = v.take("priority", priority(req.priority));
    let tags = tags(&mut v, "tags", req.tags);
    let due_at = req.due_time.map(|t| v.take("due_time", time(&t)));
    let time_zone = req.time_zone.map(|z| v.take("time_zone", time_zone(&z)));
    let recurrence = req.recurrence.map(|r| v.take("recurrence", recurrence(&r)));
    let request_id = req.request_id.map(|r| v.take("request_id", request_id(&r)));
    let list_id = req.list_id.map(|l| uuid_field(&mut v, "list_id", &l));
    let assignee_id = req.assignee_id.map(|a| v.take("assignee_id", user_id(&a)));
    v.into_result()?;
    let task = NewTask {
        title: title.unwrap_or_default(),
        description: description.unwrap_or_default(),
        priority: priority.flatten().unwrap_or(Priority::Medium),
        tags: tags.unwrap_or_default(),
        due_at: due_at.flatten(),
        time_zone: time_zone.flatten(),
        recurrence: recurrence.flatten(),
        request_id: request_id.flatten(),
        list_id: list_id.flatten(),
        assignee_id: assignee_id.flatten(),
    };
    domain::check_cross_fields(task.recurrence.is_some(), task.due_at.is_some())?;
    Ok(task)
}

pub fn patch(req: pb::UpdateTaskRequest) -> Result<(Uuid, Option<i64>, TaskPatch), ApiError> {
    let mut v = Violations::new();
    let id = task_id(&mut v, &req.id);
    let expected = expected_version(&mut v, req.expected_version);
    let patch = TaskPatch {
        title: req.title.and_then(|t| v.take("title", title(&t))),
        description: req
            .description
            .and_then(|d| v.take("description", description(d))),
        priority: match req.priority.map(priority) {
            None => None,
            Some(Ok(Some(p))) => Some(p),
            Some(Ok(None)) => {
                v.add("priority", "cannot be set to PRIORITY_UNSPECIFIED");
                None
            }
            Some(Err(reason)) => {
                v.add("priority", reason);
                None
            }
        },
        tags: req
            .tags
            .and_then(|list| tags(&mut v, "tags.tags", list.tags)),
        due_at: match (req.due_time, req.clear_due_time) {
            (Some(_), true) => {
                v.add("clear_due_time", "cannot be combined with due_time");
                None
            }
            (Some(t), false) => v.take("due_time", time(&t)).map(Some),
            (None, true) => Some(None),
            (None, false) => None,
        },
        time_zone: clearable(req.time_zone, time_zone).and_then(|r| v.take("time_zone", r)),
        recurrence: clearable(req.recurrence, recurrence).and_then(|r| v.take("recurrence", r)),
        list_id: req.list_id.and_then(|l| uuid_field(&mut v, "list_id", &l)),
        assignee_id: clearable(req.assignee_id, user_id).and_then(|a| v.take("assignee_id", a)),
    };
    v.into_result()?;
    match id {
        Some(id) => Ok((id, expected, patch)),
        None => Err(ApiError::internal("validated id is missing")),
    }
}

pub fn expected_version(v: &mut Violations, raw: Option<i64>) -> Option<i64> {
    match raw {
        Some(n) if n < 1 => {
            v.add("expected_version", "must be 1 or more");
            None
        }
        other => other,
    }
}

/// Id and expected version of CompleteTask, ReopenTask and DeleteTask.
pub fn target(id: &str, expected: Option<i64>) -> Result<(Uuid, Option<i64>), ApiError> {
    let mut v = Violations::new();
    let id = task_id(&mut v, id);
    let expected = expected_version(&mut v, expected);
    v.into_result()?;
    id.map(|id| (id, expected))
        .ok_or_else(|| ApiError::internal("validated id is missing"))
}

pub fn filter(req: &pb::ListTasksRequest) -> Result<(TaskFilter, u32), ApiError> {
    let mut v = Violations::new();
    let status = match pb::StatusFilter::try_from(req.status) {
        Ok(pb::StatusFilter::Open) => Some(StatusFilter::Open),
        Ok(pb::StatusFilter::Completed) => Some(StatusFilter::Completed),
        Ok(pb::StatusFilter::All | pb::StatusFilter::Unspecified) => Some(StatusFilter::All),
        Err(_) => {
            v.add("status", format!("{} is not a status filter", req.status));
            None
        }
    };
    let order_by = match pb::OrderBy::try_from(req.order_by) {
        Ok(pb::OrderBy::CreateTime | pb::OrderBy::Unspecified) => Some(OrderBy::CreateTime),
        Ok(pb::OrderBy::DueTime) => Some(OrderBy::DueTime),
        Ok(pb::OrderBy::Priority) => Some(OrderBy::Priority),
        Ok(pb::OrderBy::Relevance) => Some(OrderBy::Relevance),
        Err(_) => {
            v.add("order_by", format!("{} is not an order", req.order_by));
            None
        }
    };
    let priority = v.take("priority", priority(req.priority)).flatten();
    let tag = req.tag.as_deref().and_then(|t| v.take("tag", tag_value(t)));
    let due_before = req
        .due_before
        .as_ref()
        .and_then(|t| v.take("due_before", time(t)));
    let due_after = req
        .due_after
        .as_ref()
        .and_then(|t| v.take("due_after", time(t)));
    let title_contains = req.title_contains.as_deref().and_then(|t| {
        if t.chars().count() > domain::TITLE_FILTER_MAX_CHARS {
            v.add("title_contains", "longer than 200 characters");
            None
        } else {
            Some(t.trim().to_owned()).filter(|t| !t.is_empty())
        }
    });
    let list_id = req
        .list_id
        .as_deref()
        .and_then(|l| uuid_field(&mut v, "list_id", l));
    // An empty assignee asks for the unassigned tasks.
    let assignee = req.assignee_id.as_deref().and_then(|a| {
        if a.is_empty() {
            Some(None)
        } else {
            v.take("assignee_id", user_id(a)).map(Some)
        }
    });
    let query = req.query.as_deref().and_then(|q| {
        if q.chars().count() > domain::QUERY_MAX_CHARS {
            v.add(
                "query",
                format!("longer than {} characters", domain::QUERY_MAX_CHARS),
            );
            None
        } else {
            Some(q.trim().to_owned()).filter(|q| !q.is_empty())
        }
    });
    // Relevance is the default order of a search, and needs one.
    let order_by = match (order_by, &query) {
        (Some(OrderBy::Relevance), None) => {
            v.add("order_by", "ORDER_BY_RELEVANCE needs a query");
            None
        }
        (Some(OrderBy::CreateTime), Some(_)) if req.order_by == pb::OrderBy::Unspecified as i32 => {
            Some(OrderBy::Relevance)
        }
        (order, _) => order,
    };
    let page_size = match req.page_size {
        0 => domain::PAGE_SIZE_DEFAULT,
        n if n > 0 && n.unsigned_abs() <= domain::PAGE_SIZE_MAX => n.unsigned_abs(),
        n => {
            v.add(
                "page_size",
                format!("{n} is not between 1 and {}", domain::PAGE_SIZE_MAX),
            );
            0
        }
    };
    v.into_result()?;
    let filter = TaskFilter {
        status: status.unwrap_or(StatusFilter::All),
        priority,
        tag,
        due_before,
        due_after,
        title_contains,
        list_id,
        assignee,
        query,
        order_by: order_by.unwrap_or(OrderBy::CreateTime),
        descending: req.descending,
    };
    Ok((filter, page_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::InvalidArgument(v) => v.into_iter().map(|f| f.field).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn create_reports_every_bad_field() {
        let req = pb::CreateTaskRequest {
            title: " ".into(),
            description: "x".repeat(10_001),
            priority: 42,
            tags: vec!["ok".into(), "y".repeat(51)],
            due_time: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            time_zone: Some("Mars/Olympus".into()),
            recurrence: Some("FREQ=HOURLY".into()),
            request_id: Some(String::new()),
            list_id: Some("inbox".into()),
            assignee_id: Some(" bob".into()),
        };
        assert_eq!(
            fields(new_task(req).unwrap_err()),
            [
                "title",
                "description",
                "priority",
                "tags[1]",
                "due_time",
                "time_zone",
                "recurrence",
                "request_id",
                "list_id",
                "assignee_id"
            ]
        );
    }

    #[test]
    fn create_normalises() {
        let req = pb::CreateTaskRequest {
            title: "  Pay rent ".into(),
            tags: vec!["Home".into(), "home ".into(), "Bills".into()],
            time_zone: Some("Europe/Paris".into()),
            ..Default::default()
        };
        let task = new_task(req).unwrap();
        assert_eq!(task.title, "Pay rent");
        assert_eq!(task.tags, ["home", "bills"]);
        assert_eq!(task.priority, Priority::Medium);
    }

    #[test]
    fn too_many_tags() {
        let req = pb::CreateTaskRequest {
            title: "t".into(),
            tags: (0..21).map(|i| format!("t{i}")).collect(),
            ..Default::default()
        };
        assert_eq!(fields(new_task(req).unwrap_err()), ["tags"]);
    }

    #[test]
    fn update_clears_with_empty_strings() {
        let req = pb::UpdateTaskRequest {
            id: uuid::Uuid::now_v7().to_string(),
            time_zone: Some(String::new()),
            clear_due_time: true,
            ..Default::default()
        };
        let (_, _, patch) = patch(req).unwrap();
        assert_eq!(patch.time_zone, Some(None));
        assert_eq!(patch.due_at, Some(None));
        assert_eq!(patch.title, None);
    }

    #[test]
    fn page_size_bounds() {
        for (size, ok) in [(0, true), (1, true), (500, true), (501, false), (-1, false)] {
            let req = pb::ListTasksRequest {
                page_size: size,
                ..Default::default()
            };
            assert_eq!(filter(&req).is_ok(), ok, "{size}");
        }
    }
}
