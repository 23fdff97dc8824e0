//! Several task-service replicas on one PostgreSQL database: one relay publishes (an
//! advisory lock elects it), every replica's events go out, and when the publishing
//! replica dies another takes over without losing an event.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use taskmesh_integration::client::task_client;
use taskmesh_integration::net::free_port;
use taskmesh_integration::postgres::{fresh_database, shared_admin_url};
use taskmesh_integration::recorder::Recorder;
use taskmesh_integration::redis_server::RedisServer;
use taskmesh_integration::services::ServiceProcess;
use taskmesh_integration::sidecar::{Broker, Daprd, DaprdOptions, Resources};
use taskmesh_proto::tasks::v1::CreateTaskRequest;

const SECRET: &str = "replicas-secret-0123456789abcdef0123456789abcdef";

fn is_leader(replica: &ServiceProcess) -> bool {
    replica.metric("taskmesh_outbox_relay_leader") == Some(1.0)
}

async fn create(replica: &ServiceProcess, n: usize) -> HashSet<String> {
    let mut client = task_client(&replica.endpoint(), SECRET, "alice").unwrap();
    let mut ids = HashSet::new();
    for i in 0..n {
        let task = client
            .create_task(CreateTaskRequest {
                title: format!("task {i}"),
                ..CreateTaskRequest::default()
            })
            .await
            .unwrap();
        ids.insert(task.into_inner().id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_publishes_and_another_takes_over() {
    let database = fresh_database(&shared_admin_url().unwrap()).await.unwrap();
    let redis = RedisServer::start().unwrap();
    let resources = Resources::new(Broker::Redis, &redis.addr(), None).unwrap();
    // A recording subscriber of its own reads task-events.
    resources.open_topics().unwrap();
    let recorder = Recorder::start("taskmesh-pubsub", &["task-events"])
        .await
        .unwrap();
    let _recorder_sidecar = Daprd::start(DaprdOptions {
        app_id: "replica-test-subscriber".into(),
        app_port: Some(recorder.port()),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })
    .unwrap();
    let sidecar_grpc = free_port().unwrap();
    let _sidecar = Daprd::start(DaprdOptions {
        app_id: "task-service".into(),
        grpc_port: Some(sidecar_grpc),
        resources: vec![resources.path().to_owned()],
        ..DaprdOptions::default()
    })
    .unwrap();
    let env = || {
        vec![
            ("DATABASE_URL".to_owned(), database.clone()),
            ("TASKMESH_JWT_SECRET".to_owned(), SECRET.to_owned()),
            taskmesh_integration::services::unlimited()[0].clone(),
            taskmesh_integration::services::unlimited()[1].clone(),
            ("DAPR_GRPC_PORT".to_owned(), sidecar_grpc.to_string()),
        ]
    };
    let mut replicas = [
        ServiceProcess::start("task-service", env()).unwrap(),
        ServiceProcess::start("task-service", env()).unwrap(),
    ];

    let mut expected = create(&replicas[0], 50).await;
    expected.extend(create(&replicas[1], 50).await);
    let created = |events: &[taskmesh_integration::recorder::Received]| {
        events
            .iter()
            .filter_map(|e| e.subject.clone())
            .collect::<HashSet<_>>()
    };
    recorder
        .wait_until(Duration::from_secs(30), |events| {
            created(events).is_superset(&expected)
        })
        .await
        .unwrap();
    let leaders: Vec<bool> = replicas.iter().map(is_leader).collect();
    assert_eq!(
        leaders.iter().filter(|l| **l).count(),
        1,
        "exactly one publisher: {leaders:?}"
    );

    // The publisher dies; the other replica takes the lock and publishes what follows,
    // including the events the dead one committed but may not have published.
    let leader = leaders.iter().position(|l| *l).unwrap();
    let survivor = 1 - leader;
    expected.extend(create(&replicas[leader], 20).await);
    replicas[leader].kill();
    expected.extend(create(&replicas[survivor], 20).await);
    recorder
        .wait_until(Duration::from_secs(30), |events| {
            created(events).is_superset(&expected)
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_leader(&replicas[survivor]) {
        assert!(Instant::now() < deadline, "the survivor never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
