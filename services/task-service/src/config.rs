//! task-service settings, read once from the environment and validated at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use taskmesh_shared::auth::DEV_SECRET;
use taskmesh_shared::config::{self, ConfigError, Source};
use taskmesh_shared::events::TASK_EVENTS_TOPIC;
use taskmesh_shared::sidecar::SidecarConfig;
use taskmesh_shared::telemetry::TelemetryConfig;

use crate::outbox::OutboxSettings;

pub const DEFAULT_PORT: u16 = 50051;
pub const DEFAULT_METRICS_PORT: u16 = 9101;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://task-service.db?mode=rwc";
const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub jwt_secret: SecretString,
    /// Accept tokens signed with the public development secret.
    pub dev_mode: bool,
    pub telemetry: TelemetryConfig,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Prometheus endpoint (`METRICS_PORT`, 0 picks a free port).
    pub metrics_listen: SocketAddr,
    pub sidecar: SidecarConfig,
    /// Topic of the task events (`TASKMESH_TOPIC_TASK_EVENTS`).
    pub events_topic: String,
    pub outbox: OutboxSettings,
    /// The token our sidecar presents (`APP_API_TOKEN`); enables calls on behalf of users
    /// from `trusted_callers`.
    pub app_api_token: Option<SecretString>,
    /// Dapr app ids that may act on behalf of users (`TASKMESH_TRUSTED_CALLERS`).
    pub trusted_callers: Vec<String>,
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
        let jwt_secret = match (config::optional(env, "TASKMESH_JWT_SECRET"), dev_mode) {
            (Some(secret), _) if secret.len() < MIN_SECRET_LEN => {
                return Err(ConfigError::invalid(
                    "TASKMESH_JWT_SECRET",
                    "<redacted>",
                    format!("must be at least {MIN_SECRET_LEN} bytes"),
                ));
            }
            (Some(secret), _) => secret,
            (None, true) => DEV_SECRET.to_owned(),
            (None, false) => {
                return Err(ConfigError::Missing {
                    name: "TASKMESH_JWT_SECRET",
                    reason: "it is the HS256 key of client tokens (or set TASKMESH_DEV_MODE=true \
                             for local development with the public dev secret)"
                        .into(),
                });
            }
        };
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
        Ok(Self {
            listen: SocketAddr::new(host, port),
            database_url,
            database_max_connections,
            jwt_secret: jwt_secret.into(),
            dev_mode,
            telemetry: TelemetryConfig::from_env(env)?,
            shutdown_grace: Duration::from_secs(shutdown_grace_secs),
            metrics_listen: SocketAddr::new(host, metrics_port),
            sidecar: SidecarConfig::from_env(env)?,
            events_topic,
            outbox: OutboxSettings {
                batch_size,
                retention: Duration::from_secs(retention_secs),
                ..OutboxSettings::default()
            },
            app_api_token: config::optional(env, "APP_API_TOKEN").map(SecretString::from),
            trusted_callers: config::optional(env, "TASKMESH_TRUSTED_CALLERS")
                .unwrap_or_else(|| "recurring-service".to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    pub fn database(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url.clone(),
        }
    }

    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose_secret() == DEV_SECRET
    }
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

    #[test]
    fn secret_is_required_outside_dev_mode() {
        let err = Config::from_env(&HashMap::<&str, &str>::new()).unwrap_err();
        assert!(err.to_string().contains("TASKMESH_JWT_SECRET"), "{err}");

        let dev = Config::from_env(&HashMap::from([("TASKMESH_DEV_MODE", "1")])).unwrap();
        assert!(dev.uses_dev_secret());
    }

    #[test]
    fn defaults_and_overrides() {
        let env = HashMap::from([
            ("TASKMESH_JWT_SECRET", "0123456789abcdef"),
            ("APP_PORT", "6000"),
            ("APP_HOST", "0.0.0.0"),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert!(!config.dev_mode);
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
            ("TASKMESH_TOPIC_TASK_EVENTS", "two words"),
            ("DAPR_GRPC_PORT", "x"),
        ] {
            let mut env = HashMap::from([("TASKMESH_JWT_SECRET", "0123456789abcdef")]);
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
