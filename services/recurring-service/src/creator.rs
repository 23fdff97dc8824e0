//! Creating the next task in task-service through Dapr service invocation: our own
//! sidecar proxies the gRPC call to the app named in `dapr-app-id`.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_shared::config::ConfigError;
use taskmesh_shared::trace_context;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::next::NextTask;

/// Must match task-service's `api::ON_BEHALF_OF`.
const ON_BEHALF_OF: &str = "taskmesh-on-behalf-of";

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// task-service or the sidecars are down, busy, or not yet agreed on tokens and
    /// policies (a roll-out): try again later.
    #[error("task-service is unavailable: {0}")]
    Transient(String),
    /// task-service refused the request itself: retrying will not help.
    #[error("task-service refused the next task: {0}")]
    Refused(String),
}

/// The port the consumer depends on.
#[async_trait]
pub trait TaskCreator: Send + Sync + 'static {
    /// Creates the task (idempotent through its request id); returns its id.
    async fn create(&self, next: &NextTask) -> Result<String, CreateError>;
}

#[derive(Debug, Clone)]
pub struct DaprTaskCreator {
    client: TaskServiceClient<Channel>,
    target_app_id: String,
    dapr_api_token: Option<SecretString>,
}

impl DaprTaskCreator {
    pub fn new(
        sidecar_endpoint: &str,
        dapr_api_token: Option<SecretString>,
        target_app_id: String,
    ) -> Result<Self, ConfigError> {
        let channel = Endpoint::from_shared(sidecar_endpoint.to_owned())
            .map_err(|err| ConfigError::invalid("DAPR_GRPC_ENDPOINT", sidecar_endpoint, err))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: TaskServiceClient::new(channel),
            target_app_id,
            dapr_api_token,
        })
    }
}

fn metadata_value(
    text: &str,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, CreateError> {
    text.parse()
        .map_err(|_| CreateError::Refused(format!("{text:?} is not valid gRPC metadata")))
}

#[async_trait]
impl TaskCreator for DaprTaskCreator {
    async fn create(&self, next: &NextTask) -> Result<String, CreateError> {
        let mut request = tonic::Request::new(next.request.clone());
        request.set_timeout(Duration::from_secs(10));
        let metadata = request.metadata_mut();
        metadata.insert("dapr-app-id", metadata_value(&self.target_app_id)?);
        metadata.insert(ON_BEHALF_OF, metadata_value(&next.owner_id)?);
        // The new task's creation joins the trace of the completion that caused it.
        if let Some(traceparent) = trace_context::current() {
            metadata.insert(trace_context::TRACEPARENT, metadata_value(&traceparent)?);
        }
        if let Some(token) = &self.dapr_api_token {
            metadata.insert("dapr-api-token", metadata_value(token.expose_secret())?);
        }
        match self.client.clone().create_task(request).await {
            Ok(task) => Ok(task.into_inner().id),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// What task-service's answer means for the event. Only a request task-service judged and
/// refused can never succeed. A token, an access policy or an app id that the other side
/// does not know yet is what a roll-out looks like for a minute (UNAUTHENTICATED,
/// PERMISSION_DENIED, NOT_FOUND from the sidecar): retried, so a roll-out mistake delays
/// completions instead of dead-lettering every one of them. task-service gives the same
/// NOT_FOUND (or PERMISSION_DENIED) when the owner can no longer create in the completed
/// task's list; retried too, then kept as a dead letter to replay once the owner's rights
/// are back (we cannot tell it from a roll-out mistake, and guessing another list would
/// put the task where its members do not look).
fn classify(status: &tonic::Status) -> CreateError {
    let reason = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            CreateError::Refused(reason)
        }
        _ => CreateError::Transient(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_judged_request_is_refused_for_good() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::OutOfRange,
        ] {
            let err = classify(&tonic::Status::new(code, "no"));
            assert!(matches!(err, CreateError::Refused(_)), "{code:?}");
        }
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            let err = classify(&tonic::Status::new(code, "later"));
            assert!(matches!(err, CreateError::Transient(_)), "{code:?}");
        }
    }
}
