//! `just bench-events`: the event path through real daprd, on Redis Streams and on Kafka.
//!
//! (a) daprd's own ceiling: `PublishEvent` straight to the sidecar from a minimal client;
//! (a') daprd's `BulkPublishEvent` ceiling as the relay uses it: the relay's own events, in
//!      requests of the relay's batch size, one request in flight (the relay awaits each
//!      request before it marks its events and fetches the next batch);
//! (b) the outbox relay's sustained rate draining a backlog of 20,000 events, held to
//!     >= 0.9x (a'), with the CPU each process spent per event;
//! (c) end-to-end latency from `CreateTask` returning to the test subscriber receiving the
//!     event, at a steady 500 tasks/s.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{
    BulkPublishRequest, BulkPublishRequestEntry, PublishEventRequest,
};
use sea_orm::{ConnectionTrait, Statement};
use taskmesh_integration::apps::private_name_resolution;
use taskmesh_integration::bench::{env_or, metric};
use taskmesh_integration::client::task_client;
use taskmesh_integration::cpu::{CpuMeter, describe};
use taskmesh_integration::kafka_broker::KafkaBroker;
use taskmesh_integration::net::free_port;
use taskmesh_integration::recorder::Recorder;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{Broker, Daprd, DaprdOptions, Resources};
use taskmesh_proto::tasks::v1::CreateTaskRequest;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const PUBSUB: &str = "taskmesh-pubsub";
/// The relay's batch: `TASKMESH_OUTBOX_BATCH_SIZE`, set explicitly (its default) so that
/// (a') sends requests of exactly the relay's size. The backlog's events all belong to
/// different tasks, so each batch goes out as one bulk request (one wave, well under
/// `TASKMESH_OUTBOX_MAX_BATCH_BYTES`).
const RELAY_BATCH: usize = 500;

struct Row {
    broker: &'static str,
    what: String,
    figure: String,
    target: String,
}

/// (a): `concurrency` publishers of a task-sized CloudEvent for `secs`.
async fn sidecar_ceiling(
    endpoint: &str,
    topic: &str,
    concurrency: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let client = DaprClient::connect(endpoint.to_owned()).await?;
    let payload = serde_json::json!({
        "specversion": "1.0", "id": "x", "source": "bench", "type": "taskmesh.bench.v1",
        "subject": "s", "datacontenttype": "application/json",
        "data": {"task": {"title": "a task of typical size", "description": "x".repeat(200)}}
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut client = client.clone();
        let topic = topic.to_owned();
        let mut event = payload.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                event["id"] = format!("{w}-{n}").into();
                client
                    .publish_event(PublishEventRequest {
                        pubsub_name: PUBSUB.into(),
                        topic: topic.clone(),
                        data: serde_json::to_vec(&event)?,
                        data_content_type: "application/cloudevents+json".into(),
                        metadata: HashMap::from([("partitionKey".into(), format!("{w}-{n}"))]),
                    })
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / secs as f64)
}

/// An event as the relay sends it: its CloudEvent JSON and its task (the partition key).
struct OutboxEvent {
    payload: String,
    task_id: String,
}

/// The relay's first `limit` events, read back from task-service's SQLite outbox.
async fn outbox_events(database_url: &str, limit: usize) -> anyhow::Result<Vec<OutboxEvent>> {
    let db = sea_orm::Database::connect(database_url).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT payload, task_id FROM outbox ORDER BY seq LIMIT {limit}"),
        ))
        .await;
    let _ = db.close().await;
    rows?
        .iter()
        .map(|row| {
            Ok(OutboxEvent {
                payload: row.try_get("", "payload")?,
                task_id: row.try_get("", "task_id")?,
            })
        })
        .collect()
}

/// (a'): `total` events as `BulkPublishEvent` requests of `events.len()` entries, one in
/// flight, the entries built as the relay builds them (`outbox::DaprPublisher`). The
/// first request, which may create the topic, is not counted.
async fn bulk_ceiling(
    endpoint: &str,
    topic: &str,
    events: &[OutboxEvent],
    total: usize,
) -> anyhow::Result<f64> {
    let mut client = DaprClient::connect(endpoint.to_owned()).await?;
    let request = || BulkPublishRequest {
        pubsub_name: PUBSUB.into(),
        topic: topic.to_owned(),
        entries: events
            .iter()
            .enumerate()
            .map(|(i, event)| BulkPublishRequestEntry {
                entry_id: i.to_string(),
                event: event.payload.clone().into_bytes(),
                content_type: "application/cloudevents+json".into(),
                metadata: HashMap::from([("partitionKey".into(), event.task_id.clone())]),
            })
            .collect(),
        metadata: HashMap::new(),
    };
    client.bulk_publish_event(request()).await?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let response = client.bulk_publish_event(request()).await?.into_inner();
        anyhow::ensure!(
            response.failed_entries.is_empty(),
            "the sidecar refused {} entries",
            response.failed_entries.len()
        );
        sent += events.len();
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

async fn bench(
    broker: Broker,
    redis: &RedisServer,
    kafka: Option<&KafkaBroker>,
) -> anyhow::Result<Vec<Row>> {
    let name = match broker {
        Broker::Redis => "redis",
        Broker::Kafka => "kafka",
    };
    let secs = env_or::<u64>("BENCH_SECS", 10);
    let backlog = env_or::<u64>("BENCH_BACKLOG", 20_000) as usize;
    let rate = env_or::<u64>("BENCH_RATE", 500);
    let resources = Resources::new(
        broker,
        &redis.addr(),
        kafka.map(KafkaBroker::bootstrap).as_deref(),
    )?;
    // The bench publishes to a topic of its own, read by a recording subscriber.
    resources.open_topics()?;
    let topic = format!("bench-{name}-{}", std::process::id());

    let dir = tempfile::tempdir()?;
    // App ids resolve among this run's sidecars only (mDNS would reach other stacks).
    let names = private_name_resolution(dir.path())?;
    let sidecar_grpc = free_port()?;
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("tasks.db").display()
    );
    let task = ServiceProcess::start(
        "task-service",
        vec![
            ("DATABASE_URL".into(), database_url.clone()),
            ("TASKMESH_OUTBOX_BATCH_SIZE".into(), RELAY_BATCH.to_string()),
            ("TASKMESH_JWT_SECRET".into(), SECRET.into()),
            taskmesh_integration::services::unlimited()[0].clone(),
            taskmesh_integration::services::unlimited()[1].clone(),
            ("DAPR_GRPC_PORT".into(), sidecar_grpc.to_string()),
            ("TASKMESH_TOPIC_TASK_EVENTS".into(), topic.clone()),
            (
                "RUST_LOG".into(),
                std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ],
    )?;
    let client = task_client(&task.endpoint(), SECRET, "bench")?;

    // (b) first, while the sidecar is not up yet: the backlog builds in the outbox.
    eprintln!("[{name}] building a backlog of {backlog} events");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (mut client, next) = (client.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < backlog {
                client
                    .create_task(CreateTaskRequest {
                        title: "backlog".into(),
                        ..CreateTaskRequest::default()
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let started = Instant::now();
    let mut task_sidecar = Daprd::start(DaprdOptions {
        app_id: "task-service".into(),
        app_port: Some(task.port()),
        grpc_port: Some(sidecar_grpc),
        resources: vec![resources.path().to_owned()],
        config: Some(names.clone()),
        ..DaprdOptions::default()
    })?;
    let sidecar_up = started.elapsed();
    let broker_pid = match kafka {
        Some(kafka) => kafka.pid(),
        None => redis.pid(),
    };
    let cpu = CpuMeter::new(vec![
        ("task-service".into(), task.pid()),
        ("daprd".into(), task_sidecar.pid()),
        (name.into(), broker_pid),
        CpuMeter::this_process("bench"),
    ]);
    // The relay was backing off while the sidecar was away: the clock starts with its
    // first accepted event, and the rate counts the events after that one.
    let waiting = Instant::now();
    while metric(&task, "taskmesh_outbox_published_events_total") < 1.0 {
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "nothing published in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_start = Instant::now();
    let drain_cpu = cpu.read();
    let first = metric(&task, "taskmesh_outbox_published_events_total");
    while metric(&task, "taskmesh_outbox_published_events_total") < backlog as f64 {
        anyhow::ensure!(
            drain_start.elapsed() < Duration::from_secs(300),
            "backlog not drained in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relay_rate = (backlog as f64 - first) / drain_start.elapsed().as_secs_f64();
    let relay_cpu = cpu.per_event_us(&drain_cpu, backlog as f64 - first);
    eprintln!("[{name}] sidecar up in {sidecar_up:?}; relay drained at {relay_rate:.0}/s");
    for line in task
        .log()
        .lines()
        .filter(|l| l.contains("outbox batch"))
        .take(3)
    {
        eprintln!("    {line}");
    }

    // (a') on the same sidecar and broker, now that the relay is idle: the relay's own
    // events, as many as it drained. A topic of its own that nobody subscribes to: the
    // figure is the publish path, like the relay's.
    let events = outbox_events(&database_url, RELAY_BATCH).await?;
    anyhow::ensure!(
        events.len() == RELAY_BATCH.min(backlog),
        "the outbox has {} events",
        events.len()
    );
    let event_bytes = events.iter().map(|e| e.payload.len()).sum::<usize>() / events.len().max(1);
    let bulk_cpu = cpu.read();
    let bulk = bulk_ceiling(
        &task_sidecar.grpc_endpoint(),
        &format!("{topic}-bulk"),
        &events,
        backlog,
    )
    .await?;
    let bulk_cpu = cpu.per_event_us(&bulk_cpu, backlog as f64);
    eprintln!(
        "[{name}] daprd BulkPublishEvent ceiling {bulk:.0}/s ({} per request, {event_bytes} bytes per event)",
        events.len()
    );

    // (a) on the same sidecar and broker. A topic of its own that nobody subscribes to.
    let ceiling = sidecar_ceiling(
        &task_sidecar.grpc_endpoint(),
        &format!("{topic}-ceiling"),
        32,
        secs,
    )
    .await?;
    eprintln!("[{name}] daprd PublishEvent ceiling {ceiling:.0}/s");

    // The subscriber starts only now, so that (a) and (b) both measure the publish path
    // alone; it then receives the whole backlog (nothing lost) before (c).
    let recorder = Recorder::start(PUBSUB, &[&topic]).await?;
    let _recorder_sidecar = Daprd::start(DaprdOptions {
        app_id: format!("bench-subscriber-{name}"),
        app_port: Some(recorder.port()),
        resources: vec![resources.path().to_owned()],
        config: Some(names.clone()),
        ..DaprdOptions::default()
    })?;
    let delivery_start = Instant::now();
    recorder
        .wait_until(Duration::from_secs(300), |events| events.len() >= backlog)
        .await?;
    eprintln!(
        "[{name}] the subscriber had all {backlog} events {:?} after it subscribed",
        delivery_start.elapsed()
    );
    recorder.clear();

    // (c) steady load: CreateTask returned -> subscriber received.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(total);
    for _ in 0..total {
        tick.tick().await;
        let (mut client, sent) = (client.clone(), sent.clone());
        calls.push(tokio::spawn(async move {
            let task = client
                .create_task(CreateTaskRequest {
                    title: "latency".into(),
                    ..CreateTaskRequest::default()
                })
                .await?
                .into_inner();
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(task.id, Instant::now());
            anyhow::Ok(())
        }));
    }
    for call in calls {
        call.await??;
    }
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let events = recorder
        .wait_until(Duration::from_secs(120), |events| {
            events
                .iter()
                .filter(|e| e.subject.as_ref().is_some_and(|s| sent.contains_key(s)))
                .count()
                >= total
        })
        .await?;
    let mut latencies: Vec<f64> = events
        .iter()
        .filter_map(|e| {
            let t0 = sent.get(e.subject.as_deref()?)?;
            Some(e.at.saturating_duration_since(*t0).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get((latencies.len() as f64 * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    eprintln!(
        "[{name}] end-to-end p50 {p50:.2} ms, p99 {p99:.2} ms over {} events",
        latencies.len()
    );
    task_sidecar.kill();

    let ratio = relay_rate / ceiling;
    let bulk_ratio = relay_rate / bulk;
    let latency_target = match broker {
        Broker::Redis => "p50 <= 10 ms, p99 <= 50 ms".to_owned(),
        Broker::Kafka => "(no target)".to_owned(),
    };
    Ok(vec![
        Row {
            broker: name,
            what: "(a) daprd PublishEvent ceiling, c=32".into(),
            figure: format!("{ceiling:.0} events/s"),
            target: String::new(),
        },
        Row {
            broker: name,
            what: "(a') daprd BulkPublishEvent ceiling, the relay's batches (500, 1 in flight)"
                .into(),
            figure: format!("{bulk:.0} events/s ({event_bytes} B/event)"),
            target: String::new(),
        },
        Row {
            broker: name,
            what: "(a') CPU per event".into(),
            figure: describe(&bulk_cpu),
            target: String::new(),
        },
        Row {
            broker: name,
            what: format!("(b) relay draining {backlog}"),
            figure: format!("{relay_rate:.0} events/s = {bulk_ratio:.2}x (a'), {ratio:.2}x (a)"),
            target: format!(
                ">= 2,000/s and >= 0.90x (a'): {}",
                if relay_rate >= 2000.0 && bulk_ratio >= 0.9 {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        },
        Row {
            broker: name,
            what: "(b) CPU per event".into(),
            figure: describe(&relay_cpu),
            target: String::new(),
        },
        Row {
            broker: name,
            what: format!("(c) CreateTask -> subscriber, {rate}/s"),
            figure: format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
            target: if broker == Broker::Redis {
                format!(
                    "{latency_target}: {}",
                    if p50 <= 10.0 && p99 <= 50.0 {
                        "met"
                    } else {
                        "MISSED"
                    }
                )
            } else {
                latency_target
            },
        },
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let brokers = std::env::var("BENCH_BROKERS").unwrap_or_else(|_| "redis,kafka".into());
    let redis = RedisServer::start()?;
    let mut rows = Vec::new();
    if brokers.contains("redis") {
        rows.extend(bench(Broker::Redis, &redis, None).await?);
    }
    if brokers.contains("kafka") {
        let kafka = KafkaBroker::start()?;
        rows.extend(bench(Broker::Kafka, &redis, Some(&kafka)).await?);
    }
    println!();
    println!("| broker | measure | figure | target |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.broker, row.what, row.figure, row.target
        );
    }
    Ok(())
}
