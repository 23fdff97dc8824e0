//! Building and running the server: `Application::build(config)` binds and migrates,
//! `run_until_stopped(shutdown)` serves until the shutdown future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use taskmesh_proto::analytics::v1::stats_service_server::StatsServiceServer;
use taskmesh_proto::notifications::v1::notification_service_server::NotificationServiceServer;
use taskmesh_proto::notifications::v1::preference_service_server::PreferenceServiceServer;
use taskmesh_proto::tasks::v1::list_service_server::ListServiceServer;
use taskmesh_proto::tasks::v1::task_service_server::TaskServiceServer;
use taskmesh_shared::auth::{Expectations, Jwks, JwksError, Keys, TokenVerifier};
use taskmesh_shared::config::ConfigError;
use taskmesh_shared::grpc_metrics::{GrpcMetricsLayer, KnownMethods};
use taskmesh_shared::metrics::MetricsServer;
use taskmesh_shared::net::incoming;
use taskmesh_shared::trace_context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;

use crate::api::{
    Authenticate, Gate, InternalTrust, ListApi, NotificationApi, PageTokens, RateLimiter,
    ResumeTokens, StatsApi, TaskApi, Watches,
};
use crate::config::{Config, JwtKeys, Limits};
use crate::outbox::feed::Feed;
use crate::outbox::{
    DaprPublisher, OutboxMetrics, OutboxSettings, PgAdvisoryLock, Relay, SeaOutbox, SingleProcess,
};
use crate::peers::DaprPeers;
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
    #[error("cannot load the identity provider's keys")]
    Jwks(#[from] JwksError),
    #[error("cannot read the TLS certificate or key {path}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS certificate and key are not usable")]
    Tls(#[source] tonic::transport::Error),
    #[error("cannot read the services' descriptors")]
    Descriptors(#[from] prost::DecodeError),
}

/// How often the identity provider's keys are fetched again (a withdrawn key stops being
/// accepted within this), and at most how often a token with an unknown key id may make
/// us fetch them.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    db: Database,
    api: TaskApi,
    /// WatchTasks' feed; stopped at SIGTERM, which ends every stream.
    feed: Feed,
    lists: ListApi,
    notifications: NotificationApi,
    stats: StatsApi,
    gate: Gate,
    jwks: Option<Jwks>,
    tls: Option<ServerTlsConfig>,
    health_listener: Option<TcpListener>,
    limits: Limits,
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
                "DEV MODE (TASKMESH_DEV_MODE=true): tokens signed with the PUBLIC development \
                 secret are accepted, so anyone can act as any user. Never run this way \
                 outside a developer machine."
            );
        }
        let db = Database::connect(
            config.database_url.expose_secret(),
            config.database_max_connections,
            config.limits.db_statement_timeout,
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
        let known = KnownMethods::from_descriptor_sets(&[
            taskmesh_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ])?;
        let grpc_metrics = GrpcMetricsLayer::register(&mut registry, known);
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
        let (keys, jwks) = match &config.jwt.keys {
            JwtKeys::Secret(secret) => (Keys::secret(secret.expose_secret().as_bytes()), None),
            JwtKeys::Jwks(source) => {
                let jwks = Jwks::load(source.clone(), JWKS_MIN_REFRESH).await?;
                (Keys::Jwks(jwks.clone()), Some(jwks))
            }
        };
        let verifier = TokenVerifier::with_keys(
            keys,
            Expectations {
                issuer: config.jwt.issuer.clone(),
                audience: config.jwt.audience.clone(),
            },
        );
        let internal_trust = config.app_api_token.clone().map(|token| InternalTrust {
            app_api_token: token,
            callers: config.trusted_callers.clone(),
        });
        let gate = Gate::new(
            Authenticate::new(verifier, internal_trust),
            RateLimiter::new(config.limits.rate_per_sec, config.limits.rate_burst),
            config.limits.request_timeout,
        );
        let tls = match &config.tls {
            Some(files) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|source| StartError::TlsFile {
                        path: path.display().to_string(),
                        source,
                    })
                };
                let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
                let tls = ServerTlsConfig::new().identity(identity);
                // Parses the certificate and key now, so that a bad pair stops the start
                // with its reason instead of the first connection.
                Server::builder()
                    .tls_config(tls.clone())
                    .map_err(StartError::Tls)?;
                Some(tls)
            }
            None => None,
        };
        let health_listener = match config.health_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(bind_error(addr))?),
            None => None,
        };
        let peers = Arc::new(DaprPeers::new(config.sidecar.connect_lazy()?));
        let feed_wake = Arc::new(Notify::new());
        let store = Arc::new(
            SeaTaskStore::new(db.clone(), wake)
                .with_feed_wake(feed_wake.clone())
                .with_task_quota(config.limits.max_tasks_per_user)
                .with_max_event_bytes(config.outbox.max_batch_bytes),
        );
        // WatchTasks: this replica's reader of the shared outbox, woken by its commits.
        let feed = Feed::start(
            db.reader.clone(),
            store.clone(),
            feed_wake,
            config.watch.feed.clone(),
        )
        .await
        .map_err(|err| StartError::Database(err.0))?;
        let watches = Watches::new(
            feed.clone(),
            ResumeTokens::new(&config.page_token_key()),
            config.watch.keepalive,
        );
        Ok(Self {
            listener,
            addr,
            db,
            lists: ListApi::new(store.clone()),
            api: TaskApi::new(store, PageTokens::new(&config.page_token_key()))
                .with_watches(watches),
            feed,
            notifications: NotificationApi::new(peers.clone()),
            stats: StatsApi::new(peers),
            gate,
            jwks,
            tls,
            health_listener,
            limits: config.limits.clone(),
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

    /// Where the plaintext health port listens, if there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
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
        // Both versions: grpcurl speaks v1, while other clients (grpcio-reflection, the
        // official Python one) still speak only v1alpha.
        let reflection = taskmesh_shared::reflection::of(&[
            taskmesh_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        let (reflection, reflection_v1alpha) = match reflection {
            Ok(reflection) => (reflection.v1, reflection.v1alpha),
            Err(err) => {
                tracing::error!(%err, "reflection is unavailable");
                return Ok(());
            }
        };

        let (stop_tx, stop_rx) = watch::channel(false);
        let relay = self.outbox.spawn(stop_rx.clone());
        if let Some(jwks) = self.jwks {
            let mut stop = stop_rx.clone();
            tokio::spawn(jwks.refresh_every(JWKS_REFRESH, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }));
        }
        if let Some(listener) = self.health_listener {
            let mut stop = stop_rx.clone();
            let health_service = health_service.clone();
            tokio::spawn(async move {
                let served = Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(incoming(listener), async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    })
                    .await;
                if let Err(err) = served {
                    tracing::error!(%err, "the health port stopped");
                }
            });
        }
        let mut metrics_stop = stop_rx;
        let metrics = tokio::spawn(self.metrics.serve(async move {
            let _ = metrics_stop.wait_for(|stopped| *stopped).await;
        }));

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let feed = self.feed.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
            mark_not_serving(&health).await;
            // Streams would otherwise hold the drain until its deadline: each ends now,
            // UNAVAILABLE, and its client resumes elsewhere with its last token.
            feed.stop();
            let _ = draining_tx.send(());
        };
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = match builder.tls_config(tls) {
                Ok(builder) => builder,
                Err(err) => {
                    tracing::error!(%err, "TLS is misconfigured");
                    return Err(err);
                }
            };
        }
        if self.traced {
            // A span per call only when it goes somewhere: it costs the hot path otherwise.
            builder = builder.trace_fn(trace_context::grpc_server_span);
        }
        let max = self.limits.max_message_bytes;
        let server = builder
            .layer(self.grpc_metrics)
            .layer(self.gate)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(TaskServiceServer::new(self.api).max_decoding_message_size(max))
            .add_service(ListServiceServer::new(self.lists).max_decoding_message_size(max))
            .add_service(
                NotificationServiceServer::new(self.notifications.clone())
                    .max_decoding_message_size(max),
            )
            .add_service(
                PreferenceServiceServer::new(self.notifications).max_decoding_message_size(max),
            )
            .add_service(StatsServiceServer::new(self.stats).max_decoding_message_size(max))
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
        self.feed.stop();
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
                let leadership = PgAdvisoryLock::new(url, settings.leadership);
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
