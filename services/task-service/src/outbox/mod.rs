//! The transactional outbox: every committed change has an event row in the same
//! database (see `store`), and the relay publishes those rows through the Dapr sidecar.
//!
//! Ports: `OutboxStore` (rows), `EventPublisher` (the sidecar) and `Leadership` (which
//! replica publishes). The adapters are sea-orm, the Dapr generated client and a
//! PostgreSQL advisory lock; unit tests use fakes.

pub mod feed;
pub mod leader;
mod metrics;
mod publisher;
mod relay;
mod store;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use leader::{Leadership, LeaseSettings, PgAdvisoryLock, SingleProcess};
pub use metrics::OutboxMetrics;
pub use publisher::DaprPublisher;
pub use relay::Relay;
pub use store::{ParkedEvent, SeaOutbox, statements};

/// An event waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub task_id: String,
    /// The CloudEvent JSON.
    pub payload: String,
    /// Times the sidecar refused it so far (see `OutboxStore::record_attempt`).
    pub attempts: u32,
}

/// What an event adds to a bulk publish request besides its payload: the entry id, the
/// content type, the partition key metadata (the task id) and the protobuf framing, about
/// 100 bytes, rounded up.
const BULK_ENTRY_OVERHEAD: usize = 160;

/// The bytes an event takes in a bulk publish request, as the relay counts them against
/// `OutboxSettings::max_batch_bytes` (and the API against the same limit when it writes
/// the event).
pub fn bulk_entry_bytes(payload: &str, task_id: &str) -> usize {
    payload.len() + task_id.len() + BULK_ENTRY_OVERHEAD
}

#[derive(Debug, thiserror::Error)]
#[error("outbox storage: {0}")]
pub struct StoreError(#[from] pub sea_orm::DbErr);

#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The oldest unpublished events, in commit order, without the events of tasks that
    /// have a parked event: those wait behind it, so that none overtakes it.
    async fn pending(&self, limit: u64) -> Result<Vec<PendingEvent>, StoreError>;
    async fn mark_published(&self, seqs: &[i64], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Counts one refusal of each of these events.
    async fn record_attempt(&self, seqs: &[i64]) -> Result<(), StoreError>;
    /// Moves the event out of the outbox into `outbox_parked`, with the sidecar's reason,
    /// in one transaction.
    async fn park(&self, seq: i64, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Deletes published rows older than `before`; returns how many.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn backlog(&self) -> Result<Backlog, StoreError>;
}

/// What waits in the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub events: u64,
    pub oldest: Option<DateTime<Utc>>,
    /// Events in `outbox_parked`.
    pub parked: u64,
}

/// Why the sidecar did not take an event.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The whole call failed (sidecar down, broker down, bad token...).
    #[error("publish failed: {0}")]
    Call(#[source] tonic::Status),
    /// Some entries of a bulk publish were refused, each with the sidecar's reason. Dapr
    /// 1.18's gRPC API does not report this: when one entry fails it fails the whole call
    /// (`INTERNAL`, or `INVALID_ARGUMENT` for an envelope it cannot build), so the relay
    /// finds the refused entries by publishing them one at a time.
    #[error("{} of the events were refused, e.g. {}", failed.len(), failed.first().map_or("", |f| f.1.as_str()))]
    Partial { failed: Vec<(i64, String)> },
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

    /// Whether the failure may be about some of the events rather than about the sidecar,
    /// the broker or our configuration, so that publishing them one at a time can tell
    /// which. Unreachable, unauthorised, unknown component or topic, timed out: every
    /// event would fail alike, and a timeout would cost each of them the full timeout.
    pub fn may_be_about_the_events(&self) -> bool {
        match self {
            Self::Call(status) => !matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unimplemented
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::NotFound
                    | tonic::Code::FailedPrecondition
            ),
            Self::Partial { .. } => true,
        }
    }

    /// The sidecar's words, for the parked row.
    pub fn reason(&self) -> String {
        match self {
            Self::Call(status) => format!("{:?}: {}", status.code(), status.message()),
            Self::Partial { failed } => failed
                .first()
                .map(|(_, reason)| reason.clone())
                .unwrap_or_default(),
        }
    }
}

#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes `events`, of which no two belong to one task, so they may go out in any
    /// order (daprd publishes bulk entries concurrently on brokers without native bulk).
    async fn publish(&self, events: &[PendingEvent]) -> Result<(), PublishError>;
}

/// 3 MiB: daprd's default `--max-body-size` is 4 MiB (`4Mi`); the rest is headroom for
/// our estimate of the framing.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 3 * 1024 * 1024;

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub batch_size: u64,
    /// The most a bulk publish request may carry (`bulk_entry_bytes` of its events);
    /// below the sidecar's `--max-body-size`, which refuses a larger request whole.
    pub max_batch_bytes: usize,
    /// Refusals after which an event is parked (`TASKMESH_OUTBOX_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// How long the relay sleeps without a wake-up. Commits in this process wake it at
    /// once; commits of other replicas (PostgreSQL) are found by this poll. NOTIFY would
    /// wake it sooner, but PostgreSQL serialises the commits of notifying transactions
    /// on a global lock, which halved CreateTask throughput in `just bench-api`.
    pub poll_interval: Duration,
    pub retention: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How the publishing replica holds its lock (PostgreSQL only).
    pub leadership: LeaseSettings,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_attempts: 20,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            leadership: LeaseSettings::default(),
        }
    }
}
