//! Task events through real daprd sidecars, on Redis Streams and on Kafka: order, the
//! outbox across broker, sidecar and service failures, and a rejected API token.
//!
//! One Redis and one Kafka serve every test that does not stop its broker; each test has
//! its own topic and subscriber app id, so tests run concurrently without cross-talk.
//! Tests that stop a broker start their own.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use taskmesh_integration::client::{TaskClient, task_client};
use taskmesh_integration::kafka_broker::KafkaBroker;
use taskmesh_integration::net::free_port;
use taskmesh_integration::recorder::{Received, Recorder};
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{
    Broker, Daprd, DaprdOptions, MAX_BODY_BYTES, Resources, outbox_max_batch_bytes,
};
use taskmesh_proto::tasks::v1::*;

const SECRET: &str = "integration-secret-0123456789abcdef0123456789abcdef";
const PUBSUB: &str = "taskmesh-pubsub";

/// The brokers shared by the tests that keep them running.
struct Shared {
    redis: RedisServer,
    kafka: Option<KafkaBroker>,
}

fn shared(broker: Broker) -> &'static Mutex<Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        Mutex::new(Shared {
            redis: RedisServer::start().expect("redis"),
            kafka: None,
        })
    });
    if broker == Broker::Kafka {
        let mut guard = shared.lock().unwrap();
        if guard.kafka.is_none() {
            guard.kafka = Some(KafkaBroker::start().expect("kafka"));
        }
    }
    shared
}

fn addresses(broker: Broker) -> (String, Option<String>) {
    let guard = shared(broker).lock().unwrap();
    (
        guard.redis.addr(),
        guard.kafka.as_ref().map(KafkaBroker::bootstrap),
    )
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// task-service with its sidecar, and a recording subscriber with its own.
struct Stack {
    _resources: Resources,
    dir: tempfile::TempDir,
    topic: String,
    task: ServiceProcess,
    task_sidecar: Daprd,
    recorder: Recorder,
    _recorder_sidecar: Daprd,
}

#[derive(Default)]
struct StackOptions {
    /// The token the task-service sidecar requires, and the one task-service sends.
    sidecar_token: Option<&'static str>,
    service_token: Option<&'static str>,
    /// task-service's sidecar's `--max-body-size` (task-service is told the matching
    /// TASKMESH_OUTBOX_MAX_BATCH_BYTES); `MAX_BODY_BYTES` when `None`.
    max_body_bytes: Option<u64>,
    /// More settings for task-service.
    task_env: Vec<(&'static str, &'static str)>,
}

async fn stack(broker: Broker, redis: &str, kafka: Option<&str>, options: StackOptions) -> Stack {
    let resources = Resources::new(broker, redis, kafka).unwrap();
    resources.open_topics().unwrap();
    let topic = unique("task-events");
    let recorder = Recorder::start(PUBSUB, &[&topic]).await.unwrap();
    let recorder_sidecar = Daprd::start(DaprdOptions {
        app_id: unique("test-subscriber"),
        app_port: Some(recorder.port()),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sidecar_grpc = free_port().unwrap();
    let max_body_bytes = options.max_body_bytes.unwrap_or(MAX_BODY_BYTES);
    let mut env = vec![
        (
            "DATABASE_URL".to_owned(),
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("tasks.db").display()
            ),
        ),
        ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
    ];
    env.extend(taskmesh_integration::services::unlimited());
    env.extend([
        ("DAPR_GRPC_PORT".to_owned(), sidecar_grpc.to_string()),
        ("TASKMESH_TOPIC_TASK_EVENTS".to_owned(), topic.clone()),
        ("TASKMESH_SHUTDOWN_GRACE_SECS".to_owned(), "2".to_owned()),
        (
            "TASKMESH_OUTBOX_MAX_BATCH_BYTES".to_owned(),
            outbox_max_batch_bytes(max_body_bytes).to_string(),
        ),
    ]);
    env.extend(
        options
            .task_env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    if let Some(token) = options.service_token {
        env.push(("DAPR_API_TOKEN".to_owned(), token.to_owned()));
    }
    let task = ServiceProcess::start("task-service", env).unwrap();
    let task_sidecar = Daprd::start(DaprdOptions {
        app_id: "task-service".into(),
        app_port: Some(task.port()),
        grpc_port: Some(sidecar_grpc),
        resources: vec![resources.path().to_owned()],
        dapr_api_token: options.sidecar_token.map(str::to_owned),
        max_body_bytes: Some(max_body_bytes),
        ..DaprdOptions::default()
    })
    .unwrap();
    Stack {
        _resources: resources,
        dir,
        topic,
        task,
        task_sidecar,
        recorder,
        _recorder_sidecar: recorder_sidecar,
    }
}

type Client = TaskClient;

async fn client(stack: &Stack, user: &str) -> Client {
    task_client(&stack.task.endpoint(), SECRET, user).unwrap()
}

fn new_task(title: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        title: title.into(),
        ..CreateTaskRequest::default()
    }
}

fn settle(broker: Broker) -> Duration {
    match broker {
        Broker::Redis => Duration::from_secs(30),
        Broker::Kafka => Duration::from_secs(90),
    }
}

/// One test at a time: each runs two sidecars, a service and load, which is all two
/// cores can take without turning timeouts into noise.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod redis_streams {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _serial = super::one_at_a_time().await;
                    super::$name(taskmesh_integration::sidecar::Broker::Redis).await;
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _serial = super::one_at_a_time().await;
                    super::$name(taskmesh_integration::sidecar::Broker::Kafka).await;
                }
            )*
        }
    };
}

on_both_brokers!(
    a_tasks_life_arrives_in_order_with_the_documented_events,
    events_wait_in_the_outbox_while_the_broker_is_down,
    a_killed_task_service_loses_no_committed_event,
    a_killed_sidecar_loses_no_committed_event,
    a_rejected_api_token_is_logged_and_events_wait,
    a_backlog_larger_than_the_sidecar_takes_is_delivered_whole,
    an_event_the_sidecar_refuses_is_parked_and_the_rest_flow_on,
);

async fn a_tasks_life_arrives_in_order_with_the_documented_events(broker: Broker) {
    let (redis, kafka) = addresses(broker);
    let stack = stack(broker, &redis, kafka.as_deref(), StackOptions::default()).await;
    let mut alice = client(&stack, "alice").await;
    let task = alice
        .create_task(CreateTaskRequest {
            title: "Renew passport".into(),
            tags: vec!["admin".into()],
            ..CreateTaskRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = task.id.clone();
    alice
        .update_task(UpdateTaskRequest {
            id: id.clone(),
            priority: Some(Priority::Urgent as i32),
            ..UpdateTaskRequest::default()
        })
        .await
        .unwrap();
    for complete in [true, false] {
        if complete {
            alice
                .complete_task(CompleteTaskRequest {
                    id: id.clone(),
                    expected_version: None,
                })
                .await
                .unwrap();
        } else {
            alice
                .reopen_task(ReopenTaskRequest {
                    id: id.clone(),
                    expected_version: None,
                })
                .await
                .unwrap();
        }
    }
    alice
        .delete_task(DeleteTaskRequest {
            id: id.clone(),
            expected_version: Some(4),
        })
        .await
        .unwrap();

    let mut events = stack
        .recorder
        .wait_for_ids(5, settle(broker))
        .await
        .unwrap();
    assert_eq!(events.len(), 5, "each event once when nothing failed");
    if broker == Broker::Redis {
        // Dapr's Redis Streams consumer hands messages to `concurrency` workers, so a
        // subscriber may see one task's events out of order; the data's version says
        // which is newer (and consumers rely on it). Kafka keeps the order per task.
        events.sort_by_key(|e| e.data["version"].as_i64());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "taskmesh.task.created.v1",
            "taskmesh.task.updated.v1",
            "taskmesh.task.completed.v1",
            "taskmesh.task.reopened.v1",
            "taskmesh.task.deleted.v1",
        ],
        "in order on {broker:?}"
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.subject.as_deref(),
            Some(id.as_str()),
            "subject is the task id"
        );
        assert_eq!(event.topic, stack.topic);
        assert_eq!(event.data["version"], i as i64 + 1);
        assert_eq!(event.data["owner_id"], "alice");
        assert_eq!(event.data["task"]["id"], id.as_str());
        uuid::Uuid::parse_str(&event.id).expect("our event id survives daprd");
    }
    assert_eq!(
        events[1].data["changed_fields"],
        serde_json::json!(["priority"])
    );
    assert_eq!(events[1].data["task"]["priority"], "urgent");
    assert_eq!(events[2].data["task"]["completed"], true);
    // The relay counts an event after the sidecar accepted it, which may be a moment after
    // the subscriber saw it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !stack
        .task
        .metrics()
        .contains("taskmesh_outbox_published_events_total 5")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stack.task.metrics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every created task's `created` event, by task id.
fn created_ids(events: &[Received]) -> HashSet<String> {
    events
        .iter()
        .filter(|e| e.event_type == "taskmesh.task.created.v1")
        .filter_map(|e| e.subject.clone())
        .collect()
}

/// Creates `n` tasks with `concurrency` callers; returns the ids that were answered.
async fn create_many(client: &Client, n: usize, concurrency: usize) -> (HashSet<String>, usize) {
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (mut client, answered, failed, next) = (
            client.clone(),
            answered.clone(),
            failed.clone(),
            next.clone(),
        );
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return;
                }
                match client.create_task(new_task(&format!("task {i}"))).await {
                    Ok(task) => {
                        answered.lock().unwrap().insert(task.into_inner().id);
                    }
                    Err(_) => *failed.lock().unwrap() += 1,
                }
            }
        })
    });
    futures::future::join_all(workers).await;
    let ids = answered.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();
    (ids, failed)
}

/// Every task that exists in task-service (what was committed).
async fn committed(client: &mut Client) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(ListTasksRequest {
                page_size: 500,
                page_token: token.clone(),
                ..ListTasksRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

async fn events_wait_in_the_outbox_while_the_broker_is_down(broker: Broker) {
    // This test stops its broker: it gets its own.
    let mut redis = RedisServer::start().unwrap();
    let mut kafka = match broker {
        Broker::Kafka => Some(KafkaBroker::start().unwrap()),
        Broker::Redis => None,
    };
    let stack = stack(
        broker,
        &redis.addr(),
        kafka.as_ref().map(KafkaBroker::bootstrap).as_deref(),
        StackOptions::default(),
    )
    .await;
    let alice = client(&stack, "alice").await;
    // A first event proves the path works before the broker goes away.
    let (first, _) = create_many(&alice, 1, 1).await;
    stack
        .recorder
        .wait_for_ids(1, settle(broker))
        .await
        .unwrap();

    match kafka.as_mut() {
        Some(kafka) => kafka.stop(),
        None => redis.stop(),
    }
    let started = std::time::Instant::now();
    let (ids, failed) = create_many(&alice, 500, 16).await;
    assert_eq!(failed, 0, "the API never fails because the broker is down");
    assert_eq!(ids.len(), 500);
    let remaining = Duration::from_secs(10).saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    match kafka.as_mut() {
        Some(kafka) => kafka.restart().unwrap(),
        None => redis.restart().unwrap(),
    }

    let expected: HashSet<String> = ids.union(&first).cloned().collect();
    let events = stack
        .recorder
        .wait_until(settle(broker) * 2, |events| {
            created_ids(events).is_superset(&expected)
        })
        .await
        .unwrap();
    assert!(created_ids(&events).is_superset(&expected));
}

async fn a_killed_task_service_loses_no_committed_event(broker: Broker) {
    let (redis, kafka) = addresses(broker);
    let mut stack = stack(broker, &redis, kafka.as_deref(), StackOptions::default()).await;
    let alice = client(&stack, "alice").await;
    let pid = stack.task.pid().unwrap();
    let creating = tokio::spawn({
        let alice = alice.clone();
        async move { create_many(&alice, 2000, 16).await }
    });
    // Kill it mid-stream: some creates are answered, some are in flight, events wait.
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let (answered, _failed) = creating.await.unwrap();
    killer.await.unwrap();
    stack.task.kill();
    stack.task.restart().unwrap();

    let mut alice = client(&stack, "alice").await;
    let committed = committed(&mut alice).await;
    assert!(
        committed.is_superset(&answered),
        "every answered create was committed"
    );
    assert!(!committed.is_empty());
    let events = stack
        .recorder
        .wait_until(settle(broker) * 2, |events| {
            created_ids(events).is_superset(&committed)
        })
        .await
        .unwrap();
    assert_eq!(
        created_ids(&events),
        committed,
        "one event per committed task, no other"
    );
    let _ = &stack.dir;
}

async fn a_killed_sidecar_loses_no_committed_event(broker: Broker) {
    let (redis, kafka) = addresses(broker);
    let mut stack = stack(broker, &redis, kafka.as_deref(), StackOptions::default()).await;
    let alice = client(&stack, "alice").await;
    let pid = stack.task_sidecar.pid().unwrap();
    let creating = tokio::spawn({
        let alice = alice.clone();
        async move { create_many(&alice, 1000, 16).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.task_sidecar.kill();
    stack.task_sidecar.restart().unwrap();
    let (answered, failed) = creating.await.unwrap();
    assert_eq!(failed, 0, "the API does not depend on the sidecar");
    assert_eq!(answered.len(), 1000);
    let events = stack
        .recorder
        .wait_until(settle(broker) * 2, |events| {
            created_ids(events).is_superset(&answered)
        })
        .await
        .unwrap();
    assert_eq!(created_ids(&events), answered);
}

async fn a_rejected_api_token_is_logged_and_events_wait(broker: Broker) {
    let (redis, kafka) = addresses(broker);
    let stack = stack(
        broker,
        &redis,
        kafka.as_deref(),
        StackOptions {
            sidecar_token: Some("the-right-token"),
            service_token: Some("a-wrong-token"),
            ..StackOptions::default()
        },
    )
    .await;
    let mut alice = client(&stack, "alice").await;
    alice.create_task(new_task("waits")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let log = stack.task.log();
        let backlog = stack
            .task
            .metrics()
            .contains("taskmesh_outbox_backlog_events 1");
        if log.contains("DAPR_API_TOKEN") && backlog {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no clear token error in the log (or no backlog):\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stack.recorder.events().is_empty());
}

/// A sidecar that takes at most 64 KiB per request, and a backlog of 200 events of about
/// 5 KB (1 MB) built while it was down: the relay's batch of up to 500 events goes out in
/// requests below the limit, and every event arrives.
async fn a_backlog_larger_than_the_sidecar_takes_is_delivered_whole(broker: Broker) {
    let (redis, kafka) = addresses(broker);
    let mut stack = stack(
        broker,
        &redis,
        kafka.as_deref(),
        StackOptions {
            max_body_bytes: Some(64 * 1024),
            ..StackOptions::default()
        },
    )
    .await;
    let mut alice = client(&stack, "alice").await;
    stack.task_sidecar.kill();
    let mut ids = HashSet::new();
    for i in 0..200 {
        let task = alice
            .create_task(CreateTaskRequest {
                description: format!("{i:04}").repeat(1000),
                ..new_task(&format!("large {i}"))
            })
            .await
            .unwrap()
            .into_inner();
        ids.insert(task.id);
    }
    stack.task_sidecar.restart().unwrap();
    let events = stack
        .recorder
        .wait_until(settle(broker) * 2, |events| {
            created_ids(events).is_superset(&ids)
        })
        .await
        .unwrap();
    assert_eq!(created_ids(&events), ids);
    // Not one request refused: the relay never sent one above the limit (were it to, the
    // sidecar would refuse it whole, RESOURCE_EXHAUSTED, and the relay would then send
    // its events one at a time, and say so).
    let log = stack.task.log();
    assert!(!log.contains("one at a time"), "{log}");
}

/// A real refusal: an outbox row whose CloudEvent daprd cannot parse (it answers
/// INVALID_ARGUMENT for the whole bulk request, and for the event alone). With
/// TASKMESH_OUTBOX_MAX_ATTEMPTS=2 it is parked with the sidecar's reason, the later event
/// of its task waits behind it, and everyone else's events are delivered.
async fn an_event_the_sidecar_refuses_is_parked_and_the_rest_flow_on(broker: Broker) {
    use sea_orm::{ConnectionTrait, Statement};

    let (redis, kafka) = addresses(broker);
    let stack = stack(
        broker,
        &redis,
        kafka.as_deref(),
        StackOptions {
            task_env: vec![("TASKMESH_OUTBOX_MAX_ATTEMPTS", "2")],
            ..StackOptions::default()
        },
    )
    .await;
    let alice = client(&stack, "alice").await;
    let database_url = format!(
        "sqlite://{}?mode=rw",
        stack.dir.path().join("tasks.db").display()
    );
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    let poison_task = uuid::Uuid::new_v4().to_string();
    let later_id = uuid::Uuid::new_v4().to_string();
    let later = serde_json::json!({
        "specversion": "1.0", "id": later_id, "source": "taskmesh/task-service",
        "type": "taskmesh.task.deleted.v1", "subject": poison_task,
        "datacontenttype": "application/json", "data": {}
    });
    for (event_id, payload) in [
        (
            uuid::Uuid::new_v4().to_string(),
            "this is not a CloudEvent".to_owned(),
        ),
        (later_id.clone(), later.to_string()),
    ] {
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, published_at, attempts) \
             VALUES (?, ?, 'taskmesh.task.created.v1', ?, 1, NULL, 0)",
            [event_id.into(), poison_task.clone().into(), payload.into()],
        ))
        .await
        .unwrap();
    }
    // A refusal counts only in a cycle where the sidecar takes another event: create
    // tasks until the row is parked.
    let mut created = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let parked = loop {
        let (ids, failed) = create_many(&alice, 5, 1).await;
        assert_eq!(failed, 0);
        created.extend(ids);
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT task_id, attempts, reason FROM outbox_parked",
            ))
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            let task: String = row.try_get("", "task_id").unwrap();
            let attempts: i32 = row.try_get("", "attempts").unwrap();
            let reason: String = row.try_get("", "reason").unwrap();
            break (task, attempts, reason);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not parked:\n{}",
            stack.task.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(parked.0, poison_task);
    assert_eq!(parked.1, 2);
    assert!(parked.2.starts_with("InvalidArgument"), "{}", parked.2);
    // And the rest flows on.
    let (ids, _) = create_many(&alice, 20, 4).await;
    created.extend(ids);
    let events = stack
        .recorder
        .wait_until(settle(broker), |events| {
            created_ids(events).is_superset(&created)
        })
        .await
        .unwrap();
    assert_eq!(created_ids(&events), created);
    assert!(
        events.iter().all(|e| e.id != later_id),
        "the parked task's later event waits behind it"
    );
    assert!(
        stack
            .task
            .metrics()
            .contains("taskmesh_outbox_parked_total 1"),
        "{}",
        stack.task.metrics()
    );
    let _ = db.close().await;
}
