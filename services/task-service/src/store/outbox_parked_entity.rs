//! The `outbox_parked` table: events the sidecar refused `TASKMESH_OUTBOX_MAX_ATTEMPTS`
//! times while it accepted others, moved out of `outbox` with the sidecar's last reason
//! until an operator retries them (`task-service outbox retry`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox_parked")]
pub struct Model {
    /// The event's `seq` in `outbox`: a retry puts it back in the same place.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub event_id: String,
    pub task_id: String,
    pub event_type: String,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub created_at: i64,
    pub attempts: i32,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub parked_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
