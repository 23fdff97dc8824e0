//! The outbox lock on a real PostgreSQL: one holder, a standby that takes over when the
//! holder's session ends, stalls or hangs, and a holder that finds out it lost the lock.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use secrecy::SecretString;
use task_service::outbox::{Leadership, LeaseSettings, PgAdvisoryLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A short lease, so that the tests take seconds.
const SETTINGS: LeaseSettings = LeaseSettings {
    lease: Duration::from_millis(1500),
    lock_timeout: Duration::from_millis(300),
    retry: Duration::from_millis(200),
};

async fn database() -> String {
    let admin = taskmesh_integration::postgres::shared_admin_url().unwrap();
    taskmesh_integration::postgres::fresh_database(&admin)
        .await
        .unwrap()
}

fn lock(url: &str) -> PgAdvisoryLock {
    PgAdvisoryLock::new(SecretString::from(url.to_owned()), SETTINGS)
}

/// Whether `lock` becomes leader within `limit`; how long it took.
async fn acquires_within(lock: &mut PgAdvisoryLock, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, lock.acquire())
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// The backends holding an advisory lock in this database.
async fn holders(db: &DatabaseConnection) -> Vec<i32> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get_by_index(0).unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_and_the_standby_takes_over_when_its_session_ends() {
    let url = database().await;
    let admin = Database::connect(&url).await.unwrap();
    let (mut a, mut b) = (lock(&url), lock(&url));
    assert!(
        acquires_within(&mut a, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(
        acquires_within(&mut b, Duration::from_secs(2))
            .await
            .is_none(),
        "two holders"
    );
    // Held across several leases: the keeper refreshes the session.
    tokio::time::sleep(SETTINGS.lease * 2).await;
    // What the fence costs the relay per bulk request: one round trip.
    let started = Instant::now();
    for _ in 0..500 {
        assert!(a.still_leader().await);
    }
    eprintln!("one proof of the lock: {:?}", started.elapsed() / 500);
    assert_eq!(holders(&admin).await.len(), 1);

    // The session ends (an administrator, a restart of PostgreSQL...).
    let pid = holders(&admin).await[0];
    admin
        .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let took = acquires_within(&mut b, Duration::from_secs(5)).await;
    assert!(took.is_some(), "the standby never took over");
    assert!(
        !a.still_leader().await,
        "the old holder still believes it leads"
    );
    assert!(b.still_leader().await);
}

/// A holder whose process stalls (here: its only runtime thread blocked, as SIGSTOP would
/// stop it) loses the lock one lease after it last spoke, and finds out when it resumes.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_holder_loses_the_lock_after_one_lease() {
    let url = database().await;
    let (mut a, mut b) = (lock(&url), lock(&url));
    assert!(
        acquires_within(&mut a, Duration::from_secs(5))
            .await
            .is_some()
    );
    std::thread::sleep(SETTINGS.lease + Duration::from_millis(500));

    // PostgreSQL ended the silent session: the standby's first try succeeds.
    let took = acquires_within(&mut b, SETTINGS.retry + SETTINGS.lock_timeout * 2).await;
    assert!(took.is_some(), "the stalled holder kept the lock");
    eprintln!("stalled: the standby's first try took {took:?}");
    let asked = Instant::now();
    assert!(
        !a.still_leader().await,
        "the stalled holder still believes it leads"
    );
    assert!(
        asked.elapsed() < SETTINGS.lock_timeout * 2,
        "{:?}",
        asked.elapsed()
    );
}

/// A TCP proxy that can stop forwarding while keeping both sockets open: a half-open
/// connection, as a dropped network path leaves it.
struct Freezer {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Freezer {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, flag.clone()));
                tokio::spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Swallow everything from now on, and never close.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (_host, path) = rest.split_once('/').unwrap();
    format!("{scheme}://{user}@127.0.0.1:{port}/{path}")
}

fn host_port(url: &str) -> String {
    let rest = url.split_once('@').unwrap().1;
    rest.split_once('/').unwrap().0.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_lock_connection_is_given_up_and_released() {
    let url = database().await;
    let proxy = Freezer::start(host_port(&url)).await;
    let (mut a, mut b) = (lock(&through(&url, proxy.port)), lock(&url));
    assert!(
        acquires_within(&mut a, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(a.still_leader().await);

    proxy.freeze();
    let frozen_at = Instant::now();
    // The holder cannot prove its lock, and says so within the lock timeout...
    let proved = tokio::time::timeout(Duration::from_secs(5), a.still_leader())
        .await
        .expect("the proof hangs on a half-open connection");
    assert!(!proved);
    let noticed = frozen_at.elapsed();
    assert!(
        noticed < SETTINGS.lock_timeout + Duration::from_millis(150),
        "{noticed:?}"
    );
    // ...while PostgreSQL, which still sees an open connection, ends the silent session
    // after a lease, so the standby takes over within the documented bound.
    let took = acquires_within(&mut b, Duration::from_secs(10)).await;
    let took_over = frozen_at.elapsed();
    assert!(took.is_some(), "the half-open session kept the lock");
    eprintln!(
        "half-open: the holder gave up after {noticed:?}, the standby led after {took_over:?}"
    );
    assert!(
        took_over < SETTINGS.takeover_bound() + Duration::from_millis(500),
        "{took_over:?}"
    );
    // A new connection through the frozen path cannot even connect: bounded as well.
    let mut c = lock(&through(&url, proxy.port));
    assert!(
        acquires_within(&mut c, Duration::from_secs(2))
            .await
            .is_none()
    );
}
