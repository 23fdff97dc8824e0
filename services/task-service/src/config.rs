//! task-service settings, read once from the environment and validated at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use taskmesh_shared::auth::callers::TrustedCallers;
use taskmesh_shared::auth::{DEV_SECRET, JwksSource, MIN_SECRET_LEN};
use taskmesh_shared::config::{self, ConfigError, Source};
use taskmesh_shared::events::TASK_EVENTS_TOPIC;
use taskmesh_shared::sidecar::SidecarConfig;
use taskmesh_shared::telemetry::TelemetryConfig;

use crate::outbox::feed::FeedSettings;
use crate::outbox::{LeaseSettings, OutboxSettings};

pub const DEFAULT_PORT: u16 = 50051;
pub const DEFAULT_METRICS_PORT: u16 = 9101;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://task-service.db?mode=rwc";
/// recurring-service creates a completed recurring task's next occurrence for its owner.
pub const DEFAULT_TRUSTED_CALLERS: &str = "recurring-service=CreateTask";

/// How client tokens are checked.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// HS256 with a shared secret (`TASKMESH_JWT_SECRET`, or the development secret).
    Secret(SecretString),
    /// RS256/ES256 against a provider's key set (`TASKMESH_JWT_JWKS_URL`).
    Jwks(JwksSource),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub keys: JwtKeys,
    /// Required `iss` (`TASKMESH_JWT_ISSUER`).
    pub issuer: Option<String>,
    /// Required `aud` (`TASKMESH_JWT_AUDIENCE`).
    pub audience: Option<String>,
}

/// What one caller may ask of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Every call is answered within this, or gets DEADLINE_EXCEEDED
    /// (`TASKMESH_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// PostgreSQL cancels a statement that runs longer (`TASKMESH_DB_STATEMENT_TIMEOUT_MS`).
    pub db_statement_timeout: Duration,
    /// Calls per second per user, sustained (`TASKMESH_RATE_LIMIT_PER_SEC`)...
    pub rate_per_sec: u32,
    /// ...and in a burst (`TASKMESH_RATE_LIMIT_BURST`).
    pub rate_burst: u32,
    /// The largest request accepted (`TASKMESH_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Tasks one user may have (`TASKMESH_MAX_TASKS_PER_USER`).
    pub max_tasks_per_user: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            db_statement_timeout: Duration::from_secs(5),
            rate_per_sec: 50,
            rate_burst: 100,
            max_message_bytes: 1024 * 1024,
            max_tasks_per_user: 100_000,
        }
    }
}

/// The public port's certificate chain and key, PEM files (`TASKMESH_TLS_CERT`,
/// `TASKMESH_TLS_KEY`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub jwt: JwtConfig,
    /// Accept tokens signed with the public development secret.
    pub dev_mode: bool,
    /// TLS on the public port; plaintext when absent.
    pub tls: Option<TlsFiles>,
    /// A plaintext port with only `grpc.health.v1`, for probes that cannot speak TLS
    /// (`TASKMESH_HEALTH_PORT`).
    pub health_listen: Option<SocketAddr>,
    pub limits: Limits,
    pub telemetry: TelemetryConfig,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Prometheus endpoint (`METRICS_PORT`, 0 picks a free port).
    pub metrics_listen: SocketAddr,
    pub sidecar: SidecarConfig,
    /// Topic of the task events (`TASKMESH_TOPIC_TASK_EVENTS`).
    pub events_topic: String,
    pub outbox: OutboxSettings,
    /// WatchTasks (`TASKMESH_WATCH_*`).
    pub watch: WatchConfig,
    /// The token our sidecar presents (`APP_API_TOKEN`); enables calls on behalf of users
    /// from `trusted_callers`.
    pub app_api_token: Option<SecretString>,
    /// Dapr apps that may act on behalf of users, and with which methods
    /// (`TASKMESH_TRUSTED_CALLERS`, `app=Method,Method;app2=Method`).
    pub trusted_callers: TrustedCallers,
}

/// The database, as `serve` and `migrate` both read it (`DATABASE_URL`).
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
}

impl DatabaseConfig {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        let url = config::optional(env, "DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "<redacted>",
                "expected a sqlite:// or postgres:// URL",
            ));
        }
        Ok(Self { url: url.into() })
    }

    /// What to add to an error from opening the database: SQLite needs a writable
    /// directory for its file (and the `-wal`/`-shm` files next to it), which a container
    /// with a read-only root filesystem does not have.
    pub fn open_hint(&self, error: &str) -> Option<String> {
        let url = self.url.expose_secret();
        if !url.starts_with("sqlite:") {
            return None;
        }
        // SQLITE_CANTOPEN and SQLITE_READONLY, as SQLite words them.
        let cannot_open = [
            "unable to open database file",
            "attempt to write a readonly database",
        ]
        .iter()
        .any(|symptom| error.contains(symptom));
        cannot_open.then(|| {
            let path = url
                .trim_start_matches("sqlite:")
                .trim_start_matches("//")
                .split('?')
                .next()
                .unwrap_or_default();
            format!(
                "cannot open the SQLite database {path:?}: its directory must exist and be \
                 writable (SQLite also writes {path}-wal and {path}-shm). SQLite is for a \
                 developer machine; in Kubernetes (read-only root filesystem, several \
                 replicas) set DATABASE_URL to a postgres:// URL"
            )
        })
    }
}

/// `task-service migrate`: only the database and where the logs go. The hook job that
/// runs it before a rollout has no JWT secret, no sidecar and no ports.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub database: DatabaseConfig,
    pub telemetry: TelemetryConfig,
}

impl MigrateConfig {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig::from_env(env)?,
            telemetry: TelemetryConfig::from_env(env)?,
        })
    }
}

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        let host: IpAddr = config::parse_or(env, "APP_HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let port: u16 = config::parse_or(env, "APP_PORT", DEFAULT_PORT)?;
        let DatabaseConfig { url: database_url } = DatabaseConfig::from_env(env)?;
        let database_max_connections: u32 =
            config::parse_or(env, "DATABASE_MAX_CONNECTIONS", default_pool_size())?;
        if !(1..=1000).contains(&database_max_connections) {
            return Err(ConfigError::invalid(
                "DATABASE_MAX_CONNECTIONS",
                database_max_connections.to_string(),
                "must be 1 to 1000",
            ));
        }
        let dev_mode = config::flag(env, "TASKMESH_DEV_MODE")?;
        let jwt = jwt_config(env, dev_mode)?;
        let shutdown_grace_secs: u64 = config::parse_or(env, "TASKMESH_SHUTDOWN_GRACE_SECS", 20)?;
        let metrics_port: u16 = config::parse_or(env, "METRICS_PORT", DEFAULT_METRICS_PORT)?;
        let events_topic = config::optional(env, "TASKMESH_TOPIC_TASK_EVENTS")
            .unwrap_or_else(|| TASK_EVENTS_TOPIC.to_owned());
        if events_topic.is_empty() || events_topic.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "TASKMESH_TOPIC_TASK_EVENTS",
                events_topic,
                "a topic name without spaces",
            ));
        }
        let batch_size: u64 = config::parse_or(env, "TASKMESH_OUTBOX_BATCH_SIZE", 500)?;
        if !(1..=1000).contains(&batch_size) {
            return Err(ConfigError::invalid(
                "TASKMESH_OUTBOX_BATCH_SIZE",
                batch_size.to_string(),
                "must be 1 to 1000",
            ));
        }
        let retention_secs: u64 =
            config::parse_or(env, "TASKMESH_OUTBOX_RETENTION_SECS", 24 * 3600)?;
        let max_batch_bytes: usize = config::parse_or(
            env,
            "TASKMESH_OUTBOX_MAX_BATCH_BYTES",
            crate::outbox::DEFAULT_MAX_BATCH_BYTES,
        )?;
        // Below 16 KiB a task with a long description could not be written at all.
        if max_batch_bytes < 16 * 1024 {
            return Err(ConfigError::invalid(
                "TASKMESH_OUTBOX_MAX_BATCH_BYTES",
                max_batch_bytes.to_string(),
                "must be at least 16384, and below the sidecar's --max-body-size \
                 (dapr.io/max-body-size)",
            ));
        }
        let max_attempts: u32 = config::parse_or(env, "TASKMESH_OUTBOX_MAX_ATTEMPTS", 20)?;
        if max_attempts == 0 {
            return Err(ConfigError::invalid(
                "TASKMESH_OUTBOX_MAX_ATTEMPTS",
                "0",
                "must be at least 1",
            ));
        }
        let limits = limits(env)?;
        let watch = watch_config(env, &limits)?;
        Ok(Self {
            listen: SocketAddr::new(host, port),
            database_url,
            database_max_connections,
            jwt,
            dev_mode,
            tls: tls_files(env)?,
            health_listen: config::optional(env, "TASKMESH_HEALTH_PORT")
                .map(|_| config::parse_or(env, "TASKMESH_HEALTH_PORT", 0u16))
                .transpose()?
                .map(|port| SocketAddr::new(host, port)),
            limits,
            watch,
            telemetry: TelemetryConfig::from_env(env)?,
            shutdown_grace: Duration::from_secs(shutdown_grace_secs),
            metrics_listen: SocketAddr::new(host, metrics_port),
            sidecar: SidecarConfig::from_env(env)?,
            events_topic,
            outbox: OutboxSettings {
                batch_size,
                max_batch_bytes,
                max_attempts,
                retention: Duration::from_secs(retention_secs),
                leadership: lease_settings(env)?,
                ..OutboxSettings::default()
            },
            app_api_token: config::optional(env, "APP_API_TOKEN").map(SecretString::from),
            trusted_callers: {
                let text = config::optional(env, "TASKMESH_TRUSTED_CALLERS")
                    .unwrap_or_else(|| DEFAULT_TRUSTED_CALLERS.to_owned());
                TrustedCallers::parse(&text)
                    .map_err(|err| ConfigError::invalid("TASKMESH_TRUSTED_CALLERS", text, err))?
            },
        })
    }

    pub fn database(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url.clone(),
        }
    }

    pub fn uses_dev_secret(&self) -> bool {
        matches!(&self.jwt.keys, JwtKeys::Secret(secret) if secret.expose_secret() == DEV_SECRET)
    }

    /// The key page tokens are signed with. Page tokens only need integrity (a forged one
    /// still only reaches the caller's own tasks: the owner is part of every query), so
    /// without a shared secret the provider's key set location, which every replica
    /// shares, is enough.
    pub fn page_token_key(&self) -> Vec<u8> {
        match &self.jwt.keys {
            JwtKeys::Secret(secret) => secret.expose_secret().as_bytes().to_vec(),
            JwtKeys::Jwks(JwksSource::Url(url)) => url.as_bytes().to_vec(),
            JwtKeys::Jwks(JwksSource::File(path)) => path.to_string_lossy().as_bytes().to_vec(),
        }
    }
}

/// How the publishing replica holds its lock on PostgreSQL (`outbox::leader`).
fn lease_settings(env: &dyn Source) -> Result<LeaseSettings, ConfigError> {
    let defaults = LeaseSettings::default();
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let lease_ms: u64 = config::parse_or(env, "TASKMESH_OUTBOX_LEASE_MS", millis(defaults.lease))?;
    if !(1000..=600_000).contains(&lease_ms) {
        return Err(ConfigError::invalid(
            "TASKMESH_OUTBOX_LEASE_MS",
            lease_ms.to_string(),
            "must be 1000 to 600000",
        ));
    }
    let timeout_ms: u64 = config::parse_or(
        env,
        "TASKMESH_OUTBOX_LOCK_TIMEOUT_MS",
        millis(defaults.lock_timeout),
    )?;
    // A heartbeat goes every lease/5 and may take this long: it must end well within
    // the lease, or a slow answer would cost the lock.
    if timeout_ms < 100 || timeout_ms > lease_ms / 4 {
        return Err(ConfigError::invalid(
            "TASKMESH_OUTBOX_LOCK_TIMEOUT_MS",
            timeout_ms.to_string(),
            "must be at least 100 and at most a quarter of TASKMESH_OUTBOX_LEASE_MS",
        ));
    }
    let lease = Duration::from_millis(lease_ms);
    Ok(LeaseSettings {
        lease,
        lock_timeout: Duration::from_millis(timeout_ms),
        // A standby's connection must not sit idle for a lease, or PostgreSQL ends it.
        retry: defaults.retry.min(lease / 5),
    })
}

fn jwt_config(env: &dyn Source, dev_mode: bool) -> Result<JwtConfig, ConfigError> {
    let secret = config::optional(env, "TASKMESH_JWT_SECRET");
    let jwks = config::optional(env, "TASKMESH_JWT_JWKS_URL");
    let keys = match (secret, jwks, dev_mode) {
        (Some(_), Some(_), _) => {
            return Err(ConfigError::invalid(
                "TASKMESH_JWT_JWKS_URL",
                "<set>",
                "set either TASKMESH_JWT_JWKS_URL (RS256/ES256 tokens of an identity \
                 provider) or TASKMESH_JWT_SECRET (HS256), not both",
            ));
        }
        (None, Some(url), _) => JwtKeys::Jwks(
            JwksSource::parse(&url)
                .map_err(|err| ConfigError::invalid("TASKMESH_JWT_JWKS_URL", url.clone(), err))?,
        ),
        (Some(secret), None, false) if secret == DEV_SECRET => {
            return Err(ConfigError::invalid(
                "TASKMESH_JWT_SECRET",
                "<redacted>",
                "is the public development secret, which anyone can sign with; it is \
                 accepted only with TASKMESH_DEV_MODE=true",
            ));
        }
        (Some(secret), None, _) if secret.len() < MIN_SECRET_LEN => {
            return Err(ConfigError::invalid(
                "TASKMESH_JWT_SECRET",
                "<redacted>",
                format!(
                    "must be at least {MIN_SECRET_LEN} bytes (HS256 wants a key as long as its hash)"
                ),
            ));
        }
        (Some(secret), None, _) => JwtKeys::Secret(secret.into()),
        (None, None, true) => JwtKeys::Secret(DEV_SECRET.to_owned().into()),
        (None, None, false) => {
            return Err(ConfigError::Missing {
                name: "TASKMESH_JWT_JWKS_URL",
                reason: "client tokens need keys: TASKMESH_JWT_JWKS_URL (an identity \
                         provider's JWKS), TASKMESH_JWT_SECRET (HS256, 32 bytes or more), or \
                         TASKMESH_DEV_MODE=true for local development with the public dev secret"
                    .into(),
            });
        }
    };
    Ok(JwtConfig {
        keys,
        issuer: config::optional(env, "TASKMESH_JWT_ISSUER"),
        audience: config::optional(env, "TASKMESH_JWT_AUDIENCE"),
    })
}

fn tls_files(env: &dyn Source) -> Result<Option<TlsFiles>, ConfigError> {
    match (
        config::optional(env, "TASKMESH_TLS_CERT"),
        config::optional(env, "TASKMESH_TLS_KEY"),
    ) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        })),
        (None, None) => Ok(None),
        (Some(cert), None) => Err(ConfigError::invalid(
            "TASKMESH_TLS_CERT",
            cert,
            "TLS needs TASKMESH_TLS_KEY too",
        )),
        (None, Some(key)) => Err(ConfigError::invalid(
            "TASKMESH_TLS_KEY",
            key,
            "TLS needs TASKMESH_TLS_CERT too",
        )),
    }
}

fn limits(env: &dyn Source) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    let positive = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        let value: u64 = config::parse_or(env, name, default)?;
        if value == 0 {
            return Err(ConfigError::invalid(name, "0", "must be at least 1"));
        }
        Ok(value)
    };
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let small = |name: &'static str, value: u64| {
        u32::try_from(value).map_err(|_| ConfigError::invalid(name, value.to_string(), "too large"))
    };
    Ok(Limits {
        request_timeout: Duration::from_millis(positive(
            "TASKMESH_REQUEST_TIMEOUT_MS",
            millis(defaults.request_timeout),
        )?),
        db_statement_timeout: Duration::from_millis(positive(
            "TASKMESH_DB_STATEMENT_TIMEOUT_MS",
            millis(defaults.db_statement_timeout),
        )?),
        rate_per_sec: small(
            "TASKMESH_RATE_LIMIT_PER_SEC",
            positive("TASKMESH_RATE_LIMIT_PER_SEC", defaults.rate_per_sec.into())?,
        )?,
        rate_burst: small(
            "TASKMESH_RATE_LIMIT_BURST",
            positive("TASKMESH_RATE_LIMIT_BURST", defaults.rate_burst.into())?,
        )?,
        max_message_bytes: usize::try_from(positive(
            "TASKMESH_MAX_MESSAGE_BYTES",
            defaults.max_message_bytes as u64,
        )?)
        .unwrap_or(usize::MAX),
        max_tasks_per_user: positive("TASKMESH_MAX_TASKS_PER_USER", defaults.max_tasks_per_user)?,
    })
}

/// How WatchTasks streams (`outbox::feed`, `api::watch`).
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub feed: FeedSettings,
    /// A keep-alive after this long without a message (`TASKMESH_WATCH_KEEPALIVE_SECS`).
    pub keepalive: Duration,
}

fn watch_config(env: &dyn Source, limits: &Limits) -> Result<WatchConfig, ConfigError> {
    let within = |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
        let value: u64 = config::parse_or(env, name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::invalid(
                name,
                value.to_string(),
                format!("must be {} to {}", range.start(), range.end()),
            ))
        }
    };
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    // A transaction holding an outbox seq ends within the request deadline (the handler,
    // and its transaction, are dropped then) plus a statement's time for its COMMIT.
    let default_grace =
        limits.request_timeout + limits.db_statement_timeout + Duration::from_secs(10);
    let grace_ms: u64 =
        config::parse_or(env, "TASKMESH_WATCH_GAP_GRACE_MS", millis(default_grace))?;
    if grace_ms <= millis(limits.db_statement_timeout) {
        return Err(ConfigError::invalid(
            "TASKMESH_WATCH_GAP_GRACE_MS",
            grace_ms.to_string(),
            "must be longer than TASKMESH_DB_STATEMENT_TIMEOUT_MS (and should exceed \
             TASKMESH_REQUEST_TIMEOUT_MS too), or a late commit could be missed",
        ));
    }
    Ok(WatchConfig {
        feed: FeedSettings {
            poll_interval: Duration::from_millis(within(
                "TASKMESH_WATCH_POLL_MS",
                50,
                10..=10_000,
            )?),
            gap_grace: Duration::from_millis(grace_ms),
            buffer: usize::try_from(within("TASKMESH_WATCH_BUFFER", 1000, 1..=100_000)?)
                .unwrap_or(1000),
            membership_refresh: Duration::from_millis(within(
                "TASKMESH_WATCH_MEMBERSHIP_REFRESH_MS",
                1000,
                100..=60_000,
            )?),
        },
        keepalive: Duration::from_secs(within("TASKMESH_WATCH_KEEPALIVE_SECS", 20, 1..=3600)?),
    })
}

/// Four connections per core this process may use (its cgroup's CPU quota counts), at
/// least 4 and at most 64. Measured on 2 cores against PostgreSQL (`just bench-api`):
/// 8 connections served GetTask and CreateTask 15-40% faster than 16 or 32, which only add
/// server processes competing for the same cores.
fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    u32::try_from(cores.saturating_mul(4)).map_or(64, |n| n.clamp(4, 64))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secret_is_required_outside_dev_mode() {
        let err = Config::from_env(&HashMap::<&str, &str>::new()).unwrap_err();
        assert!(err.to_string().contains("TASKMESH_JWT_SECRET"), "{err}");

        let dev = Config::from_env(&HashMap::from([("TASKMESH_DEV_MODE", "1")])).unwrap();
        assert!(dev.uses_dev_secret());
    }

    #[test]
    fn the_dev_secret_needs_dev_mode() {
        let env = HashMap::from([("TASKMESH_JWT_SECRET", DEV_SECRET)]);
        let err = Config::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("development secret"), "{err}");
        let env = HashMap::from([
            ("TASKMESH_JWT_SECRET", DEV_SECRET),
            ("TASKMESH_DEV_MODE", "true"),
        ]);
        assert!(Config::from_env(&env).unwrap().uses_dev_secret());
    }

    #[test]
    fn jwks_issuer_and_audience() {
        let env = HashMap::from([
            ("TASKMESH_JWT_JWKS_URL", "https://id.example/jwks.json"),
            ("TASKMESH_JWT_ISSUER", "https://id.example"),
            ("TASKMESH_JWT_AUDIENCE", "taskmesh"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert!(matches!(config.jwt.keys, JwtKeys::Jwks(JwksSource::Url(_))));
        assert_eq!(config.jwt.issuer.as_deref(), Some("https://id.example"));
        assert_eq!(config.jwt.audience.as_deref(), Some("taskmesh"));
        assert!(!config.uses_dev_secret());
        let both = HashMap::from([
            ("TASKMESH_JWT_JWKS_URL", "https://id.example/jwks.json"),
            ("TASKMESH_JWT_SECRET", SECRET),
        ]);
        assert!(Config::from_env(&both).is_err());
    }

    #[test]
    fn limits_and_trusted_callers() {
        let config = Config::from_env(&HashMap::from([("TASKMESH_JWT_SECRET", SECRET)])).unwrap();
        assert_eq!(config.limits, Limits::default());
        assert!(
            config
                .trusted_callers
                .allows("recurring-service", "CreateTask")
        );
        assert!(
            !config
                .trusted_callers
                .allows("recurring-service", "DeleteTask")
        );
        let env = HashMap::from([
            ("TASKMESH_JWT_SECRET", SECRET),
            ("TASKMESH_RATE_LIMIT_PER_SEC", "5"),
            ("TASKMESH_MAX_TASKS_PER_USER", "10"),
            ("TASKMESH_TRUSTED_CALLERS", "a=GetTask,ListTasks;b"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.limits.rate_per_sec, 5);
        assert_eq!(config.limits.max_tasks_per_user, 10);
        assert!(config.trusted_callers.allows("a", "ListTasks"));
        assert!(config.trusted_callers.allows("b", "DeleteTask"));
    }

    #[test]
    fn defaults_and_overrides() {
        let env = HashMap::from([
            ("TASKMESH_JWT_SECRET", SECRET),
            ("APP_PORT", "6000"),
            ("APP_HOST", "0.0.0.0"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert!(!config.dev_mode);
    }

    #[test]
    fn the_lease_and_its_timeouts() {
        let config = Config::from_env(&HashMap::from([("TASKMESH_JWT_SECRET", SECRET)])).unwrap();
        assert_eq!(config.outbox.leadership, LeaseSettings::default());
        let config = Config::from_env(&HashMap::from([
            ("TASKMESH_JWT_SECRET", SECRET),
            ("TASKMESH_OUTBOX_LEASE_MS", "3000"),
            ("TASKMESH_OUTBOX_LOCK_TIMEOUT_MS", "500"),
        ]))
        .unwrap();
        assert_eq!(
            config.outbox.leadership,
            LeaseSettings {
                lease: Duration::from_secs(3),
                lock_timeout: Duration::from_millis(500),
                retry: Duration::from_millis(600),
            }
        );
        // The timeout is checked against the lease it comes with.
        let err = Config::from_env(&HashMap::from([
            ("TASKMESH_JWT_SECRET", SECRET),
            ("TASKMESH_OUTBOX_LEASE_MS", "3000"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("TASKMESH_OUTBOX_LOCK_TIMEOUT_MS"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("APP_PORT", "99999"),
            ("APP_HOST", "localhost:1"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("TASKMESH_JWT_SECRET", "short"),
            ("TASKMESH_LOG_FORMAT", "xml"),
            ("METRICS_PORT", "-1"),
            ("TASKMESH_OUTBOX_BATCH_SIZE", "0"),
            ("TASKMESH_OUTBOX_RETENTION_SECS", "soon"),
            ("TASKMESH_OUTBOX_MAX_BATCH_BYTES", "1000"),
            ("TASKMESH_OUTBOX_MAX_ATTEMPTS", "0"),
            ("TASKMESH_OUTBOX_LEASE_MS", "999"),
            ("TASKMESH_OUTBOX_LOCK_TIMEOUT_MS", "2501"),
            ("TASKMESH_TOPIC_TASK_EVENTS", "two words"),
            ("DAPR_GRPC_PORT", "x"),
            ("TASKMESH_JWT_JWKS_URL", "http://id.example/jwks"),
            ("TASKMESH_TRUSTED_CALLERS", "a b"),
            ("TASKMESH_TLS_CERT", "/tls.crt"),
            ("TASKMESH_HEALTH_PORT", "x"),
            ("TASKMESH_REQUEST_TIMEOUT_MS", "0"),
            ("TASKMESH_RATE_LIMIT_BURST", "-1"),
            ("TASKMESH_MAX_TASKS_PER_USER", "0"),
        ] {
            let mut env = HashMap::new();
            if name != "TASKMESH_JWT_JWKS_URL" {
                env.insert("TASKMESH_JWT_SECRET", SECRET);
            }
            env.insert(name, value);
            let err = Config::from_env(&env).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}: {err}");
        }
    }

    #[test]
    fn migrate_needs_only_the_database() {
        // What the chart's migration hook job sets: no JWT secret, no ports, no sidecar.
        let env = HashMap::from([
            ("DATABASE_URL", "postgres://taskmesh@db:5432/taskmesh"),
            ("TASKMESH_LOG_FORMAT", "json"),
            // What serve reads is not even looked at.
            ("APP_PORT", "not a port"),
        ]);
        let config = MigrateConfig::from_env(&env).unwrap();
        assert_eq!(
            config.database.url.expose_secret(),
            "postgres://taskmesh@db:5432/taskmesh"
        );
        assert_eq!(
            config.telemetry.log_format,
            taskmesh_shared::telemetry::LogFormat::Json
        );
        // `serve` still refuses the same environment.
        assert!(Config::from_env(&env).is_err());

        // ...and what it reads is still validated, with the variable named.
        for (name, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("TASKMESH_LOG_FORMAT", "xml"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
        ] {
            let err = MigrateConfig::from_env(&HashMap::from([(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}: {err}");
        }
        let err = MigrateConfig::from_env(&HashMap::from([("DATABASE_URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("mysql://x"),
            "the URL may hold a password: {err}"
        );
    }

    #[test]
    fn an_unopenable_sqlite_file_is_explained() {
        let sqlite = DatabaseConfig {
            url: "sqlite:///data/task-service.db?mode=rwc".to_owned().into(),
        };
        let error = "Connection Error: error returned from database: (code: 14) unable to open \
                     database file";
        let hint = sqlite.open_hint(error).unwrap();
        assert!(hint.contains("\"/data/task-service.db\""), "{hint}");
        assert!(hint.contains("postgres://"), "{hint}");
        assert!(sqlite.open_hint("pool timed out").is_none());

        let postgres = DatabaseConfig {
            url: "postgres://db/taskmesh".to_owned().into(),
        };
        assert!(postgres.open_hint(error).is_none());
    }
}
