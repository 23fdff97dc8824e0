//! The full-text index of the tasks' titles and descriptions (`search`), migrated into a
//! database with tasks as into an empty one: both backends index the rows already there.
//!
//! - PostgreSQL: a stored generated tsvector column, `search`, with the title weighted A
//!   and the description B, and a GIN index on it. Adding the column rewrites the table
//!   under an exclusive lock, once: with a million tasks, a minute or so of no writes.
//! - SQLite: an FTS5 table, `tasks_fts`, over `tasks(title, description)` with `tasks` as
//!   its external content (it stores only the index, not a second copy of the text), keyed
//!   by `tasks`' rowid; three triggers keep it in step with every insert, update and
//!   delete in the same transaction, and `rebuild` indexes the rows already there.
//!   `tasks` has a text primary key, so its rowid is SQLite's own; `VACUUM` keeps rowids
//!   (it copies the table's b-tree as it is; `tests/search.rs` checks it), but a future
//!   migration that rebuilds `tasks` (create, copy, drop, rename) drops the triggers with
//!   the old table and renumbers the rows: it must create the triggers again and `rebuild`.
//!
//! The tokenizer keeps diacritics (`remove_diacritics 0`) as PostgreSQL's `simple`
//! configuration does, so that "café" and "cafe" are as different on SQLite as there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use super::migration::run_sql;
use super::search::{FTS_TABLE, PG_COLUMN, PG_CONFIG};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000005_task_search"
    }
}

/// The GIN index of `tasks.search`.
pub(super) const PG_INDEX: &str = "idx_tasks_search";

fn pg_up() -> Vec<String> {
    vec![
        // Generated, so no writer can forget it; STORED, because a GIN index needs the
        // value on disk, and ranking reads it without parsing the text again.
        format!(
            "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS {PG_COLUMN} tsvector GENERATED ALWAYS AS (\
             setweight(to_tsvector('{PG_CONFIG}'::regconfig, title), 'A') || \
             setweight(to_tsvector('{PG_CONFIG}'::regconfig, description), 'B')) STORED"
        ),
        format!("CREATE INDEX IF NOT EXISTS {PG_INDEX} ON tasks USING GIN ({PG_COLUMN})"),
    ]
}

fn pg_down() -> Vec<String> {
    vec![
        format!("DROP INDEX IF EXISTS {PG_INDEX}"),
        format!("ALTER TABLE tasks DROP COLUMN IF EXISTS {PG_COLUMN}"),
    ]
}

fn sqlite_up() -> Vec<String> {
    // An external-content table's 'delete' must be given the values it indexed: the
    // triggers pass the old row's, which are exactly those.
    let insert_new = format!(
        "INSERT INTO {FTS_TABLE} (rowid, title, description) \
         VALUES (new.rowid, new.title, new.description);"
    );
    let delete_old = format!(
        "INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rowid, title, description) \
         VALUES ('delete', old.rowid, old.title, old.description);"
    );
    vec![
        format!(
            "CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(title, description, \
             content='tasks', content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_insert AFTER INSERT ON tasks \
             BEGIN {insert_new} END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_delete AFTER DELETE ON tasks \
             BEGIN {delete_old} END"
        ),
        // Most updates (complete, reopen, a new due time) leave the text as it was: they
        // skip the index.
        format!(
            "CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_update AFTER UPDATE OF title, description \
             ON tasks WHEN old.title IS NOT new.title OR old.description IS NOT new.description \
             BEGIN {delete_old} {insert_new} END"
        ),
        // The tasks that were there before the triggers.
        format!("INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')"),
    ]
}

fn sqlite_down() -> Vec<String> {
    let mut statements: Vec<String> = ["insert", "delete", "update"]
        .iter()
        .map(|event| format!("DROP TRIGGER IF EXISTS {FTS_TABLE}_{event}"))
        .collect();
    statements.push(format!("DROP TABLE IF EXISTS {FTS_TABLE}"));
    statements
}

// `MigrationTrait` is declared with an elided `SchemaManager` lifetime; naming it here
// breaks the async-trait signature match (as in `migration`).
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => pg_up(),
            DbBackend::Sqlite => sqlite_up(),
            other => return Err(DbErr::Migration(format!("no search index for {other:?}"))),
        };
        run_sql(manager, statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => pg_down(),
            DbBackend::Sqlite => sqlite_down(),
            other => return Err(DbErr::Migration(format!("no search index for {other:?}"))),
        };
        run_sql(manager, statements).await
    }
}
