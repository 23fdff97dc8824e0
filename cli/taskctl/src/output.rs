//! How tasks and errors look in a terminal, and as JSON for scripts.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde_json::{Value, json};
use taskmesh_proto::tasks::v1::{Priority, Task};
use tonic_types::StatusExt;

fn time(ts: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn priority(task: &Task) -> &'static str {
    match Priority::try_from(task.priority) {
        Ok(Priority::Low) => "low",
        Ok(Priority::Medium) => "medium",
        Ok(Priority::High) => "high",
        Ok(Priority::Urgent) => "urgent",
        _ => "-",
    }
}

pub fn to_json(task: &Task) -> Value {
    let rfc3339 = |ts: Option<&Timestamp>| time(ts).map(|t| t.to_rfc3339());
    json!({
        "id": task.id,
        "owner_id": task.owner_id,
        "title": task.title,
        "description": task.description,
        "priority": priority(task),
        "tags": task.tags,
        "due_time": rfc3339(task.due_time.as_ref()),
        "time_zone": task.time_zone,
        "recurrence": task.recurrence,
        "completed": task.completed,
        "completed_time": rfc3339(task.completed_time.as_ref()),
        "create_time": rfc3339(task.create_time.as_ref()),
        "update_time": rfc3339(task.update_time.as_ref()),
        "version": task.version,
    })
}

pub fn task(task: &Task, json: bool) {
    if json {
        println!("{}", to_json(task));
        return;
    }
    let when = |ts: Option<&Timestamp>| {
        time(ts).map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
    };
    println!("id:          {}", task.id);
    println!("title:       {}", task.title);
    if !task.description.is_empty() {
        println!("description: {}", task.description);
    }
    println!(
        "status:      {}",
        if task.completed { "completed" } else { "open" }
    );
    println!("priority:    {}", priority(task));
    println!("tags:        {}", task.tags.join(", "));
    println!("due:         {}", when(task.due_time.as_ref()));
    if let Some(tz) = &task.time_zone {
        println!("time zone:   {tz}");
    }
    if let Some(rule) = &task.recurrence {
        println!("repeats:     {rule}");
    }
    if task.completed {
        println!("completed:   {}", when(task.completed_time.as_ref()));
    }
    println!("created:     {}", when(task.create_time.as_ref()));
    println!("version:     {}", task.version);
}

pub fn tasks(tasks: &[Task], next_page_token: &str, json: bool) {
    if json {
        let out = json!({
            "tasks": tasks.iter().map(to_json).collect::<Vec<_>>(),
            "next_page_token": next_page_token,
        });
        println!("{out}");
        return;
    }
    if tasks.is_empty() {
        println!("no tasks");
        return;
    }
    let rows: Vec<[String; 6]> = tasks
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                if t.completed { "[x]" } else { "[ ]" }.to_owned(),
                priority(t).to_owned(),
                time(t.due_time.as_ref()).map_or_else(
                    || "-".to_owned(),
                    |d| d.format("%Y-%m-%d %H:%M").to_string(),
                ),
                truncate(&t.title, 50),
                t.tags.join(","),
            ]
        })
        .collect();
    let header = ["ID", "", "PRIORITY", "DUE (UTC)", "TITLE", "TAGS"].map(str::to_owned);
    let mut widths = [0; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    if !next_page_token.is_empty() {
        println!("more: --page {next_page_token} (or --all)");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// `CODE: message`, then one line per invalid field.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_error_details().bad_request() {
        for v in &bad.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    out
}
