//! The transactional outbox: every committed change has an event row in the same
//! database (see `store`), and the relay publishes those rows through the Dapr sidecar.
//!
//! Ports: `OutboxStore` (rows), `EventPublisher` (the sidecar) and `Leadership` (which
//! replica publishes). The adapters are sea-orm, the Dapr generated client and a
//! PostgreSQL advisory lock; unit tests use fakes.

pub mod leader;
mod metrics;
mod publisher;
mod relay;
mod store;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use leader::{Leadership, PgAdvisoryLock, SingleProcess};
pub use metrics::OutboxMetrics;
pub use publisher::DaprPublisher;
pub use relay::Relay;
pub use store::SeaOutbox;

/// An event waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub task_id: String,
    /// The CloudEvent JSON.
    pub payload: String,
}

#[derive(Debug, thiserror::Error)]
#[error("outbox storage: {0}")]
pub struct StoreError(#[from] pub sea_orm::DbErr);

#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The oldest unpublished events, in commit order.
    async fn pending(&self, limit: u64) -> Result<Vec<PendingEvent>, StoreError>;
    async fn mark_published(&self, seqs: &[i64], now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn record_attempt(&self, seqs: &[i64]) -> Result<(), StoreError>;
    /// Deletes published rows older than `before`; returns how many.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn backlog(&self) -> Result<Backlog, StoreError>;
}

/// What waits in the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub events: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Why the sidecar did not take an event.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The whole call failed (sidecar down, broker down, bad token...).
    #[error("publish failed: {0}")]
    Call(#[source] tonic::Status),
    /// Some entries of a bulk publish were refused.
    #[error("{} of the events were refused, e.g. {first_error}", failed.len())]
    Partial {
        failed: Vec<i64>,
        first_error: String,
    },
}

impl PublishError {
    /// What an operator should do about it, when we know.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Call(status) => match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Some(
                    "the sidecar rejected our DAPR_API_TOKEN: give task-service the token \
                     its daprd was started with",
                ),
                tonic::Code::Unavailable => Some("the sidecar is not reachable (DAPR_GRPC_PORT?)"),
                tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                    Some("the sidecar does not know the pub/sub component (TASKMESH_PUBSUB?)")
                }
                _ => None,
            },
            Self::Partial { .. } => None,
        }
    }
}

#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes `events`, of which no two belong to one task, so they may go out in any
    /// order (daprd publishes bulk entries concurrently on brokers without native bulk).
    async fn publish(&self, events: &[PendingEvent]) -> Result<(), PublishError>;
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub batch_size: u64,
    /// How long the relay sleeps without a wake-up. Commits in this process wake it at
    /// once; commits of other replicas (PostgreSQL) are found by this poll. NOTIFY would
    /// wake it sooner, but PostgreSQL serialises the commits of notifying transactions
    /// on a global lock, which halved CreateTask throughput in `just bench-api`.
    pub poll_interval: Duration,
    pub retention: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }
}
