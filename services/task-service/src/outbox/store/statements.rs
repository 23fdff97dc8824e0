//! The statements `SeaOutbox` runs, built apart from running them: the store runs exactly
//! these, and `tests/api/explain_outbox.rs` explains them on a seeded database to hold
//! each to an index.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    Statement,
};

use super::PRUNE_BATCH;
use crate::store::outbox_entity::{Column, Entity};
use crate::store::outbox_parked_entity as parked;

/// The relay's read: the oldest `limit` unpublished rows in seq order, without the rows of
/// tasks that have a parked event.
pub fn pending(backend: DbBackend, limit: u64) -> Statement {
    // NOT EXISTS rather than NOT IN: PostgreSQL plans NOT IN (which must mind NULLs) as a
    // hash of the whole parked table, or as a rescan of it per row once that outgrows
    // work_mem; NOT EXISTS probes `idx_outbox_parked_task` per row (or hashes the table
    // while it is small), on both backends. `task_id` is never NULL: same rows.
    let held = Query::select()
        .expr(Expr::value(1))
        .from(parked::Entity)
        .and_where(
            Expr::col((parked::Entity, parked::Column::TaskId)).equals((Entity, Column::TaskId)),
        )
        .to_owned();
    Entity::find()
        .filter(Column::PublishedAt.is_null())
        .filter(Expr::not_exists(held))
        // Every row here has a NULL `published_at`, so this is seq order; said this way
        // it is the order of `idx_outbox_published_seq`, which PostgreSQL reads in order.
        // `ORDER BY seq` alone made it walk the primary key from the oldest row, published
        // or not, filtering.
        .order_by_asc(Column::PublishedAt)
        .order_by_asc(Column::Seq)
        .limit(limit)
        .build(backend)
}

pub fn mark_published(backend: DbBackend, seqs: &[i64], now: DateTime<Utc>) -> Statement {
    Entity::update_many()
        .col_expr(Column::PublishedAt, Expr::value(now.timestamp_micros()))
        .filter(Column::Seq.is_in(seqs.iter().copied()))
        .build(backend)
}

pub fn record_attempt(backend: DbBackend, seqs: &[i64]) -> Statement {
    Entity::update_many()
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .filter(Column::Seq.is_in(seqs.iter().copied()))
        .build(backend)
}

/// Parking reads the row if it is still unpublished.
pub fn unpublished(backend: DbBackend, seq: i64) -> Statement {
    Entity::find_by_id(seq)
        .filter(Column::PublishedAt.is_null())
        .limit(1)
        .build(backend)
}

/// Parking deletes the row it moved to `outbox_parked`.
pub fn delete(backend: DbBackend, seq: i64) -> Statement {
    Entity::delete_many()
        .filter(Column::Seq.eq(seq))
        .build(backend)
}

/// The highest seq a prune of the rows published before `before` deletes.
pub fn pruned_horizon(backend: DbBackend, before: DateTime<Utc>) -> Statement {
    let before = before.timestamp_micros();
    // `seq + 0`, not `seq`: a bare MAX(seq) has both planners walk the primary key down
    // from the newest row until one was published before `before`, which is past every
    // row younger than the retention, nearly all of them. This reads the range of
    // `idx_outbox_published_seq` that the prune deletes.
    Statement::from_string(
        backend,
        format!("SELECT MAX(seq + 0) AS n FROM outbox WHERE published_at < {before}"),
    )
}

pub fn raise_horizon(backend: DbBackend, highest: i64) -> Statement {
    Statement::from_string(
        backend,
        format!(
            "UPDATE outbox_horizon SET pruned_seq = {highest} \
             WHERE id = 1 AND pruned_seq < {highest}"
        ),
    )
}

/// One pruning statement: deletes at most `PRUNE_BATCH` rows published before `before`.
pub fn prune_batch(backend: DbBackend, before: DateTime<Utc>) -> Statement {
    let before = before.timestamp_micros();
    let batch = format!("SELECT seq FROM outbox WHERE published_at < {before} LIMIT {PRUNE_BATCH}");
    let sql = match backend {
        // `= ANY(ARRAY(..))`: the batch is read first, then its rows by primary key. With
        // `IN (..)` PostgreSQL joins the batch to the outbox, and for thousands of rows
        // it hashes them and reads the whole outbox to find them.
        DbBackend::Postgres => format!("DELETE FROM outbox WHERE seq = ANY(ARRAY({batch}))"),
        // SQLite looks each row of the batch up by rowid.
        _ => format!("DELETE FROM outbox WHERE seq IN ({batch})"),
    };
    Statement::from_string(backend, sql)
}

/// The unpublished rows (`events`) and the oldest one's `created_at` (`oldest`).
pub fn backlog(backend: DbBackend) -> Statement {
    Entity::find()
        .select_only()
        .column_as(Expr::from(Func::count(Expr::col(Column::Seq))), "events")
        .column_as(
            Expr::from(Func::min(Expr::col(Column::CreatedAt))),
            "oldest",
        )
        .filter(Column::PublishedAt.is_null())
        .build(backend)
}

/// The parked rows (`n`).
pub fn parked_count(backend: DbBackend) -> Statement {
    Statement::from_string(backend, "SELECT COUNT(*) AS n FROM outbox_parked")
}

/// Every parked row, oldest first (`task-service outbox parked`).
pub fn parked(backend: DbBackend) -> Statement {
    parked::Entity::find()
        .order_by_asc(parked::Column::Seq)
        .build(backend)
}

/// The parked row `id` names, by seq or by event id (`task-service outbox retry ID`).
pub fn parked_one(backend: DbBackend, id: &str) -> Statement {
    match id.parse::<i64>() {
        Ok(seq) => parked::Entity::find_by_id(seq).build(backend),
        Err(_) => parked::Entity::find()
            .filter(parked::Column::EventId.eq(id))
            .build(backend),
    }
}

/// Every parked row (`task-service outbox retry --all`).
pub fn parked_all(backend: DbBackend) -> Statement {
    parked::Entity::find().build(backend)
}

/// A retry deletes the parked row it put back.
pub fn unpark(backend: DbBackend, seq: i64) -> Statement {
    parked::Entity::delete_many()
        .filter(parked::Column::Seq.eq(seq))
        .build(backend)
}
