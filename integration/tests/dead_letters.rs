//! A consumer that fails every delivery of one event, on Redis Streams and on Kafka, with
//! real daprd, task-service and recurring-service: after the resiliency policy's retries
//! the event is on recurring-service's own dead-letter topic and kept in its state store;
//! the consumer keeps going (later events are applied); after the fix an operator's
//! replay applies it once. A poison event (DROP) is kept at once, fails again when
//! replayed, and is discarded by the operator.
//!
//! The failure is a real one: task-service started without recurring-service in its
//! TASKMESH_TRUSTED_CALLERS (a roll-out mistake) answers PERMISSION_DENIED to the next
//! occurrence, which recurring-service RETRYs. The fix is task-service restarted with the
//! right setting. The one test-only change is a shorter retry budget in the resiliency
//! policy (3 retries instead of 20), so that the dead letter comes in seconds.
//!
//! The sidecars resolve app ids with a SQLite name resolver of their own, not mDNS, which
//! is host-wide: another test's task-service (trusting recurring-service) would otherwise
//! answer this test's recurring-service.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use taskmesh_integration::apps::{App, Stack, eventually, private_name_resolution, tail};
use taskmesh_integration::client::{TaskClient, task_client};
use taskmesh_integration::kafka_broker::KafkaBroker;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::sidecar::{Broker, Resources, http_request};
use taskmesh_proto::tasks::v1::*;

const SECRET: &str = "dead-letter-secret-0123456789abcdef0123456789abcdef";
const APP_TOKEN: &str = "dead-letter-app-token-0123456789";
const RECURRING: &str = "recurring-service";

/// `deadletters/list` of recurring-service, through its own sidecar (what `just
/// deadletters recurring-service` calls).
fn dead_letters(recurring: &App) -> serde_json::Value {
    recurring
        .invoke_ok(RECURRING, "deadletters/list", &json!({}))
        .unwrap()
}

/// The kept dead letter of the completion of task `task_id`, if any.
fn dead_letter_of(recurring: &App, task_id: &str) -> Option<serde_json::Value> {
    dead_letters(recurring)["dead_letters"]
        .as_array()?
        .iter()
        .find(|letter| letter["data"]["task"]["id"] == task_id)
        .cloned()
}

async fn create_recurring(alice: &mut TaskClient, title: &str) -> Task {
    let due = chrono::Utc::now() + chrono::Duration::days(1);
    alice
        .create_task(CreateTaskRequest {
            title: title.into(),
            due_time: Some(prost_types::Timestamp {
                seconds: due.timestamp(),
                nanos: 0,
            }),
            recurrence: Some("FREQ=DAILY;COUNT=5".into()),
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn complete(alice: &mut TaskClient, task: &Task) {
    alice
        .complete_task(CompleteTaskRequest {
            id: task.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
}

/// alice's open tasks titled `title` (next occurrences keep the title).
async fn open_titled(alice: &mut TaskClient, title: &str) -> Vec<Task> {
    alice
        .list_tasks(ListTasksRequest {
            status: StatusFilter::Open as i32,
            page_size: 100,
            ..ListTasksRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .filter(|task| task.title == title)
        .collect()
}

async fn a_failed_event_is_kept_and_replayed_once_after_the_fix(broker: Broker) {
    let started = Instant::now();
    let redis = RedisServer::start().unwrap();
    let kafka = (broker == Broker::Kafka).then(|| KafkaBroker::start().unwrap());
    let resources = Resources::new(
        broker,
        &redis.addr(),
        kafka.as_ref().map(KafkaBroker::bootstrap).as_deref(),
    )
    .unwrap();
    resources
        .replace("resiliency.yaml", "maxRetries: 20", "maxRetries: 3")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack {
        token_seed: Some(APP_TOKEN.into()),
        config: Some(private_name_resolution(dir.path()).unwrap()),
        ..Stack::default()
    };
    // The roll-out mistake: recurring-service may not create tasks for users.
    let mut tasks = stack
        .start_task_service(
            &resources,
            dir.path(),
            SECRET,
            vec![(
                "TASKMESH_TRUSTED_CALLERS".into(),
                "taskmesh-ops=CreateTask".into(),
            )],
        )
        .unwrap();
    let recurring = stack.start(RECURRING, &resources, vec![]).unwrap();
    let mut alice = task_client(&tasks.service.endpoint(), SECRET, "alice").unwrap();

    // One completion that recurring-service cannot turn into a next occurrence.
    let failed = create_recurring(&mut alice, "Water plants").await;
    complete(&mut alice, &failed).await;
    let letter = eventually(Duration::from_secs(90), async || {
        dead_letter_of(&recurring, &failed.id)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no dead letter after {:?}: {}\nrecurring-service:\n{}\nits sidecar:\n{}",
            started.elapsed(),
            dead_letters(&recurring),
            tail(&recurring.service.log()),
            tail(&recurring.sidecar.log())
        )
    });
    let dead_lettered_after = started.elapsed();
    assert_eq!(letter["type"], "taskmesh.task.completed.v1", "{letter}");
    assert_eq!(letter["topic"], "task-events", "{letter}");
    assert_eq!(letter["source"], "taskmesh/task-service", "{letter}");
    let reason = letter["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("PermissionDenied") || reason.contains("PERMISSION_DENIED"),
        "the reason is kept: {letter}"
    );
    let event_id = letter["id"].as_str().unwrap().to_owned();
    let deliveries = recurring
        .service
        .log()
        .matches("RETRY: will be delivered again")
        .count();
    assert!(
        deliveries >= 4,
        "1 delivery + 3 retries before the dead letter, saw {deliveries}"
    );
    assert!(open_titled(&mut alice, "Water plants").await.is_empty());

    // The fix: task-service restarted with its default trusted callers.
    tasks.service.set_env("TASKMESH_TRUSTED_CALLERS", None);
    tasks.service.stop();
    tasks.service.restart().unwrap();

    // The consumer kept going: a later completion is applied.
    let later = create_recurring(&mut alice, "Feed the cat").await;
    complete(&mut alice, &later).await;
    eventually(Duration::from_secs(60), async || {
        (open_titled(&mut alice, "Feed the cat").await.len() == 1).then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the later completion was not applied\nrecurring-service:\n{}",
            tail(&recurring.service.log())
        )
    });
    assert!(
        open_titled(&mut alice, "Water plants").await.is_empty(),
        "the dead letter is not applied without a replay"
    );
    assert!(dead_letter_of(&recurring, &failed.id).is_some());

    // The operator replays it: applied once, and no longer kept.
    let replayed = recurring
        .invoke_ok(RECURRING, "deadletters/replay", &json!({"id": event_id}))
        .unwrap();
    assert_eq!(replayed["applied"], 1, "{replayed}");
    assert_eq!(replayed["failed"], 0, "{replayed}");
    let successors = open_titled(&mut alice, "Water plants").await;
    assert_eq!(successors.len(), 1, "{successors:?}");
    assert_eq!(
        successors[0].recurrence.as_deref(),
        Some("FREQ=DAILY;COUNT=4")
    );
    assert_eq!(dead_letters(&recurring)["kept"], 0);
    // Replaying it again finds nothing; replaying everything changes nothing.
    let (status, body) = recurring
        .invoke(RECURRING, "deadletters/replay", &json!({"id": event_id}))
        .unwrap();
    assert!(
        status >= 400 && body.contains("no dead letter"),
        "{status} {body}"
    );
    let all = recurring
        .invoke_ok(RECURRING, "deadletters/replay", &json!({"all": true}))
        .unwrap();
    assert_eq!(all["applied"], 0, "{all}");
    assert_eq!(open_titled(&mut alice, "Water plants").await.len(), 1);
    assert_eq!(open_titled(&mut alice, "Feed the cat").await.len(), 1);

    // Poison (a type no version of recurring-service knows) is DROPped and kept at once;
    // replayed it fails again and stays; an operator discards it.
    let token = tasks.token.clone().unwrap();
    let (status, body) = http_request(
        tasks.sidecar.http_port(),
        "POST",
        "/v1.0/publish/taskmesh-pubsub/task-events",
        &[
            ("Content-Type", "application/cloudevents+json"),
            ("dapr-api-token", &token),
        ],
        &json!({
            "specversion": "1.0", "id": "poison-1", "source": "test",
            "type": "taskmesh.task.exploded.v1", "datacontenttype": "application/json",
            "data": {"x": 1},
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(status, 204, "{body}");
    let poison = eventually(Duration::from_secs(60), async || {
        dead_letters(&recurring)["dead_letters"]
            .as_array()?
            .iter()
            .find(|letter| letter["id"] == "poison-1")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("poison not kept:\n{}", tail(&recurring.service.log())));
    assert!(
        poison["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown event type"),
        "{poison}"
    );
    assert_eq!(poison["data"]["x"], 1, "{poison}");
    let replayed = recurring
        .invoke_ok(RECURRING, "deadletters/replay", &json!({"all": true}))
        .unwrap();
    assert_eq!(replayed["failed"], 1, "{replayed}");
    let kept = dead_letters(&recurring);
    assert_eq!(kept["kept"], 1, "{kept}");
    assert_eq!(kept["dead_letters"][0]["replays"], 1, "{kept}");
    let discarded = recurring
        .invoke_ok(RECURRING, "deadletters/discard", &json!({"id": "poison-1"}))
        .unwrap();
    assert_eq!(discarded["discarded"], 1, "{discarded}");
    assert_eq!(dead_letters(&recurring)["kept"], 0);

    let metrics = recurring.service.metrics();
    for line in [
        "taskmesh_dead_letters_kept_total 2",
        r#"taskmesh_dead_letters_replayed_total{outcome="applied"} 1"#,
        r#"taskmesh_dead_letters_replayed_total{outcome="failed"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    eprintln!(
        "{}: dead-lettered after {dead_lettered_after:?} ({deliveries} deliveries), whole test {:?}",
        broker.name(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_is_kept_and_replayed_once_after_the_fix_on_redis() {
    a_failed_event_is_kept_and_replayed_once_after_the_fix(Broker::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_is_kept_and_replayed_once_after_the_fix_on_kafka() {
    a_failed_event_is_kept_and_replayed_once_after_the_fix(Broker::Kafka).await;
}
