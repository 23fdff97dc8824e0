//! Each limit, answered with its documented status: the per-user rate limit
//! (RESOURCE_EXHAUSTED with RetryInfo), the task quota (RESOURCE_EXHAUSTED without), the
//! message size (OUT_OF_RANGE, tonic's code for it), PostgreSQL's statement timeout; and
//! metric labels that unknown methods cannot multiply.

use std::time::Duration;

use taskmesh_proto::tasks::v1::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_user_over_the_rate_limit_is_told_when_to_retry,
    the_task_quota_holds,
    oversized_requests_are_refused,
    unknown_methods_add_no_metric_series
);

async fn a_user_over_the_rate_limit_is_told_when_to_retry(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("TASKMESH_RATE_LIMIT_PER_SEC", "2"),
            ("TASKMESH_RATE_LIMIT_BURST", "3"),
        ],
    )
    .await;
    let mut alice = app.client("alice").await;
    for _ in 0..3 {
        alice.list_tasks(ListTasksRequest::default()).await.unwrap();
    }
    let status = alice
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("google.rpc.RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_millis(500),
        "{retry:?}"
    );
    // Others are not slowed down by alice.
    let mut bob = app.client("bob").await;
    bob.list_tasks(ListTasksRequest::default()).await.unwrap();
    // After the advertised delay, alice may call again.
    tokio::time::sleep(retry).await;
    alice.list_tasks(ListTasksRequest::default()).await.unwrap();
}

async fn the_task_quota_holds(backend: Backend) {
    let app = spawn_app_with(backend, &[("TASKMESH_MAX_TASKS_PER_USER", "2")]).await;
    let mut alice = app.client("alice").await;
    let first = create(&mut alice, new_task("one")).await;
    create(&mut alice, new_task("two")).await;
    let status = alice.create_task(new_task("three")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("at most 2 tasks"), "{status:?}");
    assert!(
        status.get_details_retry_info().is_none(),
        "waiting does not help against a quota"
    );
    // The quota is per user, and deleting makes room.
    create(&mut app.client("bob").await, new_task("bob's")).await;
    alice
        .delete_task(DeleteTaskRequest {
            id: first.id,
            ..Default::default()
        })
        .await
        .unwrap();
    create(&mut alice, new_task("three")).await;
}

async fn oversized_requests_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, &[("TASKMESH_MAX_MESSAGE_BYTES", "4096")]).await;
    let mut alice = app.client("alice").await;
    let big = CreateTaskRequest {
        title: "big".into(),
        description: "x".repeat(8 * 1024),
        ..Default::default()
    };
    let status = alice.create_task(big).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    create(&mut alice, new_task("small")).await;
}

fn series(app: &TestApp) -> usize {
    let (status, body) =
        taskmesh_integration::sidecar::http_get(app.metrics_addr.port(), "/metrics").unwrap();
    assert_eq!(status, 200);
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .count()
}

async fn unknown_methods_add_no_metric_series(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    alice.list_tasks(ListTasksRequest::default()).await.unwrap();
    // One unknown call first, so that its `unknown` series exist before counting.
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    let call = |grpc: &mut tonic::client::Grpc<tonic::transport::Channel>, path: String| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            grpc.unary(tonic::Request::new(()), path.parse().unwrap(), codec)
                .await
                .unwrap_err()
                .code()
        }
    };
    assert_eq!(
        call(&mut grpc, "/x.Y/Z".into()).await,
        Code::Unauthenticated
    );
    let before = series(&app);
    use futures::StreamExt;
    let codes: Vec<Code> = futures::stream::iter(0..10_000)
        .map(|i| call(&mut grpc, format!("/scan{i}.Svc{i}/M{i}")))
        .buffer_unordered(64)
        .collect()
        .await;
    let odd: Vec<&Code> = codes
        .iter()
        .filter(|c| **c != Code::Unauthenticated)
        .collect();
    assert!(
        odd.is_empty(),
        "{} calls answered otherwise: {:?}",
        odd.len(),
        &odd[..odd.len().min(5)]
    );
    assert_eq!(
        series(&app),
        before,
        "10,000 random method names added series"
    );
}

#[tokio::test]
async fn postgres_cancels_statements_past_the_timeout() {
    use sea_orm::{ConnectionTrait, Statement};
    let admin = taskmesh_integration::postgres::shared_admin_url().unwrap();
    let url = taskmesh_integration::postgres::fresh_database(&admin)
        .await
        .unwrap();
    let db = task_service::store::Database::connect(&url, 1, Duration::from_millis(200))
        .await
        .unwrap();
    let slow = db
        .reader
        .execute_raw(Statement::from_string(
            db.reader.get_database_backend(),
            "SELECT pg_sleep(2)",
        ))
        .await
        .unwrap_err();
    assert!(slow.to_string().contains("statement timeout"), "{slow}");
    db.reader
        .execute_raw(Statement::from_string(
            db.reader.get_database_backend(),
            "SELECT pg_sleep(0.01)",
        ))
        .await
        .unwrap();
}
