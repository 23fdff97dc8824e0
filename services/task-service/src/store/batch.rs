//! GetTask reads, batched: lookups that arrive while earlier ones are at the database go
//! out together as one `WHERE id IN (...)` query.
//!
//! Each query costs far more in the driver (a round trip to PostgreSQL; for SQLite, hand-offs
//! to the connection's thread) than in the database, so under load this serves many reads
//! for the price of one. A read is never served from memory: its query starts after the
//! request arrived, so it sees every change committed before that, as a query of its own
//! would. Under light load each batch is a single lookup, sent at once, with no waiting
//! for company; under load the batcher lets the runtime run a few turns first, so that
//! requests already decoded join the batch (`GATHER_YIELDS`).

use std::collections::HashMap;
use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend, DbErr, FromQueryResult, QueryResult, Statement};
use taskmesh_shared::error::ApiError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::entity::Model;
use super::sea::shared_db_error;

/// Lookups in one query at most (the statement cache keeps one statement per size).
const MAX_BATCH: usize = 64;
/// Batch queries at the database at once: one per two cores. While all are out, new
/// lookups queue up and leave together with the next one, so fewer slots mean bigger
/// batches and less CPU per read; a read then waits at most for the batch ahead of it.
/// On 2 cores at concurrency 32 (with CPU, not the database, the limit), one slot served
/// about 8% more reads than two, and two 15-30% more than four.
pub(super) fn in_flight() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 8) as u32)
}

/// Under load (the last batch had company), times the batcher yields to the runtime before
/// it sends a batch. Requests that are already decoded and runnable on this worker then
/// add their lookups to this batch instead of waiting a whole round trip for the next one.
/// On 2 cores at concurrency 32 on PostgreSQL, 4 yields served 5-15% more reads than none
/// (in alternating runs; 2 a little fewer, 16 or more fewer again). At concurrency 1 every
/// batch is alone, nothing yields, and the latency is unchanged.
const GATHER_YIELDS: usize = 4;

type Reply = oneshot::Sender<Result<Option<Model>, Arc<DbErr>>>;

struct Lookup {
    caller: String,
    id: String,
    reply: Reply,
}

#[derive(Debug, Clone)]
pub struct ReadBatcher {
    lookups: mpsc::Sender<Lookup>,
}

impl ReadBatcher {
    /// Starts the batching task on the current runtime; it ends when the last handle goes.
    pub fn spawn(db: DatabaseConnection) -> Self {
        let (lookups, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(db, queue));
        Self { lookups }
    }

    /// The row of task `id` if `caller` is a member of its list.
    pub async fn get(&self, caller: &str, id: Uuid) -> Result<Option<Model>, ApiError> {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            caller: caller.to_owned(),
            id: id.to_string(),
            reply,
        };
        self.lookups.send(lookup).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(shared_db_error)
    }
}

fn stopped() -> ApiError {
    ApiError::Unavailable("the task store is shutting down".into())
}

async fn run(db: DatabaseConnection, mut queue: mpsc::Receiver<Lookup>) {
    let slots = Arc::new(Semaphore::new(in_flight() as usize));
    let mut under_load = false;
    loop {
        // A free slot first, then the lookups: while every slot is busy they gather here.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let mut yields_left = if under_load { GATHER_YIELDS } else { 0 };
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) if yields_left > 0 => {
                    yields_left -= 1;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        under_load = batch.len() > 1;
        let db = db.clone();
        tokio::spawn(async move {
            answer(&db, batch).await;
            drop(slot);
        });
    }
}

async fn answer(db: &DatabaseConnection, batch: Vec<Lookup>) {
    let mut ids: Vec<&str> = batch.iter().map(|lookup| lookup.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut callers: Vec<&str> = batch.iter().map(|lookup| lookup.caller.as_str()).collect();
    callers.sort_unstable();
    callers.dedup();
    let found =
        Visible::find_by_statement(visible_statement(db.get_database_backend(), &ids, &callers))
            .all(db)
            .await;
    match found {
        Ok(rows) => {
            let by_key: HashMap<(&str, &str), &Model> = rows
                .iter()
                .map(|row| ((row.task.id.as_str(), row.member_id.as_str()), &row.task))
                .collect();
            for lookup in batch {
                // A task in a list the caller is not a member of is not found, exactly
                // as a missing one.
                let row = by_key
                    .get(&(lookup.id.as_str(), lookup.caller.as_str()))
                    .map(|row| (*row).clone());
                // A caller that gave up (its call was cancelled) needs no answer.
                let _gone = lookup.reply.send(Ok(row));
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for lookup in batch {
                let _gone = lookup.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A task with one of the batch's callers who is a member of its list.
struct Visible {
    task: Model,
    member_id: String,
}

impl FromQueryResult for Visible {
    fn from_query_result(row: &QueryResult, prefix: &str) -> Result<Self, DbErr> {
        Ok(Self {
            task: Model::from_query_result(row, prefix)?,
            member_id: row.try_get(prefix, "member_id")?,
        })
    }
}

/// The batch's tasks joined with the batch's callers' memberships of their lists: one
/// query, whose plan is the tasks' primary key and the members' primary key.
pub fn visible_statement(backend: DbBackend, ids: &[&str], callers: &[&str]) -> Statement {
    let placeholder = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let list = |from: usize, len: usize| {
        (from..from + len)
            .map(placeholder)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!(
        "SELECT t.*, m.user_id AS member_id FROM tasks t \
         JOIN list_members m ON m.list_id = t.list_id \
         WHERE t.id IN ({}) AND m.user_id IN ({})",
        list(1, ids.len()),
        list(ids.len() + 1, callers.len()),
    );
    let values = ids.iter().chain(callers).map(|value| (*value).into());
    Statement::from_sql_and_values(backend, sql, values)
}
