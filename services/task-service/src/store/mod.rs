//! Persistence: the `TaskStore` port and its sea-orm adapter (SQLite or PostgreSQL).

mod access;
mod batch;
mod entity;
mod list_entity;
mod lists;
pub mod migration;
mod migration_filters;
mod migration_search;
mod migration_watch;
pub(crate) mod outbox_entity;
pub(crate) mod outbox_parked_entity;
mod sea;
mod search;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectOptions, DatabaseConnection, DbErr};
use sea_orm_migration::MigratorTrait;
use taskmesh_shared::error::ApiError;
use uuid::Uuid;

use crate::domain::{Change, ListQuery, NewTask, Task};
use crate::lists::{ListChange, ListView, Member, Role};

pub use sea::{SeaTaskStore, list_statement};

/// GetTask's batched read of `ids` for `callers`, for the tests that hold every query the
/// API can issue to its index (`EXPLAIN`).
#[doc(hidden)]
pub use batch::visible_statement as get_statement;

/// What the API needs from storage for tasks. Every method acts for one caller, who sees
/// the tasks of the lists they are a member of: any other task is indistinguishable from
/// a missing one. Writes need the owner or editor role, and a list that is not archived.
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Creates a task for `caller`, its owner, or returns the one an earlier call with the
    /// same request id made.
    async fn create(
        &self,
        caller: &str,
        task: NewTask,
        now: DateTime<Utc>,
    ) -> Result<Task, ApiError>;
    async fn get(&self, caller: &str, id: Uuid) -> Result<Option<Task>, ApiError>;
    /// Up to `page_size + 1` tasks, each with its sort key (the page token's cursor), so
    /// the caller can tell whether another page exists.
    async fn list(&self, caller: &str, query: &ListQuery) -> Result<Vec<(Task, i64)>, ApiError>;
    /// Applies `change` if the task is at `expected_version` (when given).
    async fn modify(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
        change: Change,
        now: DateTime<Utc>,
    ) -> Result<Task, ApiError>;
    async fn delete(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<(), ApiError>;
}

/// What the API needs from storage for lists and their members. A list the caller is not
/// a member of is indistinguishable from a missing one.
#[async_trait]
pub trait ListStore: Send + Sync + 'static {
    async fn create_list(
        &self,
        caller: &str,
        name: String,
        request_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<ListView, ApiError>;
    async fn get_list(&self, caller: &str, id: Uuid) -> Result<ListView, ApiError>;
    /// The caller's lists, their default list first (made on first use), then by id;
    /// up to `page_size + 1`, after `after` (a list id from the previous page).
    async fn lists(
        &self,
        caller: &str,
        include_archived: bool,
        page_size: u32,
        after: Option<Uuid>,
    ) -> Result<Vec<ListView>, ApiError>;
    async fn change_list(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
        change: ListChange,
        now: DateTime<Utc>,
    ) -> Result<ListView, ApiError>;
    async fn delete_list(
        &self,
        caller: &str,
        id: Uuid,
        expected_version: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError>;
    async fn members(&self, caller: &str, list: Uuid) -> Result<Vec<Member>, ApiError>;
    /// Adds `user` (`Role::Editor` or `Role::Viewer`), or changes their role when
    /// `replace` is set; ALREADY_EXISTS-like FAILED_PRECONDITION otherwise.
    async fn put_member(
        &self,
        caller: &str,
        list: Uuid,
        user: &str,
        role: Role,
        replace: bool,
        now: DateTime<Utc>,
    ) -> Result<Member, ApiError>;
    /// Removes `user` (the caller themselves to leave); their assignments in the list are
    /// cleared, each with its event.
    async fn remove_member(
        &self,
        caller: &str,
        list: Uuid,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError>;
    /// Every list `user` is a member of, archived ones included (for watchers).
    async fn visible_lists(&self, user: &str) -> Result<Vec<Uuid>, ApiError>;
}

/// Connection pools. SQLite allows one writer at a time, so writes go through a pool of
/// one connection (no `SQLITE_BUSY` under load) while reads share the WAL concurrently;
/// on PostgreSQL both are the same pool.
#[derive(Debug, Clone)]
pub struct Database {
    pub reader: DatabaseConnection,
    pub writer: DatabaseConnection,
    /// GetTask's read batches (`batch`), on connections of their own, one per batch in
    /// flight. From a shared pool each batch would get the least recently used connection,
    /// whose PostgreSQL server process (or SQLite page cache) had gone cold, and each of
    /// them would prepare and plan every batch size again.
    pub batch_reader: DatabaseConnection,
    /// SQLite's checkpointer runs while this lives (`sqlite::spawn_checkpointer`).
    checkpoints: Option<sqlite::Alive>,
}

impl Database {
    /// `statement_timeout` applies on PostgreSQL, which cancels a statement that runs
    /// longer; SQLite has no such setting (its statements run in this process, bounded by
    /// the request deadline and `busy_timeout`).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        statement_timeout: std::time::Duration,
    ) -> Result<Self, DbErr> {
        if is_sqlite(url) {
            let writer =
                sea_orm::Database::connect(sqlite::options(url, 1, sqlite::Pool::Writer)).await?;
            // SQLite reads are CPU-bound in this process: more readers than cores only add
            // page caches (each connection keeps its own), i.e. memory.
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let readers = max_connections.min(u32::try_from(cores).unwrap_or(u32::MAX));
            let reader =
                sea_orm::Database::connect(sqlite::options(url, readers, sqlite::Pool::Reader))
                    .await?;
            let batch_reader = sea_orm::Database::connect(sqlite::options(
                url,
                batch::in_flight(),
                sqlite::Pool::Reader,
            ))
            .await?;
            let checkpointer =
                sea_orm::Database::connect(sqlite::options(url, 1, sqlite::Pool::Checkpointer))
                    .await?;
            let checkpoints = sqlite::Alive::default();
            sqlite::spawn_checkpointer(checkpointer, std::sync::Arc::downgrade(&checkpoints));
            Ok(Self {
                reader,
                writer,
                batch_reader,
                checkpoints: Some(checkpoints),
            })
        } else {
            let mut options = ConnectOptions::new(url);
            options
                .max_connections(max_connections)
                .min_connections(1)
                .sqlx_logging(false)
                // The pool's default pings every connection it hands out, a second round
                // trip for each query. A connection in steady use is alive; one idle long
                // enough for the server, a proxy or a firewall to have dropped it is tested.
                .test_before_acquire_if_idle_for(PG_PING_AFTER_IDLE)
                .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                .map_sqlx_postgres_opts(move |opts| {
                    opts.options([(
                        "statement_timeout",
                        statement_timeout.as_millis().to_string(),
                    )])
                });
            let pool = sea_orm::Database::connect(options.clone()).await?;
            options
                .max_connections(batch::in_flight())
                .min_connections(batch::in_flight());
            let batch_reader = sea_orm::Database::connect(options).await?;
            Ok(Self {
                reader: pool.clone(),
                writer: pool,
                batch_reader,
                checkpoints: None,
            })
        }
    }

    pub async fn migrate(&self) -> Result<(), DbErr> {
        migration::Migrator::up(&self.writer, None).await
    }

    pub async fn close(self) {
        drop(self.checkpoints);
        let _ = self.reader.close().await;
        let _ = self.writer.close().await;
        let _ = self.batch_reader.close().await;
    }
}

/// How long a call waits for a PostgreSQL connection before it answers UNAVAILABLE. The
/// pool's default, 30 s, held every call of a client whose database was down (restarting,
/// failing over) until the client's own deadline ran out, with nothing said; a busy pool
/// hands out connections within milliseconds.
const PG_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a PostgreSQL connection may sit in the pool before it is pinged on checkout.
const PG_PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

pub fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}
