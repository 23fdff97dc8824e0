//! `just bench-analytics`: analytics-service's cost per event against the number of tasks a
//! user has (issue 17, item 4), through real daprd on Redis Streams and a Redis state store.
//!
//! Seeds a light user with `BENCH_LIGHT_TASKS` (100) tasks and a heavy one with
//! `BENCH_HEAVY_TASKS` (100,000), by publishing their events (half created open with a due
//! time each, half first seen completed) and waiting until analytics-service applied them.
//! Then, alternately for each user, `BENCH_EVENTS` (5,000) events on 100 of the user's
//! tasks (the heavy user's spread over all of its tasks): each the task's next version,
//! completing or reopening it with a new due time. Prints events/s per run, the ratio of
//! the means (target: within 1.2x), the seeding time, and checks the counts `stats/get`
//! reports against what was published.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dapr::dapr::proto::common::v1::InvokeRequest;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{GetStateRequest, InvokeServiceRequest};
use taskmesh_integration::bench::{bulk_publish, env_or, metric, quiet, stack};
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{Broker, Daprd, DaprdOptions, Resources};
use taskmesh_shared::events::{TaskEvent, TaskEventData, TaskEventKind, TaskSnapshot};
use uuid::Uuid;

const ROUNDS: usize = 3;

const APPLIED: &str = "taskmesh_analytics_events_applied_total";
const DEDUP: &str = "taskmesh_analytics_dedup_hits_total";
const CONFLICTS: &str = "taskmesh_analytics_write_conflicts_total";

/// Deliveries answered RETRY, of any type.
fn retries(service: &ServiceProcess) -> f64 {
    service
        .metrics()
        .lines()
        .filter(|line| {
            line.starts_with("taskmesh_events_handled_total") && line.contains("outcome=\"retry\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn handled(service: &ServiceProcess) -> f64 {
    metric(service, APPLIED) + metric(service, DEDUP)
}

/// A task's state as the bench last published it.
struct Task {
    id: Uuid,
    version: i64,
    completed: bool,
    created: chrono::DateTime<chrono::Utc>,
    /// Completions published.
    completions: u64,
}

fn event(user: &str, task: &Task, kind: TaskEventKind, due_in_minutes: i64) -> TaskEvent {
    let now = chrono::Utc::now();
    TaskEvent::task(
        kind,
        TaskEventData {
            task: TaskSnapshot {
                id: task.id,
                owner_id: user.to_owned(),
                title: "bench".into(),
                description: String::new(),
                priority: "medium".into(),
                tags: vec![],
                due_time: Some(now + chrono::Duration::minutes(due_in_minutes)),
                time_zone: None,
                recurrence: None,
                completed: task.completed,
                completed_time: task.completed.then_some(now),
                create_time: task.created,
                update_time: now,
                version: task.version,
                list_id: None,
                assignee_id: None,
            },
            changed_fields: vec![],
            version: task.version,
            owner_id: user.to_owned(),
            occurred_at: now,
            actor_id: None,
            previous_list_id: None,
            previous_assignee_id: None,
        },
    )
}

/// Publishes `events` and waits until analytics-service handled them all; the elapsed time.
async fn run(
    publisher: &str,
    analytics: &ServiceProcess,
    events: &[TaskEvent],
) -> anyhow::Result<Duration> {
    let target = handled(analytics) + events.len() as f64;
    let start = Instant::now();
    bulk_publish(publisher, "task-events", events, 500).await?;
    loop {
        let now = handled(analytics);
        if now >= target {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "stuck at {now} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` tasks of `user`: even ones created open, odd ones first seen completed.
fn seed(user: &str, n: usize) -> (Vec<Task>, Vec<TaskEvent>) {
    let created = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut tasks = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let completed = i % 2 == 1;
        let task = Task {
            id: Uuid::now_v7(),
            version: if completed { 2 } else { 1 },
            completed,
            created,
            completions: u64::from(completed),
        };
        let kind = if completed {
            TaskEventKind::Completed
        } else {
            TaskEventKind::Created
        };
        // One due time every minute, from an hour on: all distinct, all in the future.
        events.push(event(user, &task, kind, 60 + i as i64));
        tasks.push(task);
    }
    (tasks, events)
}

/// `m` events on 100 of `tasks` (spread over all of them), round robin, each the task's
/// next version: completed if open, reopened with a new due time if completed.
fn workload(user: &str, tasks: &mut [Task], m: usize, round: usize) -> Vec<TaskEvent> {
    let stride = (tasks.len() / 100).max(1);
    let picked: Vec<usize> = (0..tasks.len().min(100)).map(|i| i * stride).collect();
    (0..m)
        .map(|k| {
            let task = &mut tasks[picked[k % picked.len()]];
            task.version += 1;
            task.completed = !task.completed;
            task.completions += u64::from(task.completed);
            let kind = if task.completed {
                TaskEventKind::Completed
            } else {
                TaskEventKind::Reopened
            };
            event(user, task, kind, 30 + (round * m + k) as i64)
        })
        .collect()
}

async fn stats(endpoint: &str, user: &str) -> anyhow::Result<serde_json::Value> {
    let mut client = DaprClient::connect(endpoint.to_owned()).await?;
    let reply = client
        .invoke_service(InvokeServiceRequest {
            id: "analytics-service".into(),
            message: Some(InvokeRequest {
                method: "stats/get".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: serde_json::to_vec(&serde_json::json!({ "user_id": user }))?,
                }),
                content_type: "application/json".into(),
                http_extension: None,
            }),
        })
        .await?
        .into_inner();
    Ok(serde_json::from_slice(
        &reply.data.map(|d| d.value).unwrap_or_default(),
    )?)
}

async fn record_bytes(endpoint: &str, key: &str) -> anyhow::Result<usize> {
    let mut client = DaprClient::connect(endpoint.to_owned()).await?;
    let reply = client
        .get_state(GetStateRequest {
            store_name: "taskmesh-state".into(),
            key: key.into(),
            consistency: 0,
            metadata: HashMap::new(),
        })
        .await?
        .into_inner();
    Ok(reply.data.len())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let light_n = env_or("BENCH_LIGHT_TASKS", 100usize);
    let heavy_n = env_or("BENCH_HEAVY_TASKS", 100_000usize);
    let m = env_or("BENCH_EVENTS", 5_000usize);

    let redis = RedisServer::start()?;
    let resources = Resources::new(Broker::Redis, &redis.addr(), None)?;
    // A sidecar named task-service, with no app, publishes the events.
    let publisher = Daprd::start(DaprdOptions {
        app_id: "task-service".into(),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })?;
    let app = stack().start("analytics-service", &resources, quiet())?;
    let (analytics, sidecar) = (&app.service, &app.sidecar);
    let publisher = publisher.grpc_endpoint();

    let mut seeding = Vec::new();
    let (mut light, light_seed) = seed("light", light_n);
    let (mut heavy, heavy_seed) = seed("heavy", heavy_n);
    for (user, events) in [("light", &light_seed), ("heavy", &heavy_seed)] {
        let took = run(&publisher, analytics, events).await?;
        println!(
            "seeded {user}: {} tasks in {:.1} s ({:.0} events/s)",
            events.len(),
            took.as_secs_f64(),
            events.len() as f64 / took.as_secs_f64()
        );
        seeding.push(took);
    }
    drop((light_seed, heavy_seed));

    let (mut light_rates, mut heavy_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (user, tasks, rates) in [
            ("light", &mut light, &mut light_rates),
            ("heavy", &mut heavy, &mut heavy_rates),
        ] {
            let events = workload(user, tasks, m, round);
            let (conflicts, dedup, retried) = (
                metric(analytics, CONFLICTS),
                metric(analytics, DEDUP),
                retries(analytics),
            );
            let took = run(&publisher, analytics, &events).await?;
            let rate = m as f64 / took.as_secs_f64();
            println!(
                "round {}: {user} ({} tasks): {m} events in {:.2} s = {rate:.0} events/s, {} write conflicts, {} older or repeated, {} retried",
                round + 1,
                tasks.len(),
                took.as_secs_f64(),
                metric(analytics, CONFLICTS) - conflicts,
                metric(analytics, DEDUP) - dedup,
                retries(analytics) - retried,
            );
            rates.push(rate);
        }
    }

    // The counts add up: every task created once, open as last published, and every
    // completion counted once, in whatever order Redis Streams delivered them.
    let endpoint = sidecar.grpc_endpoint();
    let older = metric(analytics, DEDUP) as u64;
    let mut verdicts = Vec::new();
    for (user, tasks) in [("light", &light), ("heavy", &heavy)] {
        let report = stats(&endpoint, user).await?;
        let done = tasks.iter().filter(|t| t.completed).count() as u64;
        let open = tasks.len() as u64 - done;
        let published: u64 = tasks.iter().map(|t| t.completions).sum();
        let completed = report["completed"].as_u64().unwrap_or(0);
        let ok = report["created"] == tasks.len() as u64
            && report["open"] == open
            && report["deleted"] == 0
            && completed == published;
        println!(
            "{user}: stats/get created {} open {} completed {completed} of {published} published (expected {}, {open}); aggregate record {} bytes",
            report["created"],
            report["open"],
            tasks.len(),
            record_bytes(&endpoint, &format!("user:{user}")).await?
        );
        verdicts.push(ok);
    }
    let (light_mean, heavy_mean) = (mean(&light_rates), mean(&heavy_rates));
    let ratio = light_mean.max(heavy_mean) / light_mean.min(heavy_mean);
    println!();
    println!("| measure | figure | target |");
    println!("|---|---|---|");
    println!(
        "| seeding (events through daprd) | {light_n} tasks in {:.1} s, {heavy_n} tasks in {:.1} s | |",
        seeding[0].as_secs_f64(),
        seeding[1].as_secs_f64()
    );
    for (n, average, rates) in [
        (light_n, light_mean, &light_rates),
        (heavy_n, heavy_mean, &heavy_rates),
    ] {
        println!(
            "| events/s, user with {n} tasks ({ROUNDS} runs of {m}) | {average:.0} ({}) | |",
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "| ratio of the means | {ratio:.2}x | <= 1.2x: {} |",
        if ratio <= 1.2 { "met" } else { "MISSED" }
    );
    println!(
        "| stats/get counts as published | {}, {older} events came after a newer one of their task | |",
        if verdicts.iter().all(|ok| *ok) {
            "yes"
        } else {
            "NO"
        }
    );
    drop((app, redis));
    Ok(())
}
