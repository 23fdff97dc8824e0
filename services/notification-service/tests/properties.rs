//! Property tests for what notification-service parses from outside, through the router
//! the service registers: `dapr invoke` bodies, task events and job triggers, in random
//! sequences over one in-memory state store. Every invocation is answered or refused with
//! INVALID_ARGUMENT, every delivery is a SUCCESS or a DROP, every job trigger succeeds,
//! and what was stored stays readable. The case count is bounded so that `just test`
//! stays quick (`PROPTEST_CASES=100000` for a deep run); no regression files are written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::TZ_VARIANTS;
use dapr::dapr::proto::common::v1::InvokeRequest;
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallback;
use dapr::dapr::proto::runtime::v1::{JobEventRequest, TopicEventRequest};
use notification_service::consumer::TaskEventConsumer;
use notification_service::methods;
use notification_service::metrics::Metrics;
use notification_service::ports::{JobScheduler, Outbound, PortError};
use notification_service::reminders::{ReminderJobs, Reminders, Settings};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use taskmesh_shared::callback::{Router, Subscription};
use taskmesh_shared::events::{ReminderEvent, TaskEventData, TaskEventKind, TaskSnapshot};
use taskmesh_shared::state::MemoryStateStore;
use tonic::{Code, Request};
use uuid::Uuid;

/// The largest input generated: what a sidecar could plausibly pass on.
const MAX_INPUT: usize = 64 * 1024;

const PUBSUB: &str = "taskmesh-pubsub";
const TOPIC: &str = "task-events";
const SUCCESS: i32 = 0;
const DROP: i32 = 2;

const METHODS: &[&str] = &[
    "notifications/list",
    "notifications/ack",
    "preferences/get",
    "preferences/set",
    "preferences/delete",
];
const USERS: &[&str] = &["alice", "bob"];
const TASKS: &[u128] = &[1, 2, 3];

/// `cases` per property, unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

// ---------------------------------------------------------------------------------------
// The service, over fakes
// ---------------------------------------------------------------------------------------

struct Jobs;

#[async_trait]
impl JobScheduler for Jobs {
    async fn schedule(&self, _name: &str, _at: DateTime<Utc>) -> Result<(), PortError> {
        Ok(())
    }
    async fn cancel(&self, _name: &str) -> Result<(), PortError> {
        Ok(())
    }
}

struct Out;

#[async_trait]
impl Outbound for Out {
    async fn publish(&self, _event: &ReminderEvent) -> Result<(), PortError> {
        Ok(())
    }
    async fn email(&self, _to: &str, _subject: &str, _body: &str) -> Result<(), PortError> {
        Ok(())
    }
    async fn webhook(&self, _path: &str, _body: &[u8]) -> Result<(), PortError> {
        Ok(())
    }
}

/// The router as `app::router` wires it, over an in-memory store and no-op ports.
fn service() -> Router {
    let reminders = Arc::new(Reminders::new(
        Arc::new(MemoryStateStore::new()),
        Arc::new(Jobs),
        Arc::new(Out),
        Settings {
            default_lead: Duration::minutes(15),
            webhook_base: Some("http://hooks.test/taskmesh".into()),
            email_enabled: true,
        },
        Metrics::default(),
    ));
    let mut subscription = Subscription::new(PUBSUB, TOPIC).dead_letter("task-events-deadletter");
    for kind in TaskEventKind::ALL {
        subscription = subscription.on_type(
            kind.event_type(),
            Arc::new(TaskEventConsumer::new(kind, reminders.clone())),
        );
    }
    let mut router = Router::new()
        .subscribe(subscription)
        .jobs(Arc::new(ReminderJobs::new(reminders.clone())));
    for (name, method) in methods::all(&reminders) {
        router = router.method(name, method);
    }
    router
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ".{0,24}",
        1 => any::<String>(),
        1 => (".{1,4}", 0..MAX_INPUT).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
    ]
}

fn arb_user() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(USERS).prop_map(str::to_owned),
        1 => Just(" alice ".to_owned()),
        1 => Just("a".repeat(129)),
        1 => Just("al\nice".to_owned()),
        1 => arb_text(),
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..256),
        1 => vec(any::<u8>(), 0..=MAX_INPUT),
    ]
}

/// Around now (so that reminders come due), anywhere, or at chrono's ends.
fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    let now = Utc::now().timestamp();
    prop_oneof![
        4 => (now - 3 * 86_400..now + 3 * 86_400)
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        2 => (-62_135_596_800i64..=253_402_300_799)
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        1 => (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

fn arb_zone() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(TZ_VARIANTS.to_vec()).prop_map(|tz| tz.name().to_owned()),
        1 => arb_text(),
    ]
}

fn arb_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![
            json!(0),
            json!(-1),
            json!(100),
            json!(101),
            json!(u64::MAX),
            json!(1e18),
            json!(0.5),
        ]),
        arb_text().prop_map(Value::String),
        arb_user().prop_map(Value::String),
    ]
}

/// JSON of any shape; object keys are often ones the methods and events know.
fn arb_json() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "user_id",
        "page_size",
        "page_token",
        "unread_only",
        "ids",
        "all",
        "preferences",
        "lead_time_secs",
        "email",
        "webhook_url",
        "quiet_hours",
        "start",
        "end",
        "time_zone",
        "muted",
        "task",
        "owner_id",
        "assignee_id",
        "due_time",
        "version",
    ];
    let key = prop_oneof![3 => select(KEYS).prop_map(str::to_owned), 1 => ".{0,12}"];
    arb_json_leaf().prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON field that is usually of the right kind, sometimes anything.
fn or_any(right: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    // Boxed: nested unions of unboxed strategies need more than a test thread's stack to
    // generate a value in a debug build.
    prop_oneof![9 => right, 1 => arb_json_leaf()].boxed()
}

fn arb_clock() -> impl Strategy<Value = Value> {
    or_any(prop_oneof![
        (0u32..24, 0u32..60).prop_map(|(h, m)| json!(format!("{h:02}:{m:02}"))),
        select(vec!["24:00", "9:00", "09:60", "", "09:00:00"]).prop_map(|s| json!(s)),
    ])
}

fn arb_preferences() -> BoxedStrategy<Value> {
    let quiet = (
        arb_clock(),
        arb_clock(),
        or_any(arb_zone().prop_map(Value::String)),
    )
        .prop_map(
            |(start, end, time_zone)| json!({"start": start, "end": end, "time_zone": time_zone}),
        );
    (
        option::of(or_any(
            prop_oneof![0u64..=604_800, any::<u64>()].prop_map(Value::from),
        )),
        option::of(or_any(
            prop_oneof![
                "[a-z]{1,8}@[a-z]{1,8}\\.test",
                arb_text(),
                Just("a@b\r\nBcc: x@y".to_owned()),
            ]
            .prop_map(Value::String),
        )),
        option::of(or_any(
            prop_oneof![
                "http://hooks\\.test/taskmesh(/[a-z.]{0,8}){0,3}",
                Just("http://hooks.test/taskmesh/../admin".to_owned()),
                Just("http://evil.test/".to_owned()),
                arb_text(),
            ]
            .prop_map(Value::String),
        )),
        option::of(or_any(quiet)),
        option::of(or_any(any::<bool>().prop_map(Value::Bool))),
    )
        .prop_map(|(lead, email, webhook, quiet, muted)| {
            let mut prefs = serde_json::Map::new();
            for (key, value) in [
                ("lead_time_secs", lead),
                ("email", email),
                ("webhook_url", webhook),
                ("quiet_hours", quiet),
                ("muted", muted),
            ] {
                if let Some(value) = value {
                    prefs.insert(key.to_owned(), value);
                }
            }
            Value::Object(prefs)
        })
        .boxed()
}

/// A request body for `method`: near what it expects, or anything.
fn arb_body(method: &'static str) -> BoxedStrategy<Option<Vec<u8>>> {
    let user = || or_any(arb_user().prop_map(Value::String));
    let structured: BoxedStrategy<Value> = match method {
        "notifications/list" => (
            user(),
            option::of(or_any(
                prop_oneof![0u64..=101, any::<u64>()].prop_map(Value::from),
            )),
            option::of(or_any(arb_text().prop_map(Value::String))),
            option::of(or_any(any::<bool>().prop_map(Value::Bool))),
        )
            .prop_map(|(user, size, token, unread)| {
                let mut body = json!({"user_id": user});
                if let Some(size) = size {
                    body["page_size"] = size;
                }
                if let Some(token) = token {
                    body["page_token"] = token;
                }
                if let Some(unread) = unread {
                    body["unread_only"] = unread;
                }
                body
            })
            .boxed(),
        "notifications/ack" => (
            user(),
            option::of(or_any(
                vec(arb_text().prop_map(Value::String), 0..4).prop_map(Value::Array),
            )),
            option::of(or_any(any::<bool>().prop_map(Value::Bool))),
        )
            .prop_map(|(user, ids, all)| {
                let mut body = json!({"user_id": user});
                if let Some(ids) = ids {
                    body["ids"] = ids;
                }
                if let Some(all) = all {
                    body["all"] = all;
                }
                body
            })
            .boxed(),
        "preferences/set" => (user(), or_any(arb_preferences()))
            .prop_map(|(user, prefs)| json!({"user_id": user, "preferences": prefs}))
            .boxed(),
        _ => user().prop_map(|user| json!({"user_id": user})).boxed(),
    };
    prop_oneof![
        6 => structured.prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        1 => arb_json().prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        1 => arb_bytes().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

fn arb_rule() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "FREQ=DAILY",
            "FREQ=WEEKLY;BYDAY=MO,FR",
            "FREQ=MONTHLY;BYDAY=-1FR",
            "FREQ=MONTHLY;BYMONTHDAY=31",
            "FREQ=YEARLY;INTERVAL=1000;BYMONTHDAY=30",
            "FREQ=DAILY;COUNT=1",
            "FREQ=DAILY;UNTIL=20000101",
        ])
        .prop_map(str::to_owned),
        1 => arb_text(),
    ]
}

fn arb_task_data() -> impl Strategy<Value = TaskEventData> {
    (
        (
            select(TASKS),
            select(USERS),
            arb_text(),
            option::of(arb_time()),
        ),
        (
            option::of(arb_zone()),
            option::of(arb_rule()),
            any::<bool>(),
            (option::of(select(USERS)), option::of(select(USERS))),
        ),
        (option::of(arb_time()), arb_time(), 0i64..6, arb_time()),
        vec(
            select(vec![
                "title",
                "due_time",
                "completed",
                "tags",
                "assignee_id",
            ])
            .prop_map(str::to_owned),
            0..3,
        ),
    )
        .prop_map(
            |(
                (task, owner, title, due_time),
                (time_zone, recurrence, completed, (assignee, previous_assignee)),
                (completed_time, create_time, version, occurred_at),
                changed_fields,
            )| TaskEventData {
                task: TaskSnapshot {
                    id: Uuid::from_u128(task),
                    owner_id: owner.to_owned(),
                    title,
                    description: String::new(),
                    priority: "high".into(),
                    tags: Vec::new(),
                    due_time,
                    time_zone,
                    recurrence,
                    completed,
                    completed_time,
                    create_time,
                    update_time: create_time,
                    version,
                    list_id: None,
                    assignee_id: assignee.map(str::to_owned),
                },
                changed_fields,
                version,
                owner_id: owner.to_owned(),
                occurred_at,
                actor_id: assignee.or(Some(owner)).map(str::to_owned),
                previous_list_id: None,
                previous_assignee_id: previous_assignee.map(str::to_owned),
            },
        )
}

fn mutate(mut value: Value, field: &str, new: Option<Value>) -> Value {
    let (parent, key) = field.rsplit_once('/').unwrap();
    if let Some(Value::Object(object)) = value.pointer_mut(parent) {
        match new {
            Some(new) => object.insert(key.to_owned(), new),
            None => object.remove(key),
        };
    }
    value
}

/// The data of a delivery: valid, with a field changed or removed, or anything.
fn arb_event_data() -> impl Strategy<Value = Vec<u8>> {
    const FIELDS: &[&str] = &[
        "/task",
        "/task/id",
        "/task/owner_id",
        "/task/due_time",
        "/task/time_zone",
        "/task/recurrence",
        "/task/completed",
        "/task/assignee_id",
        "/changed_fields",
        "/version",
        "/owner_id",
        "/occurred_at",
    ];
    prop_oneof![
        6 => arb_task_data().prop_map(|data| serde_json::to_vec(&data).unwrap()),
        2 => (arb_task_data(), select(FIELDS), option::of(arb_json())).prop_map(
            |(data, field, new)| {
                let value = mutate(serde_json::to_value(data).unwrap(), field, new);
                serde_json::to_vec(&value).unwrap()
            }
        ),
        1 => arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => arb_bytes(),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Deliver {
        event_type: String,
        id: String,
        data: Vec<u8>,
    },
    Invoke {
        method: String,
        body: Option<Vec<u8>>,
    },
    Job {
        name: String,
    },
}

fn arb_step() -> impl Strategy<Value = Step> {
    let event_type = prop_oneof![
        6 => select(TaskEventKind::ALL.to_vec()).prop_map(|k| k.event_type().to_owned()),
        1 => arb_text(),
    ];
    let invoke = prop_oneof![
        8 => select(METHODS).prop_flat_map(|method| {
            arb_body(method).prop_map(move |body| Step::Invoke {
                method: method.to_owned(),
                body,
            })
        }),
        1 => (arb_text(), arb_bytes()).prop_map(|(method, body)| Step::Invoke {
            method,
            body: Some(body),
        }),
    ];
    let job = prop_oneof![
        4 => select(TASKS).prop_map(|t| format!("reminder-{}", Uuid::from_u128(t))),
        1 => arb_text(),
    ]
    .prop_map(|name| Step::Job { name });
    prop_oneof![
        4 => (event_type, "[a-z0-9-]{1,12}", arb_event_data())
            .prop_map(|(event_type, id, data)| Step::Deliver { event_type, id, data }),
        4 => invoke,
        2 => job,
    ]
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn invoke(method: &str, body: Option<Vec<u8>>) -> Request<InvokeRequest> {
    Request::new(InvokeRequest {
        method: method.into(),
        data: body.map(|value| prost_types::Any {
            type_url: String::new(),
            value,
        }),
        ..InvokeRequest::default()
    })
}

/// Runs `step`; fails the case on an answer the service should never give.
async fn run(router: &Router, step: Step) -> Result<(), TestCaseError> {
    match step {
        Step::Deliver {
            event_type,
            id,
            data,
        } => {
            let status = router
                .on_topic_event(Request::new(TopicEventRequest {
                    id,
                    r#type: event_type,
                    data,
                    topic: TOPIC.into(),
                    pubsub_name: PUBSUB.into(),
                    data_content_type: "application/json".into(),
                    ..TopicEventRequest::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .status;
            prop_assert!(status == SUCCESS || status == DROP, "status {status}");
        }
        Step::Invoke { method, body } => match router.on_invoke(invoke(&method, body)).await {
            Ok(reply) => {
                prop_assert!(METHODS.contains(&method.as_str()));
                let body = reply.into_inner().data.unwrap().value;
                prop_assert!(serde_json::from_slice::<Value>(&body).is_ok());
            }
            // Acking ids the user does not have answers NOT_FOUND, as for tasks.
            Err(status) if method == "notifications/ack" && status.code() == Code::NotFound => {}
            Err(status) if METHODS.contains(&method.as_str()) => {
                prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
            }
            Err(status) => prop_assert_eq!(status.code(), Code::Unimplemented),
        },
        Step::Job { name } => {
            let answer = router
                .on_job_event(Request::new(JobEventRequest {
                    method: format!("job/{name}"),
                    name,
                    ..JobEventRequest::default()
                }))
                .await;
            prop_assert!(answer.is_ok(), "{answer:?}");
        }
    }
    Ok(())
}

/// What was stored stays readable: every user's inbox and preferences.
async fn readable(router: &Router) -> Result<(), TestCaseError> {
    for user in USERS {
        for (method, body) in [
            (
                "notifications/list",
                json!({"user_id": user, "page_size": 100}),
            ),
            ("preferences/get", json!({"user_id": user})),
        ] {
            let answer = router
                .on_invoke(invoke(method, Some(serde_json::to_vec(&body).unwrap())))
                .await;
            prop_assert!(answer.is_ok(), "{method} for {user}: {answer:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_sequence_of_calls_is_answered(steps in vec(arb_step(), 1..12)) {
        block_on(async {
            let router = service();
            for step in steps {
                run(&router, step).await?;
            }
            readable(&router).await
        })?;
    }
}

/// A size a request claims is checked before anything is sized by it: were the service to
/// reserve room for 2^60 notifications, the allocation would abort this test binary.
#[test]
fn claimed_sizes_are_refused_before_anything_is_sized_by_them() {
    block_on(async {
        let router = service();
        for size in [json!(u64::MAX), json!(1u64 << 60), json!(1e18), json!(-1)] {
            let body = json!({"user_id": "alice", "page_size": size});
            let refused = router
                .on_invoke(invoke(
                    "notifications/list",
                    Some(serde_json::to_vec(&body).unwrap()),
                ))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{size}");
        }
        let body = json!({"user_id": "alice", "preferences": {"lead_time_secs": u64::MAX}});
        let refused = router
            .on_invoke(invoke(
                "preferences/set",
                Some(serde_json::to_vec(&body).unwrap()),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        // Many ids, actually sent: answered (none is alice's: NOT_FOUND).
        let ids: Vec<String> = (0..10_000).map(|i| format!("n{i}")).collect();
        let body = json!({"user_id": "alice", "ids": ids});
        let refused = router
            .on_invoke(invoke(
                "notifications/ack",
                Some(serde_json::to_vec(&body).unwrap()),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound);
    });
}
