//! `dapr invoke` with the real dapr CLI against the sandbox's sidecars, exactly as an
//! operator pokes a running system: notifications/list on notification-service and
//! stats/get on analytics-service answer with the JSON the README documents, and a bad
//! request fails the command.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use taskmesh_integration::apps::{Stack, eventually, tail};
use taskmesh_integration::client::task_client;
use taskmesh_integration::dapr_cli::DaprCli;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::sidecar::{Broker, Resources};
use taskmesh_proto::tasks::v1::*;

const SECRET: &str = "cli-test-secret-0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_invoke_reaches_the_subscribers_methods() {
    let cli = DaprCli::new().unwrap();
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let stack = Stack {
        token_seed: Some("cli-app-token-0123456789".into()),
        scheduler: Some(scheduler.addr()),
        // The CLI's `invoke` sends no Dapr API token (see `DaprCli::invoke`).
        open_sidecars: true,
        ..Stack::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let tasks = stack
        .start_task_service(&resources, dir.path(), SECRET, vec![])
        .unwrap();
    let analytics = stack
        .start("analytics-service", &resources, vec![])
        .unwrap();
    let notifications = stack
        .start("notification-service", &resources, vec![])
        .unwrap();

    // The CLI sees the sidecars the way `dapr list` shows a self-hosted system.
    let listed: serde_json::Value =
        serde_json::from_str(&cli.run(&["list", "--output", "json"]).unwrap()).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|app| app["appId"].as_str())
        .collect();
    for app in ["task-service", "analytics-service", "notification-service"] {
        assert!(ids.contains(&app), "{app} not in `dapr list`: {listed}");
    }

    let mut carol = task_client(&tasks.service.endpoint(), SECRET, "carol").unwrap();
    let due = chrono::Utc::now() + chrono::Duration::days(3);
    let task = carol
        .create_task(CreateTaskRequest {
            title: "Book flights".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let notifications_of_carol = || {
        cli.invoke(
            "notification-service",
            "notifications/list",
            &json!({"user_id": "carol"}),
        )
    };
    let list = eventually(Duration::from_secs(30), async || {
        let list = notifications_of_carol().ok()?;
        (!list["notifications"].as_array()?.is_empty()).then_some(list)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no notifications: {:?}\n{}",
            notifications_of_carol(),
            tail(&notifications.service.log())
        )
    });
    let first = &list["notifications"][0];
    assert_eq!(first["kind"], "due_time_set");
    assert_eq!(first["task_id"], task.id.as_str());
    assert_eq!(list["unread"], 1);

    // Completed after its notification: one task's events may arrive out of order, and a
    // creation seen after its completion adds no notification.
    carol
        .complete_task(CompleteTaskRequest {
            id: task.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();

    let stats = eventually(Duration::from_secs(30), async || {
        let stats = cli
            .invoke(
                "analytics-service",
                "stats/get",
                &json!({"user_id": "carol"}),
            )
            .ok()?;
        (stats["completed"] == 1).then_some(stats)
    })
    .await
    .unwrap_or_else(|| panic!("no stats for carol:\n{}", tail(&analytics.service.log())));
    assert_eq!(stats["user_id"], "carol");
    assert_eq!(stats["created"], 1);
    assert_eq!(stats["open"], 0);

    // A request the method refuses fails the command: INVALID_ARGUMENT reaches the CLI as
    // 400 (this CLI prints the status, not the app's message; the sidecar's HTTP answer
    // carries it, see flow.rs).
    let err = cli
        .invoke("analytics-service", "stats/get", &json!({"user": "carol"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("400 Bad Request"), "{err}");
}
