//! The `outbox` table: one row per event a committed change implies, written in the same
//! transaction as the change and marked published once the sidecar has accepted it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Commit order of a task's events: a task's later change can only be written after
    /// its earlier one committed (the version guard), so it always gets a larger `seq`.
    #[sea_orm(primary_key)]
    pub seq: i64,
    pub event_id: String,
    pub task_id: String,
    pub event_type: String,
    /// The whole CloudEvent, as published.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub created_at: i64,
    pub published_at: Option<i64>,
    /// Times the sidecar refused this event on its own while it accepted others (outages
    /// do not count): at `TASKMESH_OUTBOX_MAX_ATTEMPTS` the row moves to `outbox_parked`.
    pub attempts: i32,
    /// The task's list after the change, and the one it left when the change moved it:
    /// watchers (`WatchTasks`) select the changes of their lists by these.
    pub list_id: Option<String>,
    pub previous_list_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
