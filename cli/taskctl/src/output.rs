//! How tasks and errors look in a terminal, and as JSON for scripts.

use std::ffi::OsStr;
use std::io::IsTerminal;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde_json::{Value, json};
use taskmesh_proto::tasks::v1::{Priority, Task};

use crate::lists::Names;
use tonic_types::StatusExt;

/// Where times are shown: JSON always says UTC (RFC 3339); tables and details use the
/// time zone asked for (`--tz`), else `TZ` when it names an IANA zone, else the system's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Zone {
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `--tz` if given, else `TZ` if it is an IANA name (a POSIX rule such as
    /// `CET-1CEST` is left to the system's reading), else local time.
    pub fn pick(flag: Option<&str>) -> anyhow::Result<Self> {
        if let Some(name) = flag.filter(|n| !n.is_empty()) {
            return name.parse().map(Self::Named).map_err(|_| {
                crate::exit::fail(
                    crate::exit::Class::Usage,
                    format!("{name:?} is not an IANA time zone (e.g. Europe/Paris)"),
                )
            });
        }
        let from_env = std::env::var("TZ")
            .ok()
            .and_then(|tz| tz.trim_start_matches(':').parse::<chrono_tz::Tz>().ok());
        Ok(from_env.map_or(Self::Local, Self::Named))
    }

    /// `2030-01-06 08:00 CET` (or `+01:00` for the system's zone).
    pub fn show(self, t: DateTime<Utc>, with_zone: bool) -> String {
        let (format, plain) = ("%Y-%m-%d %H:%M %Z", "%Y-%m-%d %H:%M");
        self.format(t, if with_zone { format } else { plain })
    }

    /// `t` in this zone, in a chrono `format`.
    pub fn format(self, t: DateTime<Utc>, format: &str) -> String {
        match self {
            Self::Local => t.with_timezone(&chrono::Local).format(format).to_string(),
            Self::Named(tz) => t.with_timezone(&tz).format(format).to_string(),
        }
    }

    pub fn label(self) -> String {
        match self {
            Self::Local => "local".to_owned(),
            Self::Named(tz) => tz.name().to_owned(),
        }
    }
}

/// How to print: JSON or text, in which time zone, with colours or not.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub json: bool,
    pub zone: Zone,
    pub color: bool,
}

/// Colours only on a terminal, never with `NO_COLOR` set (https://no-color.org), and on
/// a pipe only when `CLICOLOR_FORCE` asks for them.
pub fn color_wanted(
    no_color: Option<&OsStr>,
    force: Option<&OsStr>,
    dumb_term: bool,
    terminal: bool,
) -> bool {
    let set = |v: Option<&OsStr>| v.is_some_and(|v| !v.is_empty() && v != "0");
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    set(force) || (terminal && !dumb_term)
}

/// Whether to colour what goes to `stream` (stdout or stderr), from the environment.
pub fn color_for(stream: impl IsTerminal) -> bool {
    color_wanted(
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("CLICOLOR_FORCE").as_deref(),
        std::env::var_os("TERM").is_some_and(|t| t == "dumb"),
        stream.is_terminal(),
    )
}

pub const BOLD: &str = "1";
pub const DIM: &str = "2";
pub const RED: &str = "31";
pub const GREEN: &str = "32";
pub const YELLOW: &str = "33";

/// `text` in an SGR style when colours are on.
pub fn paint(on: bool, style: &str, text: &str) -> String {
    if on && !style.is_empty() {
        format!("\x1b[{style}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

pub fn time(ts: Option<&Timestamp>) -> Option<DateTime<Utc>> {
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
        "list_id": task.list_id,
        "assignee_id": task.assignee_id,
    })
}

pub fn task(task: &Task, view: View, names: &Names) {
    if view.json {
        println!("{}", to_json(task));
        return;
    }
    let when = |ts: Option<&Timestamp>| {
        time(ts).map_or_else(|| "-".to_owned(), |t| view.zone.show(t, true))
    };
    println!("id:          {}", task.id);
    println!("title:       {}", task.title);
    if !task.description.is_empty() {
        println!("description: {}", task.description);
    }
    if names.knows(&task.list_id) {
        println!(
            "list:        {} ({})",
            names.get(&task.list_id),
            task.list_id
        );
    } else {
        println!("list:        {}", task.list_id);
    }
    println!(
        "assignee:    {}",
        task.assignee_id.as_deref().unwrap_or("-")
    );
    println!("created by:  {}", task.owner_id);
    println!(
        "status:      {}",
        if task.completed { "completed" } else { "open" }
    );
    println!(
        "priority:    {}",
        paint(view.color, priority_style(task), priority(task))
    );
    println!("tags:        {}", task.tags.join(", "));
    println!(
        "due:         {}",
        paint(
            view.color,
            due_style(task, Utc::now()),
            &when(task.due_time.as_ref())
        )
    );
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

fn priority_style(task: &Task) -> &'static str {
    match Priority::try_from(task.priority) {
        Ok(Priority::Urgent) => RED,
        Ok(Priority::High) => YELLOW,
        _ => "",
    }
}

/// Overdue open tasks stand out.
fn due_style(task: &Task, now: DateTime<Utc>) -> &'static str {
    match time(task.due_time.as_ref()) {
        Some(due) if !task.completed && due < now => RED,
        _ => "",
    }
}

pub fn tasks(tasks: &[Task], next_page_token: &str, view: View, names: &Names) {
    if view.json {
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
    let rows: Vec<[String; 8]> = tasks
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                if t.completed { "[x]" } else { "[ ]" }.to_owned(),
                priority(t).to_owned(),
                time(t.due_time.as_ref())
                    .map_or_else(|| "-".to_owned(), |d| view.zone.show(d, false)),
                truncate(&t.title, 50),
                truncate(names.get(&t.list_id), 20),
                t.assignee_id.clone().unwrap_or_else(|| "-".to_owned()),
                t.tags.join(","),
            ]
        })
        .collect();
    let due = format!("DUE ({})", view.zone.label());
    let header = [
        "ID", "", "PRIORITY", &due, "TITLE", "LIST", "ASSIGNEE", "TAGS",
    ]
    .map(str::to_owned);
    let mut widths = [0; 8];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let now = Utc::now();
    // Padded first, painted after: escape codes take no room on screen.
    let line = |row: &[String; 8], styles: [&str; 8]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .zip(styles)
            .map(|((cell, w), style)| paint(view.color, style, &format!("{cell:<w$}")))
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    println!("{}", line(&header, [BOLD; 8]));
    for (row, task) in rows.iter().zip(tasks) {
        let done = if task.completed { DIM } else { "" };
        let styles = [
            done,
            done,
            priority_style(task),
            due_style(task, now),
            done,
            done,
            done,
            done,
        ];
        println!("{}", line(row, styles));
    }
    if !next_page_token.is_empty() {
        println!("more: --page {next_page_token} (or --all)");
    }
}

pub fn truncate(text: &str, max: usize) -> String {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn colours_only_on_a_terminal_and_never_with_no_color() {
        let v = |s: &'static str| Some(OsStr::new(s));
        assert!(color_wanted(None, None, false, true));
        assert!(!color_wanted(None, None, false, false));
        assert!(!color_wanted(None, None, true, true));
        assert!(!color_wanted(v("1"), None, false, true));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(color_wanted(v(""), None, false, true));
        assert!(color_wanted(None, v("1"), false, false));
        assert!(!color_wanted(None, v("0"), false, false));
        assert!(!color_wanted(v("1"), v("1"), false, true));
        assert_eq!(paint(false, RED, "x"), "x");
        assert_eq!(paint(true, RED, "x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn times_are_shown_in_the_zone_asked_for() {
        let t = DateTime::parse_from_rfc3339("2030-01-06T07:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let paris = Zone::pick(Some("Europe/Paris")).unwrap();
        assert_eq!(paris.show(t, true), "2030-01-06 08:00 CET");
        assert_eq!(paris.show(t, false), "2030-01-06 08:00");
        assert_eq!(paris.label(), "Europe/Paris");
        let tokyo = Zone::pick(Some("Asia/Tokyo")).unwrap();
        assert_eq!(tokyo.show(t, false), "2030-01-06 16:00");
        let err = Zone::pick(Some("Mars/Olympus")).unwrap_err();
        assert_eq!(crate::exit::classify(&err), crate::exit::Class::Usage);
    }
}
