//! Property tests for what taskmesh-shared parses from outside: CloudEvents and their data,
//! the AppCallback router's deliveries and invocations, recurrence rules and their next
//! occurrence, and bearer tokens. Every input is at most 64 KiB; the case count is
//! bounded so that `just test` stays quick (`PROPTEST_CASES=100000` for a deep run), and
//! no regression files are written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use chrono_tz::{TZ_VARIANTS, Tz};
use dapr::dapr::proto::common::v1::InvokeRequest;
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallback;
use dapr::dapr::proto::runtime::v1::topic_event_bulk_request_entry::Event as BulkEvent;
use dapr::dapr::proto::runtime::v1::{
    TopicEventBulkRequest, TopicEventBulkRequestEntry, TopicEventCeRequest, TopicEventRequest,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use taskmesh_shared::auth::TokenVerifier;
use taskmesh_shared::callback::{
    Delivery, InvokeError, Method, Outcome, Router, Subscription, TopicHandler,
};
use taskmesh_shared::events::{
    CloudEvent, ReminderData, ReminderEvent, ReminderKind, TaskEvent, TaskEventData, TaskEventKind,
    TaskSnapshot,
};
use taskmesh_shared::occurrence::next_occurrence;
use taskmesh_shared::recurrence::{End, RecurrenceRule};
use tonic::{Code, Request};
use uuid::Uuid;

/// The largest input generated: what a sidecar or a client could plausibly send.
const MAX_INPUT: usize = 64 * 1024;

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

/// Runs `f` on its own thread and fails if it has not returned within `limit`: a loop
/// that does not end fails the property instead of hanging the test run.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("did not return within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Text of any Unicode, short or (rarely) up to 64 KiB.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ".{0,24}",
        1 => any::<String>(),
        1 => (".{1,4}", 0..MAX_INPUT).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..256),
        1 => vec(any::<u8>(), 0..=MAX_INPUT),
    ]
}

/// Times that serialise as RFC 3339 with a four-digit year.
fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

/// Any time chrono can hold, the extremes included.
fn arb_any_time() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        4 => arb_time(),
        2 => (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

fn arb_tz() -> impl Strategy<Value = Tz> {
    select(TZ_VARIANTS.to_vec())
}

/// Leaves that exercise number and string edge cases.
fn arb_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1e308),
            json!(-0.0),
            json!(0.5),
        ]),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        arb_text().prop_map(Value::String),
        select(vec![
            "",
            " ",
            "\u{0}",
            "2026-11-24T08:00:00Z",
            "+262143-12-31T23:59:59Z",
            "-262143-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "00000000-0000-0000-0000-000000000000",
            "FREQ=DAILY",
            "Europe/Paris",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

/// JSON of any shape; object keys are often ones our types know, so that the decoders
/// get past the first field.
fn arb_json_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![3 => select(keys).prop_map(str::to_owned), 1 => ".{0,12}"];
    arb_json_leaf().prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const EVENT_KEYS: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "data",
    "traceparent",
    "traceid",
    "task",
    "owner_id",
    "title",
    "description",
    "priority",
    "tags",
    "due_time",
    "time_zone",
    "recurrence",
    "completed",
    "completed_time",
    "create_time",
    "update_time",
    "version",
    "changed_fields",
    "occurred_at",
    "task_id",
    "lead_time_secs",
    "fired_at",
];

fn arb_json() -> impl Strategy<Value = Value> {
    arb_json_with_keys(EVENT_KEYS)
}

fn arb_snapshot() -> impl Strategy<Value = TaskSnapshot> {
    (
        (any::<u128>(), arb_text(), arb_text(), arb_text()),
        (
            select(vec!["low", "medium", "high", "urgent"]),
            vec(arb_text(), 0..4),
            option::of(arb_time()),
            option::of(arb_tz().prop_map(|tz| tz.name().to_owned())),
            option::of(select(vec!["FREQ=DAILY", "FREQ=MONTHLY;BYDAY=-1FR"])),
        ),
        (
            any::<bool>(),
            option::of(arb_time()),
            arb_time(),
            arb_time(),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (id, owner_id, title, description),
                (priority, tags, due_time, time_zone, recurrence),
                (completed, completed_time, create_time, update_time, version),
            )| TaskSnapshot {
                id: Uuid::from_u128(id),
                owner_id,
                title,
                description,
                priority: priority.to_owned(),
                tags,
                due_time,
                time_zone,
                recurrence: recurrence.map(str::to_owned),
                completed,
                completed_time,
                create_time,
                update_time,
                version,
                list_id: None,
                assignee_id: None,
            },
        )
}

fn arb_task_data() -> impl Strategy<Value = TaskEventData> {
    (
        arb_snapshot(),
        vec(arb_text(), 0..4),
        any::<i64>(),
        arb_time(),
    )
        .prop_map(
            |(task, changed_fields, version, occurred_at)| TaskEventData {
                owner_id: task.owner_id.clone(),
                task,
                changed_fields,
                version,
                occurred_at,
                actor_id: None,
                previous_list_id: None,
                previous_assignee_id: None,
            },
        )
}

fn arb_traceparent() -> impl Strategy<Value = Option<String>> {
    option::of(prop_oneof![
        "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}",
        "[0-9a-fA-F-]{0,64}",
        arb_text(),
    ])
}

fn arb_task_event() -> impl Strategy<Value = TaskEvent> {
    (
        select(TaskEventKind::ALL.to_vec()),
        arb_task_data(),
        arb_traceparent(),
    )
        .prop_map(|(kind, data, traceparent)| {
            TaskEvent::task(kind, data).with_traceparent(traceparent)
        })
}

fn arb_reminder_event() -> impl Strategy<Value = ReminderEvent> {
    (
        select(vec![ReminderKind::DueSoon, ReminderKind::Overdue]),
        (any::<u128>(), arb_text(), arb_text()),
        (arb_time(), option::of(arb_text()), any::<u64>(), arb_time()),
    )
        .prop_map(
            |(
                kind,
                (task_id, owner_id, title),
                (due_time, time_zone, lead_time_secs, fired_at),
            )| {
                let data = ReminderData {
                    task_id: Uuid::from_u128(task_id),
                    owner_id,
                    title,
                    due_time,
                    time_zone,
                    lead_time_secs,
                    fired_at,
                };
                ReminderEvent::reminder(kind, Uuid::from_u128(task_id).to_string(), data)
            },
        )
}

/// Every field of a task event, by JSON pointer.
const TASK_EVENT_FIELDS: &[&str] = &[
    "/specversion",
    "/id",
    "/source",
    "/type",
    "/subject",
    "/time",
    "/datacontenttype",
    "/data",
    "/traceparent",
    "/traceid",
    "/data/task",
    "/data/task/id",
    "/data/task/owner_id",
    "/data/task/title",
    "/data/task/description",
    "/data/task/priority",
    "/data/task/tags",
    "/data/task/due_time",
    "/data/task/time_zone",
    "/data/task/recurrence",
    "/data/task/completed",
    "/data/task/completed_time",
    "/data/task/create_time",
    "/data/task/update_time",
    "/data/task/version",
    "/data/changed_fields",
    "/data/version",
    "/data/owner_id",
    "/data/occurred_at",
    "/data/unknown_field",
];

#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static str),
    Set(&'static str, Value),
}

fn arb_mutations(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        select(fields).prop_map(Mutation::Remove),
        (select(fields), arb_json()).prop_map(|(field, value)| Mutation::Set(field, value)),
    ];
    vec(one, 1..4)
}

fn mutate(mut value: Value, mutations: &[Mutation]) -> Value {
    for mutation in mutations {
        let (pointer, new) = match mutation {
            Mutation::Remove(pointer) => (*pointer, None),
            Mutation::Set(pointer, new) => (*pointer, Some(new.clone())),
        };
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        if let Some(Value::Object(object)) = value.pointer_mut(parent) {
            match new {
                Some(new) => {
                    object.insert(key.to_owned(), new);
                }
                None => {
                    object.remove(key);
                }
            }
        }
    }
    value
}

/// Bytes near valid JSON: a document with a few bytes changed, cut or repeated.
fn arb_byte_edits(doc: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = doc.len().max(1);
    vec((0..len, any::<u8>(), 0..4u8), 1..8).prop_map(move |edits| {
        let mut bytes = doc.clone();
        for (at, byte, how) in edits {
            let at = at.min(bytes.len());
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 => bytes.truncate(at),
                _ => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend_from_slice(&tail[..tail.len().min(MAX_INPUT)]);
                }
            }
        }
        bytes
    })
}

// ---------------------------------------------------------------------------------------
// CloudEvents and their data
// ---------------------------------------------------------------------------------------

/// Decodes `bytes` as each event type the services read; only a panic fails.
fn decode_all(bytes: &[u8]) -> Option<TaskEvent> {
    let _ = serde_json::from_slice::<ReminderEvent>(bytes);
    let _ = serde_json::from_slice::<TaskEventData>(bytes);
    let _ = serde_json::from_slice::<ReminderData>(bytes);
    let _ = serde_json::from_slice::<CloudEvent<Value>>(bytes);
    serde_json::from_slice::<TaskEvent>(bytes).ok()
}

/// What was decoded encodes to what decodes to the same: no lossy or one-way field.
fn assert_stable(event: &TaskEvent) -> Result<(), TestCaseError> {
    let encoded = serde_json::to_vec(event).unwrap();
    let again: TaskEvent = serde_json::from_slice(&encoded)
        .map_err(|err| TestCaseError::fail(format!("re-decoding failed: {err}")))?;
    prop_assert_eq!(&again, event);
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn events_round_trip(event in arb_task_event(), reminder in arb_reminder_event()) {
        let bytes = serde_json::to_vec(&event).unwrap();
        prop_assert_eq!(serde_json::from_slice::<TaskEvent>(&bytes).unwrap(), event);
        let bytes = serde_json::to_vec(&reminder).unwrap();
        prop_assert_eq!(serde_json::from_slice::<ReminderEvent>(&bytes).unwrap(), reminder);
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail(bytes in arb_bytes()) {
        if let Some(event) = decode_all(&bytes) {
            assert_stable(&event)?;
        }
    }

    #[test]
    fn arbitrary_json_decodes_or_fails(value in arb_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Some(event) = decode_all(&bytes) {
            assert_stable(&event)?;
        }
    }

    #[test]
    fn events_with_mutated_fields_decode_or_fail(
        event in arb_task_event(),
        mutations in arb_mutations(TASK_EVENT_FIELDS),
    ) {
        let value = mutate(serde_json::to_value(&event).unwrap(), &mutations);
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Some(event) = decode_all(&bytes) {
            assert_stable(&event)?;
        }
    }

    #[test]
    fn events_with_edited_bytes_decode_or_fail(
        bytes in arb_task_event()
            .prop_flat_map(|event| arb_byte_edits(serde_json::to_vec(&event).unwrap())),
    ) {
        if let Some(event) = decode_all(&bytes) {
            assert_stable(&event)?;
        }
    }

    /// A time chrono holds but RFC 3339 cannot write with four digits (before year 0 or
    /// after 9999): an event carrying one either round-trips or is refused, never
    /// decoded to another time.
    #[test]
    fn extreme_times_round_trip_or_are_refused(
        event in arb_task_event(),
        due in arb_any_time(),
    ) {
        let mut event = event;
        event.data.task.due_time = Some(due);
        let bytes = serde_json::to_vec(&event).unwrap();
        if let Ok(back) = serde_json::from_slice::<TaskEvent>(&bytes) {
            prop_assert_eq!(back, event);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The AppCallback router: topic events and invocations
// ---------------------------------------------------------------------------------------

/// A consumer as the services write them: decode the data, and DROP what does not.
#[derive(Default)]
struct Decoding {
    outcomes: Mutex<Vec<Outcome>>,
}

#[async_trait]
impl TopicHandler for Decoding {
    async fn handle(&self, delivery: Delivery) -> Outcome {
        let outcome = match delivery.json::<TaskEventData>() {
            Ok(_) => Outcome::Success,
            Err(drop) => drop,
        };
        self.outcomes.lock().unwrap().push(outcome.clone());
        outcome
    }
}

const PUBSUB: &str = "taskmesh-pubsub";
const TOPIC: &str = "task-events";
const SUCCESS: i32 = 0;
const DROP: i32 = 2;

fn subscribed(handler: &Arc<Decoding>) -> Router {
    let mut subscription = Subscription::new(PUBSUB, TOPIC).dead_letter("task-events-deadletter");
    for kind in TaskEventKind::ALL {
        subscription = subscription.on_type(kind.event_type(), handler.clone());
    }
    Router::new().subscribe(subscription)
}

fn arb_event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(TaskEventKind::ALL.to_vec()).prop_map(|k| k.event_type().to_owned()),
        1 => Just("taskmesh.task.created.v2".to_owned()),
        1 => arb_text(),
    ]
}

/// The data of a delivery: valid, mutated, byte-edited or arbitrary.
fn arb_event_data() -> impl Strategy<Value = Vec<u8>> {
    const DATA_FIELDS: &[&str] = &[
        "/task",
        "/task/id",
        "/task/owner_id",
        "/task/due_time",
        "/task/priority",
        "/task/tags",
        "/task/version",
        "/changed_fields",
        "/version",
        "/owner_id",
        "/occurred_at",
    ];
    prop_oneof![
        2 => arb_task_data().prop_map(|data| serde_json::to_vec(&data).unwrap()),
        2 => (arb_task_data(), arb_mutations(DATA_FIELDS)).prop_map(|(data, mutations)| {
            serde_json::to_vec(&mutate(serde_json::to_value(data).unwrap(), &mutations)).unwrap()
        }),
        1 => arb_task_data()
            .prop_flat_map(|data| arb_byte_edits(serde_json::to_vec(&data).unwrap())),
        1 => arb_json().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        1 => arb_bytes(),
    ]
}

fn arb_extensions() -> impl Strategy<Value = Option<prost_types::Struct>> {
    use prost_types::value::Kind;
    let value = prop_oneof![
        arb_text().prop_map(Kind::StringValue),
        any::<f64>().prop_map(Kind::NumberValue),
        any::<bool>().prop_map(Kind::BoolValue),
        Just(Kind::NullValue(0)),
    ];
    let key = prop_oneof![
        select(vec!["traceparent", "tracestate", "subject", "time"]).prop_map(str::to_owned),
        ".{0,12}",
    ];
    option::of((btree_map(key, value, 0..5), arb_traceparent()).prop_map(
        |(fields, traceparent)| {
            let mut fields: BTreeMap<String, prost_types::Value> = fields
                .into_iter()
                .map(|(k, kind)| (k, prost_types::Value { kind: Some(kind) }))
                .collect();
            if let Some(traceparent) = traceparent {
                fields.insert(
                    "traceparent".into(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue(traceparent)),
                    },
                );
            }
            prost_types::Struct { fields }
        },
    ))
}

fn arb_topic_request() -> impl Strategy<Value = TopicEventRequest> {
    (
        (
            arb_text(),
            arb_event_type(),
            arb_event_data(),
            arb_extensions(),
        ),
        (
            prop_oneof![4 => Just(TOPIC.to_owned()), 1 => arb_text()],
            prop_oneof![4 => Just(PUBSUB.to_owned()), 1 => arb_text()],
            prop_oneof![
                Just(String::new()),
                arb_event_type().prop_map(|t| format!("/{TOPIC}/{t}")),
                arb_text(),
            ],
            arb_text(),
        ),
    )
        .prop_map(
            |((id, event_type, data, extensions), (topic, pubsub_name, path, content_type))| {
                TopicEventRequest {
                    id,
                    source: "taskmesh/task-service".into(),
                    r#type: event_type,
                    spec_version: "1.0".into(),
                    data_content_type: content_type,
                    data,
                    topic,
                    pubsub_name,
                    path,
                    extensions,
                }
            },
        )
}

fn known_type(event_type: &str) -> bool {
    TaskEventKind::from_event_type(event_type).is_some()
}

proptest! {
    #![proptest_config(config(256))]

    /// Every delivery is answered SUCCESS (data decoded) or DROP with a reason, never
    /// RETRY (nothing here is transient) and never a panic.
    #[test]
    fn deliveries_succeed_or_drop_with_a_reason(request in arb_topic_request()) {
        let handler = Arc::new(Decoding::default());
        let router = subscribed(&handler);
        // The sidecar's matched route first, then the type.
        let routed = request.topic == TOPIC
            && request.pubsub_name == PUBSUB
            && (known_type(&request.r#type)
                || request.path.strip_prefix(&format!("/{TOPIC}/")).is_some_and(known_type));
        let decodes = serde_json::from_slice::<TaskEventData>(&request.data).is_ok();
        let id = request.id.clone();
        let status = block_on(router.on_topic_event(Request::new(request)))
            .unwrap()
            .into_inner()
            .status;
        let expected = if routed && decodes { SUCCESS } else { DROP };
        prop_assert_eq!(status, expected);
        let outcomes = handler.outcomes.lock().unwrap();
        prop_assert_eq!(outcomes.len(), usize::from(routed));
        if let Some(Outcome::Drop(reason)) = outcomes.first() {
            prop_assert!(reason.contains(&id) && reason.contains("is not valid"), "{reason}");
        }
    }
}

proptest! {
    // Up to 16 deliveries a case.
    #![proptest_config(config(96))]

    /// A bulk delivery answers each entry, by its id, SUCCESS or DROP.
    #[test]
    fn bulk_deliveries_answer_every_entry(
        requests in vec(arb_topic_request(), 0..8),
        raw in vec(any::<bool>(), 0..8),
    ) {
        let handler = Arc::new(Decoding::default());
        let router = subscribed(&handler);
        let mut entries: Vec<TopicEventBulkRequestEntry> = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| TopicEventBulkRequestEntry {
                entry_id: format!("entry-{i}"),
                event: Some(BulkEvent::CloudEvent(TopicEventCeRequest {
                    id: r.id,
                    source: r.source,
                    r#type: r.r#type,
                    spec_version: r.spec_version,
                    data_content_type: r.data_content_type,
                    data: r.data,
                    extensions: r.extensions,
                })),
                ..TopicEventBulkRequestEntry::default()
            })
            .collect();
        let offset = entries.len();
        entries.extend(raw.iter().enumerate().map(|(i, bytes)| TopicEventBulkRequestEntry {
            entry_id: format!("entry-{}", offset + i),
            event: bytes.then(|| BulkEvent::Bytes(b"{}".to_vec())),
            ..TopicEventBulkRequestEntry::default()
        }));
        let ids: Vec<String> = entries.iter().map(|e| e.entry_id.clone()).collect();
        let answer = block_on(router.on_bulk_topic_event(Request::new(TopicEventBulkRequest {
            entries,
            topic: TOPIC.into(),
            pubsub_name: PUBSUB.into(),
            ..TopicEventBulkRequest::default()
        })))
        .unwrap()
        .into_inner();
        let answered: Vec<String> = answer.statuses.iter().map(|s| s.entry_id.clone()).collect();
        prop_assert_eq!(answered, ids);
        for (i, status) in answer.statuses.iter().enumerate() {
            prop_assert!(status.status == SUCCESS || status.status == DROP);
            if i >= offset {
                prop_assert_eq!(status.status, DROP, "not a CloudEvent");
            }
        }
    }

}

proptest! {
    #![proptest_config(config(256))]

    /// The data of a delivery handed to a consumer: decoded, or a DROP naming the event.
    #[test]
    fn delivery_data_decodes_or_is_a_drop(
        data in arb_event_data(),
        id in arb_text(),
        event_type in arb_event_type(),
    ) {
        let delivery = Delivery {
            id: id.clone(),
            source: String::new(),
            event_type,
            subject: None,
            topic: TOPIC.into(),
            pubsub: PUBSUB.into(),
            data,
            data_content_type: "application/json".into(),
            traceparent: None,
        };
        for result in [
            delivery.json::<TaskEventData>().map(drop),
            delivery.json::<ReminderData>().map(drop),
        ] {
            match result {
                Ok(()) => {}
                Err(Outcome::Drop(reason)) => prop_assert!(reason.contains(&id), "{reason}"),
                Err(other) => prop_assert!(false, "not a DROP: {other:?}"),
            }
        }
    }
}

/// A method as the services write them: a typed request, refused as INVALID_ARGUMENT.
struct Typed;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TypedRequest {
    user_id: String,
    #[serde(default)]
    page_size: Option<u32>,
}

#[async_trait]
impl Method for Typed {
    async fn call(&self, input: Value) -> Result<Value, InvokeError> {
        serde_json::from_value::<TypedRequest>(input)
            .map_err(|err| InvokeError::InvalidArgument(err.to_string()))?;
        Ok(json!({"ok": true}))
    }
}

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

proptest! {
    #![proptest_config(config(256))]

    /// Any body to a method: its answer or INVALID_ARGUMENT; any other name: UNIMPLEMENTED.
    #[test]
    fn invocations_answer_or_refuse(
        body in option::of(prop_oneof![
            arb_bytes(),
            arb_json_with_keys(&["user_id", "page_size"])
                .prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ]),
        method in prop_oneof![3 => Just("typed".to_owned()), 1 => arb_text()],
    ) {
        let router = Router::new().method("typed", Arc::new(Typed));
        match block_on(router.on_invoke(invoke(&method, body))) {
            Ok(reply) => {
                prop_assert_eq!(&method, "typed");
                let body = reply.into_inner().data.unwrap().value;
                prop_assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"ok": true}));
            }
            Err(status) if method == "typed" => {
                prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
            }
            Err(status) => prop_assert_eq!(status.code(), Code::Unimplemented),
        }
    }
}

#[test]
fn deeply_nested_json_is_refused_not_a_stack_overflow() {
    for depth in [200, 10_000, MAX_INPUT / 2] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(decode_all(nested.as_bytes()).is_none());
        let object = format!("{}1{}", r#"{"data":"#.repeat(depth), "}".repeat(depth));
        assert!(decode_all(object.as_bytes()).is_none());
        let router = Router::new().method("typed", Arc::new(Typed));
        let refused =
            block_on(router.on_invoke(invoke("typed", Some(nested.into_bytes())))).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
}

// ---------------------------------------------------------------------------------------
// Recurrence rules and the next occurrence
// ---------------------------------------------------------------------------------------

/// One `KEY=VALUE` part of a rule, valid or not, in any case.
fn arb_rule_part() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        0u64..=60,
        0u64..=20_000,
        any::<u64>(),
        Just(u64::from(u32::MAX) + 1),
    ]
    .prop_map(|n| n.to_string());
    let huge = prop_oneof![
        "[0-9]{20,40}",
        "-[0-9]{1,20}",
        "\\+[0-9]{1,5}",
        Just(String::new()),
        Just(" 7 ".to_owned()),
    ];
    let weekday = select(vec![
        "MO", "TU", "WE", "TH", "FR", "SA", "SU", "XX", "mo", "",
    ]);
    let weekday_part = weekday.clone();
    // Around the years a series can reach, and malformed ones.
    let exdate = prop_oneof![
        (2020i32..=2040, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}")),
        (0i32..=99_999, 0u32..=13, 0u32..=32, 0u32..=25)
            .prop_map(|(y, m, d, h)| format!("{y:04}{m:02}{d:02}T{h:02}0000")),
        arb_text(),
    ];
    let ordinal = prop_oneof![
        Just(String::new()),
        (-60i64..=60).prop_map(|n| n.to_string()),
        (-60i64..=60).prop_map(|n| format!("+{n}")),
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    let by_day = vec(
        (ordinal, weekday).prop_map(|(o, d)| format!("{o}{d}")),
        1..8,
    )
    .prop_map(|days| days.join(","));
    let month_day = prop_oneof![
        (-40i64..=40).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    let by_month_day = vec(month_day, 1..8).prop_map(|days| days.join(","));
    let until = prop_oneof![
        (1900i32..=2100, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}")),
        (
            0i32..=99_999,
            0u32..=13,
            0u32..=32,
            0u32..=25,
            0u32..=61,
            0u32..=61
        )
            .prop_map(|(y, mo, d, h, mi, s)| format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")),
        arb_text(),
    ];
    let freq = select(vec![
        "DAILY",
        "WEEKLY",
        "MONTHLY",
        "YEARLY",
        "daily",
        "HOURLY",
        "SECONDLY",
        "",
        "FORTNIGHTLY",
    ])
    .prop_map(str::to_owned);
    let part = prop_oneof![
        freq.prop_map(|v| format!("FREQ={v}")),
        prop_oneof![number.clone(), huge.clone()].prop_map(|v| format!("INTERVAL={v}")),
        prop_oneof![number, huge].prop_map(|v| format!("COUNT={v}")),
        until.prop_map(|v| format!("UNTIL={v}")),
        by_day.prop_map(|v| format!("BYDAY={v}")),
        by_month_day.prop_map(|v| format!("BYMONTHDAY={v}")),
        vec(
            prop_oneof![(0i64..=14).prop_map(|n| n.to_string()), arb_text()],
            1..5
        )
        .prop_map(|v| format!("BYMONTH={}", v.join(","))),
        vec(
            prop_oneof![
                (-400i64..=400).prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string())
            ],
            1..5
        )
        .prop_map(|v| format!("BYSETPOS={}", v.join(","))),
        weekday_part.prop_map(|d| format!("WKST={d}")),
        vec(exdate, 1..6).prop_map(|v| format!("EXDATE={}", v.join(","))),
        select(vec![
            "BYHOUR=9",
            "BYWEEKNO=1",
            "BYYEARDAY=1",
            "=",
            "X",
            ";",
            "\n",
            "\r\n ",
            "\nEXDATE;VALUE=DATE:20300101",
            "\nRRULE:FREQ=DAILY",
            "\nDTSTART:20300101T090000Z",
        ])
        .prop_map(str::to_owned),
    ];
    (part, any::<bool>()).prop_map(|(part, lower)| {
        if lower {
            part.to_ascii_lowercase()
        } else {
            part
        }
    })
}

/// A rule: FREQ first most of the time, then a few other parts in any order.
fn arb_rule_text() -> impl Strategy<Value = String> {
    (
        select(vec!["DAILY", "WEEKLY", "MONTHLY", "YEARLY"]),
        vec(arb_rule_part(), 0..5),
        any::<bool>(),
        select(vec!["", "RRULE:", "rrule:"]),
    )
        .prop_map(|(freq, parts, with_freq, prefix)| {
            let mut all = Vec::new();
            if with_freq {
                all.push(format!("FREQ={freq}"));
            }
            all.extend(parts);
            format!("{prefix}{}", all.join(";"))
        })
}

fn arb_valid_rule() -> impl Strategy<Value = RecurrenceRule> {
    arb_rule_text().prop_filter_map("parses", |text| text.parse().ok())
}

/// How long one next-occurrence computation may take. The search is bounded (400 to 800
/// years); this only tells a slow machine from a loop that does not end.
const STEP_LIMIT: Duration = Duration::from_secs(20);

proptest! {
    // About 6 in 7 generated rules are refused (`arb_valid_rule`): a deep run
    // (`PROPTEST_CASES=30000`) needs more than proptest's 65,536 rejections.
    #![proptest_config(ProptestConfig { max_local_rejects: u32::MAX, ..config(256) })]

    /// Any text parses or is refused; what parses prints to a rule that parses back to
    /// itself.
    #[test]
    fn any_text_parses_or_is_refused(text in prop_oneof![arb_text(), arb_rule_text()]) {
        if let Ok(rule) = text.parse::<RecurrenceRule>() {
            let printed = rule.to_string();
            prop_assert_eq!(printed.parse::<RecurrenceRule>().unwrap(), rule, "{}", printed);
        }
    }

    /// The next occurrence of any rule from any time in any zone returns, is later than
    /// the last one, respects UNTIL and counts COUNT down.
    #[test]
    fn next_occurrence_returns_and_moves_forward(
        rule in arb_valid_rule(),
        due in arb_any_time(),
        tz in arb_tz(),
    ) {
        let steps = within(STEP_LIMIT, {
            let rule = rule.clone();
            move || {
                let mut steps = Vec::new();
                let (mut rule, mut due) = (rule, due);
                for _ in 0..3 {
                    let Some(next) = next_occurrence(&rule, due, tz) else {
                        break;
                    };
                    steps.push((due, rule.clone(), next.clone()));
                    due = next.due;
                    rule = next.rule;
                }
                steps
            }
        });
        for (due, rule, next) in steps {
            prop_assert!(next.due > due, "{} from {} gave {}", rule, due, next.due);
            match rule.end {
                Some(End::Until(until)) => prop_assert!(next.due <= until),
                Some(End::Count(n)) => prop_assert_eq!(next.rule.end, Some(End::Count(n - 1))),
                None => prop_assert_eq!(next.rule.end, None),
            }
            let day = next.due.with_timezone(&tz);
            if !rule.by_day.is_empty() {
                prop_assert!(rule.by_day.iter().any(|b| b.weekday == day.weekday()));
            }
            if !rule.by_month.is_empty() {
                prop_assert!(rule.by_month.iter().any(|m| u32::from(*m) == day.month()));
            }
            prop_assert!(!rule.except.contains(&day.date_naive()), "{} on {}", rule, day);
            prop_assert!(next.rule.except.iter().all(|d| *d > day.date_naive()));
            prop_assert!((1..=9999).contains(&day.year()));
        }
    }
}

#[test]
fn rules_that_never_match_end_the_series() {
    let utc = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    for rule in [
        "FREQ=MONTHLY;BYDAY=5MO;BYMONTHDAY=1",
        "FREQ=MONTHLY;BYMONTHDAY=31;BYMONTH=2,4",
        "FREQ=YEARLY;INTERVAL=1000;BYMONTHDAY=30",
        // From a Thursday, every seventh day is a Thursday.
        "FREQ=DAILY;INTERVAL=7;BYDAY=TU",
        "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=WEEKLY;BYDAY=MO;BYSETPOS=2",
        "FREQ=YEARLY;BYMONTH=2;BYDAY=5SU;BYSETPOS=-1;BYMONTHDAY=1,2,3,4,5,6,7",
    ] {
        let rule: RecurrenceRule = rule.parse().unwrap();
        let found = within(STEP_LIMIT, move || {
            next_occurrence(&rule, utc("2024-02-29T09:00:00Z"), Tz::UTC)
        });
        assert_eq!(found, None);
    }
}

// ---------------------------------------------------------------------------------------
// Bearer tokens
// ---------------------------------------------------------------------------------------

const SECRET: &[u8] = b"property-test-secret";

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap()
}

fn arb_alg() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => select(vec![
            "none", "None", "NONE", "nOnE", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
            "ES256", "ES384", "PS256", "PS384", "PS512", "EdDSA", "", "hs256", "HS256 ",
        ])
        .prop_map(|alg| Value::String(alg.to_owned())),
        1 => arb_json_leaf(),
    ]
}

fn arb_header() -> impl Strategy<Value = Value> {
    const HEADER_KEYS: &[&str] = &["alg", "typ", "kid", "jku", "jwk", "x5u", "crit", "b64"];
    prop_oneof![
        4 => (arb_alg(), btree_map(select(HEADER_KEYS), arb_json_leaf(), 0..3)).prop_map(
            |(alg, extra)| {
                let mut header = serde_json::Map::new();
                for (k, v) in extra {
                    header.insert(k.to_owned(), v);
                }
                header.insert("alg".into(), alg);
                header.entry("typ").or_insert(json!("JWT"));
                Value::Object(header)
            }
        ),
        1 => arb_json_with_keys(HEADER_KEYS),
    ]
}

fn arb_claims() -> impl Strategy<Value = Value> {
    let exp = prop_oneof![
        Just(json!(now() + 3600)),
        Just(json!(0)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!("tomorrow")),
    ];
    prop_oneof![
        4 => ("[a-z]{1,12}|.{0,200}", exp).prop_map(|(sub, exp)| json!({"sub": sub, "exp": exp, "iat": now()})),
        1 => arb_json_with_keys(&["sub", "exp", "iat", "nbf", "aud", "iss"]),
    ]
}

fn arb_signature() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        vec(any::<u8>(), 0..100).prop_map(|b| b64(&b)),
        arb_text(),
    ]
}

fn refused(token: &str) -> Result<(), TestCaseError> {
    let verifier = TokenVerifier::new(SECRET);
    prop_assert!(verifier.verify(token).is_err(), "accepted {token:?}");
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_strings_are_refused(token in prop_oneof![
        arb_text(),
        vec(arb_text(), 0..6).prop_map(|parts| parts.join(".")),
    ]) {
        refused(&token)?;
    }

    /// Three base64url segments of anything, with every `alg`, `none` included.
    #[test]
    fn unsigned_tokens_are_refused(
        header in arb_header(),
        claims in arb_claims(),
        signature in arb_signature(),
        padded in any::<bool>(),
    ) {
        let segment = |v: &Value| {
            let text = b64(&serde_json::to_vec(v).unwrap());
            if padded { format!("{text}==") } else { text }
        };
        refused(&format!("{}.{}.{signature}", segment(&header), segment(&claims)))?;
        refused(&format!("{}.{}.", segment(&header), segment(&claims)))?;
    }

    /// Tokens signed properly but with another key or another algorithm.
    #[test]
    fn tokens_signed_otherwise_are_refused(
        claims in arb_claims(),
        key in prop_oneof![Just(SECRET.to_vec()), vec(any::<u8>(), 0..64)],
        alg in select(vec![
            jsonwebtoken::Algorithm::HS256,
            jsonwebtoken::Algorithm::HS384,
            jsonwebtoken::Algorithm::HS512,
        ]),
    ) {
        prop_assume!(!(key == SECRET && alg == jsonwebtoken::Algorithm::HS256));
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&key),
        )
        .unwrap();
        refused(&token)?;
    }

    /// A valid token is accepted; with any one character changed, it is refused (the
    /// verifier having just accepted the original).
    #[test]
    fn tampered_tokens_are_refused(
        user in "[a-zA-Z0-9@._-]{1,40}",
        at in any::<prop::sample::Index>(),
        replacement in prop_oneof![
            select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec())
                .prop_map(char::from),
            any::<char>(),
        ],
    ) {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": user, "exp": now() + 3600, "iat": now()}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let verifier = TokenVerifier::new(SECRET);
        let accepted = verifier.verify(&token).unwrap();
        prop_assert_eq!(accepted.as_str(), user.as_str());
        let mut chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let tampered: String = chars.into_iter().collect();
        prop_assert!(verifier.verify(&tampered).is_err(), "accepted {tampered:?} (from {token:?})");
    }
}

/// Every position, every base64url character: base64 leaves spare bits in a segment's last
/// character, and a decoder that ignored them would accept a changed token.
#[test]
fn every_one_character_change_is_refused() {
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "exp": now() + 3600, "iat": now()}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let verifier = TokenVerifier::new(SECRET);
    assert_eq!(verifier.verify(&token).unwrap().as_str(), "alice");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    for (i, original) in token.char_indices() {
        for replacement in alphabet.chars().filter(|c| *c != original) {
            let mut tampered = token.clone();
            tampered.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));
            assert!(verifier.verify(&tampered).is_err(), "accepted {tampered}");
        }
    }
}

#[test]
fn huge_segments_are_refused() {
    let verifier = TokenVerifier::new(SECRET);
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let big = b64(&vec![b'a'; MAX_INPUT]);
    let claims_padding = format!(
        r#"{{"sub":"alice","exp":{},"pad":"{}"}}"#,
        now() + 3600,
        "x".repeat(MAX_INPUT)
    );
    for token in [
        format!("{big}.{big}.{big}"),
        format!("{header}.{}.", b64(claims_padding.as_bytes())),
        format!("{header}.{}.{big}", b64(claims_padding.as_bytes())),
        ".".repeat(MAX_INPUT),
        "A".repeat(MAX_INPUT),
    ] {
        assert!(verifier.verify(&token).is_err());
    }
}
