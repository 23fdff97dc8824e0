//! What the router counts: deliveries by event type and outcome, and how long handlers
//! take. Types no route names are counted as `unknown`, so poison cannot grow the label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub topic: String,
    pub event_type: String,
    /// `success`, `retry` or `drop`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabel {
    /// `applied` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct RouterMetrics {
    pub events: Family<EventLabels, Counter>,
    pub handle_seconds: Family<TopicLabel, Histogram>,
    /// Dead letters kept (a second delivery of one is not counted).
    pub dead_letters_kept: Counter,
    pub dead_letters_replayed: Family<ReplayLabel, Counter>,
}

impl RouterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            events: Family::default(),
            // 0.5 ms to about 8 s.
            handle_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 15))
            }),
            dead_letters_kept: Counter::default(),
            dead_letters_replayed: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("taskmesh");
        registry.register(
            "events_handled",
            "Topic deliveries by event type and outcome (success, retry, drop)",
            metrics.events.clone(),
        );
        registry.register(
            "event_handle_seconds",
            "Time a handler took per delivery",
            metrics.handle_seconds.clone(),
        );
        registry.register(
            "dead_letters_kept",
            "Events this app failed, kept from its dead-letter topic for replay",
            metrics.dead_letters_kept.clone(),
        );
        registry.register(
            "dead_letters_replayed",
            "Dead letters replayed by an operator, by outcome (applied, failed)",
            metrics.dead_letters_replayed.clone(),
        );
        metrics
    }
}
