//! The Dapr adapter of `EventPublisher`: `PublishEvent` for one event, `BulkPublishEvent`
//! for a wave, both through the SDK's generated client so that failures keep their code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dapr::dapr::proto::runtime::v1::{
    BulkPublishRequest, BulkPublishRequestEntry, BulkPublishResponse, PublishEventRequest,
};
use taskmesh_shared::events::CLOUDEVENTS_CONTENT_TYPE;
use taskmesh_shared::sidecar::DaprGrpc;
use tonic::Code;

use super::{EventPublisher, PendingEvent, PublishError};

/// Kafka keeps the order of messages with the same key: one task's events stay in order.
const PARTITION_KEY: &str = "partitionKey";

#[derive(Debug)]
pub struct DaprPublisher {
    client: DaprGrpc,
    pubsub: String,
    topic: String,
    timeout: Duration,
    /// Cleared when the sidecar predates the stable `BulkPublishEvent` (Dapr < 1.17).
    stable_bulk: AtomicBool,
}

impl DaprPublisher {
    pub fn new(client: DaprGrpc, pubsub: String, topic: String) -> Self {
        Self {
            client,
            pubsub,
            topic,
            timeout: Duration::from_secs(10),
            stable_bulk: AtomicBool::new(true),
        }
    }

    async fn publish_one(&self, event: &PendingEvent) -> Result<(), PublishError> {
        let mut request = tonic::Request::new(PublishEventRequest {
            pubsub_name: self.pubsub.clone(),
            topic: self.topic.clone(),
            data: event.payload.clone().into_bytes(),
            data_content_type: CLOUDEVENTS_CONTENT_TYPE.to_owned(),
            metadata: HashMap::from([(PARTITION_KEY.to_owned(), event.task_id.clone())]),
        });
        request.set_timeout(self.timeout);
        self.client
            .clone()
            .publish_event(request)
            .await
            .map(drop)
            .map_err(PublishError::Call)
    }

    async fn publish_bulk(&self, events: &[PendingEvent]) -> Result<(), PublishError> {
        let request = BulkPublishRequest {
            pubsub_name: self.pubsub.clone(),
            topic: self.topic.clone(),
            entries: events
                .iter()
                .map(|event| BulkPublishRequestEntry {
                    entry_id: event.seq.to_string(),
                    event: event.payload.clone().into_bytes(),
                    content_type: CLOUDEVENTS_CONTENT_TYPE.to_owned(),
                    metadata: HashMap::from([(PARTITION_KEY.to_owned(), event.task_id.clone())]),
                })
                .collect(),
            metadata: HashMap::new(),
        };
        let response = self.bulk_call(request).await.map_err(PublishError::Call)?;
        if response.failed_entries.is_empty() {
            return Ok(());
        }
        // An entry id we cannot read back is one of ours garbled: count it as refused
        // whole rather than guess which event it was.
        let failed: Option<Vec<(i64, String)>> = response
            .failed_entries
            .iter()
            .map(|entry| Some((entry.entry_id.parse().ok()?, entry.error.clone())))
            .collect();
        match failed {
            Some(failed) => Err(PublishError::Partial { failed }),
            None => Err(PublishError::Call(tonic::Status::internal(format!(
                "the sidecar refused entries it named by unknown ids: {:?}",
                response.failed_entries
            )))),
        }
    }

    async fn bulk_call(
        &self,
        request: BulkPublishRequest,
    ) -> Result<BulkPublishResponse, tonic::Status> {
        let mut client = self.client.clone();
        if self.stable_bulk.load(Ordering::Relaxed) {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(self.timeout);
            match client.bulk_publish_event(call).await {
                Err(status) if status.code() == Code::Unimplemented => {
                    tracing::info!(
                        "the sidecar has no stable BulkPublishEvent; using the alpha API"
                    );
                    self.stable_bulk.store(false, Ordering::Relaxed);
                }
                other => return other.map(tonic::Response::into_inner),
            }
        }
        let mut call = tonic::Request::new(request);
        call.set_timeout(self.timeout);
        #[allow(deprecated)] // the only bulk API of sidecars older than 1.17
        client
            .bulk_publish_event_alpha1(call)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[async_trait]
impl EventPublisher for DaprPublisher {
    async fn publish(&self, events: &[PendingEvent]) -> Result<(), PublishError> {
        match events {
            [] => Ok(()),
            [event] => self.publish_one(event).await,
            events => self.publish_bulk(events).await,
        }
    }
}
