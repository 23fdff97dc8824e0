//! Building and running the server: `Application::build(config)` binds and migrates,
//! `run_until_stopped(shutdown)` serves until the shutdown future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use taskmesh_proto::tasks::v1::task_service_server::TaskServiceServer;
use taskmesh_shared::auth::TokenVerifier;
use taskmesh_shared::config::ConfigError;
use taskmesh_shared::grpc_metrics::GrpcMetricsLayer;
use taskmesh_shared::metrics::MetricsServer;
use taskmesh_shared::net::incoming;
use taskmesh_shared::trace_context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::Server;
use tonic_health::server::HealthReporter;

use crate::api::{Authenticate, InternalTrust, PageTokens, TaskApi};
use crate::config::Config;
use crate::outbox::{
    DaprPublisher, OutboxMetrics, OutboxSettings, PgAdvisoryLock, Relay, SeaOutbox, SingleProcess,
};
use crate::store::{Database, SeaTaskStore, is_sqlite};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database")]
    Database(#[source] sea_orm::DbErr),
    #[error("cannot migrate the database")]
    Migrate(#[source] sea_orm::DbErr),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    db: Database,
    api: TaskApi,
    verifier: TokenVerifier,
    internal_trust: Option<InternalTrust>,
    shutdown_grace: Duration,
    metrics: MetricsServer,
    metrics_addr: SocketAddr,
    grpc_metrics: GrpcMetricsLayer,
    outbox: OutboxParts,
    /// Spans are exported, so each call gets a server span continuing the caller's trace.
    traced: bool,
}

/// What the outbox relay needs; it starts with the server.
struct OutboxParts {
    store: SeaOutbox,
    publisher: DaprPublisher,
    wake: Arc<Notify>,
    settings: OutboxSettings,
    metrics: OutboxMetrics,
    /// Set on PostgreSQL, where replicas elect the publisher and it polls for the others' events.
    postgres_url: Option<SecretString>,
}

const SERVICE_NAME: &str = "taskmesh.tasks.v1.TaskService";
/// On PostgreSQL other replicas commit too: the publishing relay looks for their events
/// this often (one indexed query; its own commits wake it at once).
const PG_POLL_INTERVAL: Duration = Duration::from_millis(100);

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        if config.uses_dev_secret() {
            tracing::warn!(
                "DEV MODE: TASKMESH_JWT_SECRET is not set, so tokens signed with the PUBLIC \
                 development secret are accepted. Anyone can act as any user. Never run this \
                 way outside a developer machine."
            );
        }
        let db = Database::connect(
            config.database_url.expose_secret(),
            config.database_max_connections,
        )
        .await
        .map_err(StartError::Database)?;
        db.migrate().await.map_err(StartError::Migrate)?;

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let bind_error = |addr| move |source| StartError::Bind { addr, source };
        let mut registry = Registry::default();
        let outbox_metrics = OutboxMetrics::register(&mut registry);
        let grpc_metrics = GrpcMetricsLayer::register(&mut registry);
        let metrics = MetricsServer::bind(config.metrics_listen, Arc::new(registry))
            .await
            .map_err(bind_error(config.metrics_listen))?;
        let metrics_addr = metrics
            .local_addr()
            .map_err(bind_error(config.metrics_listen))?;

        let wake = Arc::new(Notify::new());
        let outbox = OutboxParts {
            store: SeaOutbox::new(db.writer.clone()),
            publisher: DaprPublisher::new(
                config.sidecar.connect_lazy()?,
                config.sidecar.pubsub.clone(),
                config.events_topic.clone(),
            ),
            wake: wake.clone(),
            settings: config.outbox.clone(),
            metrics: outbox_metrics,
            postgres_url: (!is_sqlite(config.database_url.expose_secret()))
                .then(|| config.database_url.clone()),
        };
        tracing::info!(
            sidecar = %config.sidecar.endpoint,
            pubsub = %config.sidecar.pubsub,
            topic = %config.events_topic,
            "task events go through the Dapr sidecar"
        );
        let secret = config.jwt_secret.expose_secret().as_bytes();
        let store = Arc::new(SeaTaskStore::new(db.clone(), wake));
        Ok(Self {
            listener,
            addr,
            db,
            api: TaskApi::new(store, PageTokens::new(secret)),
            verifier: TokenVerifier::new(secret),
            internal_trust: config.app_api_token.clone().map(|token| InternalTrust {
                app_api_token: token,
                callers: config.trusted_callers.clone(),
            }),
            shutdown_grace: config.shutdown_grace,
            metrics,
            metrics_addr,
            grpc_metrics,
            outbox,
            traced: config.telemetry.otlp_endpoint.is_some(),
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` answers.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown` resolves; then health turns NOT_SERVING, new connections
    /// are refused and in-flight calls get `shutdown_grace` to finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<TaskServiceServer<TaskApi>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(taskmesh_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1();
        let reflection = match reflection {
            Ok(service) => service,
            Err(err) => {
                tracing::error!(%err, "reflection is unavailable");
                return Ok(());
            }
        };

        let (stop_tx, stop_rx) = watch::channel(false);
        let relay = self.outbox.spawn(stop_rx.clone());
        let mut metrics_stop = stop_rx;
        let metrics = tokio::spawn(self.metrics.serve(async move {
            let _ = metrics_stop.wait_for(|stopped| *stopped).await;
        }));

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
            mark_not_serving(&health).await;
            let _ = draining_tx.send(());
        };
        let mut builder = Server::builder();
        if self.traced {
            // A span per call only when it goes somewhere: it costs the hot path otherwise.
            builder = builder.trace_fn(trace_context::grpc_server_span);
        }
        let server = builder
            .layer(self.grpc_metrics)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(TaskServiceServer::with_interceptor(
                self.api,
                Authenticate::new(self.verifier, self.internal_trust),
            ))
            .serve_with_incoming_shutdown(incoming(self.listener), signal);
        tracing::info!(addr = %self.addr, service = SERVICE_NAME, "task-service listening");

        let grace = self.shutdown_grace;
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
        // The relay finishes its batch; what it has not marked goes out after a restart.
        let _ = stop_tx.send(true);
        if tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .is_err()
        {
            tracing::warn!("outbox relay did not stop in time");
        }
        let _ = metrics.await;
        self.db.close().await;
        tracing::info!("task-service stopped");
        result
    }
}

impl OutboxParts {
    fn spawn(self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let Self {
            store,
            publisher,
            wake,
            settings,
            metrics,
            postgres_url,
        } = self;
        match postgres_url {
            Some(url) => {
                let settings = OutboxSettings {
                    poll_interval: PG_POLL_INTERVAL,
                    ..settings
                };
                let leadership = PgAdvisoryLock::new(url);
                let relay = Relay::new(store, publisher, leadership, wake, settings, metrics);
                tokio::spawn(relay.run(stop))
            }
            None => {
                let relay = Relay::new(store, publisher, SingleProcess, wake, settings, metrics);
                tokio::spawn(relay.run(stop))
            }
        }
    }
}

async fn mark_not_serving(health: &HealthReporter) {
    health.set_not_serving::<TaskServiceServer<TaskApi>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}
