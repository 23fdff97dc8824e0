//! The subscriber services end to end through real daprd, Redis and the Dapr scheduler: a
//! recurring task is completed, recurring-service creates the next occurrence through Dapr
//! service invocation, analytics-service counts both, notification-service tells the user,
//! `stats/get` and `notifications/list` answer through the sidecar's invoke API (what `dapr
//! invoke` calls), a forged internal call is refused, and a poison event goes to the
//! app's dead-letter topic (where the app keeps it) while the next good one is still
//! applied. A task in a shared list reaches its assignee: their notifications, their
//! completion and assignments in analytics, and the next occurrence assigned to them in
//! the same list.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use dapr::dapr::proto::runtime::v1::PublishEventRequest;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use serde_json::json;
use taskmesh_integration::apps::{App, Stack, eventually, private_name_resolution, tail};
use taskmesh_integration::client::{list_client, task_client};
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::sidecar::{Broker, Resources};
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::*;

const SECRET: &str = "flow-test-secret-0123456789abcdef0123456789abcdef";
const APP_TOKEN: &str = "flow-app-token-0123456789";

/// Both tests run task-service and recurring-service under the same app ids, and mDNS
/// resolves app ids host-wide: run at the same time, one test's recurring-service could
/// call the other test's task-service. So they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The apps of one test, their app ids resolved among themselves (`names` holds the
/// resolver's file), not host-wide.
fn stack(scheduler: &Scheduler, names: &std::path::Path) -> Stack {
    Stack {
        token_seed: Some(APP_TOKEN.into()),
        scheduler: Some(scheduler.addr()),
        config: Some(private_name_resolution(names).unwrap()),
        ..Stack::default()
    }
}

fn stats(analytics: &App, user: &str) -> serde_json::Value {
    analytics
        .invoke_ok("analytics-service", "stats/get", &json!({"user_id": user}))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_task_rolls_over_and_is_counted_once() {
    let _turn = SERIAL.lock().await;
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let names = tempfile::tempdir().unwrap();
    let stack = stack(&scheduler, names.path());
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks = stack
        .start_task_service(&resources, dir.path(), SECRET, vec![])
        .unwrap();
    let recurring = stack
        .start("recurring-service", &resources, vec![])
        .unwrap();
    let analytics = stack
        .start("analytics-service", &resources, vec![])
        .unwrap();
    let notifications = stack
        .start("notification-service", &resources, vec![])
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

    // notification-service: the roll-over and the next occurrence's due time. The first
    // task's own due_time_set is there unless its completion overtook its creation (Redis
    // Streams does not keep order, and an older event changes nothing).
    let kinds = eventually(Duration::from_secs(60), async || {
        let kinds = notification_kinds(&notifications, "alice");
        let has = |kind: &str, task: &str| kinds.iter().any(|(k, t)| k == kind && t == task);
        (has("rolled_over", &first.id) && has("due_time_set", &next.id)).then_some(kinds)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "notifications: {:?}\nnotification-service:\n{}\nits sidecar:\n{}\nmetrics:\n{}",
            notification_kinds(&notifications, "alice"),
            notifications.service.log(),
            tail(&notifications.sidecar.log()),
            notifications.service.metrics()
        )
    });
    let allowed = [
        ("rolled_over", first.id.as_str()),
        ("due_time_set", next.id.as_str()),
        ("due_time_set", first.id.as_str()),
    ];
    let mut seen = std::collections::HashSet::new();
    for (kind, task) in &kinds {
        assert!(
            allowed.contains(&(kind.as_str(), task.as_str())),
            "unexpected notification {kind} of {task}: {kinds:?}"
        );
        assert!(
            seen.insert((kind, task)),
            "{kind} of {task} twice: {kinds:?}"
        );
    }

    // Bad input over invoke: a clear error, not a crash.
    let (status, body) = analytics
        .invoke("analytics-service", "stats/get", &json!({"user": "alice"}))
        .unwrap();
    assert!(status >= 400, "{status} {body}");
    assert!(body.contains("user_id"), "{body}");
    let (status, body) = analytics
        .invoke("analytics-service", "stats/nope", &json!({}))
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

    // Poison on the topic (from task-service's sidecar: the topic scopes let no other app
    // publish there): dropped to the dead-letter topic; the next good event applies.
    let mut publisher = DaprClient::connect(tasks.sidecar.grpc_endpoint())
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
        let mut request = tonic::Request::new(PublishEventRequest {
            pubsub_name: "taskmesh-pubsub".into(),
            topic: "task-events".into(),
            data: envelope.into_bytes(),
            data_content_type: "application/cloudevents+json".into(),
            metadata: HashMap::new(),
        });
        if let Some(token) = &tasks.token {
            request
                .metadata_mut()
                .insert("dapr-api-token", token.parse().unwrap());
        }
        publisher.publish_event(request).await.unwrap();
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
    // analytics-service drops all three; its sidecar puts them on its own dead-letter
    // topic, where analytics-service keeps them for an operator.
    eventually(Duration::from_secs(30), async || {
        let kept = analytics
            .invoke_ok("analytics-service", "deadletters/list", &json!({}))
            .ok()?;
        let ids: Vec<&str> = kept["dead_letters"]
            .as_array()?
            .iter()
            .filter_map(|letter| letter["id"].as_str())
            .collect();
        ["poison-1", "poison-2", "poison-3"]
            .iter()
            .all(|id| ids.contains(id))
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "poison not kept as dead letters:\n{}",
            tail(&analytics.service.log())
        )
    });

    // What an operator scrapes: calls by method and code, deliveries by type and outcome.
    let task_metrics = tasks.service.metrics();
    for line in [
        r#"taskmesh_grpc_server_calls_total{method="/taskmesh.tasks.v1.TaskService/CreateTask",code="Ok"}"#,
        r#"taskmesh_grpc_server_calls_total{method="/taskmesh.tasks.v1.TaskService/CreateTask",code="Unauthenticated"} 1"#,
    ] {
        assert!(task_metrics.contains(line), "{line} not in\n{task_metrics}");
    }
    // Every metric the Grafana dashboard queries exists in what the services expose.
    let exposition = [&tasks, &recurring, &analytics, &notifications]
        .map(|app| app.service.metrics())
        .join("\n");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            taskmesh_integration::repo_root().join("helm/dashboards/taskmesh.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let queried: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .flat_map(|target| {
            target["expr"]
                .as_str()
                .unwrap()
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("taskmesh_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(queried.len() >= 12, "{queried:?}");
    for name in queried {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_total"))
            .unwrap_or(&name);
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which no service exposes"
        );
    }
    let analytics_metrics = analytics.service.metrics();
    for line in [
        r#"taskmesh_events_handled_total{topic="task-events",event_type="taskmesh.task.completed.v1",outcome="success"}"#,
        r#"taskmesh_events_handled_total{topic="task-events",event_type="unknown",outcome="drop"}"#,
        r#"taskmesh_grpc_server_calls_total{method="/dapr.proto.runtime.v1.AppCallback/OnInvoke",code="InvalidArgument"}"#,
    ] {
        assert!(
            analytics_metrics.contains(line),
            "{line} not in\n{analytics_metrics}"
        );
    }
}

/// `(kind, task id)` of each of the user's notifications, newest first.
fn notification_kinds(notifications: &App, user: &str) -> Vec<(String, String)> {
    let Ok(list) = notifications.invoke_ok(
        "notification-service",
        "notifications/list",
        &json!({"user_id": user}),
    ) else {
        return Vec::new();
    };
    list["notifications"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|n| {
                    Some((
                        n["kind"].as_str()?.to_owned(),
                        n["task_id"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
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

/// A completion event of a recurring task, as task-service would publish it.
fn completion(user: &str, title: &str) -> taskmesh_shared::events::TaskEvent {
    use taskmesh_shared::events::{TaskEvent, TaskEventData, TaskEventKind, TaskSnapshot};
    let now = chrono::Utc::now();
    TaskEvent::task(
        TaskEventKind::Completed,
        TaskEventData {
            task: TaskSnapshot {
                id: uuid::Uuid::now_v7(),
                owner_id: user.into(),
                title: title.into(),
                description: String::new(),
                priority: "low".into(),
                tags: vec![],
                due_time: Some(now + chrono::Duration::hours(2)),
                time_zone: None,
                recurrence: Some("FREQ=WEEKLY".into()),
                completed: true,
                completed_time: Some(now),
                create_time: now - chrono::Duration::hours(1),
                update_time: now,
                version: 2,
                list_id: None,
                assignee_id: None,
            },
            changed_fields: vec!["completed".into()],
            version: 2,
            owner_id: user.into(),
            occurred_at: now,
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        },
    )
}

/// Publishes as task-service (the one app the topic scopes let publish task events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_task_goes_to_its_assignee() {
    let _turn = SERIAL.lock().await;
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let names = tempfile::tempdir().unwrap();
    let stack = stack(&scheduler, names.path());
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tasks = stack
        .start_task_service(&resources, dir.path(), SECRET, vec![])
        .unwrap();
    let recurring = stack
        .start("recurring-service", &resources, vec![])
        .unwrap();
    let analytics = stack
        .start("analytics-service", &resources, vec![])
        .unwrap();
    let notifications = stack
        .start("notification-service", &resources, vec![])
        .unwrap();

    let endpoint = tasks.service.endpoint();
    let mut alice = task_client(&endpoint, SECRET, "alice").unwrap();
    let mut bob = task_client(&endpoint, SECRET, "bob").unwrap();
    let mut alice_lists = list_client(&endpoint, SECRET, "alice").unwrap();
    let home = alice_lists
        .create_list(CreateListRequest {
            name: "Home".into(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    alice_lists
        .add_member(AddMemberRequest {
            list_id: home.id.clone(),
            user_id: "bob".into(),
            role: Role::Editor as i32,
        })
        .await
        .unwrap();
    let due = chrono::Utc::now() + chrono::Duration::days(1);
    let first = alice
        .create_task(CreateTaskRequest {
            title: "Take out the bins".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            recurrence: Some("FREQ=WEEKLY;COUNT=2".into()),
            list_id: Some(home.id.clone()),
            assignee_id: Some("bob".into()),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    bob.complete_task(CompleteTaskRequest {
        id: first.id.clone(),
        expected_version: None,
    })
    .await
    .unwrap();

    // recurring-service creates the next one for alice, in the same list, for bob.
    let next = eventually(Duration::from_secs(30), async || {
        let open = bob
            .list_tasks(ListTasksRequest {
                status: StatusFilter::Open as i32,
                list_id: Some(home.id.clone()),
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
            "no next occurrence.\nrecurring-service:\n{}",
            tail(&recurring.service.log())
        )
    });
    assert_eq!(
        (next.owner_id.as_str(), next.assignee_id.as_deref()),
        ("alice", Some("bob"))
    );

    // analytics: alice created both; bob completed one and was assigned both.
    let counted = eventually(Duration::from_secs(30), async || {
        let (a, b) = (stats(&analytics, "alice"), stats(&analytics, "bob"));
        (a["created"] == 2 && b["completed"] == 1 && b["assigned"] == 2).then_some((a, b))
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "statistics: alice {} bob {}",
            stats(&analytics, "alice"),
            stats(&analytics, "bob")
        )
    });
    assert_eq!(counted.0["completed"], 0, "{counted:?}");
    assert_eq!(counted.1["created"], 0, "{counted:?}");

    // notification-service: the next occurrence's due time goes to bob, not to alice.
    eventually(Duration::from_secs(60), async || {
        let kinds = notification_kinds(&notifications, "bob");
        kinds
            .iter()
            .any(|(kind, task)| kind == "due_time_set" && *task == next.id)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "bob's notifications: {:?}\nnotification-service:\n{}",
            notification_kinds(&notifications, "bob"),
            tail(&notifications.service.log())
        )
    });
    let alices = notification_kinds(&notifications, "alice");
    assert!(
        alices
            .iter()
            .all(|(_, task)| *task != first.id && *task != next.id),
        "alice was told about bob's tasks: {alices:?}"
    );
}

async fn publish(
    endpoint: String,
    token: Option<String>,
    event: &taskmesh_shared::events::TaskEvent,
) {
    let mut client = DaprClient::connect(endpoint).await.unwrap();
    let mut request = tonic::Request::new(PublishEventRequest {
        pubsub_name: "taskmesh-pubsub".into(),
        topic: "task-events".into(),
        data: serde_json::to_vec(event).unwrap(),
        data_content_type: "application/cloudevents+json".into(),
        metadata: HashMap::new(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("dapr-api-token", token.parse().unwrap());
    }
    client.publish_event(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_redeliveries_have_one_effect_and_a_state_store_outage_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let broker = RedisServer::start().unwrap();
    let mut state = RedisServer::start_persistent().unwrap();
    let resources =
        Resources::with_state_store(Broker::Redis, &broker.addr(), &state.addr(), None).unwrap();
    let scheduler = Scheduler::start().unwrap();
    let names = tempfile::tempdir().unwrap();
    let stack = stack(&scheduler, names.path());
    let dir = tempfile::tempdir().unwrap();
    let tasks = stack
        .start_task_service(&resources, dir.path(), SECRET, vec![])
        .unwrap();
    let _recurring = stack
        .start("recurring-service", &resources, vec![])
        .unwrap();
    let analytics = stack
        .start("analytics-service", &resources, vec![])
        .unwrap();
    let notifications = stack
        .start("notification-service", &resources, vec![])
        .unwrap();

    // The same event 50 times, 25 of them at once: one completion counted, one successor.
    let event = completion("bob", "Take out the bins");
    for _ in 0..25 {
        publish(tasks.sidecar.grpc_endpoint(), tasks.token.clone(), &event).await;
    }
    let burst = (0..25).map(|_| {
        let (endpoint, token, event) = (
            tasks.sidecar.grpc_endpoint(),
            tasks.token.clone(),
            event.clone(),
        );
        tokio::spawn(async move { publish(endpoint, token, &event).await })
    });
    futures::future::join_all(burst).await;
    let dedup = "taskmesh_analytics_dedup_hits_total";
    eventually(Duration::from_secs(30), async || {
        (analytics.service.metrics().contains(&format!("{dedup} 49"))).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("50 deliveries not seen: {}", analytics.service.metrics()));
    let notified = "taskmesh_notification_dedup_hits_total";
    eventually(Duration::from_secs(30), async || {
        (notifications
            .service
            .metrics()
            .contains(&format!("{notified} 49")))
        .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "50 deliveries not seen: {}",
            notifications.service.metrics()
        )
    });
    let bob_kinds = notification_kinds(&notifications, "bob");
    assert_eq!(
        bob_kinds.iter().filter(|(k, _)| k == "rolled_over").count(),
        1,
        "{bob_kinds:?}"
    );
    let bob_stats = stats(&analytics, "bob");
    assert_eq!(bob_stats["completed"], 1, "{bob_stats}");
    let mut bob = task_client(&tasks.service.endpoint(), SECRET, "bob").unwrap();
    let successors = bob
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(successors.len(), 1, "one next occurrence for 50 deliveries");

    // The state store goes away for 10 s while events keep coming: RETRY, then recovery.
    let mut carol = task_client(&tasks.service.endpoint(), SECRET, "carol").unwrap();
    carol
        .create_task(CreateTaskRequest {
            title: "before".into(),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(30), async || {
        (stats(&analytics, "carol")["created"] == 1).then_some(())
    })
    .await
    .unwrap();
    state.stop();
    for i in 0..5 {
        carol
            .create_task(CreateTaskRequest {
                title: format!("during {i}"),
                ..CreateTaskRequest::default()
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    state.restart().unwrap();
    eventually(Duration::from_secs(90), async || {
        (stats(&analytics, "carol")["created"] == 6).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "after the outage carol has {} created;\nanalytics:\n{}\nits sidecar:\n{}",
            stats(&analytics, "carol")["created"],
            tail(&analytics.service.log()),
            tail(&analytics.sidecar.log())
        )
    });
    assert!(
        analytics.service.log().contains("RETRY"),
        "the outage was answered with RETRY"
    );
}
