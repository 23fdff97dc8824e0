//! The sea-orm adapter of `OutboxStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Backlog, OutboxStore, PendingEvent, StoreError};
use crate::store::outbox_entity::{Column, Entity};

/// Rows deleted by one pruning statement.
const PRUNE_BATCH: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct SeaOutbox {
    /// The writer pool: on SQLite, marking rows must not fight the API for the lock
    /// through a second connection.
    db: DatabaseConnection,
}

impl SeaOutbox {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[derive(Debug, FromQueryResult)]
struct BacklogRow {
    events: i64,
    oldest: Option<i64>,
}

#[async_trait]
impl OutboxStore for SeaOutbox {
    async fn pending(&self, limit: u64) -> Result<Vec<PendingEvent>, StoreError> {
        Ok(Entity::find()
            .filter(Column::PublishedAt.is_null())
            .order_by_asc(Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| PendingEvent {
                seq: row.seq,
                event_id: row.event_id,
                task_id: row.task_id,
                payload: row.payload,
            })
            .collect())
    }

    async fn mark_published(&self, seqs: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        Entity::update_many()
            .col_expr(Column::PublishedAt, Expr::value(now.timestamp_micros()))
            .filter(Column::Seq.is_in(seqs.iter().copied()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn record_attempt(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        Entity::update_many()
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .filter(Column::Seq.is_in(seqs.iter().copied()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// In statements of at most `PRUNE_BATCH` rows: a day of published events in one
    /// statement could outlast the database's statement timeout, and would hold its locks
    /// for as long.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let batch = sea_orm::sea_query::Query::select()
                .column(Column::Seq)
                .from(Entity)
                .and_where(Expr::col(Column::PublishedAt).lt(before.timestamp_micros()))
                .limit(PRUNE_BATCH)
                .to_owned();
            let deleted = Entity::delete_many()
                .filter(Column::Seq.in_subquery(batch))
                .exec(&self.db)
                .await?
                .rows_affected;
            total += deleted;
            if deleted < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let row = Entity::find()
            .select_only()
            .column_as(Expr::from(Func::count(Expr::col(Column::Seq))), "events")
            .column_as(
                Expr::from(Func::min(Expr::col(Column::CreatedAt))),
                "oldest",
            )
            .filter(Column::PublishedAt.is_null())
            .into_model::<BacklogRow>()
            .one(&self.db)
            .await?;
        Ok(row.map_or_else(Backlog::default, |row| Backlog {
            events: u64::try_from(row.events).unwrap_or(0),
            oldest: row.oldest.and_then(DateTime::from_timestamp_micros),
        }))
    }
}
