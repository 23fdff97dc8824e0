//! Wiring: config, the router (task events, reminder jobs, invoke methods) and the server.

use std::sync::Arc;

use chrono::Duration;
use prometheus_client::registry::Registry;
use taskmesh_shared::callback::{
    BindError, CallbackServer, Router, ServiceConfig, Subscription, Topics,
};
use taskmesh_shared::config::{self, ConfigError, Source};
use taskmesh_shared::events::{TASK_REMINDERS_TOPIC, TaskEventKind};
use taskmesh_shared::state::{DaprStateStore, StateStore};

use crate::consumer::TaskEventConsumer;
use crate::dapr_ports::{DaprJobs, DaprOutbound};
use crate::metrics::Metrics;
use crate::ports::{JobScheduler, Outbound};
use crate::prefs::MAX_LEAD_SECS;
use crate::reminders::{ReminderJobs, Reminders, Settings};

pub const APP_ID: &str = "notification-service";
pub const DEFAULT_PORT: u16 = 50052;
pub const DEFAULT_METRICS_PORT: u16 = 9102;
pub const DEFAULT_LEAD_SECS: u64 = 15 * 60;
pub const DEFAULT_EMAIL_BINDING: &str = "taskmesh-email";
pub const DEFAULT_WEBHOOK_BINDING: &str = "taskmesh-webhook";

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub topics: Topics,
    pub reminders_topic: String,
    /// `TASKMESH_REMINDER_LEAD_SECS`: reminder lead time unless a user chose one.
    pub default_lead_secs: u64,
    /// `TASKMESH_BINDING_EMAIL` (empty disables e-mail).
    pub email_binding: Option<String>,
    /// `TASKMESH_BINDING_WEBHOOK`.
    pub webhook_binding: String,
    /// `TASKMESH_WEBHOOK_BASE_URL`: the webhook binding's `url`; unset disables webhooks.
    pub webhook_base: Option<String>,
}

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        let topic =
            |name, default: &str| config::optional(env, name).unwrap_or_else(|| default.to_owned());
        let default_lead_secs: u64 =
            config::parse_or(env, "TASKMESH_REMINDER_LEAD_SECS", DEFAULT_LEAD_SECS)?;
        if default_lead_secs > MAX_LEAD_SECS {
            return Err(ConfigError::invalid(
                "TASKMESH_REMINDER_LEAD_SECS",
                default_lead_secs.to_string(),
                format!("at most {MAX_LEAD_SECS} (7 days)"),
            ));
        }
        let email_binding = match env.get("TASKMESH_BINDING_EMAIL") {
            // Set but blank: the operator turned e-mail off.
            Some(value) if value.trim().is_empty() => None,
            Some(value) => Some(value.trim().to_owned()),
            None => Some(DEFAULT_EMAIL_BINDING.to_owned()),
        };
        let webhook_base = config::optional(env, "TASKMESH_WEBHOOK_BASE_URL");
        if let Some(base) = &webhook_base
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "TASKMESH_WEBHOOK_BASE_URL",
                base.clone(),
                "an http:// or https:// URL (the webhook binding's url)",
            ));
        }
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_PORT, DEFAULT_METRICS_PORT)?,
            topics: Topics::from_env(env, APP_ID)?,
            reminders_topic: topic("TASKMESH_TOPIC_REMINDERS", TASK_REMINDERS_TOPIC),
            default_lead_secs,
            email_binding,
            webhook_binding: topic("TASKMESH_BINDING_WEBHOOK", DEFAULT_WEBHOOK_BINDING),
            webhook_base,
        })
    }

    fn settings(&self) -> Settings {
        Settings {
            default_lead: Duration::seconds(i64::try_from(self.default_lead_secs).unwrap_or(0)),
            webhook_base: self.webhook_base.clone(),
            email_enabled: self.email_binding.is_some(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// The router over any state store, scheduler and way out (Dapr in production, fakes in
/// unit tests).
pub fn router<S: StateStore>(
    config: &Config,
    store: Arc<S>,
    jobs: Arc<dyn JobScheduler>,
    outbound: Arc<dyn Outbound>,
    registry: &mut Registry,
) -> Router {
    let pubsub = &config.service.sidecar.pubsub;
    let dead_letters = config.topics.dead_letters(pubsub, store.clone());
    let reminders = Arc::new(Reminders::new(
        store,
        jobs,
        outbound,
        config.settings(),
        Metrics::register(registry),
    ));
    let mut subscription = Subscription::new(pubsub.clone(), config.topics.task_events.clone());
    for kind in TaskEventKind::ALL {
        subscription = subscription.on_type(
            kind.event_type(),
            Arc::new(TaskEventConsumer::new(kind, reminders.clone())),
        );
    }
    let mut router = Router::new()
        .subscribe(subscription)
        .keep_dead_letters(dead_letters)
        .jobs(Arc::new(ReminderJobs::new(reminders.clone())));
    for (name, method) in crate::methods::all(&reminders) {
        router = router.method(name, method);
    }
    router
}

pub async fn build(config: Config) -> Result<CallbackServer, StartError> {
    let mut registry = Registry::default();
    let sidecar = config.service.sidecar.connect_lazy()?;
    let store = Arc::new(DaprStateStore::new(
        sidecar.clone(),
        config.service.sidecar.statestore.clone(),
    ));
    let outbound = DaprOutbound::new(
        sidecar.clone(),
        config.service.sidecar.pubsub.clone(),
        config.reminders_topic.clone(),
        config.email_binding.clone(),
        Some(config.webhook_binding.clone()),
    );
    let router = router(
        &config,
        store,
        Arc::new(DaprJobs::new(sidecar)),
        Arc::new(outbound),
        &mut registry,
    );
    Ok(CallbackServer::bind(APP_ID, &config.service, router, registry).await?)
}
