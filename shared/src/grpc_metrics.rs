//! Request counts and latency of a tonic server, by method and status code, as a tower
//! layer: `Server::builder().layer(GrpcMetricsLayer::register(&mut registry))`.
//!
//! The code is read from the response headers. tonic answers a failed unary call
//! "trailers-only", with `grpc-status` in the headers; a response without it is counted
//! as `Ok`, which holds for unary calls (every call our services serve).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `/package.Service/Method`
    pub method: String,
    /// `Ok`, `InvalidArgument`, `NotFound`...
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabel, Histogram>,
}

impl GrpcMetricsLayer {
    pub fn register(registry: &mut Registry) -> Self {
        let layer = Self {
            calls: Family::default(),
            // 0.1 ms to about 3 s.
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
        };
        let registry = registry.sub_registry_with_prefix("taskmesh_grpc_server");
        registry.register(
            "calls",
            "gRPC calls served, by method and status code",
            layer.calls.clone(),
        );
        registry.register(
            "call_seconds",
            "Time to answer a gRPC call, by method",
            layer.seconds.clone(),
        );
        layer
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Unknown paths (scanners, typos) would grow the label set without bound.
        let method = known_method(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                Err(_) => tonic::Code::Unknown,
            };
            layer
                .calls
                .get_or_create(&CallLabels {
                    method: method.clone(),
                    code: format!("{code:?}"),
                })
                .inc();
            layer
                .seconds
                .get_or_create(&MethodLabel { method })
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// `/pkg.Service/Method` for gRPC-shaped paths of reasonable length, else `other`.
fn known_method(path: &str) -> String {
    let shaped = path.len() <= 128
        && path.starts_with('/')
        && path[1..].split('/').count() == 2
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_'));
    if shaped {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_shaped_paths_become_labels() {
        assert_eq!(
            known_method("/taskmesh.tasks.v1.TaskService/GetTask"),
            "/taskmesh.tasks.v1.TaskService/GetTask"
        );
        assert_eq!(known_method("/wp-admin/../../etc/passwd"), "other");
        assert_eq!(known_method("/a/b/c"), "other");
        assert_eq!(known_method(&format!("/a.B/{}", "x".repeat(200))), "other");
    }
}
