#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use task_service::store::Database;
use task_service::{Application, Config};
use taskmesh_shared::config::ProcessEnv;
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
    /// Migrate the database and exit (run as a Helm hook job before rollouts).
    Migrate,
}

/// glibc's malloc was a fifth of the service's CPU under read load (many small,
/// short-lived allocations across worker threads); mimalloc's thread-local pages take less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("task-service: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init("task-service", &config.telemetry);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
    };
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %error::chain(err.as_ref()), "task-service failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Listening for SIGTERM before the port opens: see `shutdown::signal`.
    let stop = shutdown::signal();
    let app = Application::build(config).await?;
    app.run_until_stopped(stop).await?;
    Ok(())
}

async fn migrate(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = Database::connect(config.database_url.expose_secret(), 1).await?;
    db.migrate().await?;
    db.close().await;
    tracing::info!("migrations applied");
    Ok(())
}
