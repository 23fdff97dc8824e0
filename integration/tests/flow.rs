//! The subscriber services end to end through real daprd and Redis: a recurring task is
//! completed, recurring-service creates the next occurrence through Dapr service
//! invocation, analytics-service counts both, `stats/get` answers through the sidecar's
//! invoke API (what `dapr invoke` calls), a forged internal call is refused, and a poison
//! event goes to the dead-letter topic while the next good one is still applied.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dapr::dapr::proto::runtime::v1::PublishEventRequest;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use taskmesh_integration::client::task_client;
use taskmesh_integration::net::free_port;
use taskmesh_integration::recorder::Recorder;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{Broker, Daprd, DaprdOptions, Resources, http_post_json};
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::*;

const SECRET: &str = "flow-test-secret-0123456789";
const APP_TOKEN: &str = "flow-app-token-0123456789";

struct App {
    service: ServiceProcess,
    sidecar: Daprd,
}

fn app(name: &str, resources: &Resources, mut env: Vec<(String, String)>) -> App {
    let grpc = free_port().unwrap();
    env.push(("DAPR_GRPC_PORT".into(), grpc.to_string()));
    env.push(("APP_API_TOKEN".into(), APP_TOKEN.into()));
    let service = ServiceProcess::start(name, env).unwrap();
    let sidecar = Daprd::start(DaprdOptions {
        app_id: name.into(),
        app_port: Some(service.port()),
        grpc_port: Some(grpc),
        resources: vec![resources.path().to_owned()],
        app_api_token: Some(APP_TOKEN.into()),
        ..DaprdOptions::default()
    })
    .unwrap();
    App { service, sidecar }
}

fn stats(analytics: &App, user: &str) -> serde_json::Value {
    let (status, body) = http_post_json(
        analytics.sidecar.http_port(),
        "/v1.0/invoke/analytics-service/method/stats/get",
        &format!(r#"{{"user_id":"{user}"}}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `check` until it gives a value; `None` after `timeout`.
async fn eventually<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_task_rolls_over_and_is_counted_once() {
    let redis = RedisServer::start().unwrap();
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks = app(
        "task-service",
        &resources,
        vec![
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            ),
            ("TASKMESH_JWT_SECRET".into(), SECRET.into()),
        ],
    );
    let recurring = app("recurring-service", &resources, vec![]);
    let analytics = app("analytics-service", &resources, vec![]);
    let dead_letters = Recorder::start("taskmesh-pubsub", &["task-events-deadletter"])
        .await
        .unwrap();
    let _dead_letter_sidecar = Daprd::start(DaprdOptions {
        app_id: "dead-letter-reader".into(),
        app_port: Some(dead_letters.port()),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })
    .unwrap();

    let mut alice = task_client(&tasks.service.endpoint(), SECRET, "alice").unwrap();
    let due = chrono::Utc::now() + chrono::Duration::days(1);
    let first = alice
        .create_task(CreateTaskRequest {
            title: "Water plants".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            time_zone: Some("Europe/Paris".into()),
            recurrence: Some("FREQ=DAILY;COUNT=3".into()),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    alice
        .complete_task(CompleteTaskRequest {
            id: first.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();

    // The next occurrence appears, created through Dapr service invocation (mDNS name
    // resolution on loopback) on behalf of alice.
    let next = eventually(Duration::from_secs(30), async || {
        let open = alice
            .list_tasks(ListTasksRequest {
                status: StatusFilter::Open as i32,
                ..ListTasksRequest::default()
            })
            .await
            .ok()?
            .into_inner()
            .tasks;
        open.into_iter().find(|t| t.id != first.id)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no next occurrence.\nrecurring-service:\n{}\nits sidecar:\n{}\ntask-service sidecar:\n{}",
            tail(&recurring.service.log()),
            tail(&recurring.sidecar.log()),
            tail(&tasks.sidecar.log())
        )
    });
    assert_eq!(next.title, "Water plants");
    assert_eq!(next.owner_id, "alice");
    assert_eq!(next.recurrence.as_deref(), Some("FREQ=DAILY;COUNT=2"));
    let next_due = next.due_time.unwrap().seconds;
    assert_eq!(next_due - first.due_time.unwrap().seconds, 86_400);

    // analytics: two created, one completed, exactly once.
    let counted = eventually(Duration::from_secs(30), async || {
        let s = stats(&analytics, "alice");
        (s["created"] == 2 && s["completed"] == 1).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("statistics: {}", stats(&analytics, "alice")));
    assert_eq!(counted["open"], 1);
    assert_eq!(counted["completion_rate"], 0.5);

    // Bad input over invoke: a clear error, not a crash.
    let (status, body) = http_post_json(
        analytics.sidecar.http_port(),
        "/v1.0/invoke/analytics-service/method/stats/get",
        r#"{"user":"alice"}"#,
    )
    .unwrap();
    assert!(status >= 400, "{status} {body}");
    assert!(body.contains("user_id"), "{body}");
    let (status, body) = http_post_json(
        analytics.sidecar.http_port(),
        "/v1.0/invoke/analytics-service/method/stats/nope",
        "{}",
    )
    .unwrap();
    assert!(
        status >= 400 && body.contains("stats/get"),
        "{status} {body}"
    );

    // A forged internal call straight to task-service is refused.
    let channel = tonic::transport::Channel::from_shared(tasks.service.endpoint())
        .unwrap()
        .connect_lazy();
    let mut forger = TaskServiceClient::new(channel);
    let mut forged = tonic::Request::new(CreateTaskRequest {
        title: "forged".into(),
        ..CreateTaskRequest::default()
    });
    for (k, v) in [
        ("taskmesh-on-behalf-of", "alice"),
        ("dapr-caller-app-id", "recurring-service"),
        ("dapr-api-token", "a-guess"),
    ] {
        forged.metadata_mut().insert(k, v.parse().unwrap());
    }
    let refused = forger.create_task(forged).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // Poison on the topic: dropped to the dead-letter topic; the next good event applies.
    let mut publisher = DaprClient::connect(recurring.sidecar.grpc_endpoint())
        .await
        .unwrap();
    for (id, event_type, data) in [
        ("poison-1", "taskmesh.task.created.v1", r#"{"task": "#),
        ("poison-2", "taskmesh.task.exploded.v1", "{}"),
        ("poison-3", "taskmesh.task.created.v1", r#"{"version": 1}"#),
    ] {
        let envelope = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"test","type":"{event_type}","datacontenttype":"application/json","data_base64":"{}"}}"#,
            base64_encode(data.as_bytes())
        );
        publisher
            .publish_event(PublishEventRequest {
                pubsub_name: "taskmesh-pubsub".into(),
                topic: "task-events".into(),
                data: envelope.into_bytes(),
                data_content_type: "application/cloudevents+json".into(),
                metadata: HashMap::new(),
            })
            .await
            .unwrap();
    }
    alice
        .create_task(CreateTaskRequest {
            title: "after the poison".into(),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(30), async || {
        (stats(&analytics, "alice")["created"] == 3).then_some(())
    })
    .await;
    let dropped = dead_letters
        .wait_until(Duration::from_secs(30), |events| {
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            ["poison-1", "poison-2", "poison-3"]
                .iter()
                .all(|id| ids.contains(id))
        })
        .await
        .unwrap();
    assert!(!dropped.is_empty());
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
