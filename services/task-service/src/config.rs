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

impl Config {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        let host: IpAddr = config::parse_or(env, "APP_HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let port: u16 = config::parse_or(env, "APP_PORT", DEFAULT_PORT)?;
        let database_url = config::optional(env, "DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "<redacted>",
                "expected a sqlite:// or postgres:// URL",
            ));
        }
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
            database_url: database_url.into(),
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
}
