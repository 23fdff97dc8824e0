//! A subscriber service's process from start to exit, the same for all three: telemetry,
//! the server, serving until SIGTERM, the last spans flushed, an exit code.

use std::future::Future;
use std::process::ExitCode;

use super::CallbackServer;
use crate::error::{BoxError, chain};
use crate::telemetry::{self, TelemetryConfig};

/// Installs telemetry, awaits `server` (a service's `app::build(config)`, which does not
/// start before this awaits it), serves until SIGTERM and flushes the spans.
pub async fn run_process<E>(
    name: &'static str,
    telemetry: &TelemetryConfig,
    server: impl Future<Output = Result<CallbackServer, E>>,
) -> ExitCode
where
    E: Into<BoxError>,
{
    let telemetry = telemetry::init(name, telemetry);
    // Listening for SIGTERM before the port opens: see `shutdown::signal`.
    let stop = crate::shutdown::signal();
    let served: Result<(), BoxError> = async {
        let server = server.await.map_err(Into::into)?;
        server.run_until_stopped(stop).await.map_err(Into::into)
    }
    .await;
    telemetry.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => failed(name, err),
    }
}

/// Reports why `name` could not run, in the log and on stderr (the log may not be set up
/// yet, e.g. for a configuration error), and exits with 2.
pub fn failed(name: &'static str, err: impl Into<BoxError>) -> ExitCode {
    let err = err.into();
    let chain = chain(err.as_ref());
    tracing::error!(error = %chain, "{name} failed");
    eprintln!("{name}: {chain}");
    ExitCode::from(2)
}
