//! `taskctl watch`: the changes to the tasks of the caller's lists, one line each, as they
//! commit (WatchTasks, a server stream).
//!
//! The stream is resumable: every message carries a resume token, and a call with the
//! last one gets exactly what was missed. So a connection that breaks, a restarting
//! service, or a slow reader cut off with RESOURCE_EXHAUSTED costs nothing: watch waits a
//! little (doubling up to 30 s, reset by every message) and calls again with its last
//! token. Only a token older than the service keeps changes for (OUT_OF_RANGE) ends it,
//! with its own exit code, since then changes were missed and the caller must list again.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use taskmesh_proto::tasks::v1::{
    self as pb, list_service_client::ListServiceClient, task_service_client::TaskServiceClient,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;

use crate::exit::{self, Class, fail};
use crate::lists::Names;
use crate::output::{self, View};
use crate::{Authed, Bearer, ids};

/// The end of `taskctl watch --help`.
const HELP: &str = "\
Each change is one line: when it happened, what happened (created, updated, completed,
reopened, deleted), the last 8 digits of the task's id, its title, its list, and who:
the task's creator, then `-> assignee` when it has one. With --json each change is one
JSON object per line: {event_id, type, task, version, occur_time, resume_token}.

A broken connection, a restarting service or being cut off for reading too slowly is no
error: watch reconnects with the last resume token (waiting up to 30 s between tries) and
misses nothing. A resume token older than the changes the service keeps (by default a
day) ends watch with exit code 7: list the tasks again, then watch without --resume.
Ctrl-C (or SIGTERM) ends watch with exit code 0, as does a reader that goes away
(`taskctl watch --json | head -1`).

A LIST is a list's id, the first or last hex digits of its id, or its name.";

#[derive(Args)]
#[command(after_help = HELP)]
pub struct WatchArgs {
    /// Only this list's changes; default: every list you are a member of.
    #[arg(short, long)]
    list: Option<String>,
    /// Start after the change this token came with (`resume_token` in --json); default:
    /// from now.
    #[arg(long, value_name = "TOKEN")]
    resume: Option<String>,
    /// With --json, also print the keep-alives the service sends while nothing happens
    /// (`{"type":"keepalive","resume_token":...}`): a script that saves the last token
    /// then never holds one older than a few minutes.
    #[arg(long)]
    keep_alives: bool,
    /// Show times in this IANA time zone (e.g. Europe/Paris); default: `TZ`, else the
    /// system's.
    #[arg(long = "tz", value_name = "ZONE")]
    pub tz: Option<String>,
}

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Watches until Ctrl-C, SIGTERM, a closed stdout, or an error that retrying cannot fix.
pub async fn run(
    server: &str,
    endpoint: Endpoint,
    bearer: Bearer,
    args: &WatchArgs,
    view: View,
) -> anyhow::Result<()> {
    // No per-call timeout (the stream is meant to last); HTTP/2 pings find a dead peer
    // that never closed the connection.
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .with_context(|| format!("cannot reach task-service at {server}"))?;
    let channel = InterceptedService::new(channel, bearer);
    tokio::select! {
        followed = follow(channel, args, view) => followed,
        stopped = stop_signal() => stopped,
    }
}

/// Ctrl-C or SIGTERM: the way a watch is meant to end.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.context("cannot handle Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot handle Ctrl-C")?;
    Ok(())
}

async fn follow(channel: Authed, args: &WatchArgs, view: View) -> anyhow::Result<()> {
    let mut lists = ListServiceClient::new(channel.clone());
    let list_id = match &args.list {
        Some(list) => Some(ids::resolve_list(&mut lists, list).await?),
        None => None,
    };
    let mut names = if view.json {
        Names::none()
    } else {
        Names::load(&mut lists).await?
    };
    let what = match &list_id {
        Some(id) => format!("list {}", names.get(id)),
        None => "every list you are a member of".to_owned(),
    };
    let mut tasks = TaskServiceClient::new(channel);
    let mut token = args.resume.clone().unwrap_or_default();
    let mut backoff = FIRST_BACKOFF;
    let mut connected_before = false;
    loop {
        let request = pb::WatchTasksRequest {
            resume_token: token.clone(),
            list_id: list_id.clone(),
        };
        let resumed = !token.is_empty();
        let broke = match tasks.watch_tasks(request).await {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                let mut first = true;
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            backoff = FIRST_BACKOFF;
                            if std::mem::take(&mut first) {
                                // The service's first message comes once it follows the
                                // changes (after what a resume token missed). Said on
                                // stderr, so that stdout holds only changes; a script
                                // may wait for it to know that what follows is seen.
                                if !connected_before {
                                    eprintln!("watching {what} (Ctrl-C to stop)");
                                } else if resumed {
                                    eprintln!("watch: reconnected; nothing was missed");
                                } else {
                                    eprintln!("watch: reconnected");
                                }
                                connected_before = true;
                            }
                            let shown = match &message.change {
                                Some(change) => {
                                    if !view.json && !names.knows(&change_list(change)) {
                                        // A list shared with the caller since the start.
                                        if let Ok(fresh) = Names::load(&mut lists).await {
                                            names = fresh;
                                        }
                                    }
                                    print(&line(change, &message.resume_token, view, &names))
                                }
                                None if view.json && args.keep_alives => print(
                                    &json!({
                                        "type": "keepalive",
                                        "resume_token": message.resume_token,
                                    })
                                    .to_string(),
                                ),
                                None => Ok(true),
                            };
                            token = message.resume_token;
                            if !shown? {
                                return Ok(()); // the reader has gone
                            }
                        }
                        Ok(None) => {
                            break tonic::Status::unavailable("the service ended the stream");
                        }
                        Err(status) => break status,
                    }
                }
            }
        };
        let wait = jittered(backoff);
        retry_or_fail(broke, &token, wait)?;
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Ok when `status` is worth another try with the last token, in `wait` (said on stderr);
/// the error to end with otherwise.
fn retry_or_fail(status: tonic::Status, token: &str, wait: Duration) -> anyhow::Result<()> {
    if status.code() == tonic::Code::OutOfRange {
        let since = if token.is_empty() {
            "the start"
        } else {
            "the last resume token"
        };
        return Err(fail(
            Class::Expired,
            format!(
                "the service no longer keeps the changes since {since} ({}): changes may \
                 have been missed; list the tasks again (taskctl list), then watch without \
                 --resume",
                status.message()
            ),
        ));
    }
    if exit::of_status(&status) != Class::Unavailable {
        return Err(status.into());
    }
    eprintln!(
        "watch: {}; reconnecting in {:.1} s",
        output::describe_status(&status),
        wait.as_secs_f64()
    );
    Ok(())
}

/// `wait` less up to a half, so that many watchers cut off at once do not all come back
/// at the same instant.
fn jittered(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    wait.mul_f64(fraction)
}

fn change_list(change: &pb::TaskChange) -> String {
    change
        .task
        .as_ref()
        .map(|t| t.list_id.clone())
        .unwrap_or_default()
}

fn type_name(change: &pb::TaskChange) -> &'static str {
    match change.r#type() {
        pb::ChangeType::Created => "created",
        pb::ChangeType::Updated => "updated",
        pb::ChangeType::Completed => "completed",
        pb::ChangeType::Reopened => "reopened",
        pb::ChangeType::Deleted => "deleted",
        pb::ChangeType::Unspecified => "changed",
    }
}

/// A change as one line: JSON for scripts, else for people.
fn line(change: &pb::TaskChange, resume_token: &str, view: View, names: &Names) -> String {
    let occurred = output::time(change.occur_time.as_ref());
    if view.json {
        let object: Value = json!({
            "event_id": change.event_id,
            "type": type_name(change),
            "task": change.task.as_ref().map(output::to_json),
            "version": change.version,
            "occur_time": occurred.map(|t| t.to_rfc3339()),
            "resume_token": resume_token,
        });
        return object.to_string();
    }
    let task = change.task.clone().unwrap_or_default();
    let kind = type_name(change);
    let style = match change.r#type() {
        pb::ChangeType::Created => output::GREEN,
        pb::ChangeType::Completed => output::DIM,
        pb::ChangeType::Reopened => output::YELLOW,
        pb::ChangeType::Deleted => output::RED,
        _ => "",
    };
    let when = occurred.map_or_else(
        || "-".to_owned(),
        |t| view.zone.format(t, "%Y-%m-%d %H:%M:%S"),
    );
    let short = task.id.get(task.id.len().saturating_sub(8)..).unwrap_or("");
    let mut who = task.owner_id.clone();
    if let Some(assignee) = &task.assignee_id {
        who.push_str(" -> ");
        who.push_str(assignee);
    }
    format!(
        "{when}  {}  {short}  {}  [{}]  {who}",
        output::paint(view.color, style, &format!("{kind:<9}")),
        output::truncate(&task.title, 50),
        names.get(&task.list_id),
    )
}

/// Prints one line and flushes it; false once the reader has gone (a closed pipe).
fn print(line: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::output::Zone;

    fn change() -> pb::TaskChange {
        pb::TaskChange {
            event_id: "e-1".into(),
            r#type: pb::ChangeType::Completed as i32,
            task: Some(pb::Task {
                id: "0192f3a1-0000-7000-8000-00005734e025".into(),
                owner_id: "alice".into(),
                title: "Oat milk".into(),
                list_id: "l-1".into(),
                assignee_id: Some("bob".into()),
                version: 3,
                ..Default::default()
            }),
            version: 3,
            occur_time: Some(prost_types::Timestamp {
                seconds: 1_894_003_200, // 2030-01-07 08:00:00 UTC
                nanos: 0,
            }),
        }
    }

    #[test]
    fn a_change_is_one_line_for_people_and_one_object_for_scripts() {
        let mut names = Names::none();
        names.insert("l-1".into(), "Groceries".into());
        let view = |json| View {
            json,
            zone: Zone::pick(Some("Europe/Paris")).unwrap(),
            color: false,
        };
        let text = line(&change(), "tok", view(false), &names);
        assert_eq!(
            text,
            "2030-01-07 09:00:00  completed  5734e025  Oat milk  [Groceries]  alice -> bob"
        );
        let object: Value =
            serde_json::from_str(&line(&change(), "tok", view(true), &names)).unwrap();
        assert_eq!(object["event_id"], "e-1");
        assert_eq!(object["type"], "completed");
        assert_eq!(object["version"], 3);
        assert_eq!(object["resume_token"], "tok");
        assert_eq!(object["task"]["assignee_id"], "bob");
        assert_eq!(object["occur_time"], "2030-01-07T08:00:00+00:00");
    }

    #[test]
    fn only_a_lost_connection_or_a_cut_off_is_retried() {
        let wait = Duration::from_secs(1);
        assert!(retry_or_fail(tonic::Status::unavailable("restarting"), "t", wait).is_ok());
        assert!(retry_or_fail(tonic::Status::resource_exhausted("too slow"), "t", wait).is_ok());
        let class = |status| exit::classify(&retry_or_fail(status, "t", wait).unwrap_err());
        assert_eq!(
            class(tonic::Status::out_of_range("too old")),
            Class::Expired
        );
        assert_eq!(class(tonic::Status::not_found("no list")), Class::NotFound);
        assert_eq!(
            class(tonic::Status::unauthenticated("expired")),
            Class::Auth
        );
        let waits: Vec<Duration> = (0..20).map(|_| jittered(MAX_BACKOFF)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= MAX_BACKOFF / 2 && *w <= MAX_BACKOFF)
        );
    }
}
