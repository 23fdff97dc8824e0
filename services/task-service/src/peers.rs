//! The other Taskmesh apps, reached through Dapr service invocation: task-service answers
//! the public notification, preference and statistics APIs by invoking the subscriber
//! that keeps that state, naming the user its gate authenticated. The subscribers accept
//! a named user only from callers in their `TASKMESH_TRUSTED_CALLERS` (task-service and
//! the operators), as their sidecar vouches for them.

use async_trait::async_trait;
use dapr::dapr::proto::common::v1::InvokeRequest;
use dapr::dapr::proto::runtime::v1::InvokeServiceRequest;
use serde_json::Value;
use taskmesh_shared::error::ApiError;
use taskmesh_shared::events::JSON_CONTENT_TYPE;
use taskmesh_shared::sidecar::DaprGrpc;
use tonic::Code;

/// A JSON method of another app (the port; faked in unit tests).
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    async fn invoke(&self, app: &str, method: &str, body: Value) -> Result<Value, ApiError>;
}

/// Through our sidecar's gRPC API.
#[derive(Clone)]
pub struct DaprPeers {
    client: DaprGrpc,
}

impl DaprPeers {
    pub fn new(client: DaprGrpc) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Peers for DaprPeers {
    async fn invoke(&self, app: &str, method: &str, body: Value) -> Result<Value, ApiError> {
        let request = InvokeServiceRequest {
            id: app.to_owned(),
            message: Some(InvokeRequest {
                method: method.to_owned(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: serde_json::to_vec(&body).map_err(ApiError::internal)?,
                }),
                content_type: JSON_CONTENT_TYPE.to_owned(),
                http_extension: None,
            }),
        };
        let reply = self
            .client
            .clone()
            .invoke_service(request)
            .await
            .map_err(|status| peer_error(app, method, status))?
            .into_inner();
        let bytes = reply.data.map(|any| any.value).unwrap_or_default();
        serde_json::from_slice(&bytes).map_err(ApiError::internal)
    }
}

/// What the client sees of a peer's answer: its verdict on the request (invalid, not
/// found) as is; anything else (the peer down, a policy refusing us) is ours to fix, so
/// the client learns only that the service is unavailable, and the log says why.
fn peer_error(app: &str, method: &str, status: tonic::Status) -> ApiError {
    match status.code() {
        Code::InvalidArgument => ApiError::invalid("request", status.message()),
        Code::NotFound => ApiError::NotFound(status.message().to_owned()),
        code => {
            tracing::warn!(
                app,
                method,
                ?code,
                message = status.message(),
                "peer call failed"
            );
            ApiError::Unavailable(format!("{app} {method}: {code:?}").into())
        }
    }
}
