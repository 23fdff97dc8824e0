//! What a user has besides tasks: notifications, notification preferences and
//! statistics, from the same address and with the same token as the task API.

use chrono::DateTime;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use taskmesh_proto::analytics::v1::{self as stats_pb, stats_service_client::StatsServiceClient};
use taskmesh_proto::notifications::v1::{
    self as notes_pb, notification_service_client::NotificationServiceClient,
    preference_service_client::PreferenceServiceClient,
};

use crate::Authed;
use crate::exit::{Class, fail};
use crate::output::{self, View};

#[derive(Args)]
pub struct NotificationsArgs {
    /// Only the unread ones.
    #[arg(long)]
    unread: bool,
    /// At most this many (1-100).
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: i32,
    /// Continue from a previous page (its `next page` token).
    #[arg(long)]
    page: Option<String>,
    /// Show times in this IANA time zone (e.g. Europe/Paris); default: `TZ`, else the
    /// system's.
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
}

#[derive(Args)]
pub struct AckArgs {
    /// Notification ids to mark read.
    ids: Vec<String>,
    /// Mark every notification read.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
}

#[derive(Subcommand)]
pub enum PrefsCmd {
    /// Show the preferences that apply.
    Show,
    /// Replace the preferences (options not given are cleared).
    Set {
        /// Where reminders are e-mailed.
        #[arg(long)]
        email: Option<String>,
        /// Where reminders are posted (under the operators' webhook base URL).
        #[arg(long)]
        webhook: Option<String>,
        /// Minutes before the due time that reminders fire.
        #[arg(long, value_name = "MINUTES")]
        lead: Option<u64>,
        /// A daily window in which reminders wait, e.g. 22:00-07:00.
        #[arg(long, value_name = "HH:MM-HH:MM", requires = "tz")]
        quiet: Option<String>,
        /// The IANA time zone of --quiet, e.g. Europe/Paris.
        #[arg(long)]
        tz: Option<String>,
        /// Keep notifications but send nothing.
        #[arg(long)]
        muted: bool,
    },
    /// Back to the defaults.
    Reset,
}

fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn kind_name(kind: notes_pb::NotificationKind) -> &'static str {
    use notes_pb::NotificationKind as K;
    match kind {
        K::DueTimeSet => "due time set",
        K::DueTimeChanged => "due time changed",
        K::DueSoon => "due soon",
        K::Overdue => "overdue",
        K::RolledOver => "rolled over",
        K::Unspecified => "other",
    }
}

pub async fn notifications(
    channel: Authed,
    args: NotificationsArgs,
    view: View,
) -> anyhow::Result<()> {
    let json_out = view.json;
    let mut client = NotificationServiceClient::new(channel);
    let page = client
        .list_notifications(notes_pb::ListNotificationsRequest {
            page_size: args.limit,
            page_token: args.page.unwrap_or_default(),
            unread_only: args.unread,
        })
        .await?
        .into_inner();
    if json_out {
        let items: Vec<Value> = page
            .notifications
            .iter()
            .map(|n| {
                json!({
                    "id": n.id, "kind": kind_name(n.kind()), "task_id": n.task_id,
                    "title": n.title, "message": n.message, "read": n.read,
                    "created": time(n.create_time.as_ref()),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"notifications": items, "unread": page.unread, "next_page_token": page.next_page_token})
        );
        return Ok(());
    }
    if page.notifications.is_empty() {
        println!("no notifications");
    }
    for n in &page.notifications {
        let mark = if n.read { " " } else { "*" };
        println!(
            "{mark} {}  {:<16}  {}  ({})",
            output::time(n.create_time.as_ref())
                .map(|t| view.zone.show(t, false))
                .unwrap_or_default(),
            kind_name(n.kind()),
            n.message,
            n.id
        );
    }
    println!("{} unread", page.unread);
    if !page.next_page_token.is_empty() {
        println!("next page: --page {}", page.next_page_token);
    }
    Ok(())
}

pub async fn ack(channel: Authed, args: AckArgs, json_out: bool) -> anyhow::Result<()> {
    if !args.all && args.ids.is_empty() {
        return Err(fail(
            Class::Usage,
            "name the notifications to mark read, or pass --all",
        ));
    }
    let mut client = NotificationServiceClient::new(channel);
    let acked = client
        .ack_notifications(notes_pb::AckNotificationsRequest {
            ids: args.ids,
            all: args.all,
        })
        .await?
        .into_inner();
    if json_out {
        println!("{}", json!({"acked": acked.acked, "unread": acked.unread}));
    } else {
        println!("marked {} read; {} unread", acked.acked, acked.unread);
    }
    Ok(())
}

fn show_prefs(prefs: &notes_pb::Preferences, json_out: bool) {
    let quiet = prefs
        .quiet_hours
        .as_ref()
        .map(|q| format!("{}-{} {}", q.start, q.end, q.time_zone));
    if json_out {
        println!(
            "{}",
            json!({
                "email": prefs.email, "webhook_url": prefs.webhook_url,
                "lead_time_secs": prefs.lead_time_secs, "quiet_hours": quiet,
                "muted": prefs.muted, "stored": prefs.stored,
            })
        );
        return;
    }
    let or_none = |v: Option<&str>| v.unwrap_or("-").to_owned();
    println!("email:      {}", or_none(prefs.email.as_deref()));
    println!("webhook:    {}", or_none(prefs.webhook_url.as_deref()));
    println!(
        "lead time:  {}",
        prefs
            .lead_time_secs
            .map_or_else(|| "-".to_owned(), |s| format!("{} min", s / 60))
    );
    println!("quiet:      {}", or_none(quiet.as_deref()));
    println!("muted:      {}", if prefs.muted { "yes" } else { "no" });
    if !prefs.stored {
        println!("(service defaults: nothing stored)");
    }
}

pub async fn prefs(channel: Authed, command: PrefsCmd, json_out: bool) -> anyhow::Result<()> {
    let mut client = PreferenceServiceClient::new(channel);
    match command {
        PrefsCmd::Show => {
            let prefs = client
                .get_preferences(notes_pb::GetPreferencesRequest {})
                .await?
                .into_inner();
            show_prefs(&prefs, json_out);
        }
        PrefsCmd::Set {
            email,
            webhook,
            lead,
            quiet,
            tz,
            muted,
        } => {
            let quiet_hours = quiet
                .map(|window| {
                    let (start, end) = window.split_once('-').ok_or_else(|| {
                        fail(Class::Usage, "--quiet is HH:MM-HH:MM, e.g. 22:00-07:00")
                    })?;
                    anyhow::Ok(notes_pb::QuietHours {
                        start: start.trim().to_owned(),
                        end: end.trim().to_owned(),
                        time_zone: tz.clone().unwrap_or_default(),
                    })
                })
                .transpose()?;
            let prefs = client
                .set_preferences(notes_pb::SetPreferencesRequest {
                    preferences: Some(notes_pb::Preferences {
                        lead_time_secs: lead.map(|minutes| minutes.saturating_mul(60)),
                        email,
                        webhook_url: webhook,
                        quiet_hours,
                        muted,
                        stored: false,
                    }),
                })
                .await?
                .into_inner();
            show_prefs(&prefs, json_out);
        }
        PrefsCmd::Reset => {
            let reply = client
                .delete_preferences(notes_pb::DeletePreferencesRequest {})
                .await?
                .into_inner();
            if json_out {
                println!("{}", json!({"deleted": reply.deleted}));
            } else if reply.deleted {
                println!("preferences reset to the defaults");
            } else {
                println!("nothing stored: the defaults already apply");
            }
        }
    }
    Ok(())
}

pub async fn stats(channel: Authed, json_out: bool) -> anyhow::Result<()> {
    let mut client = StatsServiceClient::new(channel);
    let stats = client
        .get_stats(stats_pb::GetStatsRequest {})
        .await?
        .into_inner();
    if json_out {
        let days: Vec<Value> = stats
            .completions_per_day
            .iter()
            .map(|d| json!({"date": d.date, "completed": d.completed}))
            .collect();
        println!(
            "{}",
            json!({
                "created": stats.created, "completed": stats.completed,
                "deleted": stats.deleted, "open": stats.open, "overdue": stats.overdue,
                "completion_rate": stats.completion_rate,
                "median_seconds_to_complete": stats.median_seconds_to_complete,
                "completions_per_day": days,
            })
        );
        return Ok(());
    }
    println!(
        "created {}  completed {}  deleted {}",
        stats.created, stats.completed, stats.deleted
    );
    println!(
        "open {}  overdue {}  completion rate {:.0}%",
        stats.open,
        stats.overdue,
        stats.completion_rate * 100.0
    );
    if let Some(secs) = stats.median_seconds_to_complete {
        println!("median time to complete: {:.1} h", secs as f64 / 3600.0);
    }
    let last_week: Vec<String> = stats
        .completions_per_day
        .iter()
        .rev()
        .take(7)
        .rev()
        .map(|d| d.completed.to_string())
        .collect();
    println!("completed, last 7 days: {}", last_week.join(" "));
    Ok(())
}
