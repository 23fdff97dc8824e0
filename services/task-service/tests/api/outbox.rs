//! The transactional outbox as the API leaves it: one event per committed change, in the
//! change's transaction, none for failed or no-op calls.

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    every_change_writes_one_event_in_order,
    failed_and_no_op_calls_write_no_event,
    pruning_removes_old_published_rows_in_batches,
    a_parked_event_holds_its_task_back_until_it_is_put_back_in_place,
    the_parked_table_migrates_into_a_database_with_events,
    an_event_too_large_for_the_relay_is_refused_at_write_time
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

    // The app's own housekeeping prunes too; with a retention longer than these rows'
    // age it leaves them to the prune under test (it raced it before, under load).
    let app = spawn_app_with(backend, &[("TASKMESH_OUTBOX_RETENTION_SECS", "2592000")]).await;
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

async fn seqs(outbox: &task_service::outbox::SeaOutbox) -> Vec<(i64, String)> {
    use task_service::outbox::OutboxStore;
    outbox
        .pending(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.task_id))
        .collect()
}

/// The store functions `task-service outbox parked|retry` and the relay use: a parked
/// event leaves the outbox with its reason, its task's later events are not handed to the
/// relay while it is parked (no overtaking), other tasks' events are, and a retry puts it
/// back before them with no refusals counted.
async fn a_parked_event_holds_its_task_back_until_it_is_put_back_in_place(backend: Backend) {
    use task_service::outbox::{OutboxStore, SeaOutbox};

    // No sidecar here: the relay's calls fail, and an outage parks nothing.
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let a = create(&mut alice, new_task("A")).await;
    alice
        .update_task(UpdateTaskRequest {
            id: a.id.clone(),
            title: Some("A, later".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let b = create(&mut alice, new_task("B")).await;
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let outbox = SeaOutbox::new(db.clone());
    let before = seqs(&outbox).await;
    let ids: Vec<&str> = before.iter().map(|(_, task)| task.as_str()).collect();
    assert_eq!(ids, [a.id.as_str(), a.id.as_str(), b.id.as_str()]);
    let first = before[0].0;

    outbox.record_attempt(&[first]).await.unwrap();
    outbox
        .park(first, "Internal: too large", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        seqs(&outbox).await,
        vec![before[2].clone()],
        "A's later event waits"
    );
    let parked = outbox.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].seq, first);
    assert_eq!(parked[0].task_id, a.id);
    assert_eq!(parked[0].event_type, "taskmesh.task.created.v1");
    assert_eq!(
        parked[0].attempts, 2,
        "one recorded refusal and the last one"
    );
    assert_eq!(parked[0].reason, "Internal: too large");
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!((backlog.events, backlog.parked), (2, 1));

    // Parking twice (a deposed leader) changes nothing.
    outbox
        .park(first, "again", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(outbox.parked().await.unwrap().len(), 1);

    assert!(!outbox.retry("999999").await.unwrap());
    assert!(outbox.retry(&first.to_string()).await.unwrap());
    assert_eq!(
        seqs(&outbox).await,
        before,
        "back in its place, before A's later event"
    );
    assert!(outbox.parked().await.unwrap().is_empty());
    assert_eq!(outbox.pending(1).await.unwrap()[0].attempts, 0);

    // By event id, and all at once.
    let event_id = outbox.pending(1).await.unwrap()[0].event_id.clone();
    outbox.park(first, "x", chrono::Utc::now()).await.unwrap();
    assert!(outbox.retry(&event_id).await.unwrap());
    outbox
        .park(before[0].0, "x", chrono::Utc::now())
        .await
        .unwrap();
    outbox
        .park(before[2].0, "y", chrono::Utc::now())
        .await
        .unwrap();
    assert!(seqs(&outbox).await.is_empty());
    assert_eq!(outbox.retry_all().await.unwrap(), 2);
    assert_eq!(seqs(&outbox).await, before);

    // New events still get new numbers after old ones went back.
    create(&mut alice, new_task("C")).await;
    let after = seqs(&outbox).await;
    assert_eq!(after.len(), 4);
    assert!(after[3].0 > before[2].0);
    let _ = db.close().await;
    app.stop().await;
}

/// The migration that adds `outbox_parked` runs on a database that already has tasks and
/// events, which stay pending.
async fn the_parked_table_migrates_into_a_database_with_events(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};
    use sea_orm_migration::MigratorTrait;
    use task_service::outbox::{OutboxStore, SeaOutbox};
    use task_service::store::migration::Migrator;

    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
        Backend::Postgres => {
            let admin = taskmesh_integration::postgres::shared_admin_url().unwrap();
            taskmesh_integration::postgres::fresh_database(&admin)
                .await
                .unwrap()
        }
    };
    let db = sea_orm::Database::connect(&url).await.unwrap();
    // The schema before this change: the first two migrations.
    Migrator::up(&db, Some(2)).await.unwrap();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, published_at, attempts) \
         VALUES ('e1', 't1', 'taskmesh.task.created.v1', '{}', 1, NULL, 7)",
    ))
    .await
    .unwrap();
    Migrator::up(&db, None).await.unwrap();
    let outbox = SeaOutbox::new(db.clone());
    let pending = outbox.pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].event_id.as_str(), pending[0].attempts),
        ("e1", 7)
    );
    assert!(outbox.parked().await.unwrap().is_empty());
    // And back down again.
    Migrator::down(&db, Some(1)).await.unwrap();
    let _ = db.close().await;
}

/// With a small TASKMESH_OUTBOX_MAX_BATCH_BYTES, a change whose event would not fit is
/// refused before it commits; a deletion never is.
async fn an_event_too_large_for_the_relay_is_refused_at_write_time(backend: Backend) {
    let app = spawn_app_with(backend, &[("TASKMESH_OUTBOX_MAX_BATCH_BYTES", "16384")]).await;
    let mut alice = app.client("alice").await;
    // 10,000 characters of two bytes each: 20 KB of event.
    let long = "é".repeat(10_000);
    let mut request = new_task("Too long");
    request.description = long.clone();
    let status = alice.create_task(request).await.unwrap_err();
    assert_invalid(&status, &["task"]);
    assert!(status.message().contains("16384"), "{status:?}");

    let task = create(&mut alice, new_task("Fits")).await;
    let status = alice
        .update_task(UpdateTaskRequest {
            id: task.id.clone(),
            description: Some(long),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&status, &["task"]);
    let kinds: Vec<String> = app.outbox().await.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(
        kinds,
        ["taskmesh.task.created.v1"],
        "nothing written for refused changes"
    );
    alice
        .delete_task(DeleteTaskRequest {
            id: task.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    app.stop().await;
}
