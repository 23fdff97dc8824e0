//! Applies task events to the owner's statistics record, once per event.

use std::sync::Arc;

use async_trait::async_trait;
use taskmesh_shared::callback::{Delivery, Outcome, TopicHandler};
use taskmesh_shared::events::{TaskEventData, TaskEventKind};
use taskmesh_shared::records::{Change, RecordMetrics, Records};
use taskmesh_shared::state::StateStore;

use crate::stats::UserStats;

pub fn stats_key(user_id: &str) -> String {
    format!("stats:{user_id}")
}

pub struct StatsConsumer<S> {
    records: Records<S>,
    metrics: RecordMetrics,
}

impl<S: StateStore> StatsConsumer<S> {
    pub fn new(store: Arc<S>, metrics: RecordMetrics) -> Self {
        Self {
            records: Records::new(store, metrics.conflicts.clone()),
            metrics,
        }
    }

    async fn apply(&self, kind: TaskEventKind, data: &TaskEventData) -> Outcome {
        let applied = self
            .records
            .update(&stats_key(&data.owner_id), |stats: Option<UserStats>| {
                let mut stats = stats.unwrap_or_default();
                if stats.apply(kind, data) {
                    Change::Write(stats, true)
                } else {
                    Change::Keep(false)
                }
            })
            .await;
        match applied {
            Ok(true) => {
                self.metrics.applied.inc();
                Outcome::Success
            }
            Ok(false) => {
                self.metrics.duplicates.inc();
                Outcome::Success
            }
            // A corrupt record of ours is not the event's fault either, so no DROP: the
            // resiliency policy retries and an operator sees it in the logs.
            Err(err) => Outcome::Retry(err.to_string()),
        }
    }
}

/// Checks what the type system cannot: the event is about a task of its owner.
pub fn validate(data: &TaskEventData) -> Result<(), String> {
    if data.owner_id.is_empty() || data.owner_id.len() > 128 {
        return Err("owner_id must be 1 to 128 characters".into());
    }
    if data.task.owner_id != data.owner_id {
        return Err("task.owner_id differs from owner_id".into());
    }
    if data.version < 1 {
        return Err("version must be positive".into());
    }
    Ok(())
}

#[async_trait]
impl<S: StateStore> TopicHandler for StatsConsumer<S> {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        let Some(kind) = TaskEventKind::from_event_type(&delivery.event_type) else {
            return Outcome::Drop(format!("unknown event type {:?}", delivery.event_type));
        };
        let data: TaskEventData = match delivery.json() {
            Ok(data) => data,
            Err(outcome) => return outcome,
        };
        if let Err(reason) = validate(&data) {
            return Outcome::Drop(format!("event {}: {reason}", delivery.id));
        }
        self.apply(kind, &data).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use taskmesh_shared::state::MemoryStateStore;
    use uuid::Uuid;

    use super::*;
    use crate::stats::tests::{at, data};

    fn delivery(event_type: &str, data: &TaskEventData) -> Delivery {
        Delivery {
            id: "e1".into(),
            source: "test".into(),
            event_type: event_type.into(),
            subject: None,
            topic: "task-events".into(),
            pubsub: "p".into(),
            data: serde_json::to_vec(data).unwrap(),
            data_content_type: "application/json".into(),
            traceparent: None,
        }
    }

    async fn stored(store: &MemoryStateStore) -> UserStats {
        let read = store.get(&stats_key("alice")).await.unwrap().unwrap();
        serde_json::from_slice(&read.value).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_redeliveries_apply_once() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = Arc::new(StatsConsumer::new(store.clone(), RecordMetrics::default()));
        let event = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");
        let deliveries = (0..50).map(|_| {
            let consumer = consumer.clone();
            let d = delivery("taskmesh.task.created.v1", &event);
            tokio::spawn(async move { consumer.handle(d).await })
        });
        for outcome in futures::future::join_all(deliveries).await {
            assert_eq!(outcome.unwrap(), Outcome::Success);
        }
        assert_eq!(stored(&store).await.created, 1);
        assert_eq!(consumer.metrics.applied.get(), 1);
        assert_eq!(consumer.metrics.duplicates.get(), 49);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_different_events_all_apply() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = Arc::new(StatsConsumer::new(store.clone(), RecordMetrics::default()));
        let handles = (0..20).map(|_| {
            let consumer = consumer.clone();
            let d = delivery(
                "taskmesh.task.created.v1",
                &data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z"),
            );
            tokio::spawn(async move { consumer.handle(d).await })
        });
        for outcome in futures::future::join_all(handles).await {
            assert_eq!(outcome.unwrap(), Outcome::Success);
        }
        assert_eq!(stored(&store).await.created, 20);
    }

    #[tokio::test]
    async fn poison_is_dropped_and_a_down_store_is_retried() {
        let store = Arc::new(MemoryStateStore::new());
        let consumer = StatsConsumer::new(store.clone(), RecordMetrics::default());
        let good = data(Uuid::now_v7(), 1, false, "2026-11-20T08:00:00Z");

        let unknown = consumer
            .handle(delivery("taskmesh.task.created.v9", &good))
            .await;
        assert!(matches!(unknown, Outcome::Drop(_)), "{unknown:?}");
        let mut bad_json = delivery("taskmesh.task.created.v1", &good);
        bad_json.data = b"{\"task\":".to_vec();
        assert!(matches!(consumer.handle(bad_json).await, Outcome::Drop(_)));
        let mut missing = delivery("taskmesh.task.created.v1", &good);
        missing.data = br#"{"version":1}"#.to_vec();
        assert!(matches!(consumer.handle(missing).await, Outcome::Drop(_)));
        let mut foreign = good.clone();
        foreign.task.owner_id = "mallory".into();
        assert!(matches!(
            consumer
                .handle(delivery("taskmesh.task.created.v1", &foreign))
                .await,
            Outcome::Drop(_)
        ));

        store.set_down(true);
        let retry = consumer
            .handle(delivery("taskmesh.task.created.v1", &good))
            .await;
        assert!(matches!(retry, Outcome::Retry(_)), "{retry:?}");
        store.set_down(false);
        assert_eq!(
            consumer
                .handle(delivery("taskmesh.task.created.v1", &good))
                .await,
            Outcome::Success
        );
        assert_eq!(stored(&store).await.created, 1);
        let _ = at("2026-11-20T08:00:00Z");
    }
}
