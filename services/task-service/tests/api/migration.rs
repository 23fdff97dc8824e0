//! The lists migration on a database that already has tasks (SQLite and PostgreSQL).

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::MigratorTrait;
use task_service::lists::default_list_id;
use task_service::store::migration::Migrator;
use taskmesh_proto::tasks::v1::*;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(existing_tasks_move_into_their_owners_default_lists);

/// The migrations before lists (`m20261124_000001` to `m20261203_000003`).
const BEFORE_LISTS: u32 = 3;

async fn existing_tasks_move_into_their_owners_default_lists(backend: Backend) {
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
    Migrator::up(&db, Some(BEFORE_LISTS)).await.unwrap();
    let ids = [
        ("0190a6a0-0000-7000-8000-000000000001", "alice", "Old one"),
        ("0190a6a0-0000-7000-8000-000000000002", "alice", "Old two"),
        ("0190a6a0-0000-7000-8000-000000000003", "bob", "Bob old"),
    ];
    for (id, owner, title) in ids {
        db.execute_unprepared(&format!(
            "INSERT INTO tasks (id, owner_id, title, description, priority, tags, due_at, \
             time_zone, recurrence, completed_at, created_at, updated_at, version, request_id) \
             VALUES ('{id}', '{owner}', '{title}', '', 2, '[]', NULL, NULL, NULL, NULL, \
             1700000000000000, 1700000000000000, 1, NULL)"
        ))
        .await
        .unwrap();
    }
    Migrator::up(&db, None).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT t.owner_id, t.list_id, l.name, m.role FROM tasks t \
             JOIN lists l ON l.id = t.list_id \
             JOIN list_members m ON m.list_id = t.list_id AND m.user_id = t.owner_id \
             ORDER BY t.id",
        ))
        .await
        .unwrap();
    let got: Vec<(String, String, String, i16)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get("", "owner_id").unwrap(),
                row.try_get("", "list_id").unwrap(),
                row.try_get("", "name").unwrap(),
                row.try_get("", "role").unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String, i16)> = ids
        .iter()
        .map(|(_, owner, _)| {
            let list = default_list_id(owner).to_string();
            ((*owner).to_owned(), list, "Tasks".to_owned(), 1)
        })
        .collect();
    assert_eq!(got, expected);
    db.close().await.unwrap();

    // The service on the migrated database: each sees their own, in their default list.
    let app = spawn_app_with(backend, &[("DATABASE_URL", url.as_str())]).await;
    let mut alice = app.client("alice").await;
    let tasks = list_all(&mut alice, ListTasksRequest::default()).await;
    assert_eq!(titles(&tasks), ["Old one", "Old two"]);
    assert!(
        tasks
            .iter()
            .all(|t| t.list_id == default_list_id("alice").to_string())
    );
    let added = create(&mut alice, new_task("New")).await;
    assert_eq!(added.list_id, default_list_id("alice").to_string());
    let lists = app
        .lists("alice")
        .await
        .list_lists(ListListsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .lists;
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].id, default_list_id("alice").to_string());
    app.stop().await;
}
