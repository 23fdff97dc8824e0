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

/// What one drive of a load measured: every call's latency and the wall time it took.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Sorted, shortest first.
    pub latencies_us: Vec<u64>,
    pub elapsed: std::time::Duration,
}

impl Load {
    /// Calls per second.
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// This load and `other` as one: their calls and their time.
    pub fn merged(mut self, other: Load) -> Load {
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
        self.elapsed += other.elapsed;
        self
    }

    /// The latency below which a share `p` (0 to 1) of the calls finished, in ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let at = ((self.latencies_us.len() as f64 * p) as usize)
            .min(self.latencies_us.len().saturating_sub(1));
        self.latencies_us.get(at).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Runs `concurrency` workers in a loop for `length`, each calling `op(worker, i)` with
/// its own counter `i`, and returns what they measured.
pub async fn drive<F, Fut>(
    concurrency: usize,
    length: std::time::Duration,
    op: std::sync::Arc<F>,
) -> anyhow::Result<Load>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    use std::time::Instant;
    let started = Instant::now();
    let deadline = started + length;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let start = Instant::now();
                op(w, i).await?;
                latencies.push(start.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies_us = Vec::new();
    for worker in workers {
        latencies_us.extend(worker.await??);
    }
    latencies_us.sort_unstable();
    Ok(Load {
        latencies_us,
        elapsed: started.elapsed(),
    })
}

/// The peak resident set (`VmHWM`) of process `pid`, in MB; 0 when unreadable.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Waits until `service`'s metric `name` reaches `target`, up to `timeout`; the time taken.
pub async fn wait_for_metric(
    service: &ServiceProcess,
    name: &str,
    target: f64,
    timeout: std::time::Duration,
) -> anyhow::Result<std::time::Duration> {
    let start = std::time::Instant::now();
    loop {
        let now = metric(service, name);
        if now >= target {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "{name} stuck at {now} of {target}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
