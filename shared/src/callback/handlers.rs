//! What services implement: topic handlers with a deliberate outcome, JSON methods for
//! `dapr invoke`, and job handlers for the Jobs API.

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use dapr::dapr::proto::runtime::v1::TopicEventRequest;

/// A topic event as delivered by the sidecar.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The CloudEvent `id`: consumers deduplicate on it.
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub topic: String,
    pub pubsub: String,
    pub data: Vec<u8>,
    pub data_content_type: String,
    /// W3C trace context of the publisher, when the sidecar passed one on.
    pub traceparent: Option<String>,
}

/// A string field of the envelope that daprd passes on as an extension (`subject`,
/// `traceparent`, `topic`, `time`, ...).
pub(crate) fn string_extension(request: &TopicEventRequest, name: &str) -> Option<String> {
    request
        .extensions
        .as_ref()
        .and_then(|ext| ext.fields.get(name))
        .and_then(|value| match &value.kind {
            Some(prost_types::value::Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
}

impl Delivery {
    pub(crate) fn from_request(request: TopicEventRequest) -> Self {
        let extension = |name: &str| string_extension(&request, name);
        Self {
            subject: extension("subject"),
            traceparent: extension("traceparent"),
            id: request.id,
            source: request.source,
            event_type: request.r#type,
            topic: request.topic,
            pubsub: request.pubsub_name,
            data: request.data,
            data_content_type: request.data_content_type,
        }
    }

    /// The `data` as JSON of type `T`; a payload that does not parse is poison, so the
    /// error is a ready-made `Outcome::Drop`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Outcome> {
        serde_json::from_slice(&self.data).map_err(|err| {
            Outcome::Drop(format!(
                "data of {} {} is not valid: {err}",
                self.event_type, self.id
            ))
        })
    }
}

/// What the sidecar should do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or already done before: a duplicate is a success).
    Success,
    /// A transient failure (the state store or a peer is down): deliver it again later.
    Retry(String),
    /// Poison (malformed, unknown type or version): to the dead-letter topic.
    Drop(String),
}

#[async_trait]
pub trait TopicHandler: Send + Sync + 'static {
    async fn handle(&self, delivery: Delivery) -> Outcome;
}

/// Why an invoked method failed; mapped to the gRPC code the caller sees (and, through
/// daprd's HTTP API, to an HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl InvokeError {
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }
}

/// A `dapr invoke` method: JSON in, JSON out.
#[async_trait]
pub trait Method: Send + Sync + 'static {
    async fn call(&self, input: serde_json::Value) -> Result<serde_json::Value, InvokeError>;
}

/// A Jobs API trigger (a scheduled job named `name` came due).
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// An error makes the scheduler try again later.
    async fn on_job(&self, name: &str, data: &[u8]) -> Result<(), InvokeError>;
}
