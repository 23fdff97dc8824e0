//! The interceptor in front of `TaskService`. A call is made either by a user, with a
//! bearer token, or by a trusted Taskmesh app on behalf of a user, through Dapr service
//! invocation; the handlers find the acting user in the request extensions.
//!
//! The second path exists for recurring-service, which creates a task's next occurrence
//! for its owner. It is accepted only when the call came through our own sidecar (which
//! adds `dapr-api-token` = our `APP_API_TOKEN`, a secret external clients do not have)
//! from an app id on the allow-list (`dapr-caller-app-id`, set by the calling sidecar).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use taskmesh_shared::auth::{TokenVerifier, UserId};
use taskmesh_shared::error::ApiError;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The user an internal call acts for.
pub const ON_BEHALF_OF: &str = "taskmesh-on-behalf-of";

/// Who may act on behalf of users, and how they prove they came through Dapr.
#[derive(Debug, Clone)]
pub struct InternalTrust {
    pub app_api_token: SecretString,
    pub callers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Authenticate {
    verifier: TokenVerifier,
    internal: Option<Arc<InternalTrust>>,
}

impl Authenticate {
    pub fn new(verifier: TokenVerifier, internal: Option<InternalTrust>) -> Self {
        Self {
            verifier,
            internal: internal.map(Arc::new),
        }
    }

    fn internal_caller(&self, metadata: &MetadataMap, user: &str) -> Result<UserId, ApiError> {
        let Some(trust) = &self.internal else {
            return Err(ApiError::Unauthenticated(
                "calls on behalf of a user are not enabled on this service".into(),
            ));
        };
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let token = text("dapr-api-token");
        if !constant_time_eq(
            token.as_bytes(),
            trust.app_api_token.expose_secret().as_bytes(),
        ) {
            return Err(ApiError::Unauthenticated(
                "a call on behalf of a user must come through Dapr service invocation".into(),
            ));
        }
        let app = text("dapr-caller-app-id");
        if !trust.callers.iter().any(|allowed| allowed == app) {
            return Err(ApiError::PermissionDenied(format!(
                "app {app:?} may not act on behalf of users"
            )));
        }
        UserId::try_from(user.to_owned())
            .map_err(|reason| ApiError::Unauthenticated(format!("{ON_BEHALF_OF}: {reason}")))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let on_behalf_of = request
            .metadata()
            .get(ON_BEHALF_OF)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let user = match on_behalf_of {
            Some(user) => {
                let result = self.internal_caller(request.metadata(), &user);
                if let Err(err) = &result {
                    tracing::warn!(%err, "refused a call on behalf of a user");
                }
                result?
            }
            None => {
                let header = request
                    .metadata()
                    .get("authorization")
                    .map(|value| {
                        value.to_str().map_err(|_| {
                            ApiError::Unauthenticated("authorization metadata is not ASCII".into())
                        })
                    })
                    .transpose()?;
                self.verifier.verify_header(header)?
            }
        };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn auth() -> Authenticate {
        Authenticate::new(
            TokenVerifier::new(b"0123456789abcdef0123"),
            Some(InternalTrust {
                app_api_token: "app-token".to_owned().into(),
                callers: vec!["recurring-service".into()],
            }),
        )
    }

    fn request(pairs: &[(&'static str, &str)]) -> Request<()> {
        let mut request = Request::new(());
        for (k, v) in pairs {
            request.metadata_mut().insert(*k, v.parse().unwrap());
        }
        request
    }

    #[test]
    fn trusted_app_through_dapr_acts_for_the_user() {
        let ok = auth()
            .call(request(&[
                (ON_BEHALF_OF, "alice"),
                ("dapr-api-token", "app-token"),
                ("dapr-caller-app-id", "recurring-service"),
            ]))
            .unwrap();
        assert_eq!(caller(&ok).unwrap().as_str(), "alice");
    }

    #[test]
    fn forged_internal_calls_are_refused() {
        let cases: [(&[(&'static str, &str)], tonic::Code); 3] = [
            // An external client that claims to be recurring-service without the token.
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-caller-app-id", "recurring-service"),
                ],
                tonic::Code::Unauthenticated,
            ),
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-api-token", "guess"),
                    ("dapr-caller-app-id", "recurring-service"),
                ],
                tonic::Code::Unauthenticated,
            ),
            // Through Dapr, but from an app that is not allowed.
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-api-token", "app-token"),
                    ("dapr-caller-app-id", "analytics-service"),
                ],
                tonic::Code::PermissionDenied,
            ),
        ];
        for (pairs, code) in cases {
            assert_eq!(
                auth().call(request(pairs)).unwrap_err().code(),
                code,
                "{pairs:?}"
            );
        }
        let disabled = Authenticate::new(TokenVerifier::new(b"0123456789abcdef0123"), None);
        let mut disabled = disabled;
        let err = disabled
            .call(request(&[
                (ON_BEHALF_OF, "alice"),
                ("dapr-api-token", "app-token"),
                ("dapr-caller-app-id", "recurring-service"),
            ]))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
