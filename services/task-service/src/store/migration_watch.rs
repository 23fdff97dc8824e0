//! What WatchTasks (`outbox::feed`) needs of the outbox, migrated into a database with
//! events as into an empty one:
//!
//! - `outbox_horizon`: one row (id 1) with the highest seq the relay's pruning has deleted,
//!   so that a resume token behind it answers OUT_OF_RANGE instead of silently missing a
//!   change. It starts at 0: rows pruned before the table existed are a day older than
//!   any resume token (tokens come with this migration).
//! - Indexes that find a list's changes in a range of seqs (a resumed watcher's catch-up
//!   reads `seq` ranges filtered by `list_id` or `previous_list_id`); the one on the list a
//!   task left is partial, over the few changes that moved a task.

use sea_orm_migration::prelude::*;

use super::migration::run_sql;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000006_watch"
    }
}

/// Both backends take these as written (partial indexes included).
const UP: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS outbox_horizon (id INTEGER NOT NULL PRIMARY KEY, \
     pruned_seq BIGINT NOT NULL)",
    "INSERT INTO outbox_horizon (id, pruned_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE INDEX IF NOT EXISTS idx_outbox_list_seq ON outbox (list_id, seq)",
    "CREATE INDEX IF NOT EXISTS idx_outbox_previous_list_seq ON outbox (previous_list_id, seq) \
     WHERE previous_list_id IS NOT NULL",
];

const DOWN: [&str; 3] = [
    "DROP INDEX IF EXISTS idx_outbox_previous_list_seq",
    "DROP INDEX IF EXISTS idx_outbox_list_seq",
    "DROP TABLE IF EXISTS outbox_horizon",
];

// `MigrationTrait` is declared with an elided `SchemaManager` lifetime; naming it here
// breaks the async-trait signature match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_sql(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_sql(manager, DOWN).await
    }
}
