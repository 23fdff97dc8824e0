//! What every call to the public port passes before a handler sees it: authentication
//! (a user's token, or a trusted app through our sidecar), the per-user rate limit, and
//! the server's deadline. A tower layer rather than a tonic interceptor because checking
//! a token may need to fetch the identity provider's new keys.
//!
//! Health and reflection stay open: probes and tools carry no token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use taskmesh_shared::error::ApiError;
use tonic::Status;

use super::auth::{Authenticate, Caller};
use super::rate_limit::RateLimiter;

const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Shared by every call: cloning it per call costs one reference count.
#[derive(Clone)]
pub struct Gate(Arc<Checks>);

struct Checks {
    auth: Authenticate,
    limiter: RateLimiter,
    deadline: Duration,
}

impl Gate {
    pub fn new(auth: Authenticate, limiter: RateLimiter, deadline: Duration) -> Self {
        Self(Arc::new(Checks {
            auth,
            limiter,
            deadline,
        }))
    }

    fn deadline(&self) -> Duration {
        self.0.deadline
    }

    async fn admit(&self, headers: &http::HeaderMap, path: &str) -> Result<Caller, ApiError> {
        let caller = self.0.auth.caller(headers, path).await?;
        // Trusted apps act on events, which are already paced by the broker; users' calls
        // are what a runaway client or a scraper multiplies.
        if let Caller::User(user) = &caller {
            self.0
                .limiter
                .admit(user)
                .map_err(|retry_after| ApiError::ResourceExhausted {
                    message: "rate limit reached: too many calls from this user; retry later"
                        .into(),
                    retry_after: Some(retry_after),
                })?;
        }
        Ok(caller)
    }
}

impl<S> tower::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    gate: Gate,
}

type Answer<E> = Result<http::Response<tonic::body::Body>, E>;

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call; a fresh one waits for the next.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let path = request.uri().path();
        if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
            return Box::pin(inner.call(request));
        }
        let path = path.to_owned();
        let gate = self.gate.clone();
        Box::pin(async move {
            let caller = match gate.admit(request.headers(), &path).await {
                Ok(caller) => caller,
                Err(err) => return Ok(Status::from(err).into_http()),
            };
            request.extensions_mut().insert(caller);
            match tokio::time::timeout(gate.deadline(), inner.call(request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::warn!(path, deadline = ?gate.deadline(), "call abandoned at the deadline");
                    Ok(Status::from(ApiError::DeadlineExceeded(format!(
                        "not answered within the server's deadline of {:?}",
                        gate.deadline()
                    )))
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use taskmesh_shared::auth::TokenVerifier;
    use tower::{Layer, Service};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A handler that takes `delay` to answer OK.
    #[derive(Clone)]
    struct Slow(Duration);

    impl tower::Service<http::Request<()>> for Slow {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Answer<Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let delay = self.0;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    fn gated(delay: Duration, deadline: Duration) -> Gated<Slow> {
        let auth = Authenticate::new(TokenVerifier::new(SECRET), None);
        Gate::new(auth, RateLimiter::new(1000, 1000), deadline).layer(Slow(delay))
    }

    fn request(path: &str, token: bool) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if token {
            let token = taskmesh_shared::auth::mint(SECRET, "alice", Duration::from_secs(60));
            builder = builder.header("authorization", format!("Bearer {}", token.unwrap()));
        }
        builder.body(()).unwrap()
    }

    fn code(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn slow_calls_end_at_the_deadline() {
        let path = "/taskmesh.tasks.v1.TaskService/ListTasks";
        let mut gate = gated(Duration::from_secs(5), Duration::from_millis(50));
        let started = std::time::Instant::now();
        let answer = gate.call(request(path, true)).await.unwrap();
        assert_eq!(code(&answer), Some("4"), "DEADLINE_EXCEEDED");
        assert!(started.elapsed() < Duration::from_secs(1));
        let mut quick = gated(Duration::ZERO, Duration::from_millis(50));
        assert_eq!(code(&quick.call(request(path, true)).await.unwrap()), None);
    }

    #[tokio::test]
    async fn health_and_reflection_are_open_and_the_rest_is_not() {
        let mut gate = gated(Duration::ZERO, Duration::from_secs(1));
        for open in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(
                code(&gate.call(request(open, false)).await.unwrap()),
                None,
                "{open}"
            );
        }
        for closed in [
            "/taskmesh.tasks.v1.TaskService/GetTask",
            "/x.Y/Z",
            "/grpc.health.v1.Healthz/Check",
        ] {
            let answer = gate.call(request(closed, false)).await.unwrap();
            assert_eq!(code(&answer), Some("16"), "{closed}: UNAUTHENTICATED");
        }
    }
}
