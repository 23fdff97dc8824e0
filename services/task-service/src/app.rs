//! Building and running the server: `Application::build(config)` binds and migrates,
//! `run_until_stopped(shutdown)` serves until the shutdown future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use taskmesh_proto::tasks::v1::task_service_server::TaskServiceServer;
use taskmesh_shared::auth::TokenVerifier;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;

use crate::api::{Authenticate, PageTokens, TaskApi};
use crate::config::Config;
use crate::store::{Database, SeaTaskStore};

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
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    db: Database,
    api: TaskApi,
    verifier: TokenVerifier,
    shutdown_grace: Duration,
}

const SERVICE_NAME: &str = "taskmesh.tasks.v1.TaskService";

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
        let secret = config.jwt_secret.expose_secret().as_bytes();
        let store = Arc::new(SeaTaskStore::new(db.clone()));
        Ok(Self {
            listener,
            addr,
            db,
            api: TaskApi::new(store, PageTokens::new(secret)),
            verifier: TokenVerifier::new(secret),
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
            mark_not_serving(&health).await;
            let _ = draining_tx.send(());
        };
        let server = Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(TaskServiceServer::with_interceptor(
                self.api,
                Authenticate::new(self.verifier),
            ))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), signal);
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
        self.db.close().await;
        tracing::info!("task-service stopped");
        result
    }
}

async fn mark_not_serving(health: &HealthReporter) {
    health.set_not_serving::<TaskServiceServer<TaskApi>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}
