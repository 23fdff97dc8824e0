//! Indexes that keep ListTasks' filtered pages as cheap in a list of 100,000 tasks as in
//! one of 100 (issue 19): a filter that no index leads with makes each list's page walk
//! the list's sort index until it has found a page of matches, so a rare tag walked most
//! of the list. Migrated into a database with tasks as into an empty one.
//!
//! - `task_tags`: one row per tag of a task, with the task's list and creation time, kept
//!   by triggers in the same transaction as every insert, update and delete of `tasks`
//!   (so the service, the bench's bulk seeding and any SQL an operator runs all keep it),
//!   and filled from the tasks already there. Its index gives a list's tasks with a tag in
//!   creation order: ListTasks `tag = ?` in its default order (`sea::list_statement`).
//! - Two partial indexes of a list's tasks in creation order, one over the open tasks and
//!   one over the completed: ListTasks `status = OPEN | COMPLETED` in its default order.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use super::migration::run_sql;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000007_list_filters"
    }
}

/// Both backends take these as written.
const COMMON_UP: [&str; 4] = [
    // The key leads with the task, for the triggers' delete of a task's tags; a task's
    // tags may repeat one, so each is kept once.
    "CREATE TABLE IF NOT EXISTS task_tags (task_id VARCHAR(36) NOT NULL, \
     tag TEXT NOT NULL, list_id VARCHAR(36), created_at BIGINT NOT NULL, \
     PRIMARY KEY (task_id, tag))",
    // ListTasks `tag = ?`: a list's tasks with the tag, newest or oldest first.
    "CREATE INDEX IF NOT EXISTS idx_task_tags_list_tag_created \
     ON task_tags (list_id, tag, created_at, task_id)",
    // ListTasks `status = OPEN` in creation order.
    "CREATE INDEX IF NOT EXISTS idx_tasks_list_open_created ON tasks (list_id, created_at, id) \
     WHERE completed_at IS NULL",
    // ListTasks `status = COMPLETED` in creation order.
    "CREATE INDEX IF NOT EXISTS idx_tasks_list_completed_created \
     ON tasks (list_id, created_at, id) WHERE completed_at IS NOT NULL",
];

const COMMON_DOWN: [&str; 3] = [
    "DROP INDEX IF EXISTS idx_tasks_list_completed_created",
    "DROP INDEX IF EXISTS idx_tasks_list_open_created",
    "DROP TABLE IF EXISTS task_tags",
];

fn pg_up() -> Vec<String> {
    vec![
        // `tags` is the JSON text of an array of strings, as the service writes it.
        "CREATE OR REPLACE FUNCTION task_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF TG_OP <> 'INSERT' THEN DELETE FROM task_tags WHERE task_id = OLD.id; END IF; \
           IF TG_OP <> 'DELETE' THEN \
             INSERT INTO task_tags (task_id, tag, list_id, created_at) \
             SELECT DISTINCT NEW.id, tag, NEW.list_id, NEW.created_at \
             FROM jsonb_array_elements_text(NEW.tags::jsonb) AS tag; \
           END IF; \
           RETURN NULL; \
         END $$"
            .to_owned(),
        "DROP TRIGGER IF EXISTS task_tags_write ON tasks".to_owned(),
        "CREATE TRIGGER task_tags_write AFTER INSERT OR DELETE ON tasks \
         FOR EACH ROW EXECUTE FUNCTION task_tags_sync()"
            .to_owned(),
        // Most updates (complete, reopen, a new title) leave tags and list as they were.
        "DROP TRIGGER IF EXISTS task_tags_update ON tasks".to_owned(),
        "CREATE TRIGGER task_tags_update AFTER UPDATE OF tags, list_id ON tasks FOR EACH ROW \
         WHEN (OLD.tags IS DISTINCT FROM NEW.tags OR OLD.list_id IS DISTINCT FROM NEW.list_id) \
         EXECUTE FUNCTION task_tags_sync()"
            .to_owned(),
        "INSERT INTO task_tags (task_id, tag, list_id, created_at) \
         SELECT DISTINCT t.id, tag, t.list_id, t.created_at \
         FROM tasks t, jsonb_array_elements_text(t.tags::jsonb) AS tag \
         ON CONFLICT DO NOTHING"
            .to_owned(),
    ]
}

fn pg_down() -> Vec<String> {
    vec![
        "DROP TRIGGER IF EXISTS task_tags_update ON tasks".to_owned(),
        "DROP TRIGGER IF EXISTS task_tags_write ON tasks".to_owned(),
        "DROP FUNCTION IF EXISTS task_tags_sync()".to_owned(),
    ]
}

fn sqlite_up() -> Vec<String> {
    let insert_new = "INSERT OR IGNORE INTO task_tags (task_id, tag, list_id, created_at) \
                      SELECT new.id, value, new.list_id, new.created_at FROM json_each(new.tags);";
    let delete_old = "DELETE FROM task_tags WHERE task_id = old.id;";
    vec![
        format!(
            "CREATE TRIGGER IF NOT EXISTS task_tags_insert AFTER INSERT ON tasks \
             BEGIN {insert_new} END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS task_tags_delete AFTER DELETE ON tasks \
             BEGIN {delete_old} END"
        ),
        // Most updates (complete, reopen, a new title) leave tags and list as they were.
        format!(
            "CREATE TRIGGER IF NOT EXISTS task_tags_update AFTER UPDATE OF tags, list_id ON tasks \
             WHEN old.tags IS NOT new.tags OR old.list_id IS NOT new.list_id \
             BEGIN {delete_old} {insert_new} END"
        ),
        "INSERT OR IGNORE INTO task_tags (task_id, tag, list_id, created_at) \
         SELECT t.id, j.value, t.list_id, t.created_at FROM tasks t, json_each(t.tags) j"
            .to_owned(),
    ]
}

fn sqlite_down() -> Vec<String> {
    ["insert", "delete", "update"]
        .iter()
        .map(|event| format!("DROP TRIGGER IF EXISTS task_tags_{event}"))
        .collect()
}

// `MigrationTrait` is declared with an elided `SchemaManager` lifetime; naming it here
// breaks the async-trait signature match (as in `migration`).
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let triggers = match manager.get_database_backend() {
            DbBackend::Postgres => pg_up(),
            DbBackend::Sqlite => sqlite_up(),
            other => return Err(DbErr::Migration(format!("no tag index for {other:?}"))),
        };
        run_sql(manager, COMMON_UP).await?;
        run_sql(manager, triggers).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let triggers = match manager.get_database_backend() {
            DbBackend::Postgres => pg_down(),
            DbBackend::Sqlite => sqlite_down(),
            other => return Err(DbErr::Migration(format!("no tag index for {other:?}"))),
        };
        run_sql(manager, triggers).await?;
        run_sql(manager, COMMON_DOWN).await
    }
}
