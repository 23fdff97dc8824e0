//! Wiring: a subscription on completions, the Dapr service-invocation client of
//! task-service, and the server.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use taskmesh_shared::callback::{BindError, CallbackServer, Router, ServiceConfig, Subscription};
use taskmesh_shared::config::{self, ConfigError, Source};
use taskmesh_shared::events::{DEAD_LETTER_TOPIC, TASK_EVENTS_TOPIC, TaskEventKind};

use crate::consumer::{CompletedConsumer, RecurringMetrics};
use crate::creator::{DaprTaskCreator, TaskCreator};

pub const APP_ID: &str = "recurring-service";
pub const DEFAULT_PORT: u16 = 50053;
pub const DEFAULT_METRICS_PORT: u16 = 9103;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub topic: String,
    pub dead_letter_topic: String,
    /// The Dapr app id of task-service (`TASKMESH_TASK_SERVICE_APP_ID`).
    pub task_service_app_id: String,
}

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_PORT, DEFAULT_METRICS_PORT)?,
            topic: config::optional(env, "TASKMESH_TOPIC_TASK_EVENTS")
                .unwrap_or_else(|| TASK_EVENTS_TOPIC.to_owned()),
            dead_letter_topic: config::optional(env, "TASKMESH_TOPIC_DEAD_LETTER")
                .unwrap_or_else(|| DEAD_LETTER_TOPIC.to_owned()),
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

pub fn router<C: TaskCreator>(config: &Config, creator: Arc<C>, registry: &mut Registry) -> Router {
    let consumer = Arc::new(CompletedConsumer::new(
        creator,
        RecurringMetrics::register(registry),
    ));
    Router::new().subscribe(
        Subscription::new(config.service.sidecar.pubsub.clone(), config.topic.clone())
            .dead_letter(config.dead_letter_topic.clone())
            .on_type(TaskEventKind::Completed.event_type(), consumer)
            // Other task events are not for us: acknowledge them (they are not poison).
            .otherwise(Arc::new(Ignore)),
    )
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
    let router = router(&config, creator, &mut registry);
    Ok(CallbackServer::bind(APP_ID, &config.service, router, registry).await?)
}
