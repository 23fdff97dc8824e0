#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;

struct Recorder {
    seen: Mutex<Vec<String>>,
    outcome: Outcome,
}

#[async_trait]
impl TopicHandler for Recorder {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        self.seen.lock().unwrap().push(delivery.id);
        self.outcome.clone()
    }
}

fn recorder(outcome: Outcome) -> Arc<Recorder> {
    Arc::new(Recorder {
        seen: Mutex::new(Vec::new()),
        outcome,
    })
}

struct Echo;

#[async_trait]
impl Method for Echo {
    async fn call(&self, input: serde_json::Value) -> Result<serde_json::Value, InvokeError> {
        if input.get("user_id").is_none() {
            return Err(InvokeError::InvalidArgument("user_id is required".into()));
        }
        Ok(input)
    }
}

fn event(event_type: &str, path: &str) -> TopicEventRequest {
    TopicEventRequest {
        id: format!("id-{event_type}"),
        r#type: event_type.into(),
        topic: "task-events".into(),
        pubsub_name: "ps".into(),
        path: path.into(),
        data: b"{}".to_vec(),
        ..TopicEventRequest::default()
    }
}

async fn status(router: &Router, request: TopicEventRequest) -> i32 {
    router
        .on_topic_event(Request::new(request))
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn events_reach_their_handler_and_outcomes_map_to_dapr_statuses() {
    let ok = recorder(Outcome::Success);
    let busy = recorder(Outcome::Retry("store down".into()));
    let router = Router::new().subscribe(
        Subscription::new("ps", "task-events")
            .dead_letter("task-events-deadletter")
            .on_type("a.v1", ok.clone())
            .on_type("b.v1", busy.clone()),
    );

    let declared = router
        .list_topic_subscriptions(Request::new(()))
        .await
        .unwrap()
        .into_inner();
    let sub = &declared.subscriptions[0];
    assert_eq!(sub.dead_letter_topic, "task-events-deadletter");
    let routes = sub.routes.as_ref().unwrap();
    assert_eq!(routes.rules[0].r#match, r#"event.type == "a.v1""#);
    let path_a = routes.rules[0].path.clone();

    assert_eq!(status(&router, event("a.v1", &path_a)).await, 0, "SUCCESS");
    // An older sidecar without routes: matched by type.
    assert_eq!(status(&router, event("a.v1", "")).await, 0);
    assert_eq!(status(&router, event("b.v1", "")).await, 1, "RETRY");
    assert_eq!(
        status(&router, event("c.v2", &routes.default)).await,
        2,
        "DROP unknown"
    );
    let mut other_topic = event("a.v1", "");
    other_topic.topic = "elsewhere".into();
    assert_eq!(status(&router, other_topic).await, 2);
    assert_eq!(ok.seen.lock().unwrap().len(), 2);
    assert_eq!(busy.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_data_is_a_drop_not_a_panic() {
    let mut request = event("a.v1", "");
    request.data = b"{not json".to_vec();
    let delivery = Delivery::from_request(request);
    let parsed: Result<serde_json::Value, Outcome> = delivery.json();
    assert!(matches!(parsed, Err(Outcome::Drop(_))));
}

fn invoke(method: &str, body: &[u8]) -> Request<InvokeRequest> {
    Request::new(InvokeRequest {
        method: method.into(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: body.to_vec(),
        }),
        ..InvokeRequest::default()
    })
}

#[tokio::test]
async fn methods_answer_json_and_clear_errors() {
    let router = Router::new().method("echo/it", Arc::new(Echo));
    let reply = router
        .on_invoke(invoke("echo/it", br#"{"user_id":"alice"}"#))
        .await
        .unwrap()
        .into_inner();
    let body: serde_json::Value = serde_json::from_slice(&reply.data.unwrap().value).unwrap();
    assert_eq!(body["user_id"], "alice");
    assert_eq!(reply.content_type, "application/json");

    let unknown = router.on_invoke(invoke("nope", b"{}")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
    assert!(
        unknown.message().contains("echo/it"),
        "{}",
        unknown.message()
    );
    let bad_json = router.on_invoke(invoke("echo/it", b"{")).await.unwrap_err();
    assert_eq!(bad_json.code(), tonic::Code::InvalidArgument);
    let missing = router.on_invoke(invoke("echo/it", b"")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    assert_eq!(missing.message(), "user_id is required");
}

#[tokio::test]
async fn app_api_token_is_enforced_when_set() {
    let router = Router::new()
        .method("echo/it", Arc::new(Echo))
        .app_api_token(Some("s3cret".to_owned().into()));
    let denied = router
        .on_invoke(invoke("echo/it", br#"{"user_id":"a"}"#))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let mut wrong = invoke("echo/it", br#"{"user_id":"a"}"#);
    wrong
        .metadata_mut()
        .insert("dapr-api-token", "s3cres".parse().unwrap());
    assert!(router.on_invoke(wrong).await.is_err());
    let mut right = invoke("echo/it", br#"{"user_id":"a"}"#);
    right
        .metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    assert!(router.on_invoke(right).await.is_ok());
    // Deliveries need the token too; the subscription list does not (daprd 1.18.1 asks
    // for it without one).
    assert!(
        router
            .on_topic_event(Request::new(event("a.v1", "")))
            .await
            .is_err()
    );
    assert!(
        router
            .list_topic_subscriptions(Request::new(()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn only_trusted_callers_may_invoke() {
    let callers = crate::auth::callers::TrustedCallers::parse("task-service;ops=echo/it").unwrap();
    let router = Router::new()
        .method("echo/it", Arc::new(Echo))
        .method("echo/other", Arc::new(Echo))
        .trusted_callers(Some(callers));
    let from = |callers: &[&str], method: &str| {
        let mut request = invoke(method, br#"{"user_id":"a"}"#);
        for caller in callers {
            request
                .metadata_mut()
                .append("dapr-caller-app-id", caller.parse().unwrap());
        }
        request
    };
    for (callers, method, allowed) in [
        (&["task-service"][..], "echo/it", true),
        (&["ops"], "echo/it", true),
        (&["ops"], "echo/other", false),
        (&["analytics-service"], "echo/it", false),
        // Made on the app's own sidecar API, not by another app.
        (&[], "echo/other", true),
        // A caller that adds the header itself does not get read first.
        (&["task-service", "analytics-service"], "echo/it", false),
    ] {
        let result = router.on_invoke(from(callers, method)).await;
        match result {
            Ok(_) => assert!(allowed, "{callers:?} {method}"),
            Err(status) => {
                assert!(!allowed, "{callers:?} {method}: {status:?}");
                assert_eq!(status.code(), tonic::Code::PermissionDenied);
            }
        }
    }
}

#[tokio::test]
async fn bulk_deliveries_are_declared_and_answered_entry_by_entry() {
    use dapr::dapr::proto::runtime::v1::{TopicEventBulkRequestEntry, TopicEventCeRequest};

    let ok = recorder(Outcome::Success);
    let busy = recorder(Outcome::Retry("store down".into()));
    let router = Router::new().subscribe(
        Subscription::new("ps", "task-events")
            .on_type("a.v1", ok.clone())
            .on_type("b.v1", busy.clone())
            .bulk(100, 20),
    );
    let declared = router
        .list_topic_subscriptions(Request::new(()))
        .await
        .unwrap()
        .into_inner();
    let bulk = declared.subscriptions[0].bulk_subscribe.unwrap();
    assert!(bulk.enabled);
    assert_eq!(
        (bulk.max_messages_count, bulk.max_await_duration_ms),
        (100, 20)
    );

    let entry = |id: &str, event_type: &str| TopicEventBulkRequestEntry {
        entry_id: format!("entry-{id}"),
        event: Some(BulkEvent::CloudEvent(TopicEventCeRequest {
            id: id.into(),
            r#type: event_type.into(),
            data: b"{}".to_vec(),
            ..TopicEventCeRequest::default()
        })),
        ..TopicEventBulkRequestEntry::default()
    };
    let answer = router
        .on_bulk_topic_event(Request::new(TopicEventBulkRequest {
            entries: vec![
                entry("1", "a.v1"),
                entry("2", "b.v1"),
                entry("3", "nope.v9"),
                TopicEventBulkRequestEntry {
                    entry_id: "entry-raw".into(),
                    ..TopicEventBulkRequestEntry::default()
                },
            ],
            topic: "task-events".into(),
            pubsub_name: "ps".into(),
            ..TopicEventBulkRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<(String, i32)> = answer
        .statuses
        .into_iter()
        .map(|s| (s.entry_id, s.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("entry-1".to_owned(), 0),
            ("entry-2".to_owned(), 1),
            ("entry-3".to_owned(), 2),
            ("entry-raw".to_owned(), 2),
        ]
    );
    assert_eq!(ok.seen.lock().unwrap().as_slice(), ["1"]);
}

/// A handler that fails until it is fixed, counting what it applied.
struct Fixable {
    fixed: std::sync::atomic::AtomicBool,
    applied: Mutex<Vec<String>>,
}

#[async_trait]
impl TopicHandler for Fixable {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        if !self.fixed.load(std::sync::atomic::Ordering::SeqCst) {
            return Outcome::Retry("PERMISSION_DENIED from task-service".into());
        }
        // Deduplicates by event id, as every consumer does.
        let mut applied = self.applied.lock().unwrap();
        if !applied.contains(&delivery.id) {
            applied.push(delivery.id);
        }
        Outcome::Success
    }
}

fn dead_letter_of(request: &TopicEventRequest) -> TopicEventRequest {
    let field = |s: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    };
    TopicEventRequest {
        topic: "task-events-deadletter.app".into(),
        path: "/task-events-deadletter.app/keep".into(),
        extensions: Some(prost_types::Struct {
            fields: [
                ("topic".to_owned(), field(&request.topic)),
                ("time".to_owned(), field("2026-12-03T09:00:00Z")),
            ]
            .into(),
        }),
        ..request.clone()
    }
}

async fn call(router: &Router, method: &str, body: serde_json::Value) -> serde_json::Value {
    let response = router
        .on_invoke(invoke(method, body.to_string().as_bytes()))
        .await
        .unwrap()
        .into_inner();
    serde_json::from_slice(&response.data.unwrap().value).unwrap()
}

#[tokio::test]
async fn dead_letters_are_kept_once_listed_and_replayed_into_the_same_handler() {
    let handler = Arc::new(Fixable {
        fixed: false.into(),
        applied: Mutex::new(Vec::new()),
    });
    let memory = Arc::new(crate::state::MemoryStateStore::new());
    let topics = Topics::from_env(
        &std::collections::HashMap::from([(
            "TASKMESH_TOPIC_DEAD_LETTER",
            "task-events-deadletter",
        )]),
        "app",
    )
    .unwrap();
    let router = Router::new()
        .subscribe(Subscription::new("ps", "task-events").on_type("a.v1", handler.clone()))
        .keep_dead_letters(topics.dead_letters("ps", memory.clone()));

    // Declared: the topic names the app's own dead-letter topic, which the app reads.
    let declared = router
        .list_topic_subscriptions(Request::new(()))
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(declared.len(), 2);
    assert_eq!(declared[0].dead_letter_topic, "task-events-deadletter.app");
    assert_eq!(declared[1].topic, "task-events-deadletter.app");
    assert_eq!(declared[1].dead_letter_topic, "");

    // Fails; the sidecar dead-letters it (twice: a redelivery): kept once, with the reason.
    let request = event("a.v1", "/task-events/a.v1");
    assert_eq!(
        status(&router, request.clone()).await,
        TopicEventResponseStatus::Retry as i32
    );
    for _ in 0..2 {
        assert_eq!(
            status(&router, dead_letter_of(&request)).await,
            TopicEventResponseStatus::Success as i32
        );
    }
    let listed = call(&router, "deadletters/list", serde_json::json!({})).await;
    assert_eq!(listed["kept"], 1, "{listed}");
    let letter = &listed["dead_letters"][0];
    assert_eq!(letter["id"], "id-a.v1");
    assert_eq!(letter["topic"], "task-events");
    assert_eq!(letter["time"], "2026-12-03T09:00:00Z");
    assert_eq!(letter["reason"], "PERMISSION_DENIED from task-service");
    assert!(handler.applied.lock().unwrap().is_empty());

    // Replayed before the fix: still kept, with one more replay.
    let replayed = call(
        &router,
        "deadletters/replay",
        serde_json::json!({"all": true}),
    )
    .await;
    assert_eq!(replayed["failed"], 1, "{replayed}");
    let listed = call(&router, "deadletters/list", serde_json::json!({})).await;
    assert_eq!(listed["dead_letters"][0]["replays"], 1, "{listed}");

    // After the fix: applied once, and gone; a second replay finds nothing.
    handler
        .fixed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let replayed = call(
        &router,
        "deadletters/replay",
        serde_json::json!({"id": "id-a.v1"}),
    )
    .await;
    assert_eq!(replayed["applied"], 1, "{replayed}");
    assert_eq!(*handler.applied.lock().unwrap(), ["id-a.v1"]);
    assert_eq!(
        call(&router, "deadletters/list", serde_json::json!({})).await["kept"],
        0
    );
    let again = router
        .on_invoke(invoke("deadletters/replay", br#"{"id": "id-a.v1"}"#))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);
    let bad = router
        .on_invoke(invoke("deadletters/replay", b"{}"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // A poison event (DROP) is kept too, and an operator may discard it.
    let poison = TopicEventRequest {
        id: "poison".into(),
        ..event("z.v1", "/task-events/default")
    };
    assert_eq!(
        status(&router, poison.clone()).await,
        TopicEventResponseStatus::Drop as i32
    );
    status(&router, dead_letter_of(&poison)).await;
    let listed = call(
        &router,
        "deadletters/list",
        serde_json::json!({"id": "poison"}),
    )
    .await;
    assert!(
        listed["dead_letters"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no handler"),
        "{listed}"
    );
    let discarded = call(
        &router,
        "deadletters/discard",
        serde_json::json!({"all": true}),
    )
    .await;
    assert_eq!(discarded["discarded"], 1);

    // The store down: the dead letter waits on its topic (RETRY), nothing is lost.
    memory.set_down(true);
    assert_eq!(
        status(&router, dead_letter_of(&request)).await,
        TopicEventResponseStatus::Retry as i32
    );
}

#[tokio::test]
async fn dead_letters_are_listed_a_page_at_a_time() {
    let memory = Arc::new(crate::state::MemoryStateStore::new());
    let topics = Topics::from_env(&std::collections::HashMap::<&str, &str>::new(), "app").unwrap();
    let router = Router::new()
        .subscribe(Subscription::new("ps", "task-events"))
        .keep_dead_letters(topics.dead_letters("ps", memory));
    for n in 0..5 {
        let request = TopicEventRequest {
            id: format!("e{n}"),
            topic: "task-events-deadletter.app".into(),
            ..event("a.v1", "/task-events-deadletter.app/keep")
        };
        assert_eq!(
            status(&router, request).await,
            TopicEventResponseStatus::Success as i32
        );
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = call(&router, "deadletters/list", serde_json::json!({"limit": 2})).await;
    assert_eq!(first["kept"], 5);
    assert_eq!(ids(&first), ["e0", "e1"]);
    assert_eq!(first["next"], "e1");
    let rest = call(
        &router,
        "deadletters/list",
        serde_json::json!({"after": "e1", "limit": 10}),
    )
    .await;
    assert_eq!(ids(&rest), ["e2", "e3", "e4"]);
    assert!(rest["next"].is_null(), "{rest}");
    let missing = call(
        &router,
        "deadletters/list",
        serde_json::json!({"id": "nope"}),
    )
    .await;
    assert_eq!(missing["kept"], 0);
    // Without a handler for type a.v1 (this router has none), a replay fails and keeps all.
    let replayed = call(
        &router,
        "deadletters/replay",
        serde_json::json!({"all": true}),
    )
    .await;
    assert_eq!(replayed["failed"], 5, "{replayed}");
    let discarded = call(
        &router,
        "deadletters/discard",
        serde_json::json!({"all": true}),
    )
    .await;
    assert_eq!(discarded["discarded"], 5);
}

/// Through reflection version `$version` (a module of `tonic_reflection::pb`, whose types
/// are alike but distinct) on `$channel`: the services listed, and each file a client
/// fetches to describe AppCallback (the file declaring it, then its imports by name).
macro_rules! reflect {
    ($version:ident, $channel:expr) => {{
        use prost::Message as _;
        use tokio_stream::StreamExt as _;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new($channel);
        let mut ask = async |request: MessageRequest| {
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            };
            let mut answers = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            answers.next().await.unwrap().unwrap().message_response
        };
        let listed = match ask(MessageRequest::ListServices(String::new())).await {
            Some(MessageResponse::ListServicesResponse(list)) => {
                let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
                names.sort();
                names
            }
            other => panic!("{}: not a service list: {other:?}", stringify!($version)),
        };
        let mut files = Vec::new();
        let mut wanted = vec![MessageRequest::FileContainingSymbol(
            "dapr.proto.runtime.v1.AppCallback".into(),
        )];
        while let Some(request) = wanted.pop() {
            let described = match ask(request).await {
                Some(MessageResponse::FileDescriptorResponse(described)) => described,
                other => panic!("{}: no file descriptor: {other:?}", stringify!($version)),
            };
            for raw in described.file_descriptor_proto {
                let file = prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap();
                for import in &file.dependency {
                    let known = files
                        .iter()
                        .any(|f: &prost_types::FileDescriptorProto| f.name() == import);
                    if !known {
                        wanted.push(MessageRequest::FileByFilename(import.clone()));
                    }
                }
                files.push(file);
            }
        }
        (listed, files)
    }};
}

#[tokio::test]
async fn the_server_answers_reflection_in_both_versions_with_what_it_serves() {
    let env: HashMap<&str, &str> = HashMap::from([("APP_PORT", "0"), ("METRICS_PORT", "0")]);
    let config = ServiceConfig::from_env(&env, 0, 0).unwrap();
    let server = CallbackServer::bind("reflected", &config, Router::new(), Default::default())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();

    let served = [
        "dapr.proto.runtime.v1.AppCallback",
        "dapr.proto.runtime.v1.AppCallbackHealthCheck",
        "grpc.health.v1.Health",
    ];
    let (listed, files) = reflect!(v1, channel.clone());
    let (listed_alpha, files_alpha) = reflect!(v1alpha, channel);
    // Exactly what is served: AppCallbackAlpha, declared in the same file, is not.
    assert_eq!(
        listed,
        [&served[..], &["grpc.reflection.v1.ServerReflection"]].concat()
    );
    assert_eq!(
        listed_alpha,
        [&served[..], &["grpc.reflection.v1alpha.ServerReflection"]].concat()
    );
    assert_eq!(files, files_alpha, "both versions describe the same files");
    let names: Vec<_> = files.iter().map(|f| f.name()).collect();
    assert_eq!(names[0], "dapr/proto/runtime/v1/appcallback.proto");
    for import in [
        "dapr/proto/common/v1/common.proto",
        "google/protobuf/any.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/empty.proto",
        "google/protobuf/struct.proto",
    ] {
        assert!(names.contains(&import), "{import} not described: {names:?}");
    }
    // The methods the router implements, as the vendored file declares them.
    let app_callback = files[0]
        .service
        .iter()
        .find(|s| s.name() == "AppCallback")
        .unwrap();
    let methods: Vec<_> = app_callback.method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "OnInvoke",
            "ListTopicSubscriptions",
            "OnTopicEvent",
            "ListInputBindings",
            "OnBindingEvent",
            "OnBulkTopicEvent",
            "OnJobEvent",
        ]
    );

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}
