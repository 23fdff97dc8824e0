//! The sea-orm adapter of `TaskStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, LikeExpr, Query, UnionType};
use std::sync::Arc;

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    FromQueryResult, IntoActiveModel, JoinType, Order, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, RuntimeErr, Select, SqlErr, Statement, TransactionTrait, TryIntoModel, Value,
};
use taskmesh_shared::error::ApiError;
use taskmesh_shared::events::TaskEvent;
use taskmesh_shared::trace_context;
use tokio::sync::Notify;
use uuid::Uuid;

use super::access;
use super::batch::ReadBatcher;
use super::entity::{ActiveModel, Column, Entity, Model};
use super::outbox_entity;
use super::search::Search;
use super::{Database, TaskStore};
use crate::domain::{
    Change, ChangeKind, ListQuery, NewTask, OrderBy, Priority, StatusFilter, Task,
};
use crate::events;

/// Owners whose task count a process remembers for the quota.
const MAX_OWNERS_REMEMBERED: usize = 100_000;

#[derive(Debug, Clone)]
pub struct SeaTaskStore {
    db: Database,
    /// GetTask's reads, batched under load (see `batch`).
    reads: ReadBatcher,
    /// Wakes the outbox relay after each commit that wrote an event.
    outbox_wake: Arc<Notify>,
    /// Wakes the watch feed (`outbox::feed`) likewise: a `Notify` wakes one waiter.
    feed_wake: Option<Arc<Notify>>,
    /// Tasks one owner may have.
    max_tasks_per_owner: u64,
    /// What each owner had at their last count, plus what this process created since.
    owned: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    /// The largest event the relay may send (`outbox::bulk_entry_bytes`).
    max_event_bytes: usize,
    /// Users whose default list this process knows exists (it is never deleted), so that
    /// only a user's first create in a process pays for making sure of it.
    defaults_made: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl SeaTaskStore {
    /// Must be called on the Tokio runtime: it starts the read batcher.
    pub fn new(db: Database, outbox_wake: Arc<Notify>) -> Self {
        Self {
            reads: ReadBatcher::spawn(db.batch_reader.clone()),
            db,
            outbox_wake,
            feed_wake: None,
            max_tasks_per_owner: u64::MAX,
            owned: Arc::default(),
            max_event_bytes: usize::MAX,
            defaults_made: Arc::default(),
        }
    }

    /// Wakes `wake` too after each commit that wrote an event (the watch feed's poller).
    #[must_use]
    pub fn with_feed_wake(mut self, wake: Arc<Notify>) -> Self {
        self.feed_wake = Some(wake);
        self
    }

    fn wake_readers(&self) {
        self.outbox_wake.notify_one();
        if let Some(wake) = &self.feed_wake {
            wake.notify_one();
        }
    }

    pub(super) fn db(&self) -> &Database {
        &self.db
    }

    /// `user`'s default list, made on first use.
    pub(super) async fn default_list(&self, user: &str) -> Result<Uuid, ApiError> {
        let known = self
            .defaults_made
            .lock()
            .is_ok_and(|made| made.contains(user));
        if known {
            return Ok(crate::lists::default_list_id(user));
        }
        let id = access::ensure_default_list(&self.db.writer, user, micros(crate::domain::now()))
            .await?;
        if let Ok(mut made) = self.defaults_made.lock() {
            // Bounded: past MAX_OWNERS_REMEMBERED everyone is made sure of again.
            if made.len() >= MAX_OWNERS_REMEMBERED {
                made.clear();
            }
            made.insert(user.to_owned());
        }
        Ok(id)
    }

    /// Refuses a change whose event would be larger than the relay may send to its
    /// sidecar (`TASKMESH_OUTBOX_MAX_BATCH_BYTES`): better INVALID_ARGUMENT now than an
    /// event the sidecar refuses after the change committed.
    #[must_use]
    pub fn with_max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    fn check_event_size(&self, event: &EventRow) -> Result<(), ApiError> {
        let bytes = crate::outbox::bulk_entry_bytes(&event.payload, &event.task_id);
        if bytes > self.max_event_bytes {
            return Err(ApiError::invalid(
                "task",
                format!(
                    "the task's event would take {bytes} bytes, more than the {} its events \
                     may have; shorten the description",
                    self.max_event_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a new task to an owner who has `max` already.
    #[must_use]
    pub fn with_task_quota(mut self, max: u64) -> Self {
        self.max_tasks_per_owner = max;
        self
    }

    /// Refuses a create to an owner at the quota. Counting costs an index range as long as
    /// the owner's tasks, so it is done only near the quota: this process remembers each
    /// owner's last count plus the tasks it created since, and counts again once that
    /// reaches 90% of the quota (a deletion only makes the estimate high, so it is safe).
    /// Other replicas' creates are not in the estimate: near the quota every create counts,
    /// and the count is not in the insert's transaction, so concurrent creates may pass the
    /// quota by the number in flight, which a quota meant against runaway clients affords.
    async fn check_quota(&self, owner: &str) -> Result<(), ApiError> {
        let limit = self.max_tasks_per_owner;
        if limit == u64::MAX {
            return Ok(());
        }
        let near = limit - limit / 10;
        let estimate = self
            .owned
            .lock()
            .ok()
            .and_then(|owned| owned.get(owner).copied());
        if estimate.is_some_and(|known| known < near) {
            self.note_created(owner);
            return Ok(());
        }
        let count = self.count_owned(owner, limit).await?;
        if count >= limit {
            return Err(ApiError::ResourceExhausted {
                message: format!(
                    "task quota reached: a user may have at most {limit} tasks; delete some first"
                ),
                retry_after: None,
            });
        }
        if let Ok(mut owned) = self.owned.lock() {
            // Bounded: past MAX_OWNERS_REMEMBERED everyone is simply counted again.
            if owned.len() >= MAX_OWNERS_REMEMBERED {
                owned.clear();
            }
            owned.insert(owner.to_owned(), count + 1);
        }
        Ok(())
    }

    fn note_created(&self, owner: &str) {
        if let Ok(mut owned) = self.owned.lock()
            && let Some(known) = owned.get_mut(owner)
        {
            *known += 1;
        }
    }

    /// The owner's tasks, counted up to `limit` (one index range, never more rows).
    async fn count_owned(&self, owner: &str, limit: u64) -> Result<u64, ApiError> {
        let backend = self.db.reader.get_database_backend();
        let placeholder = if backend == sea_orm::DbBackend::Postgres {
            "$1"
        } else {
            "?"
        };
        let sql = format!(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM tasks WHERE owner_id = {placeholder} LIMIT {limit}) AS owned"
        );
        let row = self
            .db
            .reader
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                sql,
                [owner.into()],
            ))
            .await
            .map_err(db_error)?;
        let count: i64 = row
            .map(|row| row.try_get("", "n"))
            .transpose()
            .map_err(db_error)?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Writes `event` into the outbox inside `txn`, so that it exists if and only if the
    /// change commits.
    pub(super) async fn record(
        &self,
        txn: &DatabaseTransaction,
        event: TaskEvent,
    ) -> Result<(), ApiError> {
        let row = outbox_row(event)?;
        // A deletion is never refused for its size: its event only repeats the task as it
        // was, and the relay still gets it out alone in its own request if the limit has
        // been lowered since (or parks it, when the sidecar refuses it).
        if row.event_type != taskmesh_shared::events::TaskEventKind::Deleted.event_type() {
            self.check_event_size(&row)?;
        }
        outbox_entity::Entity::insert(row.into_active())
            .exec_without_returning(txn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Inserts a task row and its event's outbox row, both or neither, and wakes the
    /// relay as `commit` does. On PostgreSQL that is one statement (`PG_INSERT_WITH_EVENT`)
    /// in its own implicit transaction: one round trip where BEGIN, two INSERTs and COMMIT
    /// take four, and each round trip costs both processes a wake-up. SQLite has no
    /// data-modifying CTE, and no round trips either, so there it is a transaction.
    async fn insert_with_event(&self, task: Model, event: EventRow) -> Result<(), DbErr> {
        let db = &self.db.writer;
        if db.get_database_backend() == DbBackend::Postgres {
            let values = pg_insert_with_event_values(task, event);
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_INSERT_WITH_EVENT,
                values,
            ))
            .await?;
        } else {
            let txn = db.begin().await?;
            Entity::insert(task.into_active_model())
                .exec_without_returning(&txn)
                .await?;
            outbox_entity::Entity::insert(event.into_active())
                .exec_without_returning(&txn)
                .await?;
            txn.commit().await?;
        }
        self.wake_readers();
        Ok(())
    }

    pub(super) async fn commit(&self, txn: DatabaseTransaction) -> Result<(), ApiError> {
        txn.commit().await.map_err(db_error)?;
        self.wake_readers();
        Ok(())
    }

    /// The caller's task of this request id. A task created with it that has since moved
    /// to a list the caller no longer sees is not theirs to be answered with.
    async fn find_by_request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<Task>, ApiError> {
        let select = Entity::find()
            .filter(Column::OwnerId.eq(owner))
            .filter(Column::RequestId.eq(request_id));
        unique(select, &self.db.reader)
            .await?
            .map(to_task)
            .transpose()
    }
}

#[async_trait]
impl TaskStore for SeaTaskStore {
    async fn create(
        &self,
        owner: &str,
        new: NewTask,
        now: DateTime<Utc>,
    ) -> Result<Task, ApiError> {
        let request_id = new.request_id.clone();
        if let Some(request_id) = &request_id
            && let Some(existing) = self.find_by_request_id(owner, request_id).await?
        {
            return Ok(existing);
        }
        let list = match new.list_id {
            None => self.default_list(owner).await?,
            Some(list) => {
                access::require(&self.db.reader, list, owner)
                    .await?
                    .check_write(list)?;
                list
            }
        };
        access::check_assignee(&self.db.reader, list, new.assignee_id.as_deref()).await?;
        self.check_quota(owner).await?;
        let task = new.into_task(owner.to_owned(), list, now);
        let mut row = to_active(&task)?;
        row.id = Set(task.id.to_string());
        row.owner_id = Set(task.owner_id.clone());
        row.created_at = Set(micros(task.created_at));
        row.request_id = Set(request_id.clone());
        // Every column is set just above.
        let row = row.try_into_model().map_err(ApiError::internal)?;

        let event = outbox_row(events::changed(ChangeKind::Created, None, &task, owner))?;
        self.check_event_size(&event)?;
        let inserted = self.insert_with_event(row, event).await;
        match inserted {
            Ok(()) => Ok(task),
            // A concurrent retry with the same request id won the race: answer with its task.
            Err(err) if is_unique_violation(&err) && request_id.is_some() => {
                let request_id = request_id.unwrap_or_default();
                self.find_by_request_id(owner, &request_id)
                    .await?
                    .ok_or_else(|| ApiError::internal(err))
            }
            Err(err) => Err(db_error(err)),
        }
    }

    async fn get(&self, caller: &str, id: Uuid) -> Result<Option<Task>, ApiError> {
        self.reads.get(caller, id).await?.map(to_task).transpose()
    }

    async fn list(&self, caller: &str, query: &ListQuery) -> Result<Vec<(Task, i64)>, ApiError> {
        let lists = match query.filter.list_id {
            Some(list) => {
                access::require(&self.db.reader, list, caller).await?;
                vec![list]
            }
            None => access::visible_lists(&self.db.reader, caller, false).await?,
        };
        let backend = self.db.reader.get_database_backend();
        let Some(statement) = list_statement(backend, &lists, query)? else {
            return Ok(Vec::new());
        };
        Keyed::find_by_statement(statement)
            .all(&self.db.reader)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| Ok((to_task(row.task)?, row.key)))
            .collect()
    }

    async fn modify(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
        change: Change,
        now: DateTime<Utc>,
    ) -> Result<Task, ApiError> {
        let txn = self.db.writer.begin().await.map_err(db_error)?;
        let mut task = writable(&txn, caller, id).await?;
        check_version(id, expected_version, task.version)?;
        if let Change::Update(patch) = &change {
            if let Some(target) = patch.moves(&task) {
                access::require(&txn, target, caller)
                    .await?
                    .check_write(target)?;
            }
            let list = patch.list_id.unwrap_or(task.list_id);
            let assignee = match &patch.assignee_id {
                Some(assignee) => assignee.as_deref(),
                None => task.assignee_id.as_deref(),
            };
            if patch.assignee_id.is_some() || patch.moves(&task).is_some() {
                access::check_assignee(&txn, list, assignee).await?;
            }
        }
        let before = task.clone();
        let kind = change.kind();
        if !task.apply(change, now)? {
            return Ok(task);
        }
        self.write_change(&txn, &before, &task, kind, caller)
            .await?;
        self.commit(txn).await?;
        Ok(task)
    }

    async fn delete(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<(), ApiError> {
        let txn = self.db.writer.begin().await.map_err(db_error)?;
        let task = writable(&txn, caller, id).await?;
        check_version(id, expected_version, task.version)?;
        self.delete_in(&txn, &task, caller).await?;
        self.commit(txn).await
    }
}

impl SeaTaskStore {
    /// Writes `after` over `before` (if no one else changed it since) and its event.
    pub(super) async fn write_change(
        &self,
        txn: &DatabaseTransaction,
        before: &Task,
        after: &Task,
        kind: ChangeKind,
        actor: &str,
    ) -> Result<(), ApiError> {
        let id = after.id;
        // The version guard turns a concurrent writer's commit into ABORTED for us,
        // without holding a lock between the read and the write.
        let updated = Entity::update_many()
            .set(to_active(after)?)
            .filter(Column::Id.eq(id.to_string()))
            .filter(Column::Version.eq(before.version))
            .exec(txn)
            .await
            .map_err(db_error)?;
        if updated.rows_affected == 0 {
            return Err(concurrent(id));
        }
        self.record(txn, events::changed(kind, Some(before), after, actor))
            .await
    }

    /// Deletes `task` (if no one else changed it since) and writes its event.
    pub(super) async fn delete_in(
        &self,
        txn: &DatabaseTransaction,
        task: &Task,
        actor: &str,
    ) -> Result<(), ApiError> {
        let deleted = Entity::delete_many()
            .filter(Column::Id.eq(task.id.to_string()))
            .filter(Column::Version.eq(task.version))
            .exec(txn)
            .await
            .map_err(db_error)?;
        if deleted.rows_affected == 0 {
            return Err(concurrent(task.id));
        }
        self.record(txn, events::deleted(task, crate::domain::now(), actor))
            .await
    }
}

/// Task `id` for a caller about to change it: NOT_FOUND unless they are a member of its
/// list, PERMISSION_DENIED for a viewer, FAILED_PRECONDITION in an archived list.
async fn writable(txn: &DatabaseTransaction, caller: &str, id: Uuid) -> Result<Task, ApiError> {
    let row = unique(Entity::find_by_id(id.to_string()), txn)
        .await?
        .ok_or_else(|| not_found(id))?;
    let task = to_task(row)?;
    access::access(txn, task.list_id, caller)
        .await?
        .ok_or_else(|| not_found(id))?
        .check_write(task.list_id)?;
    Ok(task)
}

fn concurrent(id: Uuid) -> ApiError {
    ApiError::Aborted(format!(
        "task {id} was changed concurrently; read it again and retry"
    ))
}

/// Tasks of `list` (at most `limit`), for the list operations that touch each of them.
pub(super) async fn tasks_in<C: ConnectionTrait>(
    db: &C,
    list: Uuid,
    condition: Condition,
    limit: u64,
) -> Result<Vec<Task>, ApiError> {
    Entity::find()
        .filter(Column::ListId.eq(list.to_string()))
        .filter(condition)
        .order_by(Column::Id, Order::Asc)
        .limit(limit)
        .all(db)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(to_task)
        .collect()
}

pub(super) fn assigned_to(user: &str) -> Condition {
    Condition::all().add(Column::AssigneeId.eq(user))
}

pub(super) fn open_tasks() -> Condition {
    Condition::all().add(Column::CompletedAt.is_null())
}

pub(super) fn completed_tasks() -> Condition {
    Condition::all().add(Column::CompletedAt.is_not_null())
}

/// The statement of one ListTasks page over `lists` (the caller's, already checked);
/// `None` when there are none. Public for the tests that hold every query the API can
/// issue to its index (`EXPLAIN`).
#[doc(hidden)]
pub fn list_statement(
    backend: DbBackend,
    lists: &[Uuid],
    query: &ListQuery,
) -> Result<Option<Statement>, ApiError> {
    let filter = &query.filter;
    let search = filter
        .query
        .as_deref()
        .map(|text| Search::new(backend, text))
        .transpose()?;
    let mut select = Entity::find();
    match &filter.assignee {
        Some(Some(user)) => select = select.filter(Column::AssigneeId.eq(user.as_str())),
        Some(None) => select = select.filter(Column::AssigneeId.is_null()),
        None => {}
    }
    select = match filter.status {
        StatusFilter::Open => select.filter(Column::CompletedAt.is_null()),
        StatusFilter::Completed => select.filter(Column::CompletedAt.is_not_null()),
        StatusFilter::All => select,
    };
    if let Some(priority) = filter.priority {
        select = select.filter(Column::Priority.eq(priority.as_i16()));
    }
    if let Some(before) = filter.due_before {
        select = select.filter(Column::DueAt.lt(micros(before)));
    }
    if let Some(after) = filter.due_after {
        select = select.filter(Column::DueAt.gte(micros(after)));
    }
    if let Some(needle) = &filter.title_contains {
        let pattern = format!("%{}%", escape_like(&needle.to_lowercase()));
        select = select.filter(
            Func::lower(Expr::col((Entity, Column::Title)))
                .like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    // Relevance is the rank of the search; the other orders are columns.
    let rank = match (&search, filter.order_by) {
        (Some(search), OrderBy::Relevance) => Some(search.rank()),
        (None, OrderBy::Relevance) => {
            return Err(ApiError::invalid("order_by", "relevance needs a query"));
        }
        _ => None,
    };
    if let Some(search) = &search {
        select = search.restrict(select, rank.is_some());
    }
    // A tag is found in `task_tags`, joined to each page (`page`). In creation order the
    // page comes from its index, led by list and tag, so the key and the id are its
    // columns (the same values as the task's): the planners order by an index of the
    // table they read first, not by another table's equal column.
    let tag = filter.tag.as_deref();
    let tag_led = tag.is_some() && filter.order_by == OrderBy::CreateTime;
    // A due range leaves out the tasks without a due time, so their key needs no
    // stand-in: the due time itself is the key, in the order of the list's due index.
    let due_range = filter.due_before.is_some() || filter.due_after.is_some();
    let sort_key = || match (&rank, filter.order_by) {
        (Some(rank), _) => rank.clone(),
        (None, OrderBy::CreateTime) if tag_led => Expr::col((TaskTags::Table, TaskTags::CreatedAt)),
        (None, OrderBy::DueTime) if due_range => Expr::col((Entity, Column::DueAt)),
        (None, order) => sort_key_expr(order),
    };
    let id_column = || {
        if tag_led {
            Expr::col((TaskTags::Table, TaskTags::TaskId))
        } else {
            Expr::col((Entity, Column::Id))
        }
    };

    // Keyset paging on (sort key, id): stable while rows are inserted, unlike OFFSET.
    // Priority and relevance put the highest first.
    let key_descending =
        matches!(filter.order_by, OrderBy::Priority | OrderBy::Relevance) != filter.descending;
    let id_descending = filter.descending;
    if let Some(after) = query.after {
        let key = sort_key();
        let id = after.id.to_string();
        let key_after = if key_descending {
            key.clone().lt(after.key)
        } else {
            key.clone().gt(after.key)
        };
        let id_after = if id_descending {
            id_column().lt(id)
        } else {
            id_column().gt(id)
        };
        select = select.filter(
            Condition::any()
                .add(key_after)
                .add(Condition::all().add(key.eq(after.key)).add(id_after)),
        );
    }
    let direction = |descending| if descending { Order::Desc } else { Order::Asc };
    let limit = u64::from(query.page_size) + 1;
    // The key comes with the row (a rank is no column of the task), for the page token.
    // The page of one list, or of several read as one (`list_id IN (...)`); with
    // `keys_only`, only each task's id and key, which an index may give without the row.
    let page = |scope: Scope<'_>, keys_only: bool| {
        let (in_scope, tag_in_scope) = match scope {
            Scope::List(list) => (
                Column::ListId.eq(list.to_string()),
                Expr::col((TaskTags::Table, TaskTags::ListId)).eq(list.to_string()),
            ),
            Scope::Lists(lists) => (
                Column::ListId.is_in(lists.iter().map(Uuid::to_string)),
                Expr::col((TaskTags::Table, TaskTags::ListId)).equals((Entity, Column::ListId)),
            ),
        };
        let mut rows = select.clone();
        if keys_only {
            rows = rows.select_only().expr_as(id_column(), PAGE_ID);
        }
        let mut page = rows
            .filter(in_scope)
            // BIGINT in the row whatever the column (priority is a SMALLINT), while
            // the order stays on the column itself, which its index gives.
            .expr_as(sort_key().cast_as(Alias::new("BIGINT")), SORT_KEY)
            .order_by(sort_key(), direction(key_descending))
            .order_by(id_column(), direction(id_descending))
            .limit(limit)
            .into_query();
        if let Some(tag) = tag {
            page.inner_join(
                TaskTags::Table,
                Condition::all()
                    .add(
                        Expr::col((TaskTags::Table, TaskTags::TaskId)).equals((Entity, Column::Id)),
                    )
                    .add(tag_in_scope)
                    .add(Expr::col((TaskTags::Table, TaskTags::Tag)).eq(tag)),
            );
        }
        page
    };
    let statement = match lists {
        [] => return Ok(None),
        // One list: its index gives the page in order.
        [list] => page(Scope::List(list), false),
        // A search's matches come from one index over every task (GIN, FTS5) whatever
        // the lists: read once for all of them, not once per list.
        _ if search.is_some() => page(Scope::Lists(lists), false),
        // Several: each list's page of keys from its own index, merged, and then the rows
        // of the one page kept. `list_id IN (...)` would read every task of every list and
        // sort them, which for a user with 100,000 tasks is the whole table of theirs; a
        // union of whole rows reads a page of rows per list to keep one page (SQLite
        // reads every member of a union in full, each row two b-tree searches deep).
        _ => {
            let wrap = |(n, list): (usize, &Uuid)| {
                Query::select()
                    .column(Asterisk)
                    .from_subquery(page(Scope::List(list), true), Alias::new(format!("l{n}")))
                    .to_owned()
            };
            let mut members = lists.iter().enumerate().map(wrap);
            let mut keys = members
                .next()
                .ok_or_else(|| ApiError::internal("no lists"))?;
            for member in members {
                keys.union(UnionType::All, member);
            }
            let keys = keys
                .order_by(Alias::new(SORT_KEY), direction(key_descending))
                .order_by(Alias::new(PAGE_ID), direction(id_descending))
                .limit(limit)
                .to_owned();
            let page_column = |column: &str| Expr::col((Alias::new(PAGE), Alias::new(column)));
            let mut rows = Entity::find()
                .expr_as(page_column(SORT_KEY), SORT_KEY)
                .into_query();
            rows.join_subquery(
                JoinType::InnerJoin,
                keys,
                Alias::new(PAGE),
                page_column(PAGE_ID).equals((Entity, Column::Id)),
            )
            .order_by_expr(page_column(SORT_KEY), direction(key_descending))
            .order_by_expr(page_column(PAGE_ID), direction(id_descending));
            rows
        }
    };
    Ok(Some(backend.build(&statement)))
}

/// Which lists a listing statement reads.
#[derive(Clone, Copy)]
enum Scope<'a> {
    List(&'a Uuid),
    Lists(&'a [Uuid]),
}

/// A task's tags, one row each, kept by triggers (`migration_filters`).
#[derive(sea_orm::DeriveIden)]
enum TaskTags {
    Table,
    TaskId,
    Tag,
    ListId,
    CreatedAt,
}

/// The sort key's column in a listing (`Keyed`).
const SORT_KEY: &str = "sort_key";

/// A listing across lists: the page of keys, and its tasks' ids.
const PAGE: &str = "page";
const PAGE_ID: &str = "page_id";

/// A task row with the key it was ordered by.
struct Keyed {
    task: Model,
    key: i64,
}

impl FromQueryResult for Keyed {
    fn from_query_result(row: &sea_orm::QueryResult, prefix: &str) -> Result<Self, DbErr> {
        Ok(Self {
            task: Model::from_query_result(row, prefix)?,
            key: row.try_get(prefix, SORT_KEY)?,
        })
    }
}

fn sort_key_expr(order: OrderBy) -> Expr {
    match order {
        OrderBy::CreateTime => Expr::col((Entity, Column::CreatedAt)),
        OrderBy::Priority => Expr::col((Entity, Column::Priority)),
        // The search's rank (`search::Search::rank`), which `list` uses instead.
        OrderBy::Relevance => Expr::col((Entity, Column::CreatedAt)),
        // Tasks without a due time sort after every dated task.
        OrderBy::DueTime => {
            Func::coalesce([Expr::col((Entity, Column::DueAt)), Expr::val(i64::MAX)]).into()
        }
    }
}

fn check_version(id: Uuid, expected: Option<i64>, actual: i64) -> Result<(), ApiError> {
    match expected {
        Some(expected) if expected != actual => Err(ApiError::Aborted(format!(
            "task {id} is at version {actual}, not {expected}; read it again and retry"
        ))),
        _ => Ok(()),
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("task {id}"))
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

pub(super) fn db_error(err: DbErr) -> ApiError {
    shared_db_error(Arc::new(err))
}

/// A database error as the API reports it: UNAVAILABLE when the database cannot be
/// reached (a transient failure), INTERNAL for a failed query. Shared, because every
/// caller in a read batch gets the batch's one error.
pub(super) fn shared_db_error(err: Arc<DbErr>) -> ApiError {
    if is_unreachable(&err) {
        ApiError::Unavailable(err.into())
    } else {
        ApiError::internal(err)
    }
}

/// Whether the database could not be reached, or went away under the statement: no
/// connection within the pool's acquire timeout, or a pooled connection that the server
/// closed or lost (a restart of PostgreSQL answers the statements of the sessions it cuts
/// with SQLSTATE 57P01 `admin_shutdown`, the ones after with an I/O error; class 08 is
/// "connection exception", 57P0x the server shutting down or starting up). The fault
/// matrix (`integration/tests/faults.rs`) restarts PostgreSQL under load and holds the API
/// to UNAVAILABLE for all of them.
fn is_unreachable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => {
            match err.as_ref() {
                Error::Io(_)
                | Error::Tls(_)
                | Error::PoolTimedOut
                | Error::PoolClosed
                | Error::WorkerCrashed => true,
                Error::Database(db) => db
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
                _ => false,
            }
        }
        _ => false,
    }
}

pub(super) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

pub(super) fn time(micros: i64) -> Result<DateTime<Utc>, ApiError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ApiError::internal(format!("stored time {micros} is out of range")))
}

/// An outbox row before the database numbers it (`seq`); it is unpublished, with no
/// attempts yet.
struct EventRow {
    event_id: String,
    task_id: String,
    event_type: String,
    payload: String,
    created_at: i64,
    list_id: Option<String>,
    previous_list_id: Option<String>,
}

impl EventRow {
    fn into_active(self) -> outbox_entity::ActiveModel {
        outbox_entity::ActiveModel {
            seq: NotSet,
            event_id: Set(self.event_id),
            task_id: Set(self.task_id),
            event_type: Set(self.event_type),
            payload: Set(self.payload),
            created_at: Set(self.created_at),
            published_at: Set(None),
            attempts: Set(0),
            list_id: Set(self.list_id),
            previous_list_id: Set(self.previous_list_id),
        }
    }
}

/// The outbox row of `event`. The event keeps the request's trace context: subscribers'
/// spans join the trace of the call that caused them.
fn outbox_row(event: TaskEvent) -> Result<EventRow, ApiError> {
    let event = event.with_traceparent(trace_context::current());
    Ok(EventRow {
        list_id: event.data.task.list_id.map(|list| list.to_string()),
        previous_list_id: event.data.previous_list_id.map(|list| list.to_string()),
        payload: serde_json::to_string(&event).map_err(ApiError::internal)?,
        task_id: event.data.task.id.to_string(),
        event_id: event.id,
        event_type: event.event_type,
        created_at: micros(crate::domain::now()),
    })
}

/// CreateTask on PostgreSQL: the task row and its outbox row in one statement. Written
/// out rather than built with sea-query on every call: building, cloning and dropping
/// that statement tree was an eighth of task-service's CPU in CreateTask. The columns are
/// bound in the order of `pg_insert_with_event_values`.
const PG_INSERT_WITH_EVENT: &str = "WITH task AS (INSERT INTO tasks \
    (id, owner_id, title, description, priority, tags, due_at, time_zone, recurrence, \
    completed_at, created_at, updated_at, version, request_id, list_id, assignee_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)) \
    INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, published_at, \
    attempts, list_id, previous_list_id) \
    VALUES ($17, $18, $19, $20, $21, NULL, 0, $22, $23)";

fn pg_insert_with_event_values(task: Model, event: EventRow) -> Vec<Value> {
    // Destructured, so that a new column fails to compile here instead of going unwritten.
    let Model {
        id,
        owner_id,
        title,
        description,
        priority,
        tags,
        due_at,
        time_zone,
        recurrence,
        completed_at,
        created_at,
        updated_at,
        version,
        request_id,
        list_id,
        assignee_id,
    } = task;
    let EventRow {
        event_id,
        task_id,
        event_type,
        payload,
        created_at: event_created_at,
        list_id: event_list_id,
        previous_list_id,
    } = event;
    vec![
        id.into(),
        owner_id.into(),
        title.into(),
        description.into(),
        priority.into(),
        tags.into(),
        due_at.into(),
        time_zone.into(),
        recurrence.into(),
        completed_at.into(),
        created_at.into(),
        updated_at.into(),
        version.into(),
        request_id.into(),
        list_id.into(),
        assignee_id.into(),
        event_id.into(),
        task_id.into(),
        event_type.into(),
        payload.into(),
        event_created_at.into(),
        event_list_id.into(),
        previous_list_id.into(),
    ]
}

/// The columns a change may write (everything but the identity and creation fields).
fn to_active(task: &Task) -> Result<ActiveModel, ApiError> {
    Ok(ActiveModel {
        id: NotSet,
        owner_id: NotSet,
        title: Set(task.title.clone()),
        description: Set(task.description.clone()),
        priority: Set(task.priority.as_i16()),
        tags: Set(serde_json::to_string(&task.tags).map_err(ApiError::internal)?),
        due_at: Set(task.due_at.map(micros)),
        time_zone: Set(task.time_zone.clone()),
        recurrence: Set(task.recurrence.clone()),
        completed_at: Set(task.completed_at.map(micros)),
        created_at: NotSet,
        updated_at: Set(micros(task.updated_at)),
        version: Set(task.version),
        request_id: NotSet,
        list_id: Set(Some(task.list_id.to_string())),
        assignee_id: Set(task.assignee_id.clone()),
    })
}

fn to_task(row: Model) -> Result<Task, ApiError> {
    let corrupt = |what: &str| ApiError::internal(format!("task {}: corrupt {what}", row.id));
    Ok(Task {
        id: Uuid::parse_str(&row.id).map_err(|_| corrupt("id"))?,
        list_id: row
            .list_id
            .as_deref()
            .and_then(|list| Uuid::parse_str(list).ok())
            .ok_or_else(|| corrupt("list id"))?,
        assignee_id: row.assignee_id,
        priority: Priority::from_i16(row.priority).ok_or_else(|| corrupt("priority"))?,
        tags: serde_json::from_str(&row.tags).map_err(|_| corrupt("tags"))?,
        due_at: row.due_at.map(time).transpose()?,
        completed_at: row.completed_at.map(time).transpose()?,
        created_at: time(row.created_at)?,
        updated_at: time(row.updated_at)?,
        owner_id: row.owner_id,
        title: row.title,
        description: row.description,
        time_zone: row.time_zone,
        recurrence: row.recurrence,
        version: row.version,
    })
}

/// The row a unique key selects, if any. Not `.one()`: that binds `LIMIT ?`, and SQLite
/// prepares a statement again on every run when its LIMIT is a bound parameter (the
/// value might change the plan), which was a tenth of GetTask's CPU on SQLite.
async fn unique<C: ConnectionTrait>(
    select: Select<Entity>,
    db: &C,
) -> Result<Option<Model>, ApiError> {
    let mut rows = select.all(db).await.map_err(db_error)?;
    Ok(rows.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_statement_binds_every_value_it_names() {
        let task = Model {
            id: "t".into(),
            owner_id: "o".into(),
            title: "title".into(),
            description: String::new(),
            priority: 2,
            tags: "[]".into(),
            due_at: None,
            time_zone: None,
            recurrence: None,
            completed_at: None,
            created_at: 1,
            updated_at: 1,
            version: 1,
            request_id: None,
            list_id: Some("l".into()),
            assignee_id: None,
        };
        let event = EventRow {
            event_id: "e".into(),
            task_id: "t".into(),
            event_type: "taskmesh.task.created.v1".into(),
            payload: "{}".into(),
            created_at: 1,
            list_id: Some("l".into()),
            previous_list_id: None,
        };
        let values = pg_insert_with_event_values(task, event);
        let placeholders = PG_INSERT_WITH_EVENT.matches('$').count();
        assert_eq!(placeholders, values.len());
        assert!(PG_INSERT_WITH_EVENT.contains(&format!("${}", values.len())));
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like(r"50%_off\"), r"50\%\_off\\");
    }

    #[test]
    fn a_lost_database_is_unavailable_and_a_failed_query_internal() {
        use sea_orm::sqlx::Error;
        let sqlx = |err: Error| RuntimeErr::SqlxError(Arc::new(err));
        for gone in [
            DbErr::Exec(sqlx(Error::Io(std::io::ErrorKind::BrokenPipe.into()))),
            DbErr::Query(sqlx(Error::PoolTimedOut)),
            DbErr::Conn(RuntimeErr::Internal("refused".into())),
        ] {
            assert!(is_unreachable(&gone), "{gone}");
        }
        for failed in [
            DbErr::Exec(sqlx(Error::RowNotFound)),
            DbErr::Query(RuntimeErr::Internal("bad".into())),
            DbErr::Custom("bug".into()),
        ] {
            assert!(!is_unreachable(&failed), "{failed}");
        }
    }
}
