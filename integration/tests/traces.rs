//! Distributed tracing end to end: task-service and notification-service export spans over
//! OTLP to a receiver in the sandbox, and the W3C trace context of a CreateTask call goes
//! through the outbox, daprd and Redis Streams into notification-service's handler, so
//! the call and the notification it causes share one trace id.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use taskmesh_integration::apps::{Stack, eventually, tail};
use taskmesh_integration::client::task_client;
use taskmesh_integration::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::sidecar::{Broker, Resources};
use taskmesh_proto::tasks::v1::*;

const SECRET: &str = "trace-test-secret-0123456789abcdef0123456789abcdef";
/// The caller's own trace: its id must reach every span the call causes.
const TRACE_ID: &str = "5e8a3c1f9b2d4e6f8a0b1c2d3e4f5a6b";
const CALLER_SPAN: &str = "1a2b3c4d5e6f7a8b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_task_and_the_notification_it_causes_share_one_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let stack = Stack {
        token_seed: Some("trace-app-token-0123456789".into()),
        scheduler: Some(scheduler.addr()),
        ..Stack::default()
    };
    let export = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.endpoint(),
        ),
        // Export every 100 ms instead of every 5 s, so the test need not wait.
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let tasks = stack
        .start_task_service(&resources, dir.path(), SECRET, export.clone())
        .unwrap();
    let notifications = stack
        .start("notification-service", &resources, export)
        .unwrap();

    let mut alice = task_client(&tasks.service.endpoint(), SECRET, "alice").unwrap();
    let due = chrono::Utc::now() + chrono::Duration::days(2);
    let mut request = tonic::Request::new(CreateTaskRequest {
        title: "File taxes".into(),
        due_time: Some(prost_types::Timestamp {
            seconds: due.timestamp(),
            nanos: 0,
        }),
        ..CreateTaskRequest::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    let task = alice.create_task(request).await.unwrap().into_inner();

    // The notification exists: the event went through the outbox, daprd and Redis.
    eventually(Duration::from_secs(30), async || {
        let list = notifications
            .invoke_ok(
                "notification-service",
                "notifications/list",
                &json!({"user_id": "alice"}),
            )
            .ok()?;
        list["notifications"]
            .as_array()?
            .iter()
            .any(|n| n["task_id"] == task.id.as_str() && n["kind"] == "due_time_set")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no due_time_set notification.\nnotification-service:\n{}\ntask-service:\n{}",
            tail(&notifications.service.log()),
            tail(&tasks.service.log())
        )
    });

    let in_trace = |service: &str, name: &str| -> Option<ReceivedSpan> {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.service == service && s.name == name && s.trace_id == TRACE_ID)
    };
    let spans = eventually(Duration::from_secs(15), async || {
        Some((
            in_trace("task-service", "taskmesh.tasks.v1.TaskService/CreateTask")?,
            in_trace("task-service", "CreateTask")?,
            in_trace("notification-service", "topic_event")?,
        ))
    })
    .await;
    let Some((server, handler, delivery)) = spans else {
        let seen: Vec<String> = receiver
            .spans()
            .iter()
            .map(|s| format!("{} {} {}", s.service, s.name, s.trace_id))
            .collect();
        panic!(
            "the trace is incomplete; spans received:\n{}",
            seen.join("\n")
        );
    };
    // task-service's server span continues the caller's span; its handler is inside it.
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(handler.parent_span_id, server.span_id);
    // The delivery has a parent from elsewhere (the sidecar's span, or task-service's
    // handler when the sidecar does not trace), never none.
    assert!(!delivery.parent_span_id.is_empty(), "{delivery:?}");
    assert_ne!(delivery.span_id, handler.span_id);
}
