//! On `completed`, creates the next occurrence. Idempotent without state of its own: the
//! request id makes task-service return the task an earlier delivery already created.

use std::sync::Arc;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use taskmesh_shared::callback::{Delivery, Outcome, TopicHandler};
use taskmesh_shared::events::{TaskEventData, TaskEventKind};

use crate::creator::{CreateError, TaskCreator};
use crate::next::next_task;

#[derive(Debug, Clone, Default)]
pub struct RecurringMetrics {
    pub created: Counter,
    pub series_ended: Counter,
}

impl RecurringMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("taskmesh_recurring");
        registry.register(
            "next_occurrences",
            "Next occurrences created (or found already created)",
            metrics.created.clone(),
        );
        registry.register(
            "series_ended",
            "Completed recurring tasks whose series had ended (COUNT or UNTIL)",
            metrics.series_ended.clone(),
        );
        metrics
    }
}

pub struct CompletedConsumer<C> {
    creator: Arc<C>,
    metrics: RecurringMetrics,
}

impl<C: TaskCreator> CompletedConsumer<C> {
    pub fn new(creator: Arc<C>, metrics: RecurringMetrics) -> Self {
        Self { creator, metrics }
    }
}

#[async_trait]
impl<C: TaskCreator> TopicHandler for CompletedConsumer<C> {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        if TaskEventKind::from_event_type(&delivery.event_type) != Some(TaskEventKind::Completed) {
            return Outcome::Drop(format!("not a completion: {:?}", delivery.event_type));
        }
        let event: TaskEventData = match delivery.json() {
            Ok(event) => event,
            Err(outcome) => return outcome,
        };
        if event.task.recurrence.is_some() && event.task.owner_id != event.owner_id {
            return Outcome::Drop("task.owner_id differs from owner_id".into());
        }
        let next = match next_task(&event) {
            Ok(Some(next)) => next,
            Ok(None) => {
                if event.task.recurrence.is_some() {
                    self.metrics.series_ended.inc();
                    tracing::info!(task = %event.task.id, "the series has ended");
                }
                return Outcome::Success;
            }
            Err(invalid) => return Outcome::Drop(invalid.to_string()),
        };
        match self.creator.create(&next).await {
            Ok(id) => {
                taskmesh_shared::failpoint::hit(taskmesh_shared::failpoint::NEXT_CREATED);
                self.metrics.created.inc();
                tracing::info!(completed = %event.task.id, next = %id, "created the next occurrence");
                Outcome::Success
            }
            Err(CreateError::Transient(reason)) => Outcome::Retry(reason),
            Err(err @ CreateError::Refused(_)) => {
                tracing::error!(%err, task = %event.task.id, "task-service refused the next occurrence");
                Outcome::Drop(err.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::next::NextTask;
    use crate::next::tests::completed;

    /// task-service's idempotency in miniature: one task per request id.
    #[derive(Default)]
    struct FakeTasks {
        by_request: Mutex<HashMap<String, String>>,
        calls: Mutex<usize>,
        down: Mutex<bool>,
    }

    #[async_trait]
    impl TaskCreator for FakeTasks {
        async fn create(&self, next: &NextTask) -> Result<String, CreateError> {
            tokio::task::yield_now().await;
            *self.calls.lock().unwrap() += 1;
            if *self.down.lock().unwrap() {
                return Err(CreateError::Transient("down".into()));
            }
            let key = next.request.request_id.clone().unwrap();
            let mut tasks = self.by_request.lock().unwrap();
            let n = tasks.len();
            Ok(tasks
                .entry(key)
                .or_insert_with(|| format!("task-{n}"))
                .clone())
        }
    }

    fn delivery(event_type: &str, data: &TaskEventData) -> Delivery {
        Delivery {
            id: "e1".into(),
            source: "t".into(),
            event_type: event_type.into(),
            subject: None,
            topic: "task-events".into(),
            pubsub: "p".into(),
            data: serde_json::to_vec(data).unwrap(),
            data_content_type: "application/json".into(),
            traceparent: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_redeliveries_create_one_next_task() {
        let tasks = Arc::new(FakeTasks::default());
        let consumer = Arc::new(CompletedConsumer::new(
            tasks.clone(),
            RecurringMetrics::default(),
        ));
        let event = completed(Some("FREQ=DAILY"), None);
        let runs = (0..50).map(|_| {
            let consumer = consumer.clone();
            let d = delivery("taskmesh.task.completed.v1", &event);
            tokio::spawn(async move { consumer.handle(d).await })
        });
        for outcome in futures::future::join_all(runs).await {
            assert_eq!(outcome.unwrap(), Outcome::Success);
        }
        assert_eq!(tasks.by_request.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn outcomes() {
        let tasks = Arc::new(FakeTasks::default());
        let consumer = CompletedConsumer::new(tasks.clone(), RecurringMetrics::default());
        let plain = completed(None, None);
        assert_eq!(
            consumer
                .handle(delivery("taskmesh.task.completed.v1", &plain))
                .await,
            Outcome::Success
        );
        assert_eq!(
            *tasks.calls.lock().unwrap(),
            0,
            "a plain task has no successor"
        );
        let bad = completed(Some("FREQ=SECONDLY"), None);
        assert!(matches!(
            consumer
                .handle(delivery("taskmesh.task.completed.v1", &bad))
                .await,
            Outcome::Drop(_)
        ));
        assert!(matches!(
            consumer
                .handle(delivery("taskmesh.task.completed.v7", &plain))
                .await,
            Outcome::Drop(_)
        ));
        *tasks.down.lock().unwrap() = true;
        let recurring = completed(Some("FREQ=DAILY"), None);
        assert!(matches!(
            consumer
                .handle(delivery("taskmesh.task.completed.v1", &recurring))
                .await,
            Outcome::Retry(_)
        ));
    }
}
