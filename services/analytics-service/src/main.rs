#![forbid(unsafe_code)]

use analytics_service::app::{self, Config};
use taskmesh_shared::config::ProcessEnv;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %taskmesh_shared::error::chain(err.as_ref()), "analytics-service failed");
            eprintln!(
                "analytics-service: {}",
                taskmesh_shared::error::chain(err.as_ref())
            );
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = Config::from_env(&ProcessEnv)?;
    let telemetry =
        taskmesh_shared::telemetry::init("analytics-service", &config.service.telemetry);
    let result = serve(config).await;
    telemetry.shutdown().await;
    result
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = app::build(config).await?;
    server
        .run_until_stopped(taskmesh_shared::shutdown::signal())
        .await?;
    Ok(())
}
