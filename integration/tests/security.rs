//! Nobody acts as another user, with real sidecars: an app holding analytics-service's
//! tokens cannot reach task-service's or notification-service's user data, directly or
//! through its own sidecar with forged headers, nor publish a forged event; while
//! recurring-service's real roll-over still works. And users reach their own
//! notifications, preferences and statistics over the public API, never another's.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use dapr::dapr::proto::common::v1::InvokeRequest;
use dapr::dapr::proto::runtime::v1::PublishEventRequest;
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use serde_json::json;
use taskmesh_integration::apps::{App, Stack, eventually};
use taskmesh_integration::client::task_client;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::sidecar::{Broker, Resources};
use taskmesh_proto::analytics::v1::{GetStatsRequest, stats_service_client::StatsServiceClient};
use taskmesh_proto::notifications::v1 as notes;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::*;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

const SECRET: &str = "security-test-secret-0123456789abcdef0123456789";

/// Both tests run the four apps under their real app ids, which self-hosted Dapr resolves
/// host-wide (mDNS): they take turns, as in flow.rs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn channel(endpoint: String) -> Channel {
    Channel::from_shared(endpoint).unwrap().connect_lazy()
}

fn headers(request: &mut MetadataMap, pairs: &[(&'static str, &str)]) {
    for (k, v) in pairs {
        request.append(*k, v.parse().unwrap());
    }
}

/// Every TaskService method, each called once with `pairs` as metadata: the codes.
async fn every_method(
    client: &mut TaskServiceClient<Channel>,
    pairs: &[(&'static str, &str)],
) -> Vec<(&'static str, Code)> {
    macro_rules! call {
        ($name:literal, $method:ident, $message:expr) => {{
            let mut request = tonic::Request::new($message);
            headers(request.metadata_mut(), pairs);
            let code = match client.$method(request).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            };
            ($name, code)
        }};
    }
    let id = uuid::Uuid::now_v7().to_string();
    vec![
        call!(
            "CreateTask",
            create_task,
            CreateTaskRequest {
                title: "forged".into(),
                ..Default::default()
            }
        ),
        call!("GetTask", get_task, GetTaskRequest { id: id.clone() }),
        call!("ListTasks", list_tasks, ListTasksRequest::default()),
        call!(
            "UpdateTask",
            update_task,
            UpdateTaskRequest {
                id: id.clone(),
                title: Some("x".into()),
                ..Default::default()
            }
        ),
        call!(
            "CompleteTask",
            complete_task,
            CompleteTaskRequest {
                id: id.clone(),
                expected_version: None
            }
        ),
        call!(
            "ReopenTask",
            reopen_task,
            ReopenTaskRequest {
                id: id.clone(),
                expected_version: None
            }
        ),
        call!(
            "DeleteTask",
            delete_task,
            DeleteTaskRequest {
                id,
                expected_version: None
            }
        ),
    ]
}

fn start_all(stack: &Stack, resources: &Resources, dir: &std::path::Path) -> [App; 4] {
    [
        stack
            .start_task_service(resources, dir, SECRET, vec![])
            .unwrap(),
        stack.start("recurring-service", resources, vec![]).unwrap(),
        stack.start("analytics-service", resources, vec![]).unwrap(),
        stack
            .start("notification-service", resources, vec![])
            .unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_apps_tokens_act_for_nobody() {
    let _turn = SERIAL.lock().await;
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let stack = Stack {
        token_seed: Some("security-app-token".into()),
        scheduler: Some(scheduler.addr()),
        ..Stack::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let [tasks, _recurring, analytics, notifications] = start_all(&stack, &resources, dir.path());
    let stolen = stack.token("analytics-service").unwrap();

    let mut alice = task_client(&tasks.service.endpoint(), SECRET, "alice").unwrap();
    let mine = alice
        .create_task(CreateTaskRequest {
            title: "alice's".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // (1) Straight to task-service's port, claiming to be recurring-service through Dapr.
    let mut direct = TaskServiceClient::new(channel(tasks.service.endpoint()));
    let forged = [
        ("taskmesh-on-behalf-of", "alice"),
        ("dapr-caller-app-id", "recurring-service"),
        ("dapr-api-token", stolen.as_str()),
    ];
    for (method, code) in every_method(&mut direct, &forged).await {
        assert_eq!(code, Code::Unauthenticated, "direct {method}");
    }

    // (2) Through its own sidecar (gRPC proxying, as recurring-service calls), with the
    // caller id forged too: the sidecar names the real caller, and task-service refuses.
    let mut proxied = TaskServiceClient::new(channel(analytics.sidecar.grpc_endpoint()));
    let forged = [
        ("dapr-app-id", "task-service"),
        ("dapr-api-token", stolen.as_str()),
        ("taskmesh-on-behalf-of", "alice"),
        ("dapr-caller-app-id", "recurring-service"),
    ];
    for (method, code) in every_method(&mut proxied, &forged).await {
        assert!(
            matches!(code, Code::PermissionDenied | Code::Unauthenticated),
            "through the sidecar, {method}: {code:?}"
        );
    }
    // Without the forged caller id, the same: analytics-service is not trusted.
    for (method, code) in every_method(&mut proxied, &forged[..3]).await {
        assert_eq!(
            code,
            Code::PermissionDenied,
            "as analytics-service, {method}"
        );
    }

    // (3) notification-service names any user only for task-service and operators.
    let (status, body) = analytics
        .invoke(
            "notification-service",
            "notifications/list",
            &json!({"user_id": "alice"}),
        )
        .unwrap();
    assert!(status == 403 || status == 500, "{status} {body}");
    assert!(
        body.contains("may not call") || body.contains("PermissionDenied"),
        "{body}"
    );
    // ...and its AppCallback port wants its own sidecar's token, not another's.
    let mut callback = AppCallbackClient::new(channel(notifications.service.endpoint()));
    let mut request = tonic::Request::new(InvokeRequest {
        method: "notifications/list".into(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: br#"{"user_id":"alice"}"#.to_vec(),
        }),
        ..Default::default()
    });
    headers(
        request.metadata_mut(),
        &[
            ("dapr-api-token", &stolen),
            ("dapr-caller-app-id", "task-service"),
        ],
    );
    let refused = callback.on_invoke(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // (4) A forged `completed` event for alice's task: refused by analytics' own sidecar.
    let forged_event = json!({
        "specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(), "source": "taskmesh/task-service",
        "type": "taskmesh.task.completed.v1", "datacontenttype": "application/json",
        "subject": mine.id, "data": {"task": {"id": mine.id, "owner_id": "alice"}},
    });
    let mut publisher = DaprClient::connect(analytics.sidecar.grpc_endpoint())
        .await
        .unwrap();
    let mut request = tonic::Request::new(PublishEventRequest {
        pubsub_name: "taskmesh-pubsub".into(),
        topic: "task-events".into(),
        data: forged_event.to_string().into_bytes(),
        data_content_type: "application/cloudevents+json".into(),
        metadata: HashMap::new(),
    });
    headers(request.metadata_mut(), &[("dapr-api-token", &stolen)]);
    let refused = publisher.publish_event(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // (5) Meanwhile the real path works: completing a recurring task makes recurring-service
    // create the next occurrence for alice, through task-service's sidecar.
    let due = chrono::Utc::now() + chrono::Duration::days(1);
    let first = alice
        .create_task(CreateTaskRequest {
            title: "Water plants".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            recurrence: Some("FREQ=DAILY".into()),
            ..Default::default()
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
    let next = eventually(Duration::from_secs(30), async || {
        let open = alice
            .list_tasks(ListTasksRequest::default())
            .await
            .ok()?
            .into_inner();
        open.tasks
            .into_iter()
            .find(|t| t.title == "Water plants" && t.id != first.id)
    })
    .await;
    assert!(
        next.is_some(),
        "no next occurrence: {}",
        tasks.sidecar.log()
    );
}

async fn authed<T>(message: T, user: &str) -> tonic::Request<T> {
    let token =
        taskmesh_shared::auth::mint(SECRET.as_bytes(), user, Duration::from_secs(600)).unwrap();
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reach_their_own_notifications_preferences_and_stats() {
    let _turn = SERIAL.lock().await;
    let redis = RedisServer::start().unwrap();
    let scheduler = Scheduler::start().unwrap();
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    let stack = Stack {
        token_seed: Some("public-api-token".into()),
        scheduler: Some(scheduler.addr()),
        ..Stack::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let [tasks, _recurring, _analytics, _notifications] = start_all(&stack, &resources, dir.path());
    let api = channel(tasks.service.endpoint());
    let mut inbox = notes::notification_service_client::NotificationServiceClient::new(api.clone());
    let prefs = notes::preference_service_client::PreferenceServiceClient::new(api.clone());
    let mut stats = StatsServiceClient::new(api);

    let mut alice = task_client(&tasks.service.endpoint(), SECRET, "alice").unwrap();
    let due = chrono::Utc::now() + chrono::Duration::days(2);
    alice
        .create_task(CreateTaskRequest {
            title: "Renew passport".into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();

    // alice sees her notification and her statistics...
    let list = |user: &'static str| {
        let mut inbox = inbox.clone();
        async move {
            inbox
                .list_notifications(authed(notes::ListNotificationsRequest::default(), user).await)
                .await
                .map(tonic::Response::into_inner)
                .unwrap_or_default()
        }
    };
    let hers = eventually(Duration::from_secs(30), async || {
        let page = list("alice").await;
        (!page.notifications.is_empty()).then_some(page)
    })
    .await
    .unwrap_or_else(|| panic!("alice's notification: {}", tasks.service.log()));
    assert_eq!(
        hers.notifications[0].kind(),
        notes::NotificationKind::DueTimeSet
    );
    assert_eq!(hers.unread, 1);
    let created = eventually(Duration::from_secs(30), async || {
        let s = stats
            .get_stats(authed(GetStatsRequest {}, "alice").await)
            .await
            .ok()?
            .into_inner();
        (s.created == 1).then_some(s)
    })
    .await;
    assert!(created.is_some(), "alice's stats");

    // ...bob sees none of it, and cannot ack it: her notification does not exist for him.
    let his = inbox
        .clone()
        .list_notifications(authed(notes::ListNotificationsRequest::default(), "bob").await)
        .await
        .unwrap()
        .into_inner();
    assert!(his.notifications.is_empty() && his.unread == 0, "{his:?}");
    let bobs_stats = stats
        .get_stats(authed(GetStatsRequest {}, "bob").await)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs_stats.created, 0);
    let id = hers.notifications[0].id.clone();
    let ack = |user: &'static str, ids: Vec<String>| {
        let mut inbox = inbox.clone();
        async move {
            inbox
                .ack_notifications(
                    authed(notes::AckNotificationsRequest { ids, all: false }, user).await,
                )
                .await
        }
    };
    assert_eq!(
        ack("bob", vec![id.clone()]).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        list("alice").await.unread,
        1,
        "bob's attempt changed nothing"
    );
    let acked = ack("alice", vec![id]).await.unwrap().into_inner();
    assert_eq!((acked.acked, acked.unread), (1, 0));

    // Preferences: alice's are hers; a bad one is refused with the field named.
    let set = |user: &'static str, email: &str| {
        let mut prefs = prefs.clone();
        let email = email.to_owned();
        async move {
            let preferences = notes::Preferences {
                email: Some(email),
                lead_time_secs: Some(1800),
                ..Default::default()
            };
            prefs
                .set_preferences(
                    authed(
                        notes::SetPreferencesRequest {
                            preferences: Some(preferences),
                        },
                        user,
                    )
                    .await,
                )
                .await
        }
    };
    let bad = set("alice", "not an address").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("email"), "{bad:?}");
    let stored = set("alice", "alice@example.com")
        .await
        .unwrap()
        .into_inner();
    assert!(stored.stored);
    assert_eq!(stored.email.as_deref(), Some("alice@example.com"));
    let get = |user: &'static str| {
        let mut prefs = prefs.clone();
        async move {
            prefs
                .get_preferences(authed(notes::GetPreferencesRequest {}, user).await)
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(
        get("alice").await.email.as_deref(),
        Some("alice@example.com")
    );
    let bobs = get("bob").await;
    assert!(!bobs.stored && bobs.email.is_none(), "{bobs:?}");
    let deleted = prefs
        .clone()
        .delete_preferences(authed(notes::DeletePreferencesRequest {}, "alice").await)
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert!(!get("alice").await.stored);

    // Without a token, nothing.
    let anonymous = inbox
        .list_notifications(tonic::Request::new(
            notes::ListNotificationsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}
