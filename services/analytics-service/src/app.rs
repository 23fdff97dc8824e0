//! Wiring: the router (subscription on task events, `stats/get`), the Dapr state store,
//! and the server.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use taskmesh_shared::callback::{BindError, CallbackServer, Router, ServiceConfig, Subscription};
use taskmesh_shared::config::{self, ConfigError, Source};
use taskmesh_shared::events::{DEAD_LETTER_TOPIC, TASK_EVENTS_TOPIC, TaskEventKind};
use taskmesh_shared::state::{DaprStateStore, StateStore};

use taskmesh_shared::records::RecordMetrics;

use crate::consumer::StatsConsumer;
use crate::methods::GetStats;

pub const APP_ID: &str = "analytics-service";
pub const DEFAULT_PORT: u16 = 50054;
pub const DEFAULT_METRICS_PORT: u16 = 9104;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub topic: String,
    pub dead_letter_topic: String,
}

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_PORT, DEFAULT_METRICS_PORT)?,
            topic: config::optional(env, "TASKMESH_TOPIC_TASK_EVENTS")
                .unwrap_or_else(|| TASK_EVENTS_TOPIC.to_owned()),
            dead_letter_topic: config::optional(env, "TASKMESH_TOPIC_DEAD_LETTER")
                .unwrap_or_else(|| DEAD_LETTER_TOPIC.to_owned()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// The router over any state store (the Dapr one in production, a fake in unit tests).
pub fn router<S: StateStore>(config: &Config, store: Arc<S>, registry: &mut Registry) -> Router {
    let consumer = Arc::new(StatsConsumer::new(
        store.clone(),
        RecordMetrics::register(
            registry.sub_registry_with_prefix("taskmesh_analytics"),
            "Events that changed statistics",
        ),
    ));
    let mut subscription =
        Subscription::new(config.service.sidecar.pubsub.clone(), config.topic.clone())
            .dead_letter(config.dead_letter_topic.clone());
    for kind in TaskEventKind::ALL {
        subscription = subscription.on_type(kind.event_type(), consumer.clone());
    }
    Router::new()
        .subscribe(subscription)
        .method("stats/get", Arc::new(GetStats::new(store)))
}

pub async fn build(config: Config) -> Result<CallbackServer, StartError> {
    let mut registry = Registry::default();
    let store = Arc::new(DaprStateStore::new(
        config.service.sidecar.connect_lazy()?,
        config.service.sidecar.statestore.clone(),
    ));
    let router = router(&config, store, &mut registry);
    Ok(CallbackServer::bind(APP_ID, &config.service, router, registry).await?)
}
