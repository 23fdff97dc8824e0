//! Reminders: one Jobs API job per task, rescheduled whenever the task or its recipient's
//! preferences say so. The recipient is the task's assignee, or its owner when there is
//! none. A job carries no decision: when it fires, the handler reads the task record and
//! the recipient's preferences again, so a stale or early job does no harm, and a task
//! given to someone else meanwhile reminds the new recipient, never the previous one.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use taskmesh_shared::callback::{InvokeError, JobHandler};
use taskmesh_shared::events::{ReminderData, ReminderEvent, ReminderKind};
use taskmesh_shared::state::{Expect, StateError, StateStore, Versioned};
use uuid::Uuid;

use crate::inbox::{Inbox, Notification, NotificationKind};
use crate::metrics::{KindLabel, Metrics};
use crate::ports::{JobScheduler, Outbound, PortError};
use crate::prefs::{Preferences, webhook_path};
use crate::records::{Change, RecordError, Records, inbox_key, prefs_key, task_key};
use crate::reminder::{Action, TaskRecord, task_of_job};

/// A job firing this much before its time is early (clock skew): it is put back.
const EARLY_TOLERANCE: Duration = Duration::seconds(1);
/// E-mail and webhook attempts per reminder before it counts as a delivery failure.
const DELIVERY_ATTEMPTS: u32 = 3;
/// How long the record that a reminder was sent on a channel is kept: far longer than a
/// job is retried or redelivered, then the store drops it (Dapr's `ttlInSeconds`).
const SENT_CLAIM_TTL: StdDuration = StdDuration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Settings {
    pub default_lead: Duration,
    /// Where webhook URLs must point (the `bindings.http` component's `url`); `None`
    /// disables webhooks.
    pub webhook_base: Option<String>,
    pub email_enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Port(#[from] PortError),
}

pub struct Reminders<S> {
    records: Records<S>,
    jobs: Arc<dyn JobScheduler>,
    outbound: Arc<dyn Outbound>,
    settings: Settings,
    metrics: Metrics,
}

impl<S: StateStore> Reminders<S> {
    pub fn new(
        store: Arc<S>,
        jobs: Arc<dyn JobScheduler>,
        outbound: Arc<dyn Outbound>,
        settings: Settings,
        metrics: Metrics,
    ) -> Self {
        Self {
            records: Records::new(store, metrics.records.conflicts.clone()),
            jobs,
            outbound,
            settings,
            metrics,
        }
    }

    pub fn records(&self) -> &Records<S> {
        &self.records
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The user's preferences, or the defaults.
    pub async fn preferences(&self, user_id: &str) -> Result<Preferences, RecordError> {
        Ok(self
            .records
            .read(&prefs_key(user_id))
            .await?
            .unwrap_or_default())
    }

    /// Adds a notification unless it is there already.
    pub async fn notify(
        &self,
        user_id: &str,
        notification: Notification,
    ) -> Result<(), RecordError> {
        self.notify_seeded(user_id, notification, None).await
    }

    /// `notify`, from an inbox read beforehand when `seed` is given.
    pub async fn notify_seeded(
        &self,
        user_id: &str,
        notification: Notification,
        seed: Option<Option<Versioned>>,
    ) -> Result<(), RecordError> {
        self.records
            .update_seeded(&inbox_key(user_id), seed, |inbox: Option<Inbox>| {
                let mut inbox = inbox.unwrap_or_default();
                if inbox.add(notification.clone()) {
                    Change::Write(inbox, ())
                } else {
                    Change::Keep(())
                }
            })
            .await
    }

    /// Schedules the job for `record`'s next reminder, or cancels it when there is none
    /// (`had_job`: a job may exist from an earlier state); `prefs` are the recipient's,
    /// which every caller has read already. Idempotent.
    pub async fn sync(
        &self,
        record: &TaskRecord,
        had_job: bool,
        prefs: &Preferences,
    ) -> Result<(), ReminderError> {
        match record.next_action(Utc::now(), prefs.lead(self.settings.default_lead)) {
            Some(action) => self.jobs.schedule(&record.job_name(), action.at).await?,
            None if had_job => self.jobs.cancel(&record.job_name()).await?,
            None => {}
        }
        Ok(())
    }

    /// A reminder job fired: send what the task is owed now, or put the job back.
    pub async fn fire(&self, task_id: Uuid) -> Result<(), ReminderError> {
        let now = Utc::now();
        let Some(record) = self.records.read::<TaskRecord>(&task_key(task_id)).await? else {
            return Ok(());
        };
        let prefs = self.preferences(record.recipient()).await?;
        let lead = prefs.lead(self.settings.default_lead);
        let Some(action) = record.next_action(now, lead) else {
            return Ok(());
        };
        if action.at > now + EARLY_TOLERANCE {
            self.jobs.schedule(&record.job_name(), action.at).await?;
            return Ok(());
        }
        if let Some(until) = prefs.quiet_until(now) {
            tracing::info!(task = %task_id, %until, "quiet hours: reminder deferred");
            self.metrics.deferred.inc();
            self.jobs.schedule(&record.job_name(), until).await?;
            return Ok(());
        }
        self.send(&record, &prefs, action, lead, now).await?;
        let late = (now - action.at).max(Duration::zero());
        self.metrics
            .lag_seconds
            .observe(late.num_milliseconds() as f64 / 1000.0);
        tracing::info!(
            task = %task_id,
            kind = kind_label(action.kind),
            late_ms = late.num_milliseconds(),
            "reminder sent"
        );
        let marked = self
            .records
            .update(
                &task_key(task_id),
                |current: Option<TaskRecord>| match current {
                    // Unless the task changed meanwhile, in which case its own sync decides.
                    Some(mut current) if current.next_action(now, lead) == Some(action) => {
                        current.mark_sent(action);
                        Change::Write(current.clone(), Some(current))
                    }
                    _ => Change::Keep(None),
                },
            )
            .await?;
        self.metrics
            .reminders
            .get_or_create(&KindLabel {
                kind: kind_label(action.kind),
            })
            .inc();
        if let Some(record) = marked {
            self.sync(&record, true, &prefs).await?;
        }
        Ok(())
    }

    /// Publishes (due-soon only, the `task-reminders` contract), keeps the notification and
    /// delivers it. Publishing and the inbox are at least once and idempotent by the
    /// reminder id; the e-mail and the webhook, which nobody downstream can deduplicate,
    /// are at most once per reminder id: each is claimed in the state store first, so a
    /// job fired twice (or two fires at once) sends once, and a crash between the claim and
    /// the send loses that one message (the reminder stays in the inbox and on the topic).
    async fn send(
        &self,
        record: &TaskRecord,
        prefs: &Preferences,
        action: Action,
        lead: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), ReminderError> {
        let id = record.reminder_id(action);
        let event = ReminderEvent::reminder(
            action.kind,
            id.clone(),
            ReminderData {
                task_id: record.task_id,
                // The user the reminder is for (docs/events.md): the owner unless the task
                // is assigned to someone else.
                owner_id: record.recipient().to_owned(),
                title: record.title.clone(),
                due_time: action.due,
                time_zone: record.time_zone.clone(),
                lead_time_secs: u64::try_from(lead.num_seconds()).unwrap_or(0),
                fired_at: now,
            },
        );
        if action.kind == ReminderKind::DueSoon {
            self.outbound.publish(&event).await?;
        }
        let when = local_time(action.due, record.time_zone.as_deref());
        let (kind, subject) = match action.kind {
            ReminderKind::DueSoon => (
                NotificationKind::DueSoon,
                format!("Reminder: {} is due {when}", one_line(&record.title)),
            ),
            ReminderKind::Overdue => (
                NotificationKind::Overdue,
                format!("Overdue: {} was due {when}", one_line(&record.title)),
            ),
        };
        self.notify(
            record.recipient(),
            Notification {
                id: id.clone(),
                kind,
                task_id: record.task_id,
                title: record.title.clone(),
                message: subject.clone(),
                created_at: now,
                due_time: Some(action.due),
                read: false,
            },
        )
        .await?;
        if prefs.muted {
            return Ok(());
        }
        if let Some(to) = prefs
            .email
            .as_deref()
            .filter(|_| self.settings.email_enabled)
            && self.claim("email", &id).await?
        {
            let body = format!("{subject}.\n\nTask {}\n", record.task_id);
            self.deliver("email", || self.outbound.email(to, &subject, &body))
                .await;
        }
        if let (Some(base), Some(url)) = (&self.settings.webhook_base, &prefs.webhook_url)
            && let Some(path) = webhook_path(base, url)
            && self.claim("webhook", &id).await?
        {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            self.deliver("webhook", || self.outbound.webhook(&path, &body))
                .await;
        }
        Ok(())
    }

    /// Claims `channel` for reminder `id`: true for the first claimant only.
    async fn claim(&self, channel: &str, id: &str) -> Result<bool, ReminderError> {
        let key = format!("sent:{channel}:{id}");
        let claimed = self
            .records
            .store()
            .put_expiring(&key, b"1".to_vec(), Expect::Absent, Some(SENT_CLAIM_TTL))
            .await;
        match claimed {
            Ok(()) => Ok(true),
            Err(StateError::Conflict) => {
                tracing::info!(channel, reminder = id, "sent before: not sending again");
                Ok(false)
            }
            Err(err) => Err(RecordError::from(err).into()),
        }
    }

    /// A few quick attempts; a channel that stays down does not hold back the reminder
    /// (it is in the inbox and on `task-reminders` already) but is counted and logged.
    async fn deliver<F, Fut>(&self, channel: &'static str, attempt: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), PortError>>,
    {
        let mut pause = StdDuration::from_millis(200);
        for n in 1..=DELIVERY_ATTEMPTS {
            match attempt().await {
                Ok(()) => return,
                Err(err) if n == DELIVERY_ATTEMPTS => {
                    tracing::warn!(channel, error = %err, "reminder delivery failed");
                    self.metrics
                        .delivery_failures
                        .get_or_create(&KindLabel { kind: channel })
                        .inc();
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
        }
    }
}

fn kind_label(kind: ReminderKind) -> &'static str {
    match kind {
        ReminderKind::DueSoon => "due_soon",
        ReminderKind::Overdue => "overdue",
    }
}

/// A title fit for a mail subject: no line breaks to inject headers with.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `Mon 6 Jan 2030 08:00 CET` in the task's time zone (UTC without one).
pub fn local_time(at: DateTime<Utc>, time_zone: Option<&str>) -> String {
    let tz: Tz = time_zone
        .and_then(|name| name.parse().ok())
        .unwrap_or(Tz::UTC);
    at.with_timezone(&tz)
        .format("%a %-d %b %Y %H:%M %Z")
        .to_string()
}

/// The Jobs API side: daprd calls this when a reminder job comes due.
pub struct ReminderJobs<S> {
    reminders: Arc<Reminders<S>>,
}

impl<S> ReminderJobs<S> {
    pub fn new(reminders: Arc<Reminders<S>>) -> Self {
        Self { reminders }
    }
}

#[async_trait]
impl<S: StateStore> JobHandler for ReminderJobs<S> {
    async fn on_job(&self, name: &str, _data: &[u8]) -> Result<(), InvokeError> {
        let Some(task_id) = task_of_job(name) else {
            // Not ours (or from an older naming scheme): answering OK lets it go.
            tracing::warn!(job = name, "ignoring a job this service does not know");
            return Ok(());
        };
        self.reminders.fire(task_id).await.map_err(|err| {
            tracing::warn!(job = name, error = %err, "reminder failed; the scheduler retries");
            InvokeError::Unavailable(err.to_string())
        })
    }
}

#[cfg(test)]
mod tests;
