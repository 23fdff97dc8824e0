//! The interceptor in front of `TaskService`: every call carries a bearer token, and the
//! handlers find the caller in the request extensions.

use taskmesh_shared::auth::{TokenVerifier, UserId};
use taskmesh_shared::error::ApiError;
use tonic::service::Interceptor;
use tonic::{Request, Status};

#[derive(Debug, Clone)]
pub struct Authenticate {
    verifier: TokenVerifier,
}

impl Authenticate {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| {
                value.to_str().map_err(|_| {
                    ApiError::Unauthenticated("authorization metadata is not ASCII".into())
                })
            })
            .transpose()?;
        let user = self.verifier.verify_header(header)?;
        request.extensions_mut().insert(user);
        Ok(request)
    }
}

/// The caller that `Authenticate` put on the request.
pub fn caller<T>(request: &Request<T>) -> Result<UserId, ApiError> {
    request
        .extensions()
        .get::<UserId>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no authenticated caller".into()))
}
