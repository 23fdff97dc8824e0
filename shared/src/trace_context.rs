//! W3C trace context across the hops tracing cannot see: a gRPC call's `traceparent`
//! header, the outbox row that outlives the request, the CloudEvent that crosses the
//! broker, and the call recurring-service makes through its sidecar.
//!
//! Without span export (`OTEL_EXPORTER_OTLP_ENDPOINT` unset) spans carry no trace context:
//! `set_parent` does nothing and `traceparent` answers `None`.

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Makes `span` a child of the remote span that `traceparent` names; a missing or
/// malformed value leaves `span` a root.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    // Called for every delivery and call: the two values are read in place, not copied
    // into a map.
    let parent = TraceContextPropagator::new().extract(&Carrier {
        traceparent,
        tracestate,
    });
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed, which is the documented no-op.
        let _ = span.set_parent(parent);
    }
}

struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = vec![TRACEPARENT];
        keys.extend(self.tracestate.map(|_| TRACESTATE));
        keys
    }
}

/// The `traceparent` naming `span` as the parent of whatever it causes elsewhere.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// `traceparent` of the current span.
pub fn current() -> Option<String> {
    traceparent(&tracing::Span::current())
}

/// The server span of one gRPC call, continuing the caller's trace when its request
/// carries a `traceparent` header. Used as tonic's `trace_fn`.
pub fn grpc_server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let path = request.uri().path();
    let span = tracing::info_span!(
        "grpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
    );
    set_parent(&span, header(TRACEPARENT), header(TRACESTATE));
    span
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_otel<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn a_child_keeps_the_trace_id_and_gets_its_own_span_id() {
        let child = with_otel(|| {
            let span = tracing::info_span!("handler");
            set_parent(&span, Some(PARENT), None);
            traceparent(&span)
        })
        .unwrap();
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(!child.contains("00f067aa0ba902b7"), "{child}");
        assert!(child.ends_with("-01"), "{child}");
    }

    #[test]
    fn a_span_without_a_parent_starts_a_trace() {
        let root = with_otel(|| traceparent(&tracing::info_span!("root"))).unwrap();
        assert_eq!(root.len(), PARENT.len());
        assert!(!root.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn malformed_parents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let child = with_otel(|| {
                let span = tracing::info_span!("handler");
                set_parent(&span, Some(bad), None);
                traceparent(&span)
            })
            .unwrap();
            assert!(!child.contains("00f067aa0ba902b7"), "{bad}: {child}");
        }
    }

    #[test]
    fn without_export_there_is_no_context() {
        let span = tracing::info_span!("handler");
        set_parent(&span, Some(PARENT), None);
        assert_eq!(traceparent(&span), None);
    }

    #[test]
    fn the_server_span_continues_the_callers_trace() {
        let request = http::Request::builder()
            .uri("/taskmesh.tasks.v1.TaskService/CreateTask")
            .header(TRACEPARENT, PARENT)
            .body(())
            .unwrap();
        let child = with_otel(|| traceparent(&grpc_server_span(&request))).unwrap();
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
    }
}
