//! `just bench-consumers`: the subscriber services through real daprd on Redis.
//!
//! (1) analytics-service: sustained events/s applying 10,000 task events of 200 users
//!     (each applied once, ETag-guarded), then the same 10,000 redelivered (dedup hits);
//! (2) recurring-service: completions/s, each creating the next task in task-service
//!     through Dapr service invocation;
//! (3) end-to-end time from `CompleteTask` returning to the next occurrence existing;
//! (4) notification-service: events/s for 10,000 dated new tasks (each a task record, a
//!     notification in its owner's inbox and a Jobs API reminder job), then redelivered.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use taskmesh_integration::apps::Stack;
use taskmesh_integration::bench::{bulk_publish, env_or, metric, quiet, stack};
use taskmesh_integration::client::task_client;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::scheduler::Scheduler;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{Broker, Resources};
use taskmesh_proto::tasks::v1::{
    CompleteTaskRequest, CreateTaskRequest, ListTasksRequest, StatusFilter,
};
use taskmesh_shared::events::{TaskEvent, TaskEventData, TaskEventKind, TaskSnapshot};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// On its own topic, so that its figures are not shared with analytics-service.
const NOTIFICATION_TOPIC: &str = "bench-notification-events";

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
    let stack = stack();
    let tasks = stack.start_task_service(&resources, dir.path(), SECRET, quiet())?;
    let analytics = stack.start("analytics-service", &resources, quiet())?;
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
    let publisher = tasks.sidecar.grpc_endpoint();

    // (1) analytics: n events (creations spread over 200 users), then the same again.
    let events: Vec<TaskEvent> = (0..n)
        .map(|i| {
            event(
                TaskEventKind::Created,
                i % 200,
                uuid::Uuid::now_v7(),
                1,
                None,
            )
        })
        .collect();
    let applied = "taskmesh_analytics_events_applied_total";
    let dedup = "taskmesh_analytics_dedup_hits_total";
    let start = Instant::now();
    bulk_publish(&publisher, "task-events", &events, 250).await?;
    wait_metric(&analytics.service, &[applied, dedup], n as f64).await?;
    let fresh_rate = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    bulk_publish(&publisher, "task-events", &events, 250).await?;
    wait_metric(&analytics.service, &[applied, dedup], 2.0 * n as f64).await?;
    let dup_rate = n as f64 / start.elapsed().as_secs_f64();
    let applied_once = metric(&analytics.service, applied);

    // (2) recurring: completions of recurring tasks, each creating a successor. Measured
    // alone, as notification-service is on its own topic: analytics-service would
    // otherwise spend the two cores on the same completions and the successors' events.
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
    let start = Instant::now();
    bulk_publish(&publisher, "task-events", &completions, 250).await?;
    wait_metric(
        &recurring.service,
        &["taskmesh_recurring_next_occurrences_total"],
        m as f64,
    )
    .await?;
    let recurring_rate = m as f64 / start.elapsed().as_secs_f64();

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
    let dated: Vec<TaskEvent> = (0..n)
        .map(|i| {
            event(
                TaskEventKind::Created,
                i % 200,
                uuid::Uuid::now_v7(),
                1,
                None,
            )
        })
        .collect();
    let applied = "taskmesh_notification_events_applied_total";
    let dedup = "taskmesh_notification_dedup_hits_total";
    let start = Instant::now();
    bulk_publish(&publisher, NOTIFICATION_TOPIC, &dated, 250).await?;
    wait_metric(&notifications.service, &[applied, dedup], n as f64).await?;
    let notify_rate = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    bulk_publish(&publisher, NOTIFICATION_TOPIC, &dated, 250).await?;
    wait_metric(&notifications.service, &[applied, dedup], 2.0 * n as f64).await?;
    let notify_dup_rate = n as f64 / start.elapsed().as_secs_f64();
    let notified_once = metric(&notifications.service, applied);

    println!();
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "| analytics-service, {n} new events (200 users) | {fresh_rate:.0} events/s, {applied_once} applied | >= 1,000/s: {} |",
        verdict(fresh_rate >= 1000.0)
    );
    println!(
        "| analytics-service, the same {n} redelivered | {dup_rate:.0} events/s, all dedup hits | >= 1,000/s: {} |",
        verdict(dup_rate >= 1000.0 && applied_once as usize == n)
    );
    println!(
        "| recurring-service, {m} completions (each a CreateTask via invocation) | {recurring_rate:.0} events/s | >= 1,000/s: {} |",
        verdict(recurring_rate >= 1000.0)
    );
    println!(
        "| CompleteTask -> next occurrence exists (100, sequential) | p50 {:.1} ms, p99 {:.1} ms | p50 <= 50 ms: {} |",
        pct(0.5),
        pct(0.99),
        verdict(pct(0.5) <= 50.0)
    );
    println!(
        "| notification-service, {n} new dated tasks (notification + reminder job each) | {notify_rate:.0} events/s, {notified_once} applied | >= 1,000/s: {} |",
        verdict(notify_rate >= 1000.0)
    );
    println!(
        "| notification-service, the same {n} redelivered | {notify_dup_rate:.0} events/s | >= 1,000/s: {} |",
        verdict(notify_dup_rate >= 1000.0 && notified_once as usize == n)
    );
    drop((recurring, notifications, tasks));
    Ok(())
}
