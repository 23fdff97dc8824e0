//! One AppCallback implementation for every subscriber service: subscriptions declared in
//! code with routes on the CloudEvent type and a dead-letter topic, typed handlers whose
//! outcome maps to SUCCESS / RETRY / DROP, JSON methods for `dapr invoke`, job triggers,
//! and the `APP_API_TOKEN` check. The SDK's `AppCallbackService` leaves invocations
//! unimplemented and always answers SUCCESS; this router answers deliberately.

mod dead_letters;
mod handlers;
mod metrics;
mod process;
mod server;
mod topics;

use std::collections::HashMap;
use std::sync::Arc;

use dapr::dapr::proto::common::v1::{InvokeRequest, InvokeResponse};
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallback;
use dapr::dapr::proto::runtime::v1::topic_event_bulk_request_entry::Event as BulkEvent;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use dapr::dapr::proto::runtime::v1::{
    BindingEventRequest, BindingEventResponse, BulkSubscribeConfig, JobEventRequest,
    JobEventResponse, ListInputBindingsResponse, ListTopicSubscriptionsResponse,
    TopicEventBulkRequest, TopicEventBulkResponse, TopicEventBulkResponseEntry, TopicEventRequest,
    TopicEventResponse, TopicRoutes, TopicRule, TopicSubscription,
};
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::auth::callers::{CALLER_APP_ID, TrustedCallers, caller_app_id};
pub use dead_letters::{DeadLetters, METHODS as DEAD_LETTER_METHODS};
use handlers::string_extension;
pub use handlers::{Delivery, InvokeError, JobHandler, Method, Outcome, TopicHandler};
pub use metrics::RouterMetrics;

use metrics::{EventLabels, TopicLabel};
pub use process::{failed, run_process};
pub use server::{BindError, CallbackServer, ServiceConfig};
pub use topics::Topics;

const API_TOKEN_HEADER: &str = "dapr-api-token";

/// Events of one topic, routed by CloudEvent type.
pub struct Subscription {
    pubsub: String,
    topic: String,
    dead_letter_topic: Option<String>,
    metadata: HashMap<String, String>,
    routes: Vec<(String, Arc<dyn TopicHandler>)>,
    fallback: Option<Arc<dyn TopicHandler>>,
    bulk: Option<BulkSubscribeConfig>,
}

impl Subscription {
    pub fn new(pubsub: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            pubsub: pubsub.into(),
            topic: topic.into(),
            dead_letter_topic: None,
            metadata: HashMap::new(),
            routes: Vec::new(),
            fallback: None,
            bulk: None,
        }
    }

    /// Asks the sidecar to deliver in batches of up to `max_messages`, waiting at most
    /// `max_await_ms` to fill one: far fewer sidecar round trips for a busy consumer, at
    /// the cost of up to `max_await_ms` of latency. The entries of a batch are handled
    /// concurrently, so only consumers that tolerate reordering (version-guarded) may use
    /// it. Measure first: notification-service, whose entries contend on users' inboxes,
    /// went from about 600 to 290 events/s with batches of 100 (`just bench-consumers`).
    pub fn bulk(mut self, max_messages: i32, max_await_ms: i32) -> Self {
        self.bulk = Some(BulkSubscribeConfig {
            enabled: true,
            max_messages_count: max_messages,
            max_await_duration_ms: max_await_ms,
        });
        self
    }

    /// Where DROPped events go (after the component's retry policy for RETRY). Without
    /// it, the router's own dead-letter topic (`Router::keep_dead_letters`).
    pub fn dead_letter(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Routes events of exactly this CloudEvent `type` to `handler`.
    pub fn on_type(
        mut self,
        event_type: impl Into<String>,
        handler: Arc<dyn TopicHandler>,
    ) -> Self {
        self.routes.push((event_type.into(), handler));
        self
    }

    /// Handles every type no route names; without it such events are dropped.
    pub fn otherwise(mut self, handler: Arc<dyn TopicHandler>) -> Self {
        self.fallback = Some(handler);
        self
    }

    fn path(&self, event_type: &str) -> String {
        format!("/{}/{}", self.topic, event_type)
    }

    fn default_path(&self) -> String {
        format!("/{}/default", self.topic)
    }

    fn declaration(&self, kept: Option<&DeadLetters>) -> TopicSubscription {
        let rules = self
            .routes
            .iter()
            .map(|(event_type, _)| TopicRule {
                // CEL over the CloudEvent; the type is ours, quoted as a CEL string.
                r#match: format!("event.type == {}", cel_string(event_type)),
                path: self.path(event_type),
            })
            .collect();
        TopicSubscription {
            pubsub_name: self.pubsub.clone(),
            topic: self.topic.clone(),
            metadata: self.metadata.clone(),
            routes: Some(TopicRoutes {
                rules,
                default: self.default_path(),
            }),
            dead_letter_topic: self
                .dead_letter_topic
                .clone()
                .or_else(|| {
                    kept.filter(|kept| kept.pubsub == self.pubsub)
                        .map(|kept| kept.topic.clone())
                })
                .unwrap_or_default(),
            bulk_subscribe: self.bulk,
        }
    }

    /// The handler of a delivery: by the route path the sidecar matched, else by type.
    fn handler_for(&self, path: &str, event_type: &str) -> Option<&Arc<dyn TopicHandler>> {
        self.routes
            .iter()
            .find(|(t, _)| self.path(t) == path)
            .or_else(|| self.routes.iter().find(|(t, _)| t == event_type))
            .map(|(_, handler)| handler)
            .or(self.fallback.as_ref())
    }
}

fn cel_string(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The AppCallback service of one app.
#[derive(Default)]
pub struct Router {
    subscriptions: Vec<Subscription>,
    methods: HashMap<String, Arc<dyn Method>>,
    jobs: Option<Arc<dyn JobHandler>>,
    app_api_token: Option<SecretString>,
    trusted_callers: Option<TrustedCallers>,
    metrics: Option<RouterMetrics>,
    dead_letters: Option<Arc<DeadLetters>>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(mut self, subscription: Subscription) -> Self {
        self.subscriptions.push(subscription);
        self
    }

    /// A method for `dapr invoke --method <name>`.
    pub fn method(mut self, name: impl Into<String>, method: Arc<dyn Method>) -> Self {
        self.methods.insert(name.into(), method);
        self
    }

    /// Reads the app's own dead-letter topic, keeps what arrives there, and answers the
    /// operators' `deadletters/list`, `deadletters/replay` and `deadletters/discard`.
    /// Subscriptions without a dead-letter topic of their own name this one.
    pub fn keep_dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        self.dead_letters = Some(Arc::new(dead_letters));
        self
    }

    pub fn jobs(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.jobs = Some(handler);
        self
    }

    /// Every call must carry this token as `dapr-api-token` (the sidecar's
    /// `APP_API_TOKEN`); unset means not checked.
    /// Counts deliveries (the server registers these on its `/metrics`).
    pub fn metrics(mut self, metrics: RouterMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn app_api_token(mut self, token: Option<SecretString>) -> Self {
        self.app_api_token = token.filter(|t| !t.expose_secret().is_empty());
        self
    }

    /// Apps whose sidecar may invoke the methods (every method here names a user in its
    /// body, so only a caller trusted to speak for any user may call it: task-service for
    /// the public API, the operators' `taskmesh-ops`). `None` lets every caller in.
    pub fn trusted_callers(mut self, callers: Option<TrustedCallers>) -> Self {
        self.trusted_callers = callers;
        self
    }

    fn authorize_caller(&self, metadata: &MetadataMap, method: &str) -> Result<(), Status> {
        let Some(callers) = &self.trusted_callers else {
            return Ok(());
        };
        // No caller id at all: the call was made on this app's own sidecar API (an
        // operator's `dapr invoke`, guarded by that sidecar's Dapr API token), not by
        // another app, whose sidecar always names it.
        if metadata.get(CALLER_APP_ID).is_none() {
            return Ok(());
        }
        let caller = caller_app_id(metadata).unwrap_or_default();
        if callers.allows(caller, method) {
            Ok(())
        } else {
            tracing::warn!(
                caller,
                method,
                "refused an invocation from an untrusted app"
            );
            Err(Status::permission_denied(format!(
                "app {caller:?} may not call {method:?} (TASKMESH_TRUSTED_CALLERS)"
            )))
        }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.app_api_token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get(API_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes()) {
            Ok(())
        } else {
            tracing::warn!("refused a call without the sidecar's APP_API_TOKEN");
            Err(Status::unauthenticated("missing or wrong dapr-api-token"))
        }
    }

    async fn deliver(&self, request: TopicEventRequest) -> TopicEventResponseStatus {
        if let Some(dead_letters) = &self.dead_letters
            && dead_letters.is_ours(&request.pubsub_name, &request.topic)
        {
            return self.keep_dead_letter(dead_letters, request).await;
        }
        let path = request.path.clone();
        let delivery = Delivery::from_request(request);
        let span = tracing::info_span!(
            "topic_event",
            event.id = %delivery.id,
            event.r#type = %delivery.event_type,
            topic = %delivery.topic,
            // In the logs too, for correlation where spans are not exported.
            traceparent = delivery.traceparent.as_deref().unwrap_or(""),
            otel.kind = "consumer",
        );
        crate::trace_context::set_parent(&span, delivery.traceparent.as_deref(), None);
        async {
            match self.dispatch(&path, delivery).await {
                Outcome::Success => TopicEventResponseStatus::Success,
                Outcome::Retry(reason) => {
                    tracing::info!(%reason, "RETRY: will be delivered again");
                    TopicEventResponseStatus::Retry
                }
                Outcome::Drop(reason) => {
                    tracing::warn!(%reason, "DROP: to the dead-letter topic");
                    TopicEventResponseStatus::Drop
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Runs `delivery` through its handler (by the route `path` the sidecar matched, else
    /// by type; a replay passes no path), counts the outcome, and remembers why it failed
    /// for the dead letter that may follow.
    async fn dispatch(&self, path: &str, delivery: Delivery) -> Outcome {
        let subscription = self
            .subscriptions
            .iter()
            .find(|s| s.pubsub == delivery.pubsub && s.topic == delivery.topic);
        let handler = subscription.and_then(|s| s.handler_for(path, &delivery.event_type));
        let known_type =
            subscription.is_some_and(|s| s.routes.iter().any(|(t, _)| *t == delivery.event_type));
        let labels = (
            delivery.topic.clone(),
            if known_type {
                delivery.event_type.clone()
            } else {
                "unknown".to_owned()
            },
        );
        let id = delivery.id.clone();
        let started = std::time::Instant::now();
        let outcome = match handler {
            Some(handler) => handler.handle(delivery).await,
            None => Outcome::Drop(format!(
                "no handler for type {:?} on {}",
                delivery.event_type, delivery.topic
            )),
        };
        if let Some(metrics) = &self.metrics {
            let outcome = match outcome {
                Outcome::Success => "success",
                Outcome::Retry(_) => "retry",
                Outcome::Drop(_) => "drop",
            };
            metrics
                .events
                .get_or_create(&EventLabels {
                    topic: labels.0.clone(),
                    event_type: labels.1,
                    outcome,
                })
                .inc();
            metrics
                .handle_seconds
                .get_or_create(&TopicLabel { topic: labels.0 })
                .observe(started.elapsed().as_secs_f64());
        }
        if let (Some(dead_letters), Outcome::Retry(reason) | Outcome::Drop(reason)) =
            (&self.dead_letters, &outcome)
        {
            dead_letters.note_failure(&id, reason);
        }
        outcome
    }
}

impl Router {
    fn invoke_response(output: serde_json::Value) -> Result<Response<InvokeResponse>, Status> {
        let body =
            serde_json::to_vec(&output).map_err(|err| invoke_status(InvokeError::internal(err)))?;
        Ok(Response::new(InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: body,
            }),
            content_type: crate::events::JSON_CONTENT_TYPE.to_owned(),
        }))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Method input from `dapr invoke --data`: JSON in the `Any`'s value (an empty body is
/// `{}`).
fn invoke_input(request: &InvokeRequest) -> Result<serde_json::Value, Status> {
    let bytes = request
        .data
        .as_ref()
        .map(|any| any.value.as_slice())
        .unwrap_or_default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(bytes)
        .map_err(|err| Status::invalid_argument(format!("the request body is not JSON: {err}")))
}

fn invoke_status(err: InvokeError) -> Status {
    match err {
        InvokeError::InvalidArgument(msg) => Status::invalid_argument(msg),
        InvokeError::NotFound(msg) => Status::not_found(msg),
        InvokeError::Unavailable(msg) => Status::unavailable(msg),
        InvokeError::Internal(cause) => {
            tracing::error!(error = %crate::error::chain(cause.as_ref()), "invoked method failed");
            Status::internal("internal error")
        }
    }
}

#[tonic::async_trait]
impl AppCallback for Router {
    async fn on_invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        self.authorize(&request)?;
        let traceparent = request
            .metadata()
            .get(crate::trace_context::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.authorize_caller(request.metadata(), &request.get_ref().method)?;
        let request = request.into_inner();
        let span = tracing::info_span!(
            "invoke",
            method = %request.method,
            traceparent = traceparent.as_deref().unwrap_or(""),
            otel.kind = "server",
        );
        crate::trace_context::set_parent(&span, traceparent.as_deref(), None);
        async {
            if self.dead_letters.is_some()
                && DEAD_LETTER_METHODS.contains(&request.method.as_str())
                && let Some(result) = self
                    .dead_letter_method(&request.method, &invoke_input(&request)?)
                    .await
            {
                return Self::invoke_response(result.map_err(invoke_status)?);
            }
            let method = self.methods.get(&request.method).ok_or_else(|| {
                let mut known: Vec<&str> = self.methods.keys().map(String::as_str).collect();
                if self.dead_letters.is_some() {
                    known.extend(DEAD_LETTER_METHODS);
                }
                known.sort_unstable();
                Status::unimplemented(format!(
                    "unknown method {:?}; this app answers: {}",
                    request.method,
                    known.join(", ")
                ))
            })?;
            let output = method
                .call(invoke_input(&request)?)
                .await
                .map_err(invoke_status)?;
            Self::invoke_response(output)
        }
        .instrument(span)
        .await
    }

    // Not token-checked: daprd 1.18.1 asks for the subscriptions without the app token
    // (it sends it on every call that carries data), and the list reveals no data.
    async fn list_topic_subscriptions(
        &self,
        _request: Request<()>,
    ) -> Result<Response<ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(ListTopicSubscriptionsResponse {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|s| s.declaration(self.dead_letters.as_deref()))
                .chain(self.dead_letters.as_ref().map(|kept| TopicSubscription {
                    pubsub_name: kept.pubsub.clone(),
                    topic: kept.topic.clone(),
                    metadata: HashMap::new(),
                    routes: Some(TopicRoutes {
                        rules: Vec::new(),
                        default: format!("/{}/keep", kept.topic),
                    }),
                    // Nowhere further: what cannot be kept now stays on this topic.
                    dead_letter_topic: String::new(),
                    bulk_subscribe: None,
                }))
                .collect(),
        }))
    }

    async fn on_topic_event(
        &self,
        request: Request<TopicEventRequest>,
    ) -> Result<Response<TopicEventResponse>, Status> {
        self.authorize(&request)?;
        let status = self.deliver(request.into_inner()).await;
        Ok(Response::new(TopicEventResponse {
            status: status as i32,
        }))
    }

    async fn list_input_bindings(
        &self,
        _request: Request<()>,
    ) -> Result<Response<ListInputBindingsResponse>, Status> {
        Ok(Response::new(ListInputBindingsResponse::default()))
    }

    async fn on_binding_event(
        &self,
        request: Request<BindingEventRequest>,
    ) -> Result<Response<BindingEventResponse>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(format!(
            "this app has no input binding {:?}",
            request.get_ref().name
        )))
    }

    async fn on_bulk_topic_event(
        &self,
        request: Request<TopicEventBulkRequest>,
    ) -> Result<Response<TopicEventBulkResponse>, Status> {
        self.authorize(&request)?;
        // Entries are independent deliveries: handled concurrently, answered one by one.
        let request = request.into_inner();
        let (topic, pubsub, path) = (request.topic, request.pubsub_name, request.path);
        let statuses = futures::future::join_all(request.entries.into_iter().map(|entry| {
            let (topic, pubsub, path) = (topic.clone(), pubsub.clone(), path.clone());
            async move {
                let status = match entry.event {
                    Some(BulkEvent::CloudEvent(ce)) => {
                        self.deliver(TopicEventRequest {
                            id: ce.id,
                            source: ce.source,
                            r#type: ce.r#type,
                            spec_version: ce.spec_version,
                            data_content_type: ce.data_content_type,
                            data: ce.data,
                            topic,
                            pubsub_name: pubsub,
                            path,
                            extensions: ce.extensions,
                        })
                        .await
                    }
                    // We publish CloudEvents only: anything else is not ours.
                    _ => TopicEventResponseStatus::Drop,
                };
                TopicEventBulkResponseEntry {
                    entry_id: entry.entry_id,
                    status: status as i32,
                }
            }
        }))
        .await;
        Ok(Response::new(TopicEventBulkResponse { statuses }))
    }

    async fn on_job_event(
        &self,
        request: Request<JobEventRequest>,
    ) -> Result<Response<JobEventResponse>, Status> {
        self.authorize(&request)?;
        let Some(jobs) = &self.jobs else {
            return Err(Status::unimplemented("this app schedules no jobs"));
        };
        let request = request.into_inner();
        // daprd names the job in `name` and also sends it as method "job/<name>".
        let name = if request.name.is_empty() {
            request.method.trim_start_matches("job/").to_owned()
        } else {
            request.name.clone()
        };
        let data = request.data.map(|any| any.value).unwrap_or_default();
        let span = tracing::info_span!("job", job = %name);
        jobs.on_job(&name, &data)
            .instrument(span)
            .await
            .map(|()| Response::new(JobEventResponse {}))
            .map_err(invoke_status)
    }
}

#[cfg(test)]
mod tests;
