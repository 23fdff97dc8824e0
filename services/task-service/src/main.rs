#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use task_service::config::{DatabaseConfig, MigrateConfig};
use task_service::outbox::{ParkedEvent, SeaOutbox};
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
    /// Events the sidecar refused too often (parked), and putting them back. Reads only
    /// DATABASE_URL and the log settings, like `migrate`.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Lists the parked events, oldest first, with the sidecar's reason.
    Parked {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Puts parked events back in the outbox, in their old place; their tasks' later
    /// events follow them.
    Retry(RetryArgs),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct RetryArgs {
    /// The parked event's seq or event id (see `outbox parked`).
    id: Option<String>,
    /// Every parked event.
    #[arg(long)]
    all: bool,
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
        Command::Outbox(command) => match MigrateConfig::from_env(&ProcessEnv) {
            Ok(config) => {
                run(
                    &config.telemetry,
                    &config.database,
                    outbox(config.database.clone(), command),
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

async fn outbox(database: DatabaseConfig, command: OutboxCommand) -> Result<(), BoxError> {
    let db = Database::connect(database.url.expose_secret(), 1, Duration::ZERO).await?;
    let outbox = SeaOutbox::new(db.writer.clone());
    let result = match command {
        OutboxCommand::Parked { json } => outbox.parked().await.map(|parked| {
            if json {
                serde_json::to_string_pretty(&parked).map(|text| println!("{text}"))
            } else {
                print!("{}", parked_table(&parked));
                Ok(())
            }
        }),
        OutboxCommand::Retry(RetryArgs { all: true, .. }) => outbox.retry_all().await.map(|n| {
            println!("put {n} parked events back in the outbox");
            Ok(())
        }),
        OutboxCommand::Retry(RetryArgs { id, .. }) => {
            let id = id.unwrap_or_default();
            match outbox.retry(&id).await {
                Ok(true) => {
                    println!("put parked event {id} back in the outbox");
                    Ok(Ok(()))
                }
                Ok(false) => {
                    db.close().await;
                    return Err(format!(
                        "no parked event has seq or event id {id:?} (see `task-service outbox parked`)"
                    )
                    .into());
                }
                Err(err) => Err(err),
            }
        }
    };
    db.close().await;
    result??;
    Ok(())
}

/// The parked events as a table, one line each, the reason last and whole.
fn parked_table(parked: &[ParkedEvent]) -> String {
    if parked.is_empty() {
        return "no parked events\n".to_owned();
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    };
    let mut rows = vec![[
        "SEQ".to_owned(),
        "EVENT ID".to_owned(),
        "TASK".to_owned(),
        "TYPE".to_owned(),
        "ATTEMPTS".to_owned(),
        "PARKED AT (UTC)".to_owned(),
        "REASON".to_owned(),
    ]];
    rows.extend(parked.iter().map(|p| {
        [
            p.seq.to_string(),
            p.event_id.clone(),
            p.task_id.clone(),
            p.event_type.clone(),
            p.attempts.to_string(),
            time(p.parked_at),
            p.reason.clone(),
        ]
    }));
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(&row[6]);
        out.push('\n');
    }
    out
}
