//! `just bench-consumers`: the subscriber services through real daprd on Redis.
//!
//! (0) the ceiling: a subscriber that does nothing (an AppCallback server in this process,
//!     the services' own router, acknowledging every event at once) behind its own daprd,
//!     on the same Redis, the same kind of events published the same way; measured first
//!     and last, each consumer's events/s is held to >= 0.5x of their mean;
//! (1) analytics-service: sustained events/s applying 10,000 task events of 200 users
//!     (each applied once, ETag-guarded), then the same 10,000 redelivered (dedup hits);
//! (2) recurring-service: completions/s, each creating the next task in task-service
//!     through Dapr service invocation;
//! (3) end-to-end time from `CompleteTask` returning to the next occurrence existing;
//! (4) notification-service: events/s for 10,000 dated new tasks (each a task record, a
//!     notification in its owner's inbox and a Jobs API reminder job), then redelivered.
//!
//! Each consumer reads a topic of its own, so that no other subscriber shares the two
//! cores during its phase, as none does the ceiling's. Every phase also reports the CPU
//! each process spent per event.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallbackServer;
use taskmesh_integration::apps::{Stack, private_name_resolution};
use taskmesh_integration::bench::{bulk_publish, env_or, metric, quiet, stack};
use taskmesh_integration::client::task_client;
use taskmesh_integration::cpu::{CpuMeter, describe};
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{Broker, Daprd, DaprdOptions, Resources};
use taskmesh_proto::tasks::v1::{
    CompleteTaskRequest, CreateTaskRequest, ListTasksRequest, StatusFilter,
};
use taskmesh_shared::callback::{Delivery, Outcome, Router, Subscription, TopicHandler};
use taskmesh_shared::events::{TaskEvent, TaskEventData, TaskEventKind, TaskSnapshot};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// On its own topic, so that its figures are not shared with analytics-service.
const NOTIFICATION_TOPIC: &str = "bench-notification-events";
/// analytics-service's topic: recurring-service reads `task-events` (its completions).
const ANALYTICS_TOPIC: &str = "bench-analytics-events";
/// The subscriber that does nothing reads this one.
const NULL_TOPIC: &str = "bench-null-events";
const PUBSUB: &str = "taskmesh-pubsub";
/// Target: each consumer's events/s against the ceiling's.
const TARGET_RATIO: f64 = 0.5;

/// Acknowledges every event at once; counts them.
#[derive(Default)]
struct Acknowledge {
    received: AtomicU64,
}

#[async_trait]
impl TopicHandler for Acknowledge {
    async fn handle(&self, _delivery: Delivery) -> Outcome {
        self.received.fetch_add(1, Ordering::Relaxed);
        Outcome::Success
    }
}

/// The subscriber that does nothing, served on a free port (its sidecar comes after).
async fn null_subscriber() -> anyhow::Result<(Arc<Acknowledge>, u16)> {
    let sink = Arc::new(Acknowledge::default());
    let router =
        Router::new().subscribe(Subscription::new(PUBSUB, NULL_TOPIC).otherwise(sink.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    // Served until the bench exits.
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AppCallbackServer::new(router))
            .serve_with_incoming(taskmesh_shared::net::incoming(listener)),
    );
    Ok((sink, port))
}

/// The ceiling: `events` published as every phase publishes them, until the subscriber
/// that does nothing has them all; events/s.
async fn null_ceiling(
    publisher: &str,
    sink: &Acknowledge,
    events: &[TaskEvent],
) -> anyhow::Result<f64> {
    let target = sink.received.load(Ordering::Relaxed) + events.len() as u64;
    let start = Instant::now();
    bulk_publish(publisher, NULL_TOPIC, events, 250).await?;
    while sink.received.load(Ordering::Relaxed) < target {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the subscriber that does nothing has {} of {target}",
            sink.received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(events.len() as f64 / start.elapsed().as_secs_f64())
}

fn creations(n: usize) -> Vec<TaskEvent> {
    (0..n)
        .map(|i| {
            event(
                TaskEventKind::Created,
                i % 200,
                uuid::Uuid::now_v7(),
                1,
                None,
            )
        })
        .collect()
}

fn event(
    kind: TaskEventKind,
    user: usize,
    task: uuid::Uuid,
    version: i64,
    recurrence: Option<&str>,
) -> TaskEvent {
    let now = chrono::Utc::now();
    TaskEvent::task(
        kind,
        TaskEventData {
            task: TaskSnapshot {
                id: task,
                owner_id: format!("user-{user}"),
                title: "bench".into(),
                description: String::new(),
                priority: "medium".into(),
                tags: vec![],
                due_time: Some(now + chrono::Duration::days(1)),
                time_zone: None,
                recurrence: recurrence.map(str::to_owned),
                completed: kind == TaskEventKind::Completed,
                completed_time: (kind == TaskEventKind::Completed).then_some(now),
                create_time: now,
                update_time: now,
                version,
                list_id: None,
                assignee_id: None,
            },
            changed_fields: vec![],
            version,
            owner_id: format!("user-{user}"),
            occurred_at: now,
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        },
    )
}

async fn wait_metric(
    service: &ServiceProcess,
    names: &[&str],
    target: f64,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let sum: f64 = names.iter().map(|n| metric(service, n)).sum();
        if sum >= target {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "stuck at {sum} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_or("BENCH_EVENTS", 10_000usize);
    let redis = RedisServer::start()?;
    let resources = Resources::new(Broker::Redis, &redis.addr(), None)?;
    // The bench publishes to topics of its own.
    resources.open_topics()?;
    let dir = tempfile::tempdir()?;
    // App ids resolve among this run's sidecars only (recurring-service calls
    // task-service by its id; mDNS would reach other stacks on the host).
    let names = private_name_resolution(dir.path())?;
    let stack = Stack {
        config: Some(names.clone()),
        ..stack()
    };
    let tasks = stack.start_task_service(&resources, dir.path(), SECRET, quiet())?;
    let mut env = quiet();
    env.push(("TASKMESH_TOPIC_TASK_EVENTS".into(), ANALYTICS_TOPIC.into()));
    let analytics = stack.start("analytics-service", &resources, env)?;
    let recurring = stack.start("recurring-service", &resources, quiet())?;
    let scheduler = Scheduler::start()?;
    let mut env = quiet();
    env.push((
        "TASKMESH_TOPIC_TASK_EVENTS".into(),
        NOTIFICATION_TOPIC.into(),
    ));
    let notifications = Stack {
        scheduler: Some(scheduler.addr()),
        ..stack
    }
    .start("notification-service", &resources, env)?;
    let (sink, sink_port) = null_subscriber().await?;
    let null_sidecar = Daprd::start(DaprdOptions {
        app_id: "bench-null-subscriber".into(),
        app_port: Some(sink_port),
        resources: vec![resources.path().to_owned()],
        config: Some(names),
        ..DaprdOptions::default()
    })?;
    let publisher = tasks.sidecar.grpc_endpoint();
    // Every phase publishes through task-service's sidecar, and every delivery goes
    // through Redis: both are in each phase's CPU.
    let shared = || {
        vec![
            ("publishing daprd".to_owned(), tasks.sidecar.pid()),
            ("redis".to_owned(), redis.pid()),
        ]
    };
    let meter = |processes: Vec<(String, Option<u32>)>| {
        CpuMeter::new(processes.into_iter().chain(shared()).collect())
    };

    // (0) the ceiling, first.
    let null_meter = meter(vec![
        ("daprd".into(), null_sidecar.pid()),
        CpuMeter::this_process("bench (subscriber + publisher)"),
    ]);
    let before = null_meter.read();
    let ceiling_first = null_ceiling(&publisher, &sink, &creations(n)).await?;
    let null_cpu = null_meter.per_event_us(&before, n as f64);
    eprintln!("subscriber that does nothing: {ceiling_first:.0} events/s");

    // (1) analytics: n events (creations spread over 200 users), then the same again.
    let events = creations(n);
    let applied = "taskmesh_analytics_events_applied_total";
    let dedup = "taskmesh_analytics_dedup_hits_total";
    let analytics_meter = meter(vec![
        ("analytics-service".into(), analytics.service.pid()),
        ("daprd".into(), analytics.sidecar.pid()),
    ]);
    let before = analytics_meter.read();
    let start = Instant::now();
    bulk_publish(&publisher, ANALYTICS_TOPIC, &events, 250).await?;
    wait_metric(&analytics.service, &[applied, dedup], n as f64).await?;
    let fresh_rate = n as f64 / start.elapsed().as_secs_f64();
    let fresh_cpu = analytics_meter.per_event_us(&before, n as f64);
    let before = analytics_meter.read();
    let start = Instant::now();
    bulk_publish(&publisher, ANALYTICS_TOPIC, &events, 250).await?;
    wait_metric(&analytics.service, &[applied, dedup], 2.0 * n as f64).await?;
    let dup_rate = n as f64 / start.elapsed().as_secs_f64();
    let dup_cpu = analytics_meter.per_event_us(&before, n as f64);
    let applied_once = metric(&analytics.service, applied);

    // (2) recurring: completions of recurring tasks, each creating a successor (whose
    // `created` event comes back to recurring-service, which acknowledges it). Alone on
    // `task-events`: analytics-service is stopped too.
    drop(analytics);
    let m = n / 2;
    let completions: Vec<TaskEvent> = (0..m)
        .map(|i| {
            event(
                TaskEventKind::Completed,
                i % 200,
                uuid::Uuid::now_v7(),
                2,
                Some("FREQ=DAILY"),
            )
        })
        .collect();
    let recurring_meter = meter(vec![
        ("recurring-service".into(), recurring.service.pid()),
        ("daprd".into(), recurring.sidecar.pid()),
        ("task-service".into(), tasks.service.pid()),
    ]);
    let before = recurring_meter.read();
    let start = Instant::now();
    bulk_publish(&publisher, "task-events", &completions, 250).await?;
    wait_metric(
        &recurring.service,
        &["taskmesh_recurring_next_occurrences_total"],
        m as f64,
    )
    .await?;
    let recurring_rate = m as f64 / start.elapsed().as_secs_f64();
    let recurring_cpu = recurring_meter.per_event_us(&before, m as f64);

    // (3) CompleteTask -> the next occurrence exists, one task at a time.
    let mut alice = task_client(&tasks.service.endpoint(), SECRET, "alice")?;
    let mut latencies = Vec::new();
    for i in 0..100 {
        let title = format!("daily chore {i}");
        let due = chrono::Utc::now() + chrono::Duration::hours(1);
        let task = alice
            .create_task(CreateTaskRequest {
                title: title.clone(),
                due_time: Some(prost_types::Timestamp {
                    seconds: due.timestamp(),
                    nanos: 0,
                }),
                recurrence: Some("FREQ=DAILY".into()),
                ..CreateTaskRequest::default()
            })
            .await?
            .into_inner();
        alice
            .complete_task(CompleteTaskRequest {
                id: task.id.clone(),
                expected_version: None,
            })
            .await?;
        let start = Instant::now();
        loop {
            let open = alice
                .list_tasks(ListTasksRequest {
                    status: StatusFilter::Open as i32,
                    title_contains: Some(title.clone()),
                    ..ListTasksRequest::default()
                })
                .await?
                .into_inner()
                .tasks;
            if open.iter().any(|t| t.title == title) {
                latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "no next occurrence for {title}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];

    // (4) notification-service: dated creations, then the same again.
    let dated = creations(n);
    let applied = "taskmesh_notification_events_applied_total";
    let dedup = "taskmesh_notification_dedup_hits_total";
    let notify_meter = meter(vec![
        ("notification-service".into(), notifications.service.pid()),
        ("daprd".into(), notifications.sidecar.pid()),
        ("scheduler".into(), scheduler.pid()),
    ]);
    let before = notify_meter.read();
    let start = Instant::now();
    bulk_publish(&publisher, NOTIFICATION_TOPIC, &dated, 250).await?;
    wait_metric(&notifications.service, &[applied, dedup], n as f64).await?;
    let notify_rate = n as f64 / start.elapsed().as_secs_f64();
    let notify_cpu = notify_meter.per_event_us(&before, n as f64);
    let before = notify_meter.read();
    let start = Instant::now();
    bulk_publish(&publisher, NOTIFICATION_TOPIC, &dated, 250).await?;
    wait_metric(&notifications.service, &[applied, dedup], 2.0 * n as f64).await?;
    let notify_dup_rate = n as f64 / start.elapsed().as_secs_f64();
    let notify_dup_cpu = notify_meter.per_event_us(&before, n as f64);
    let notified_once = metric(&notifications.service, applied);

    // (0) the ceiling again, last: the consumers' phases lie between its two figures.
    let ceiling_last = null_ceiling(&publisher, &sink, &creations(n)).await?;
    eprintln!("subscriber that does nothing, again: {ceiling_last:.0} events/s");
    let ceiling = (ceiling_first + ceiling_last) / 2.0;

    println!();
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    // A consumer's rate as a ratio to the ceiling, with both targets' verdicts.
    let against = |rate: f64, correct: bool| {
        let ratio = rate / ceiling;
        format!(
            "{ratio:.2}x (c) | >= {TARGET_RATIO:.2}x (c): {}; >= 1,000/s: {}",
            verdict(ratio >= TARGET_RATIO && correct),
            verdict(rate >= 1000.0 && correct)
        )
    };
    println!(
        "| (c) subscriber that does nothing, {n} new events, first / last | {ceiling_first:.0} / {ceiling_last:.0} events/s, mean {ceiling:.0} | |"
    );
    println!("| (c) CPU per event | {} | |", describe(&null_cpu));
    println!(
        "| analytics-service, {n} new events (200 users) | {fresh_rate:.0} events/s, {applied_once} applied = {} |",
        against(fresh_rate, applied_once as usize == n)
    );
    println!(
        "| analytics-service, new: CPU per event | {} | |",
        describe(&fresh_cpu)
    );
    println!(
        "| analytics-service, the same {n} redelivered | {dup_rate:.0} events/s, all dedup hits = {} |",
        against(dup_rate, applied_once as usize == n)
    );
    println!(
        "| analytics-service, redelivered: CPU per event | {} | |",
        describe(&dup_cpu)
    );
    println!(
        "| recurring-service, {m} completions (each a CreateTask via invocation) | {recurring_rate:.0} events/s = {} |",
        against(recurring_rate, true)
    );
    println!(
        "| recurring-service: CPU per completion | {} | |",
        describe(&recurring_cpu)
    );
    println!(
        "| CompleteTask -> next occurrence exists (100, sequential) | p50 {:.1} ms, p99 {:.1} ms | p50 <= 50 ms: {} |",
        pct(0.5),
        pct(0.99),
        verdict(pct(0.5) <= 50.0)
    );
    println!(
        "| notification-service, {n} new dated tasks (notification + reminder job each) | {notify_rate:.0} events/s, {notified_once} applied = {} |",
        against(notify_rate, notified_once as usize == n)
    );
    println!(
        "| notification-service, new: CPU per event | {} | |",
        describe(&notify_cpu)
    );
    println!(
        "| notification-service, the same {n} redelivered | {notify_dup_rate:.0} events/s = {} |",
        against(notify_dup_rate, notified_once as usize == n)
    );
    println!(
        "| notification-service, redelivered: CPU per event | {} | |",
        describe(&notify_dup_cpu)
    );
    drop((recurring, notifications, null_sidecar, tasks));
    Ok(())
}
