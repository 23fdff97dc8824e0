//! The local Dapr sidecar, reached with the SDK's generated gRPC client: the convenience
//! `dapr::Client` hides `tonic::Status` (so a caller cannot tell UNAVAILABLE from a
//! rejection) and lacks bulk publish and state transactions.

use std::time::Duration;

use dapr::client::ApiTokenInterceptor;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::{self, ConfigError, Source};

pub type DaprGrpc = DaprClient<InterceptedService<Channel, ApiTokenInterceptor>>;

pub const DEFAULT_PUBSUB: &str = "taskmesh-pubsub";
pub const DEFAULT_STATESTORE: &str = "taskmesh-state";

/// Where the sidecar is and how to authenticate to it, by the Dapr SDK conventions.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub endpoint: String,
    pub api_token: Option<SecretString>,
    /// The pub/sub component (`TASKMESH_PUBSUB`).
    pub pubsub: String,
    /// The state store component (`TASKMESH_STATESTORE`).
    pub statestore: String,
}

impl SidecarConfig {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        let endpoint = match config::optional(env, "DAPR_GRPC_ENDPOINT") {
            Some(endpoint) if endpoint.contains("://") => endpoint,
            Some(host_port) => format!("http://{host_port}"),
            None => {
                let port: u16 = config::parse_or(env, "DAPR_GRPC_PORT", 50001)?;
                format!("http://127.0.0.1:{port}")
            }
        };
        if endpoint.starts_with("https://") {
            return Err(ConfigError::invalid(
                "DAPR_GRPC_ENDPOINT",
                endpoint,
                "TLS to the sidecar is not supported; the sidecar is local, use http://",
            ));
        }
        Endpoint::from_shared(endpoint.clone())
            .map_err(|err| ConfigError::invalid("DAPR_GRPC_ENDPOINT", endpoint.clone(), err))?;
        let component = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = config::optional(env, name).unwrap_or_else(|| default.to_owned());
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError::invalid(
                    name,
                    value,
                    "a Dapr component name (letters, digits and '-')",
                ));
            }
            Ok(value)
        };
        Ok(Self {
            endpoint,
            api_token: config::optional(env, "DAPR_API_TOKEN")
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            pubsub: component("TASKMESH_PUBSUB", DEFAULT_PUBSUB)?,
            statestore: component("TASKMESH_STATESTORE", DEFAULT_STATESTORE)?,
        })
    }

    /// A client that connects on first use and reconnects after failures, so a service
    /// starts (and keeps serving) while its sidecar is not up yet.
    pub fn connect_lazy(&self) -> Result<DaprGrpc, ConfigError> {
        let channel = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|err| ConfigError::invalid("DAPR_GRPC_ENDPOINT", self.endpoint.clone(), err))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        let token = self
            .api_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let interceptor = ApiTokenInterceptor::try_new(token).map_err(|_| {
            ConfigError::invalid("DAPR_API_TOKEN", "<redacted>", "not valid gRPC metadata")
        })?;
        Ok(DaprClient::with_interceptor(channel, interceptor))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn endpoint_follows_sdk_conventions() {
        let none = SidecarConfig::from_env(&HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(none.endpoint, "http://127.0.0.1:50001");
        assert_eq!(none.pubsub, "taskmesh-pubsub");
        let port = SidecarConfig::from_env(&HashMap::from([("DAPR_GRPC_PORT", "3500")])).unwrap();
        assert_eq!(port.endpoint, "http://127.0.0.1:3500");
        let endpoint = SidecarConfig::from_env(&HashMap::from([
            ("DAPR_GRPC_ENDPOINT", "dapr:50001"),
            ("DAPR_GRPC_PORT", "1"),
        ]))
        .unwrap();
        assert_eq!(endpoint.endpoint, "http://dapr:50001");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("DAPR_GRPC_PORT", "x"),
            ("DAPR_GRPC_ENDPOINT", "https://dapr:443"),
            ("TASKMESH_PUBSUB", "has space"),
            ("TASKMESH_STATESTORE", "a/b"),
        ] {
            let err = SidecarConfig::from_env(&HashMap::from([(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}: {err}");
        }
    }
}
