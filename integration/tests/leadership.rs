//! The relay's leader stalls: two task-service replicas on one PostgreSQL database, each
//! with its own daprd, load flowing, and the publishing replica stopped with SIGSTOP for
//! 30 s, then continued. A stopped process keeps its sockets (its kernel even answers TCP
//! keepalive), so only the lock's lease (`idle_session_timeout`) frees the lock.
//!
//! Asserted: the standby publishes within the documented bound (docs/events.md, "Which
//! replica publishes"), every committed event is delivered (duplicates allowed: at least
//! once), and the resumed replica finds out it lost the lock and publishes nothing more.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskmesh_integration::client::task_client;
use taskmesh_integration::kafka_broker::KafkaBroker;
use taskmesh_integration::net::free_port;
use taskmesh_integration::postgres::{fresh_database, shared_admin_url};
use taskmesh_integration::process::signal;
use taskmesh_integration::recorder::Recorder;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{
    Broker, Daprd, DaprdOptions, MAX_BODY_BYTES, Resources, outbox_max_batch_bytes,
};
use taskmesh_proto::tasks::v1::CreateTaskRequest;

const SECRET: &str = "leadership-secret-0123456789abcdef0123456789abcdef";
/// How long the leader stays stopped: three leases.
const STALL: Duration = Duration::from_secs(30);
/// task-service's defaults (docs/events.md): a standby publishes within lease (10 s) +
/// retry (1 s) + lock timeout (2 s) of the leader's last word...
const TAKEOVER_BOUND: Duration = Duration::from_secs(13);
/// ...and a resumed leader finds out within the lock timeout (2 s).
const STEP_DOWN_BOUND: Duration = Duration::from_secs(2);

/// One value of the replica's metrics, 0 when absent. Never call it on a stopped process:
/// its kernel accepts the connection and the read waits for the process.
fn metric(replica: &ServiceProcess, name: &str) -> f64 {
    replica.metric(name).unwrap_or(0.0)
}

fn leads(replica: &ServiceProcess) -> bool {
    metric(replica, "taskmesh_outbox_relay_leader") == 1.0
}

fn published(replica: &ServiceProcess) -> f64 {
    metric(replica, "taskmesh_outbox_published_events_total")
}

/// Creates tasks on `endpoint` one after the other until `stop`; the ids of the
/// acknowledged ones go to `created`.
fn load(
    endpoint: String,
    user: &'static str,
    created: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = task_client(&endpoint, SECRET, user).unwrap();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let request = CreateTaskRequest {
                title: format!("{user} {i}"),
                ..CreateTaskRequest::default()
            };
            if let Ok(task) = client.create_task(request).await {
                created.lock().unwrap().insert(task.into_inner().id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn a_stalled_leader_is_replaced_and_stops_when_it_resumes(broker: Broker) {
    let database = fresh_database(&shared_admin_url().unwrap()).await.unwrap();
    let redis = RedisServer::start().unwrap();
    let kafka = (broker == Broker::Kafka).then(|| KafkaBroker::start().unwrap());
    let resources = Resources::new(
        broker,
        &redis.addr(),
        kafka.as_ref().map(KafkaBroker::bootstrap).as_deref(),
    )
    .unwrap();
    resources.open_topics().unwrap();
    let recorder = Recorder::start("taskmesh-pubsub", &["task-events"])
        .await
        .unwrap();
    let _recorder_sidecar = Daprd::start(DaprdOptions {
        app_id: "leadership-test-subscriber".into(),
        app_port: Some(recorder.port()),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })
    .unwrap();
    // Each replica with its own sidecar, as in a pod: the stopped one's keeps running.
    let mut sidecars = Vec::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let grpc = free_port().unwrap();
        sidecars.push(
            Daprd::start(DaprdOptions {
                app_id: "task-service".into(),
                grpc_port: Some(grpc),
                resources: vec![resources.path().to_owned()],
                ..DaprdOptions::default()
            })
            .unwrap(),
        );
        let mut env = vec![
            ("DATABASE_URL".to_owned(), database.clone()),
            ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
            ("DAPR_GRPC_PORT".to_owned(), grpc.to_string()),
            (
                "TASKMESH_OUTBOX_MAX_BATCH_BYTES".to_owned(),
                outbox_max_batch_bytes(MAX_BODY_BYTES).to_string(),
            ),
        ];
        env.extend(taskmesh_integration::services::unlimited());
        replicas.push(ServiceProcess::start("task-service", env).unwrap());
    }

    let created = Arc::new(Mutex::new(HashSet::new()));
    let stop_load = Arc::new(AtomicBool::new(false));
    let mut loads: Vec<_> = replicas
        .iter()
        .zip(["alice", "bob"])
        .map(|(replica, user)| load(replica.endpoint(), user, created.clone(), stop_load.clone()))
        .collect();
    wait_for("a leader", Duration::from_secs(30), || {
        replicas.iter().filter(|r| leads(r)).count() == 1 && created.lock().unwrap().len() > 50
    })
    .await;
    let leader = replicas.iter().position(leads).unwrap();
    let standby = 1 - leader;
    let pid = replicas[leader].pid().unwrap();

    // The leader stops where it is, publishing the others' events (and with its own
    // load's calls in flight, which wait for it).
    signal(pid, "STOP").unwrap();
    let stopped = Instant::now();
    let took_over = wait_for("the standby takes over", STALL, || {
        leads(&replicas[standby])
    })
    .await;
    let during = created.lock().unwrap().len();
    tokio::time::sleep(STALL.saturating_sub(stopped.elapsed())).await;
    let during = created.lock().unwrap().len() - during;

    let before = published(&replicas[standby]);
    signal(pid, "CONT").unwrap();
    let stepped_down = wait_for(
        "the resumed leader finds it lost the lock",
        Duration::from_secs(10),
        || {
            metric(&replicas[leader], "taskmesh_outbox_leadership_lost_total") >= 1.0
                && !leads(&replicas[leader])
        },
    )
    .await;
    // From now on it publishes nothing, though both replicas still take load.
    let old_leader_published = published(&replicas[leader]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        published(&replicas[leader]),
        old_leader_published,
        "the deposed leader went on publishing"
    );
    assert!(leads(&replicas[standby]) && !leads(&replicas[leader]));
    assert!(
        published(&replicas[standby]) > before,
        "the new leader stopped"
    );

    stop_load.store(true, Ordering::SeqCst);
    for load in loads.drain(..) {
        load.await.unwrap();
    }
    let expected = created.lock().unwrap().clone();
    let settle = match broker {
        Broker::Redis => Duration::from_secs(60),
        Broker::Kafka => Duration::from_secs(120),
    };
    let delivered = recorder
        .wait_until(settle, |events| {
            let subjects: HashSet<&str> =
                events.iter().filter_map(|e| e.subject.as_deref()).collect();
            expected.iter().all(|id| subjects.contains(id.as_str()))
        })
        .await;
    let events = recorder.events();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for event in &events {
        *per_id.entry(event.id.as_str()).or_default() += 1;
    }
    let subjects: HashSet<&str> = events.iter().filter_map(|e| e.subject.as_deref()).collect();
    let lost = expected
        .iter()
        .filter(|id| !subjects.contains(id.as_str()))
        .count();
    let duplicated: usize = per_id.values().map(|n| n - 1).sum();
    eprintln!(
        "{}: created {} ({during} during the stall), delivered {} events ({} distinct), \
         lost {lost}, duplicate deliveries {duplicated}; the standby led {took_over:?} after \
         SIGSTOP, the resumed leader stepped down {stepped_down:?} after SIGCONT",
        broker.name(),
        expected.len(),
        events.len(),
        per_id.len(),
    );
    delivered.unwrap();
    assert_eq!(lost, 0);
    assert!(during > 100, "the load stopped with the leader: {during}");
    assert!(
        took_over <= TAKEOVER_BOUND,
        "the standby took over after {took_over:?}, documented {TAKEOVER_BOUND:?}"
    );
    assert!(
        stepped_down <= STEP_DOWN_BOUND + Duration::from_millis(500),
        "the resumed leader stepped down after {stepped_down:?}, documented {STEP_DOWN_BOUND:?}"
    );
}

/// One test at a time: each runs three sidecars, two services, a broker and load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_a_stalled_leader_is_replaced_and_stops_when_it_resumes() {
    let _serial = SERIAL.lock().await;
    a_stalled_leader_is_replaced_and_stops_when_it_resumes(Broker::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_stalled_leader_is_replaced_and_stops_when_it_resumes() {
    let _serial = SERIAL.lock().await;
    a_stalled_leader_is_replaced_and_stops_when_it_resumes(Broker::Kafka).await;
}
