//! Wiring: the router (subscription on task events, `stats/get`), the Dapr state store,
//! and the server.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use taskmesh_shared::callback::{
    BindError, CallbackServer, Router, ServiceConfig, Subscription, Topics,
};
use taskmesh_shared::config::{ConfigError, Source};
use taskmesh_shared::events::TaskEventKind;
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
    pub topics: Topics,
}

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_PORT, DEFAULT_METRICS_PORT)?,
            topics: Topics::from_env(env, APP_ID)?,
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
            "Changes to a user's statistics (an event counts once per user it counts for)",
        ),
    ));
    let pubsub = &config.service.sidecar.pubsub;
    let mut subscription = Subscription::new(pubsub.clone(), config.topics.task_events.clone());
    for kind in TaskEventKind::ALL {
        subscription = subscription.on_type(kind.event_type(), consumer.clone());
    }
    Router::new()
        .subscribe(subscription)
        .keep_dead_letters(config.topics.dead_letters(pubsub, store.clone()))
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
