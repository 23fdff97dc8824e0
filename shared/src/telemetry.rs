//! Logging and tracing set-up shared by every binary: an `EnvFilter` from `RUST_LOG`, text
//! or JSON lines from `TASKMESH_LOG_FORMAT`, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, every span exported over OTLP/gRPC with W3C trace context (see `trace_context`).

use std::io::IsTerminal as _;
use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{self, ConfigError, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// How a service logs and where its spans go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// An OTLP/gRPC collector (`http://host:4317`); unset means no span export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    pub fn from_env(env: &dyn Source) -> Result<Self, ConfigError> {
        const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let otlp_endpoint = config::optional(env, ENDPOINT);
        if let Some(endpoint) = &otlp_endpoint {
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|err| ConfigError::invalid(ENDPOINT, endpoint.as_str(), err))?;
            // The exporter speaks plain gRPC: TLS belongs to the collector agent next to
            // the pod, and an https URL would only fail at the first export.
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(ConfigError::invalid(
                    ENDPOINT,
                    endpoint.as_str(),
                    "expected http://host:port of an OTLP/gRPC collector",
                ));
            }
        }
        Ok(Self {
            log_format: config::parse_or(env, "TASKMESH_LOG_FORMAT", LogFormat::Text)?,
            otlp_endpoint,
        })
    }
}

/// Keeps the span exporter alive; `shutdown` flushes what is still buffered.
#[must_use = "dropping the guard without `shutdown` loses the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the buffered spans and stops the exporter (a blocking call, so it runs off
    /// the async worker threads).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(err)) = flushed {
            eprintln!("telemetry: the last spans were not exported: {err}");
        }
    }
}

/// Colours only on a terminal (in a pod's, CI's or `just up`'s log files they are escape
/// codes), and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Installs the global subscriber; `service` names the spans' resource. Must run inside
/// the Tokio runtime (the OTLP exporter's channel lives there). A second call (tests
/// start many apps in one process) installs nothing.
pub fn init(service: &'static str, config: &TelemetryConfig) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let fmt = match config.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (provider, export_error) = match config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| provider(endpoint, service))
        .transpose()
    {
        Ok(provider) => (provider, None),
        Err(err) => (None, Some(err)),
    };
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(err) = export_error {
        tracing::error!(%err, "span export is off: the OTLP exporter cannot be built");
    } else if let (true, Some(endpoint)) = (installed, &config.otlp_endpoint) {
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}

fn provider(
    endpoint: &str,
    service: &'static str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_given() {
        let config = TelemetryConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config, TelemetryConfig::default());
        let config = TelemetryConfig::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-agent:4317"),
            ("TASKMESH_LOG_FORMAT", "json"),
        ]))
        .unwrap();
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://otel-agent:4317")
        );
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn a_bad_endpoint_names_the_variable() {
        for bad in [
            "otel-agent:4317",
            "https://otel:4317",
            "http://",
            "not a url",
        ] {
            let err = TelemetryConfig::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{bad}: {err}");
        }
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
        assert!(!colours(false, Some(OsStr::new("1"))));
    }
}
