//! The sea-orm adapter of `OutboxStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    Statement, TransactionTrait,
};
use serde::Serialize;

use super::{Backlog, OutboxStore, PendingEvent, StoreError};
use crate::store::outbox_entity::{self, Entity};
use crate::store::outbox_parked_entity as parked;

pub mod statements;

/// Rows deleted by one pruning statement.
pub(crate) const PRUNE_BATCH: u64 = 10_000;

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

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
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
            .from_raw_sql(statements::pending(self.backend(), limit))
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
        self.db
            .execute_raw(statements::mark_published(self.backend(), seqs, now))
            .await?;
        Ok(())
    }

    async fn record_attempt(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.db
            .execute_raw(statements::record_attempt(self.backend(), seqs))
            .await?;
        Ok(())
    }

    async fn park(&self, seq: i64, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        let Some(row) = Entity::find()
            .from_raw_sql(statements::unpublished(backend, seq))
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
        txn.execute_raw(statements::delete(backend, seq)).await?;
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
            let deleted = self
                .db
                .execute_raw(statements::prune_batch(self.backend(), before))
                .await?
                .rows_affected();
            total += deleted;
            if deleted < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let backend = self.backend();
        let row = self
            .db
            .query_one_raw(statements::backlog(backend))
            .await?
            .map(|row| BacklogRow::from_query_result(&row, ""))
            .transpose()?;
        let parked = self
            .db
            .query_one_raw(statements::parked_count(backend))
            .await?
            .map(|row| row.try_get::<i64>("", "n"))
            .transpose()?
            .map_or(0, |n| u64::try_from(n).unwrap_or(0));
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
        let backend = self.backend();
        let highest = self
            .db
            .query_one_raw(statements::pruned_horizon(backend, before))
            .await?
            .map(|row| row.try_get::<Option<i64>>("", "n"))
            .transpose()?
            .flatten();
        if let Some(highest) = highest {
            self.db
                .execute_raw(statements::raise_horizon(backend, highest))
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
            .from_raw_sql(statements::parked(self.backend()))
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
        let select = statements::parked_one(self.backend(), id);
        Ok(self.put_back(select).await? > 0)
    }

    /// Puts every parked event back; returns how many.
    pub async fn retry_all(&self) -> Result<u64, StoreError> {
        self.put_back(statements::parked_all(self.backend())).await
    }

    async fn put_back(&self, select: Statement) -> Result<u64, StoreError> {
        let backend = self.backend();
        let txn = self.db.begin().await?;
        let rows = parked::Entity::find()
            .from_raw_sql(select)
            .all(&txn)
            .await?;
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
            txn.execute_raw(statements::unpark(backend, seq)).await?;
        }
        txn.commit().await?;
        Ok(count)
    }
}
