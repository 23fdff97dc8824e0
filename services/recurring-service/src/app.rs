//! Wiring: a subscription on completions, the Dapr service-invocation client of
//! task-service, and the server.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use taskmesh_shared::callback::{
    BindError, CallbackServer, Router, ServiceConfig, Subscription, Topics,
};
use taskmesh_shared::config::{self, ConfigError, Source};
use taskmesh_shared::events::TaskEventKind;
use taskmesh_shared::state::{DaprStateStore, StateStore};

use crate::consumer::{CompletedConsumer, RecurringMetrics};
use crate::creator::{DaprTaskCreator, TaskCreator};

pub const APP_ID: &str = "recurring-service";
pub const DEFAULT_PORT: u16 = 50053;
pub const DEFAULT_METRICS_PORT: u16 = 9103;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub topics: Topics,
    /// The Dapr app id of task-service (`TASKMESH_TASK_SERVICE_APP_ID`).
    pub task_service_app_id: String,
}

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_PORT, DEFAULT_METRICS_PORT)?,
            topics: Topics::from_env(env, APP_ID)?,
            task_service_app_id: config::optional(env, "TASKMESH_TASK_SERVICE_APP_ID")
                .unwrap_or_else(|| "task-service".to_owned()),
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

/// The router; `store` keeps the app's dead letters (recurring-service keeps no other
/// state: task-service's request ids make its effect idempotent).
pub fn router<C: TaskCreator>(
    config: &Config,
    creator: Arc<C>,
    store: Arc<dyn StateStore>,
    registry: &mut Registry,
) -> Router {
    let consumer = Arc::new(CompletedConsumer::new(
        creator,
        RecurringMetrics::register(registry),
    ));
    let pubsub = &config.service.sidecar.pubsub;
    Router::new()
        .subscribe(
            Subscription::new(pubsub.clone(), config.topics.task_events.clone())
                .on_type(TaskEventKind::Completed.event_type(), consumer)
                // Other task events are not for us: acknowledge them (they are not poison).
                .otherwise(Arc::new(Ignore)),
        )
        .keep_dead_letters(config.topics.dead_letters(pubsub, store))
}

struct Ignore;

#[async_trait::async_trait]
impl taskmesh_shared::callback::TopicHandler for Ignore {
    async fn handle(
        &self,
        delivery: taskmesh_shared::callback::Delivery,
    ) -> taskmesh_shared::callback::Outcome {
        match TaskEventKind::from_event_type(&delivery.event_type) {
            Some(_) => taskmesh_shared::callback::Outcome::Success,
            None => taskmesh_shared::callback::Outcome::Drop(format!(
                "unknown event type {:?}",
                delivery.event_type
            )),
        }
    }
}

pub async fn build(config: Config) -> Result<CallbackServer, StartError> {
    let mut registry = Registry::default();
    let creator = Arc::new(DaprTaskCreator::new(
        &config.service.sidecar.endpoint,
        config.service.sidecar.api_token.clone(),
        config.task_service_app_id.clone(),
    )?);
    let store = Arc::new(DaprStateStore::new(
        config.service.sidecar.connect_lazy()?,
        config.service.sidecar.statestore.clone(),
    ));
    let router = router(&config, creator, store, &mut registry);
    Ok(CallbackServer::bind(APP_ID, &config.service, router, registry).await?)
}
