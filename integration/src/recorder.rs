//! The test subscriber: an AppCallback server (the services' own router) that records
//! every event its sidecar delivers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallbackServer;
use taskmesh_shared::callback::{Delivery, Outcome, Router, Subscription, TopicHandler};
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub topic: String,
    pub data: serde_json::Value,
    pub at: Instant,
}

#[derive(Default)]
struct Log {
    events: Mutex<Vec<Received>>,
    changed: Notify,
}

#[async_trait]
impl TopicHandler for Log {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        let data = serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null);
        let received = Received {
            id: delivery.id,
            event_type: delivery.event_type,
            subject: delivery.subject,
            topic: delivery.topic,
            data,
            at: Instant::now(),
        };
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(received);
        self.changed.notify_waiters();
        Outcome::Success
    }
}

pub struct Recorder {
    port: u16,
    log: Arc<Log>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Recorder {
    /// Serves on a free port; subscribes to `topics` of `pubsub` (every event type).
    pub async fn start(pubsub: &str, topics: &[&str]) -> anyhow::Result<Self> {
        let log = Arc::new(Log::default());
        let mut router = Router::new();
        for topic in topics {
            router = router.subscribe(Subscription::new(pubsub, *topic).otherwise(log.clone()));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AppCallbackServer::new(router))
                .serve_with_incoming_shutdown(taskmesh_shared::net::incoming(listener), async {
                    let _ = stopped.await;
                }),
        );
        Ok(Self {
            port,
            log,
            stop: Some(stop),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn events(&self) -> Vec<Received> {
        self.log
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.log
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Waits until `done` holds for the events received so far; returns them.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.log.changed.notified();
            // Checked under the lock and copied only once done: copying thousands of events
            // on every delivery would hold up the deliveries themselves.
            if let Some(events) = self.check(&done) {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                if let Some(events) = self.check(&done) {
                    return Ok(events);
                }
                anyhow::bail!(
                    "after {timeout:?} the subscriber has {} events, not what the test waits for",
                    self.log
                        .events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .len()
                );
            }
        }
    }

    fn check(&self, done: &impl Fn(&[Received]) -> bool) -> Option<Vec<Received>> {
        let events = self.log.events.lock().unwrap_or_else(|e| e.into_inner());
        done(&events).then(|| events.clone())
    }

    /// Waits until `ids` distinct event ids have arrived.
    pub async fn wait_for_ids(
        &self,
        ids: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        self.wait_until(timeout, |events| distinct_ids(events) >= ids)
            .await
    }
}

pub fn distinct_ids(events: &[Received]) -> usize {
    events
        .iter()
        .map(|e| e.id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
