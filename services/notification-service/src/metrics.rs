//! Counters an operator watches on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use taskmesh_shared::records::RecordMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub records: RecordMetrics,
    pub reminders: Family<KindLabel, Counter>,
    pub deferred: Counter,
    pub delivery_failures: Family<KindLabel, Counter>,
    pub lag_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            records: RecordMetrics::default(),
            reminders: Family::default(),
            deferred: Counter::default(),
            delivery_failures: Family::default(),
            // 10 ms to about 80 s.
            lag_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        }
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("taskmesh_notification");
        let metrics = Self {
            records: RecordMetrics::register(
                registry,
                "Task events that changed a task's reminders or notifications",
            ),
            ..Self::default()
        };
        registry.register(
            "reminders_fired",
            "Reminders sent, by kind (due_soon, overdue)",
            metrics.reminders.clone(),
        );
        registry.register(
            "reminders_deferred",
            "Reminders that waited for the end of the user's quiet hours",
            metrics.deferred.clone(),
        );
        registry.register(
            "delivery_failures",
            "E-mail or webhook deliveries that failed after retries, by channel",
            metrics.delivery_failures.clone(),
        );
        // Zero-valued series from the start, so that rates and alerts see them before the
        // first reminder or failure.
        for kind in ["due_soon", "overdue"] {
            drop(metrics.reminders.get_or_create(&KindLabel { kind }));
        }
        for kind in ["email", "webhook"] {
            drop(metrics.delivery_failures.get_or_create(&KindLabel { kind }));
        }
        registry.register(
            "reminder_lag_seconds",
            "How late a reminder was sent after its planned time (a quiet-hours deferral included)",
            metrics.lag_seconds.clone(),
        );
        metrics
    }
}
