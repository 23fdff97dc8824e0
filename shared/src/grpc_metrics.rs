//! Request counts and latency of a tonic server, by method and status code, as a tower
//! layer: `Server::builder().layer(GrpcMetricsLayer::register(&mut registry, known))`.
//!
//! Labels come only from the methods the server serves (`KnownMethods`, read from the
//! services' descriptors); every other path counts as `unknown`. The layer runs before
//! authentication, so a label per path would let anyone grow the series (and the
//! server's memory) without bound by calling random method names.
//!
//! The code is read from the response headers. tonic answers a failed unary call
//! "trailers-only", with `grpc-status` in the headers; a response without it is counted
//! as `Ok`, which holds for unary calls (every call our services serve).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

/// The label of every path that is not a known method.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The `/package.Service/Method` paths a server answers.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods(HashSet<String>);

impl KnownMethods {
    /// Every method of every service in these encoded `FileDescriptorSet`s (the
    /// `FILE_DESCRIPTOR_SET` constants that tonic's build step and tonic-health export).
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        use prost::Message;
        let mut methods = HashSet::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        let service = match package {
                            "" => service.name().to_owned(),
                            package => format!("{package}.{}", service.name()),
                        };
                        methods.insert(format!("/{service}/{}", method.name()));
                    }
                }
            }
        }
        Ok(Self(methods))
    }

    /// Adds methods by path (services without a descriptor at hand).
    pub fn with(mut self, paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.0.extend(paths.into_iter().map(Into::into));
        self
    }

    pub fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabel, Histogram>,
    known: Arc<KnownMethods>,
}

impl GrpcMetricsLayer {
    pub fn register(registry: &mut Registry, known: KnownMethods) -> Self {
        let layer = Self {
            known: Arc::new(known),
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
        let path = request.uri().path();
        let method = if self.layer.known.contains(path) {
            path.to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn known_methods_come_from_the_descriptors() {
        let known = KnownMethods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET])
            .unwrap()
            .with(["/x.Y/Z"]);
        assert!(known.contains("/grpc.health.v1.Health/Check"));
        assert!(known.contains("/grpc.health.v1.Health/Watch"));
        assert!(known.contains("/x.Y/Z"));
        assert!(!known.contains("/grpc.health.v1.Health/Other"));
        assert!(!known.contains("/wp-admin/../../etc/passwd"));
    }
}
