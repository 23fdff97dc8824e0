//! The sea-orm adapter of `OutboxStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::Serialize;

use super::{Backlog, OutboxStore, PendingEvent, StoreError};
use crate::store::outbox_entity::{self, Column, Entity};
use crate::store::outbox_parked_entity as parked;

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
        // NOT IN over the parked table, which is empty or nearly so.
        let held = sea_orm::sea_query::Query::select()
            .column(parked::Column::TaskId)
            .from(parked::Entity)
            .to_owned();
        Ok(Entity::find()
            .filter(Column::PublishedAt.is_null())
            .filter(Column::TaskId.not_in_subquery(held))
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
                attempts: u32::try_from(row.attempts).unwrap_or(0),
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

    async fn park(&self, seq: i64, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let Some(row) = Entity::find_by_id(seq)
            .filter(Column::PublishedAt.is_null())
            .one(&txn)
            .await?
        else {
            // Published or parked meanwhile (another replica led for a moment): a published
            // event put back by a retry would only go out twice.
            return Ok(());
        };
        parked::Entity::insert(parked::ActiveModel {
            seq: Set(row.seq),
            event_id: Set(row.event_id),
            task_id: Set(row.task_id),
            event_type: Set(row.event_type),
            payload: Set(row.payload),
            created_at: Set(row.created_at),
            attempts: Set(row.attempts.saturating_add(1)),
            reason: Set(reason.to_owned()),
            parked_at: Set(now.timestamp_micros()),
        })
        .exec_without_returning(&txn)
        .await?;
        Entity::delete_by_id(seq).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// In statements of at most `PRUNE_BATCH` rows: a day of published events in one
    /// statement could outlast the database's statement timeout, and would hold its locks
    /// for as long.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.record_pruned_horizon(before).await?;
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
        let parked = parked::Entity::find().count(&self.db).await?;
        Ok(row.map_or_else(Backlog::default, |row| Backlog {
            events: u64::try_from(row.events).unwrap_or(0),
            oldest: row.oldest.and_then(DateTime::from_timestamp_micros),
            parked,
        }))
    }
}

impl SeaOutbox {
    /// Raises `outbox_horizon.pruned_seq` to the highest seq the prune of rows published
    /// before `before` will delete, before deleting them: a watcher's resume token that
    /// has not seen a seq at or below it answers OUT_OF_RANGE (`outbox::feed`) instead of
    /// missing a change. The set cannot grow meanwhile (`before` is in the past, and a new
    /// publication is dated now), and a failed delete only leaves the horizon high, which
    /// errs on the side of OUT_OF_RANGE.
    async fn record_pruned_horizon(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        let backend = self.db.get_database_backend();
        let before = before.timestamp_micros();
        let highest = self
            .db
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT MAX(seq) AS n FROM outbox WHERE published_at < {before}"),
            ))
            .await?
            .map(|row| row.try_get::<Option<i64>>("", "n"))
            .transpose()?
            .flatten();
        if let Some(highest) = highest {
            self.db
                .execute_raw(Statement::from_string(
                    backend,
                    format!(
                        "UPDATE outbox_horizon SET pruned_seq = {highest} \
                         WHERE id = 1 AND pruned_seq < {highest}"
                    ),
                ))
                .await?;
        }
        Ok(())
    }
}

/// A parked event, as `task-service outbox parked` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedEvent {
    pub seq: i64,
    pub event_id: String,
    pub task_id: String,
    pub event_type: String,
    pub attempts: i32,
    /// The sidecar's last refusal.
    pub reason: String,
    pub created_at: Option<DateTime<Utc>>,
    pub parked_at: Option<DateTime<Utc>>,
}

/// What an operator does with parked events.
impl SeaOutbox {
    /// Every parked event, oldest first.
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        Ok(parked::Entity::find()
            .order_by_asc(parked::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| ParkedEvent {
                seq: row.seq,
                event_id: row.event_id,
                task_id: row.task_id,
                event_type: row.event_type,
                attempts: row.attempts,
                reason: row.reason,
                created_at: DateTime::from_timestamp_micros(row.created_at),
                parked_at: DateTime::from_timestamp_micros(row.parked_at),
            })
            .collect())
    }

    /// Puts one parked event (by `seq` or event id) back in the outbox, in its old place
    /// and with no refusals counted; its task's later events follow it. Returns whether
    /// it was parked.
    pub async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let select = match id.parse::<i64>() {
            Ok(seq) => parked::Entity::find_by_id(seq),
            Err(_) => parked::Entity::find().filter(parked::Column::EventId.eq(id)),
        };
        Ok(self.put_back(select).await? > 0)
    }

    /// Puts every parked event back; returns how many.
    pub async fn retry_all(&self) -> Result<u64, StoreError> {
        self.put_back(parked::Entity::find()).await
    }

    async fn put_back(&self, select: sea_orm::Select<parked::Entity>) -> Result<u64, StoreError> {
        let txn = self.db.begin().await?;
        let rows = select.all(&txn).await?;
        let count = rows.len() as u64;
        for row in rows {
            let seq = row.seq;
            // The old `seq`, below the sequence's current value: no new row can take it.
            Entity::insert(outbox_entity::ActiveModel {
                seq: Set(row.seq),
                event_id: Set(row.event_id),
                task_id: Set(row.task_id),
                event_type: Set(row.event_type),
                payload: Set(row.payload),
                created_at: Set(row.created_at),
                published_at: Set(None),
                attempts: Set(0),
                // Watchers saw the change when it was first written, under this `seq`.
                list_id: Set(None),
                previous_list_id: Set(None),
            })
            .exec_without_returning(&txn)
            .await?;
            parked::Entity::delete_by_id(seq).exec(&txn).await?;
        }
        txn.commit().await?;
        Ok(count)
    }
}
