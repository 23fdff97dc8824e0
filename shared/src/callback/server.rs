//! Hosting a `Router`: the settings every subscriber service shares, and a server with
//! grpc.health.v1, the AppCallback health check, metrics and a drain deadline.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dapr::dapr::proto::runtime::v1::HealthCheckResponse;
use dapr::dapr::proto::runtime::v1::app_callback_health_check_server::{
    AppCallbackHealthCheck, AppCallbackHealthCheckServer,
};
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallbackServer;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tonic::transport::Server;

use super::{Router, RouterMetrics};
use crate::auth::callers::TrustedCallers;
use crate::config::{self, ConfigError, Source};
use crate::grpc_metrics::{GrpcMetricsLayer, KnownMethods};
use crate::metrics::MetricsServer;
use crate::reflection;
use crate::sidecar::SidecarConfig;
use crate::telemetry::TelemetryConfig;

/// task-service answers the public API with these methods; operators use `taskmesh-ops`.
pub const DEFAULT_TRUSTED_CALLERS: &str = "task-service;taskmesh-ops";

/// Settings of a subscriber service, from the environment (names as in DESIGN.md).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub sidecar: SidecarConfig,
    /// The token the sidecar presents on AppCallback calls (`APP_API_TOKEN`).
    pub app_api_token: Option<SecretString>,
    /// Apps that may invoke the methods, which name any user (`TASKMESH_TRUSTED_CALLERS`).
    pub trusted_callers: TrustedCallers,
    pub telemetry: TelemetryConfig,
    pub shutdown_grace: Duration,
}

impl ServiceConfig {
    pub fn from_env(
        env: &dyn Source,
        default_port: u16,
        default_metrics_port: u16,
    ) -> Result<Self, ConfigError> {
        let host: IpAddr = config::parse_or(env, "APP_HOST", IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let port: u16 = config::parse_or(env, "APP_PORT", default_port)?;
        let metrics_port: u16 = config::parse_or(env, "METRICS_PORT", default_metrics_port)?;
        let grace: u64 = config::parse_or(env, "TASKMESH_SHUTDOWN_GRACE_SECS", 20)?;
        Ok(Self {
            listen: SocketAddr::new(host, port),
            metrics_listen: SocketAddr::new(host, metrics_port),
            sidecar: SidecarConfig::from_env(env)?,
            app_api_token: config::optional(env, "APP_API_TOKEN").map(SecretString::from),
            trusted_callers: {
                let text = config::optional(env, "TASKMESH_TRUSTED_CALLERS")
                    .unwrap_or_else(|| DEFAULT_TRUSTED_CALLERS.to_owned());
                TrustedCallers::parse(&text)
                    .map_err(|err| ConfigError::invalid("TASKMESH_TRUSTED_CALLERS", text, err))?
            },
            telemetry: TelemetryConfig::from_env(env)?,
            shutdown_grace: Duration::from_secs(grace),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The descriptors of what a subscriber serves: Dapr's AppCallback services (vendored in
/// taskmesh-proto: the dapr crate ships no descriptor set), gRPC health and reflection.
const DESCRIPTOR_SETS: [&[u8]; 2] = [
    taskmesh_proto::DAPR_APP_CALLBACK_FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
];

/// The services a subscriber serves (its files also declare AppCallbackAlpha, which it
/// does not), listed by reflection.
const SERVED: [&str; 3] = [
    "dapr.proto.runtime.v1.AppCallback",
    "dapr.proto.runtime.v1.AppCallbackHealthCheck",
    "grpc.health.v1.Health",
];

fn app_callback_methods() -> KnownMethods {
    KnownMethods::from_descriptor_sets(&[
        DESCRIPTOR_SETS[0],
        DESCRIPTOR_SETS[1],
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
    .unwrap_or_default()
}

/// A bound AppCallback server.
pub struct CallbackServer {
    name: &'static str,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: MetricsServer,
    metrics_addr: SocketAddr,
    router: Router,
    grpc_metrics: GrpcMetricsLayer,
    grace: Duration,
}

impl CallbackServer {
    pub async fn bind(
        name: &'static str,
        config: &ServiceConfig,
        router: Router,
        mut registry: Registry,
    ) -> Result<Self, BindError> {
        let router = router.metrics(RouterMetrics::register(&mut registry));
        let grpc_metrics = GrpcMetricsLayer::register(&mut registry, app_callback_methods());
        let bind_error = |addr| move |source| BindError { addr, source };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(bind_error(config.listen))?;
        let addr = listener.local_addr().map_err(bind_error(config.listen))?;
        let metrics = MetricsServer::bind(config.metrics_listen, Arc::new(registry))
            .await
            .map_err(bind_error(config.metrics_listen))?;
        let metrics_addr = metrics
            .local_addr()
            .map_err(bind_error(config.metrics_listen))?;
        Ok(Self {
            name,
            listener,
            addr,
            metrics,
            metrics_addr,
            router: router
                .app_api_token(config.app_api_token.clone())
                // The app calling itself through its sidecar counts as its own operator.
                .trusted_callers(Some(config.trusted_callers.clone().with_app(name))),
            grpc_metrics,
            grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown`; then health turns NOT_SERVING and in-flight calls get the
    /// grace period to finish (an unfinished delivery is redelivered by the sidecar).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AppCallbackServer<Router>>().await;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let metrics = tokio::spawn(self.metrics.serve(async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
        }));
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let name = self.name;
        let signal = async move {
            shutdown.await;
            tracing::info!("{name}: shutting down, draining in-flight calls");
            health.set_not_serving::<AppCallbackServer<Router>>().await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let _ = draining_tx.send(());
        };
        // Reflection is a convenience for tools (grpcurl, grpcio-reflection): without it,
        // which only a broken descriptor set causes, the subscriber still serves.
        let (reflection, reflection_v1alpha) = match reflection::listing(&DESCRIPTOR_SETS, &SERVED)
        {
            Ok(reflection) => (Some(reflection.v1), Some(reflection.v1alpha)),
            Err(err) => {
                tracing::error!(%err, "reflection is unavailable");
                (None, None)
            }
        };
        let server = Server::builder()
            .layer(self.grpc_metrics)
            .add_service(health_service)
            .add_optional_service(reflection)
            .add_optional_service(reflection_v1alpha)
            .add_service(AppCallbackHealthCheckServer::new(AlwaysHealthy))
            .add_service(AppCallbackServer::new(self.router))
            .serve_with_incoming_shutdown(crate::net::incoming(self.listener), signal);
        tracing::info!(addr = %self.addr, metrics = %self.metrics_addr, "{name} listening");
        let grace = self.grace;
        let deadline = async move {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(?grace, "drain deadline passed; abandoning the remaining calls");
                Ok(())
            }
        };
        let _ = stop_tx.send(true);
        let _ = metrics.await;
        tracing::info!("{name} stopped");
        result
    }
}

/// The sidecar's app health probe (`--enable-app-health-check` with gRPC): serving means
/// healthy; readiness of dependencies shows in RETRY outcomes instead.
struct AlwaysHealthy;

#[tonic::async_trait]
impl AppCallbackHealthCheck for AlwaysHealthy {
    async fn health_check(
        &self,
        _request: tonic::Request<()>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(HealthCheckResponse {}))
    }
}
