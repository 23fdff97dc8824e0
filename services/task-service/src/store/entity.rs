//! The `tasks` table. Times are microseconds since the Unix epoch (UTC) in BIGINT columns:
//! they sort and compare exactly the same way on SQLite and PostgreSQL.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub owner_id: String,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    pub priority: i16,
    /// A JSON array of lower-case tags.
    #[sea_orm(column_type = "Text")]
    pub tags: String,
    pub due_at: Option<i64>,
    pub time_zone: Option<String>,
    pub recurrence: Option<String>,
    pub completed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub request_id: Option<String>,
    /// Never NULL once migrated (`m20261204_000004_lists`); nullable because SQLite cannot
    /// add a NOT NULL column to a table with rows.
    pub list_id: Option<String>,
    pub assignee_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
