//! The transactional outbox as the API leaves it: one event per committed change, in the
//! change's transaction, none for failed or no-op calls.

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    every_change_writes_one_event_in_order,
    failed_and_no_op_calls_write_no_event,
    pruning_removes_old_published_rows_in_batches
);

async fn every_change_writes_one_event_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let task = create(&mut alice, new_task("Write report")).await;
    let id = task.id.clone();
    alice
        .update_task(UpdateTaskRequest {
            id: id.clone(),
            title: Some("Write the report".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    alice
        .complete_task(CompleteTaskRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    alice
        .reopen_task(ReopenTaskRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    alice
        .delete_task(DeleteTaskRequest {
            id: id.clone(),
            expected_version: Some(4),
        })
        .await
        .unwrap();

    let rows = app.outbox().await;
    let kinds: Vec<&str> = rows.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "taskmesh.task.created.v1",
            "taskmesh.task.updated.v1",
            "taskmesh.task.completed.v1",
            "taskmesh.task.reopened.v1",
            "taskmesh.task.deleted.v1",
        ]
    );
    let mut ids = std::collections::HashSet::new();
    for (i, (kind, task_id, event)) in rows.iter().enumerate() {
        assert_eq!(task_id, &id);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(&event["type"], kind);
        assert_eq!(event["subject"], id.as_str());
        assert_eq!(event["source"], "taskmesh/task-service");
        assert_eq!(event["data"]["version"], i as i64 + 1);
        assert_eq!(event["data"]["owner_id"], "alice");
        assert!(
            ids.insert(event["id"].as_str().unwrap().to_owned()),
            "ids are unique"
        );
    }
    assert_eq!(
        rows[1].2["data"]["changed_fields"],
        serde_json::json!(["title"])
    );
    assert_eq!(rows[1].2["data"]["task"]["title"], "Write the report");
    assert_eq!(rows[2].2["data"]["task"]["completed"], true);
    assert_eq!(
        rows[4].2["data"]["task"]["version"], 4,
        "deleted carries the last state"
    );
    app.stop().await;
}

async fn failed_and_no_op_calls_write_no_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut request = new_task("Once");
    request.request_id = Some("retry-me".into());
    let task = create(&mut alice, request.clone()).await;
    assert_eq!(create(&mut alice, request).await.id, task.id);

    let stale = alice
        .update_task(UpdateTaskRequest {
            id: task.id.clone(),
            expected_version: Some(7),
            title: Some("never".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let invalid = alice
        .update_task(UpdateTaskRequest {
            id: task.id.clone(),
            title: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    // Reopening an open task changes nothing, so it implies no event.
    alice
        .reopen_task(ReopenTaskRequest {
            id: task.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let mut bob = app.client("bob").await;
    let foreign = bob
        .delete_task(DeleteTaskRequest {
            id: task.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    let kinds: Vec<String> = app.outbox().await.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(kinds, ["taskmesh.task.created.v1"]);
    app.stop().await;
}

/// 25,000 published rows older than the retention go (more than one pruning statement
/// holds); unpublished and recent ones stay.
async fn pruning_removes_old_published_rows_in_batches(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};
    use task_service::outbox::{OutboxStore, SeaOutbox};

    let app = spawn_app(backend).await;
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::days(2)).timestamp_micros();
    let recent = chrono::Utc::now().timestamp_micros();
    let insert = |n: i64, published: &str| {
        format!(
            "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, published_at, attempts) \
             SELECT 'e' || {published_tag} || '-' || i, 't', 'x', '{{}}', {old}, {published}, 0 \
             FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT i FROM n) AS numbers",
            published_tag = if published == "NULL" { "'u'" } else { "'p'" },
        )
    };
    let backend_kind = db.get_database_backend();
    for sql in [insert(25_000, &old.to_string()), insert(10, "NULL")] {
        db.execute_raw(Statement::from_string(backend_kind, sql))
            .await
            .unwrap();
    }
    db.execute_raw(Statement::from_string(
        backend_kind,
        format!(
            "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, published_at, attempts) \
             VALUES ('recent', 't', 'x', '{{}}', {recent}, {recent}, 0)"
        ),
    ))
    .await
    .unwrap();
    let outbox = SeaOutbox::new(db.clone());
    let pruned = outbox
        .prune(chrono::Utc::now() - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(pruned, 25_000);
    let left = db
        .query_one_raw(Statement::from_string(
            backend_kind,
            "SELECT COUNT(*) AS n FROM outbox",
        ))
        .await
        .unwrap()
        .unwrap();
    let left: i64 = left.try_get("", "n").unwrap();
    assert_eq!(left, 11, "the unpublished and the recent rows stay");
}
