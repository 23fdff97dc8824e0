//! The public gRPC API: `taskmesh.tasks.v1.TaskService`'s handlers here, the user-facing
//! services kept by other apps in `notifications` and `stats`, and the `gate` every call
//! passes first.

mod auth;
mod convert;
mod gate;
mod lists;
mod notifications;
mod page_token;
mod rate_limit;
mod stats;
mod watch;

use std::sync::Arc;

use taskmesh_proto::tasks::v1 as pb;
use taskmesh_shared::error::ApiError;
use tonic::{Request, Response, Status};

use crate::domain::{self, Change, ListQuery};
use crate::store::TaskStore;

pub use auth::{Authenticate, Caller, InternalTrust, ON_BEHALF_OF};
pub use gate::Gate;
pub use lists::ListApi;
pub use notifications::NotificationApi;
pub use page_token::PageTokens;
pub use rate_limit::RateLimiter;
pub use stats::StatsApi;
pub use watch::{ResumeTokens, WatchStream, Watches};

/// The handlers hold only their injected dependencies.
#[derive(Clone)]
pub struct TaskApi {
    store: Arc<dyn TaskStore>,
    page_tokens: PageTokens,
    /// WatchTasks; unset, it answers UNIMPLEMENTED.
    watches: Option<Watches>,
}

impl TaskApi {
    pub fn new(store: Arc<dyn TaskStore>, page_tokens: PageTokens) -> Self {
        Self {
            store,
            page_tokens,
            watches: None,
        }
    }

    #[must_use]
    pub fn with_watches(mut self, watches: Watches) -> Self {
        self.watches = Some(watches);
        self
    }

    async fn change(
        &self,
        request: Request<(String, Option<i64>)>,
        change: impl FnOnce() -> Change,
    ) -> Result<Response<pb::Task>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let (id, expected) = request.into_inner();
        let (id, expected) = convert::target(&id, expected)?;
        tracing::Span::current().record("task_id", tracing::field::display(id));
        let task = self
            .store
            .modify(user.as_str(), id, expected, change(), domain::now())
            .await?;
        Ok(Response::new(convert::task_to_proto(task)))
    }
}

fn remap<T, U>(request: Request<T>, f: impl FnOnce(T) -> U) -> Request<U> {
    let (metadata, extensions, message) = request.into_parts();
    Request::from_parts(metadata, extensions, f(message))
}

#[tonic::async_trait]
impl pb::task_service_server::TaskService for TaskApi {
    #[tracing::instrument(name = "CreateTask", skip_all, fields(user, task_id))]
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let new = convert::new_task(request.into_inner())?;
        let task = self.store.create(user.as_str(), new, domain::now()).await?;
        tracing::Span::current().record("task_id", tracing::field::display(task.id));
        Ok(Response::new(convert::task_to_proto(task)))
    }

    #[tracing::instrument(name = "GetTask", skip_all, fields(user, task_id))]
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let (id, _) = convert::target(&request.get_ref().id, None)?;
        tracing::Span::current().record("task_id", tracing::field::display(id));
        let task = self
            .store
            .get(user.as_str(), id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("task {id}")))?;
        Ok(Response::new(convert::task_to_proto(task)))
    }

    #[tracing::instrument(name = "ListTasks", skip_all, fields(user))]
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let req = request.into_inner();
        let (filter, page_size) = convert::filter(&req)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(
                self.page_tokens
                    .decode(&req.page_token, user.as_str(), &filter)
                    .map_err(|err| ApiError::invalid("page_token", err.to_string()))?,
            )
        };
        let query = ListQuery {
            filter,
            page_size,
            after,
        };
        let mut tasks = self.store.list(user.as_str(), &query).await?;
        let page_len = usize::try_from(page_size).unwrap_or(usize::MAX);
        let next_page_token = if tasks.len() > page_len {
            tasks.truncate(page_len);
            tasks.last().map(|(last, key)| {
                let cursor = domain::Cursor {
                    key: *key,
                    id: last.id,
                };
                self.page_tokens
                    .encode(user.as_str(), &query.filter, cursor)
            })
        } else {
            None
        };
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks
                .into_iter()
                .map(|(task, _)| convert::task_to_proto(task))
                .collect(),
            next_page_token: next_page_token.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "UpdateTask", skip_all, fields(user, task_id))]
    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let (id, expected, patch) = convert::patch(request.into_inner())?;
        tracing::Span::current().record("task_id", tracing::field::display(id));
        let task = self
            .store
            .modify(
                user.as_str(),
                id,
                expected,
                Change::Update(patch),
                domain::now(),
            )
            .await?;
        Ok(Response::new(convert::task_to_proto(task)))
    }

    #[tracing::instrument(name = "CompleteTask", skip_all, fields(user, task_id))]
    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let request = remap(request, |r| (r.id, r.expected_version));
        self.change(request, || Change::Complete).await
    }

    #[tracing::instrument(name = "ReopenTask", skip_all, fields(user, task_id))]
    async fn reopen_task(
        &self,
        request: Request<pb::ReopenTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let request = remap(request, |r| (r.id, r.expected_version));
        self.change(request, || Change::Reopen).await
    }

    #[tracing::instrument(name = "DeleteTask", skip_all, fields(user, task_id))]
    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let req = request.into_inner();
        let (id, expected) = convert::target(&req.id, req.expected_version)?;
        tracing::Span::current().record("task_id", tracing::field::display(id));
        self.store.delete(user.as_str(), id, expected).await?;
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    type WatchTasksStream = WatchStream;

    /// Returns once the watch is checked and registered; the stream then lives on its own
    /// task, outside the gate's deadline (see `watch`).
    #[tracing::instrument(name = "WatchTasks", skip_all, fields(user))]
    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let user = auth::caller(&request)?;
        tracing::Span::current().record("user", user.as_str());
        let watches = self
            .watches
            .as_ref()
            .ok_or_else(|| Status::unimplemented("WatchTasks is not served here"))?;
        let stream = watches.watch(user.as_str(), request.into_inner()).await?;
        Ok(Response::new(stream))
    }
}
