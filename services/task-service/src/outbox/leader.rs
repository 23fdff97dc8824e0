//! Which replica publishes. Several task-service replicas share one PostgreSQL database;
//! if each published, one task's events could leave out of order. A session-level
//! advisory lock elects one, held by a PostgreSQL session on a connection of its own.
//!
//! PostgreSQL releases the lock when that session ends. A crashed holder's socket closes,
//! so that is at once. A holder that stalls is the hard case: a process stopped with
//! SIGSTOP, a frozen VM, a network that drops packets. TCP keepalive does not help against
//! a stopped process (its kernel answers the probes), and without timeouts a half-open
//! connection would hang the holder while PostgreSQL kept its lock. So the lock's session
//! runs with `idle_session_timeout` = the lease: PostgreSQL ends it, and releases the lock,
//! once the holder has been silent for a lease. The holder speaks every lease/5 (a keeper
//! task) and before every publish (the relay's fence, `still_leader`), and every statement
//! on the connection, the connect included, is bounded by `lock_timeout` on both ends.
//! `LeaseSettings::takeover_bound` and docs/events.md say what that bounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, ConnectOptions as _};
use secrecy::{ExposeSecret, SecretString};
// Tokio's clock, which tests can pause; the same as std's otherwise. Monotonic: it runs on
// while the process is stopped, which is what the lease check below relies on.
use tokio::time::Instant;

/// Arbitrary but fixed: "taskmesh" in ASCII.
const LOCK_KEY: i64 = 0x7461_736b_6d65_7368;

/// What the relay asks of leadership.
#[async_trait]
pub trait Leadership: Send + 'static {
    /// Returns once this process may publish.
    async fn acquire(&mut self);
    /// Proves, within a bounded time, that this process still may publish. False when it
    /// cannot: leadership is then given up, and the relay must stop publishing and call
    /// `acquire` again.
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

/// How the lock is held (`TASKMESH_OUTBOX_LEASE_MS`, `TASKMESH_OUTBOX_LOCK_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// PostgreSQL ends the lock's session, and so releases the lock, once its holder has
    /// been silent this long (`idle_session_timeout`).
    pub lease: Duration,
    /// The most connecting or one statement on the lock connection may take, enforced by
    /// this process (a timer) and by PostgreSQL (`statement_timeout`).
    pub lock_timeout: Duration,
    /// How often a standby tries to take the lock.
    pub retry: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(2),
            retry: Duration::from_secs(1),
        }
    }
}

impl LeaseSettings {
    /// How often the holder speaks on its session when it has nothing to publish: five
    /// times a lease, so that a few late heartbeats (a busy machine) do not lose the lock.
    pub fn heartbeat(&self) -> Duration {
        self.lease / 5
    }

    /// The longest a stalled or vanished leader keeps the standbys from publishing: its
    /// session ends one lease after it last spoke, and a standby tries every `retry`, each
    /// try bounded by `lock_timeout`.
    pub fn takeover_bound(&self) -> Duration {
        self.lease + self.retry + self.lock_timeout
    }

    /// The session settings of the lock connection. Besides the lease and the statement
    /// timeout, TCP keepalive and `tcp_user_timeout` let PostgreSQL see a vanished peer
    /// (a dead host) within the lease even while it sends, where the idle timeout does not
    /// apply. PostgreSQL ignores the TCP ones on a Unix socket.
    fn session_options(&self) -> Vec<(&'static str, String)> {
        let millis = |d: Duration| d.as_millis().to_string();
        let keepalive_idle = (self.lease / 2).as_secs().max(1);
        vec![
            ("idle_session_timeout", millis(self.lease)),
            ("statement_timeout", millis(self.lock_timeout)),
            ("tcp_keepalives_idle", keepalive_idle.to_string()),
            ("tcp_keepalives_interval", "1".to_owned()),
            ("tcp_keepalives_count", "3".to_owned()),
            ("tcp_user_timeout", millis(self.lease)),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
enum LockError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer came {0:?} after the question, too late to prove the lease")]
    Stalled(Duration),
    #[error("the lock's session was already given up")]
    Lost,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl LockError {
    fn hint(&self) -> &'static str {
        match self {
            Self::Sql(err) if err.to_string().contains("idle_session_timeout") => {
                "the outbox lock needs PostgreSQL 14 or newer (idle_session_timeout)"
            }
            _ => "",
        }
    }
}

/// Bounds `future` by `limit`.
async fn within<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, LockError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(LockError::Timeout(limit)),
    }
}

/// The lock's session, shared by the relay's fence and the keeper task.
struct Session {
    conn: tokio::sync::Mutex<Option<PgConnection>>,
    /// Set by the first proof that fails: every later one fails at once.
    lost: AtomicBool,
    settings: LeaseSettings,
}

impl Session {
    fn new(conn: PgConnection, settings: LeaseSettings) -> Self {
        Self {
            conn: tokio::sync::Mutex::new(Some(conn)),
            lost: AtomicBool::new(false),
            settings,
        }
    }

    /// One round trip on the lock's session, bounded by `lock_timeout` (waiting for a
    /// proof in flight included). An answer proves the lock: only the end of its session
    /// releases it, and PostgreSQL keeps an answering session for at least a lease after
    /// the question was sent.
    async fn prove(&self) -> Result<(), LockError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(LockError::Lost);
        }
        let asked = Instant::now();
        let answer = within(self.settings.lock_timeout, async {
            let mut conn = self.conn.lock().await;
            let Some(conn) = conn.as_mut() else {
                return Ok(false);
            };
            sqlx::query("SELECT 1").execute(conn).await?;
            // Another proof may have given up meanwhile.
            Ok(!self.lost.load(Ordering::SeqCst))
        })
        .await;
        let answer = match answer {
            // A stall of this process between the answer and here (SIGSTOP) may have
            // outlived the lease; only an answer well within it still proves anything.
            Ok(true) if asked.elapsed() < self.settings.lease / 2 => return Ok(()),
            Ok(true) => Err(LockError::Stalled(asked.elapsed())),
            Ok(false) => Err(LockError::Lost),
            Err(err) => Err(err),
        };
        self.lose();
        answer
    }

    /// Gives the session up. Dropping the connection closes its socket, which ends the
    /// session at once if PostgreSQL still has it (or, on a half-open path, one lease after
    /// it last spoke). A proof in flight drops it itself when it sees `lost`.
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        if let Ok(mut conn) = self.conn.try_lock() {
            drop(conn.take());
        }
    }
}

/// Speaks on the session every heartbeat, so that PostgreSQL keeps it while the relay is
/// busy elsewhere (a slow sidecar, a backoff). Ends when a round trip fails.
async fn keep(session: Arc<Session>) {
    let mut tick = tokio::time::interval(session.settings.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = session.prove().await {
            tracing::warn!(%err, "the outbox lock's session did not answer; this replica \
                stops publishing");
            return;
        }
    }
}

/// Held leadership: the session and its keeper, which stops with it.
struct Held {
    session: Arc<Session>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The keeper holds the session; without it the connection closes with `Held`.
        self.keeper.abort();
    }
}

pub struct PgAdvisoryLock {
    url: SecretString,
    settings: LeaseSettings,
    /// A standby's connection, kept between tries.
    standby: Option<PgConnection>,
    held: Option<Held>,
}

impl std::fmt::Debug for PgAdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAdvisoryLock")
            .field("held", &self.held.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PgAdvisoryLock {
    pub fn new(url: SecretString, settings: LeaseSettings) -> Self {
        Self {
            url,
            settings,
            standby: None,
            held: None,
        }
    }

    async fn connect(&self) -> Result<PgConnection, LockError> {
        let options: PgConnectOptions = self.url.expose_secret().parse()?;
        let options = options
            .application_name("task-service outbox lock")
            .options(self.settings.session_options());
        within(self.settings.lock_timeout, options.connect()).await
    }

    async fn try_lock(&mut self) -> Result<bool, LockError> {
        let mut conn = match self.standby.take() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        // On an error the connection is dropped: a new one next time.
        let locked: bool = within(
            self.settings.lock_timeout,
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn),
        )
        .await?;
        if locked {
            let session = Arc::new(Session::new(conn, self.settings));
            self.held = Some(Held {
                keeper: tokio::spawn(keep(session.clone())),
                session,
            });
        } else {
            self.standby = Some(conn);
        }
        Ok(locked)
    }

    /// Gives the lock up: closes its connection, which ends the session (dropping `Held`
    /// stops the keeper).
    fn step_down(&mut self) {
        if let Some(held) = self.held.take() {
            held.session.lose();
        }
    }
}

#[async_trait]
impl Leadership for PgAdvisoryLock {
    async fn acquire(&mut self) {
        if self.held.is_some() {
            return;
        }
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
                Err(err) => {
                    tracing::warn!(%err, hint = err.hint(), "cannot take the outbox lock; retrying");
                }
            }
            tokio::time::sleep(self.settings.retry).await;
        }
    }

    async fn still_leader(&mut self) -> bool {
        let Some(held) = self.held.as_ref() else {
            return false;
        };
        match held.session.prove().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "cannot prove that this replica still holds the outbox \
                    lock; it stops publishing");
                self.step_down();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_follow_from_the_settings() {
        let settings = LeaseSettings::default();
        assert_eq!(settings.heartbeat(), Duration::from_secs(2));
        assert_eq!(settings.takeover_bound(), Duration::from_secs(13));
        let options = settings.session_options();
        let get = |name| {
            options
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("idle_session_timeout"), Some("10000"));
        assert_eq!(get("statement_timeout"), Some("2000"));
        assert_eq!(get("tcp_user_timeout"), Some("10000"));
        // A dead peer is noticed by keepalive within the lease: 5 s idle + 3 probes 1 s apart.
        assert_eq!(get("tcp_keepalives_idle"), Some("5"));
    }
}
