//! SQLite's connections: one writer, a few readers, and a checkpointer beside them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection};

/// Who a pool's connections are for: their page caches differ.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pool {
    /// The one writer: a commit dirties a page of every index it touches (eight b-trees
    /// for a new task, nine with the full-text index), and in a large database those are
    /// scattered; the pages kept between commits are the ones the next commit reads.
    Writer,
    /// Readers: what each keeps for itself is memory, and the OS's file cache, which
    /// every connection shares, holds the rest. At a million tasks 4 MiB each instead of
    /// 1 MiB made the heavy listings no faster, and task-service's peak RSS 84 MB.
    Reader,
    /// The checkpointer copies WAL frames into the file; it reads no b-trees.
    Checkpointer,
}

impl Pool {
    /// SQLite's `cache_size`, in KiB (negative: a size rather than a count of pages).
    fn cache_kib(self) -> i64 {
        match self {
            Self::Writer => 4 * 1024,
            Self::Reader => 2 * 1024,
            Self::Checkpointer => 256,
        }
    }
}

/// Prepared statements kept per connection (sqlx keeps 100). ListTasks' text changes with
/// the number of lists and the filters, so most of a large cache holds statements that
/// are seldom run again, each a compiled program of tens of KiB.
const STATEMENT_CACHE: usize = 32;

/// WAL pages after which the writer checkpoints in its own commit (SQLite's default is
/// 1,000): a safety net, for when the checkpointer falls behind.
const WRITER_AUTOCHECKPOINT: u32 = 10_000;

/// How often the checkpointer copies the WAL's committed pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

pub(super) fn options(url: &str, max_connections: u32, pool: Pool) -> ConnectOptions {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .sqlx_logging(false)
        // A file in this process does not hang up; the ping would only be one more
        // round trip to the connection's worker thread for every query.
        .test_before_acquire(false)
        .map_sqlx_sqlite_opts(move |opts| {
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // With WAL, NORMAL is durable across application crashes; only a power
                // loss may drop the last commits.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .statement_cache_capacity(STATEMENT_CACHE)
                .pragma("cache_size", (-pool.cache_kib()).to_string());
            match pool {
                Pool::Writer => {
                    opts.pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT.to_string())
                }
                Pool::Reader | Pool::Checkpointer => opts,
            }
        });
    options
}

/// Checkpoints `db`'s WAL every `CHECKPOINT_EVERY` until `alive` is dropped. A checkpoint
/// in the writer's commit (SQLite's default) holds every write behind it while it copies
/// pages and syncs the file, which in a database of a million tasks took CreateTask's p99
/// from 112 to 346 ms; a PASSIVE checkpoint on another connection copies what no reader
/// still needs while the writer goes on appending to the WAL.
pub(super) fn spawn_checkpointer(db: DatabaseConnection, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() {
                break;
            }
            if let Err(err) = db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(error = %err, "SQLite checkpoint failed; the writer checkpoints past its limit");
            }
        }
        let _ = db.close().await;
    });
}

/// Keeps a checkpointer running while any clone of it lives.
pub(super) type Alive = Arc<()>;
