#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use task_service::config::{DatabaseConfig, MigrateConfig};
use task_service::store::Database;
use task_service::{Application, Config};
use taskmesh_shared::config::{ConfigError, ProcessEnv};
use taskmesh_shared::telemetry::TelemetryConfig;
use taskmesh_shared::{error, shutdown, telemetry};

/// The Taskmesh task API (gRPC). Configured by environment variables: see the README.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database, then serve (the default).
    Serve,
    /// Migrate the database and exit (run as a Helm hook job before rollouts). Reads only
    /// DATABASE_URL and the log settings.
    Migrate,
}

/// glibc's malloc was a fifth of the service's CPU under read load (many small,
/// short-lived allocations across worker threads); mimalloc's thread-local pages take less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match Config::from_env(&ProcessEnv) {
            Ok(config) => {
                let (telemetry, database) = (config.telemetry.clone(), config.database());
                run(&telemetry, &database, serve(config)).await
            }
            Err(err) => config_error(&err),
        },
        Command::Migrate => match MigrateConfig::from_env(&ProcessEnv) {
            Ok(config) => {
                run(
                    &config.telemetry,
                    &config.database,
                    migrate(config.database.clone()),
                )
                .await
            }
            Err(err) => config_error(&err),
        },
    }
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("task-service: configuration error: {err}");
    ExitCode::from(2)
}

async fn run(
    telemetry: &TelemetryConfig,
    database: &DatabaseConfig,
    command: impl Future<Output = Result<(), BoxError>>,
) -> ExitCode {
    let telemetry = telemetry::init("task-service", telemetry);
    let result = command.await;
    if let Err(err) = &result {
        let chain = error::chain(err.as_ref());
        match database.open_hint(&chain) {
            Some(hint) => tracing::error!(error = %chain, %hint, "task-service failed"),
            None => tracing::error!(error = %chain, "task-service failed"),
        }
    }
    telemetry.shutdown().await;
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(config: Config) -> Result<(), BoxError> {
    // Listening for SIGTERM before the port opens: see `shutdown::signal`.
    let stop = shutdown::signal();
    let app = Application::build(config).await?;
    app.run_until_stopped(stop).await?;
    Ok(())
}

async fn migrate(database: DatabaseConfig) -> Result<(), BoxError> {
    // No statement timeout: building an index on a large table may rightly take long.
    let db = Database::connect(database.url.expose_secret(), 1, Duration::ZERO).await?;
    db.migrate().await?;
    db.close().await;
    tracing::info!("migrations applied");
    Ok(())
}
