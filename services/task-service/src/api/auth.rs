//! Who is calling. A call is made either by a user, with a bearer token, or by a trusted
//! Taskmesh app on behalf of a user, through Dapr service invocation; [`Gate`] puts the
//! acting user in the request extensions, where the handlers find it.
//!
//! The second path exists for recurring-service, which creates a task's next occurrence
//! for its owner. It is honoured only when all of these hold:
//! - the call came through our own sidecar: it carries `dapr-api-token` = our
//!   `APP_API_TOKEN`, which only task-service and its sidecar hold (each app has its own);
//! - the calling app, as our sidecar names it (`dapr-caller-app-id`, exactly once), is in
//!   `TASKMESH_TRUSTED_CALLERS`...
//! - ...for this method of TaskService, and no other service's.
//!
//! [`Gate`]: super::gate::Gate

use std::sync::Arc;

use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use taskmesh_shared::auth::callers::{CALLER_APP_ID, TrustedCallers};
use taskmesh_shared::auth::{TokenVerifier, UserId};
use taskmesh_shared::error::ApiError;
use tonic::Request;

/// The user an internal call acts for.
pub const ON_BEHALF_OF: &str = "taskmesh-on-behalf-of";

const TASK_SERVICE_PREFIX: &str = "/taskmesh.tasks.v1.TaskService/";

/// Who may act on behalf of users, and how they prove they came through Dapr.
#[derive(Debug, Clone)]
pub struct InternalTrust {
    pub app_api_token: SecretString,
    pub callers: TrustedCallers,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A user with their own token.
    User(UserId),
    /// A trusted app acting for a user.
    App { app: String, user: UserId },
}

impl Caller {
    pub fn user(&self) -> &UserId {
        match self {
            Self::User(user) | Self::App { user, .. } => user,
        }
    }
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

    /// The caller of a request to `path` with these headers.
    pub async fn caller(&self, headers: &HeaderMap, path: &str) -> Result<Caller, ApiError> {
        if let Some(user) = headers.get(ON_BEHALF_OF) {
            let result = self.internal_caller(headers, path, user.to_str().unwrap_or_default());
            if let Err(err) = &result {
                tracing::warn!(%err, path, "refused a call on behalf of a user");
            }
            return result;
        }
        let header = headers
            .get(http::header::AUTHORIZATION)
            .map(|value| {
                value.to_str().map_err(|_| {
                    ApiError::Unauthenticated("authorization metadata is not ASCII".into())
                })
            })
            .transpose()?;
        let token = TokenVerifier::bearer(header)?;
        Ok(Caller::User(self.verifier.verify_fresh(token).await?))
    }

    fn internal_caller(
        &self,
        headers: &HeaderMap,
        path: &str,
        user: &str,
    ) -> Result<Caller, ApiError> {
        let Some(trust) = &self.internal else {
            return Err(ApiError::Unauthenticated(
                "calls on behalf of a user are not enabled on this service".into(),
            ));
        };
        let token = headers
            .get("dapr-api-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(token, trust.app_api_token.expose_secret().as_bytes()) {
            return Err(ApiError::Unauthenticated(
                "a call on behalf of a user must come through task-service's own sidecar".into(),
            ));
        }
        let mut apps = headers.get_all(CALLER_APP_ID).iter();
        let app = match (apps.next().map(|v| v.to_str()), apps.next()) {
            (Some(Ok(app)), None) => app,
            _ => {
                return Err(ApiError::PermissionDenied(
                    "the sidecar must name the calling app exactly once".into(),
                ));
            }
        };
        let method = path.strip_prefix(TASK_SERVICE_PREFIX).unwrap_or_default();
        if method.is_empty() || !trust.callers.allows(app, method) {
            return Err(ApiError::PermissionDenied(format!(
                "app {app:?} may not call {path} on behalf of users"
            )));
        }
        let user = UserId::try_from(user.to_owned())
            .map_err(|reason| ApiError::Unauthenticated(format!("{ON_BEHALF_OF}: {reason}")))?;
        Ok(Caller::App {
            app: app.to_owned(),
            user,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user the gate found for this request.
pub fn caller<T>(request: &Request<T>) -> Result<UserId, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.user().clone())
        .ok_or_else(|| ApiError::Unauthenticated("no authenticated caller".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CREATE: &str = "/taskmesh.tasks.v1.TaskService/CreateTask";

    fn auth() -> Authenticate {
        Authenticate::new(
            TokenVerifier::new(b"0123456789abcdef0123456789abcdef"),
            Some(InternalTrust {
                app_api_token: "app-token".to_owned().into(),
                callers: TrustedCallers::parse("recurring-service=CreateTask").unwrap(),
            }),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, v.parse().unwrap());
        }
        headers
    }

    #[tokio::test]
    async fn trusted_app_through_dapr_acts_for_the_user() {
        let caller = auth()
            .caller(
                &headers(&[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-api-token", "app-token"),
                    ("dapr-caller-app-id", "recurring-service"),
                ]),
                CREATE,
            )
            .await
            .unwrap();
        assert_eq!(caller.user().as_str(), "alice");
    }

    #[tokio::test]
    async fn forged_internal_calls_are_refused() {
        let trusted = [
            (ON_BEHALF_OF, "alice"),
            ("dapr-api-token", "app-token"),
            ("dapr-caller-app-id", "recurring-service"),
        ];
        type Case<'a> = (&'a [(&'static str, &'a str)], &'a str, tonic::Code);
        let cases: [Case<'_>; 6] = [
            // An external client that claims to be recurring-service without the token.
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-caller-app-id", "recurring-service"),
                ],
                CREATE,
                tonic::Code::Unauthenticated,
            ),
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-api-token", "guess"),
                    ("dapr-caller-app-id", "recurring-service"),
                ],
                CREATE,
                tonic::Code::Unauthenticated,
            ),
            // Through Dapr, but from an app that is not allowed.
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-api-token", "app-token"),
                    ("dapr-caller-app-id", "analytics-service"),
                ],
                CREATE,
                tonic::Code::PermissionDenied,
            ),
            // An allowed app, but a method it does not need.
            (
                &trusted,
                "/taskmesh.tasks.v1.TaskService/DeleteTask",
                tonic::Code::PermissionDenied,
            ),
            (
                &trusted,
                "/taskmesh.notifications.v1.NotificationService/CreateTask",
                tonic::Code::PermissionDenied,
            ),
            // A caller id added by the caller besides the sidecar's.
            (
                &[
                    (ON_BEHALF_OF, "alice"),
                    ("dapr-api-token", "app-token"),
                    ("dapr-caller-app-id", "recurring-service"),
                    ("dapr-caller-app-id", "analytics-service"),
                ],
                CREATE,
                tonic::Code::PermissionDenied,
            ),
        ];
        for (pairs, path, code) in cases {
            let err = auth().caller(&headers(pairs), path).await.unwrap_err();
            assert_eq!(tonic::Status::from(err).code(), code, "{pairs:?} {path}");
        }
        let disabled = Authenticate::new(
            TokenVerifier::new(b"0123456789abcdef0123456789abcdef"),
            None,
        );
        let err = disabled
            .caller(&headers(&trusted), CREATE)
            .await
            .unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::Unauthenticated
        );
    }
}
