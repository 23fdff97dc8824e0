//! What the benches (`src/bin/bench-*.rs`) share: settings from the environment, a
//! service's metric, the way they start apps, and bulk publishing through a sidecar.

use std::collections::HashMap;

use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{BulkPublishRequest, BulkPublishRequestEntry};
use taskmesh_shared::events::TaskEvent;

use crate::apps::Stack;
use crate::services::ServiceProcess;

/// Setting `name` from the environment, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of the first line of `service`'s metrics that starts with `name`; 0 when none.
pub fn metric(service: &ServiceProcess, name: &str) -> f64 {
    service
        .metrics()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The stack the benches start their apps in: each app with its app token, and sidecars
/// that ask the apps for none (the benches call them without one).
pub fn stack() -> Stack {
    Stack {
        token_seed: Some("bench-app-token-0123456789".into()),
        open_sidecars: true,
        ..Stack::default()
    }
}

/// The environment that keeps a benched service's log to warnings.
pub fn quiet() -> Vec<(String, String)> {
    vec![("RUST_LOG".into(), "warn".into())]
}

/// Publishes `events` to `topic` of `taskmesh-pubsub` through the sidecar at `endpoint`,
/// `chunk` events per bulk request, each keyed by its task.
pub async fn bulk_publish(
    endpoint: &str,
    topic: &str,
    events: &[TaskEvent],
    chunk: usize,
) -> anyhow::Result<()> {
    let mut client = DaprClient::connect(endpoint.to_owned()).await?;
    for chunk in events.chunks(chunk) {
        let entries = chunk
            .iter()
            .map(|e| {
                Ok(BulkPublishRequestEntry {
                    entry_id: e.id.clone(),
                    event: serde_json::to_vec(e)?,
                    content_type: "application/cloudevents+json".into(),
                    metadata: HashMap::from([("partitionKey".into(), e.data.task.id.to_string())]),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let response = client
            .bulk_publish_event(BulkPublishRequest {
                pubsub_name: "taskmesh-pubsub".into(),
                topic: topic.into(),
                entries,
                metadata: HashMap::new(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            response.failed_entries.is_empty(),
            "bulk publish refused entries"
        );
    }
    Ok(())
}
