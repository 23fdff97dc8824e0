//! Which replica publishes. Several task-service replicas share one PostgreSQL database;
//! if each published, one task's events could leave out of order. A session-level
//! advisory lock elects one: it is released by PostgreSQL when its holder's connection
//! ends, so a crashed leader is replaced within one retry interval.

use std::time::Duration;

use async_trait::async_trait;
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::sqlx::{self, Connection as _};
use secrecy::{ExposeSecret, SecretString};

/// Arbitrary but fixed: "taskmesh" in ASCII.
const LOCK_KEY: i64 = 0x7461_736b_6d65_7368;

#[async_trait]
pub trait Leadership: Send + 'static {
    /// Returns once this process may publish.
    async fn acquire(&mut self);
    /// Whether this process still may publish.
    async fn still_leader(&mut self) -> bool;
}

/// SQLite: the database belongs to one process.
#[derive(Debug, Default)]
pub struct SingleProcess;

#[async_trait]
impl Leadership for SingleProcess {
    async fn acquire(&mut self) {}

    async fn still_leader(&mut self) -> bool {
        true
    }
}

pub struct PgAdvisoryLock {
    url: SecretString,
    conn: Option<PgConnection>,
    retry: Duration,
}

impl std::fmt::Debug for PgAdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAdvisoryLock")
            .field("held", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl PgAdvisoryLock {
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            conn: None,
            retry: Duration::from_secs(2),
        }
    }

    async fn try_lock(&mut self) -> Result<bool, sqlx::Error> {
        let mut conn = PgConnection::connect(self.url.expose_secret()).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            self.conn = Some(conn);
        }
        Ok(locked)
    }
}

#[async_trait]
impl Leadership for PgAdvisoryLock {
    async fn acquire(&mut self) {
        let mut logged = false;
        loop {
            match self.try_lock().await {
                Ok(true) => {
                    tracing::info!("this replica now publishes the outbox");
                    return;
                }
                Ok(false) if !logged => {
                    tracing::info!("another replica publishes the outbox; standing by");
                    logged = true;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "cannot take the outbox lock; retrying"),
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    async fn still_leader(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if let Err(err) = sqlx::query("SELECT 1").execute(&mut *conn).await {
            tracing::warn!(%err, "lost the outbox lock connection; stepping down");
            self.conn = None;
            return false;
        }
        true
    }
}
