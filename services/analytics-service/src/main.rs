#![forbid(unsafe_code)]

use analytics_service::app::{self, APP_ID, Config};
use taskmesh_shared::callback;
use taskmesh_shared::config::ProcessEnv;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(err) => return callback::failed(APP_ID, err),
    };
    let telemetry = config.service.telemetry.clone();
    callback::run_process(APP_ID, &telemetry, app::build(config)).await
}
