//! What an operator watches: the backlog, its age, and publish outcomes.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct OutboxMetrics {
    pub backlog: Gauge,
    pub oldest_age_seconds: Gauge<f64, AtomicU64>,
    pub published: Counter,
    pub publish_failures: Counter,
    pub leader: Gauge,
    /// Times this replica stopped publishing because it could not prove it held the lock.
    pub leadership_lost: Counter,
    /// Events in `outbox_parked` now...
    pub parked: Gauge,
    /// ...and events this replica parked since it started.
    pub parked_total: Counter,
}

impl OutboxMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("taskmesh_outbox");
        registry.register(
            "backlog_events",
            "Events committed but not yet accepted by the sidecar (as seen by the publishing replica)",
            metrics.backlog.clone(),
        );
        registry.register(
            "oldest_unpublished_age_seconds",
            "Age of the oldest event not yet accepted by the sidecar",
            metrics.oldest_age_seconds.clone(),
        );
        registry.register(
            "published_events",
            "Events the sidecar accepted",
            metrics.published.clone(),
        );
        registry.register(
            "publish_failures",
            "Publish calls (or bulk entries) the sidecar refused or that failed",
            metrics.publish_failures.clone(),
        );
        registry.register(
            "relay_leader",
            "1 on the replica whose relay currently publishes",
            metrics.leader.clone(),
        );
        registry.register(
            "leadership_lost",
            "Times this replica stopped publishing because it could not prove, within \
             TASKMESH_OUTBOX_LOCK_TIMEOUT_MS, that it still held the relay's lock",
            metrics.leadership_lost.clone(),
        );
        registry.register(
            "parked_events",
            "Events set aside after the sidecar refused them TASKMESH_OUTBOX_MAX_ATTEMPTS times; \
             their tasks' later events wait (task-service outbox parked / retry)",
            metrics.parked.clone(),
        );
        registry.register(
            "parked",
            "Events this replica parked",
            metrics.parked_total.clone(),
        );
        metrics
    }
}
