//! `TaskService` and `ListService` clients as a user: a bearer token minted with the test
//! secret.

use std::time::Duration;

use taskmesh_proto::tasks::v1::list_service_client::ListServiceClient;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type TaskClient = TaskServiceClient<InterceptedService<Channel, Bearer>>;
pub type ListClient = ListServiceClient<InterceptedService<Channel, Bearer>>;

/// A lazily connecting client of `endpoint` acting as `user`.
pub fn task_client(endpoint: &str, secret: &str, user: &str) -> anyhow::Result<TaskClient> {
    let (channel, bearer) = as_user(endpoint, secret, user)?;
    Ok(TaskServiceClient::with_interceptor(channel, bearer))
}

/// A lazily connecting `ListService` client of `endpoint` acting as `user`.
pub fn list_client(endpoint: &str, secret: &str, user: &str) -> anyhow::Result<ListClient> {
    let (channel, bearer) = as_user(endpoint, secret, user)?;
    Ok(ListServiceClient::with_interceptor(channel, bearer))
}

fn as_user(endpoint: &str, secret: &str, user: &str) -> anyhow::Result<(Channel, Bearer)> {
    let channel = Channel::from_shared(endpoint.to_owned())?.connect_lazy();
    let token =
        taskmesh_shared::auth::mint(secret.as_bytes(), user, Duration::from_secs(24 * 3600))?;
    Ok((channel, Bearer(format!("Bearer {token}").parse()?)))
}
