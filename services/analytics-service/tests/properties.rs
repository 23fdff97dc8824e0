//! Property tests for what analytics-service parses from outside, through its router: the
//! `stats/get` body and task events, in random sequences over one in-memory state store.
//! Every invocation is answered or refused with INVALID_ARGUMENT, every delivery is a
//! SUCCESS or a DROP, and the statistics stay readable and consistent. And tasks shared
//! among three users, published as task-service does and delivered in any order, some
//! twice, count exactly: each user's created, completed, assigned, deleted and open tasks.
//! The case count is
//! bounded so that `just test` stays quick (`PROPTEST_CASES=100000` for a deep run); no
//! regression files are written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use analytics_service::consumer::StatsConsumer;
use analytics_service::methods::GetStats;
use analytics_service::stats::{HISTORY_DAYS, Report};
use chrono::{DateTime, Utc};
use dapr::dapr::proto::common::v1::InvokeRequest;
use dapr::dapr::proto::runtime::v1::TopicEventRequest;
use dapr::dapr::proto::runtime::v1::app_callback_server::AppCallback;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use taskmesh_shared::callback::{Router, Subscription};
use taskmesh_shared::events::{TaskEventData, TaskEventKind, TaskSnapshot};
use taskmesh_shared::records::RecordMetrics;
use taskmesh_shared::state::MemoryStateStore;
use tonic::{Code, Request};
use uuid::Uuid;

/// The largest input generated: what a sidecar could plausibly pass on.
const MAX_INPUT: usize = 64 * 1024;

const PUBSUB: &str = "taskmesh-pubsub";
const TOPIC: &str = "task-events";
const METHOD: &str = "stats/get";
const SUCCESS: i32 = 0;
const DROP: i32 = 2;

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

/// The router as `app::router` wires it, over an in-memory store.
fn service() -> Router {
    let store = Arc::new(MemoryStateStore::new());
    let consumer = Arc::new(StatsConsumer::new(store.clone(), RecordMetrics::default()));
    let mut subscription = Subscription::new(PUBSUB, TOPIC).dead_letter("task-events-deadletter");
    for kind in TaskEventKind::ALL {
        subscription = subscription.on_type(kind.event_type(), consumer.clone());
    }
    Router::new()
        .subscribe(subscription)
        .method(METHOD, Arc::new(GetStats::new(store)))
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
        1 => Just("é".repeat(100)),
        1 => arb_text(),
    ]
}

/// An event's assignee, previous assignee, actor and changed fields; boxed, which keeps
/// `arb_task_data`'s value tree off the test thread's stack.
#[allow(clippy::type_complexity)]
fn arb_people() -> BoxedStrategy<(
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<&'static str>,
)> {
    (
        option::of(arb_named()),
        option::of(arb_named()),
        option::of(arb_named()),
        vec(select(vec!["title", "completed", "assignee_id"]), 0..3),
    )
        .boxed()
}

/// A user an event names besides its owner: one of `USERS`, or one no one could be.
fn arb_named() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(USERS).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("a".repeat(129)),
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..256),
        1 => vec(any::<u8>(), 0..=MAX_INPUT),
    ]
}

/// Around now (so that tasks are overdue and completions recent), anywhere, or at
/// chrono's ends.
fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    let now = Utc::now().timestamp();
    prop_oneof![
        4 => (now - 40 * 86_400..now + 3 * 86_400)
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        2 => (-62_135_596_800i64..=253_402_300_799)
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        1 => (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
            .prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
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
            json!(u64::MAX),
            json!(1e18),
            json!(0.5)
        ]),
        arb_text().prop_map(Value::String),
        arb_user().prop_map(Value::String),
    ]
}

/// JSON of any shape; object keys are often ones the method and events know.
fn arb_json() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "user_id",
        "task",
        "id",
        "owner_id",
        "completed",
        "completed_time",
        "create_time",
        "due_time",
        "version",
        "occurred_at",
        "assignee_id",
        "actor_id",
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

fn arb_body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        6 => prop_oneof![4 => arb_user().prop_map(Value::String), 1 => arb_json_leaf()]
            .prop_map(|user| Some(serde_json::to_vec(&json!({"user_id": user})).unwrap())),
        1 => arb_json().prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        1 => arb_bytes().prop_map(Some),
        1 => Just(None),
    ]
}

fn arb_task_data() -> impl Strategy<Value = TaskEventData> {
    (
        (select(TASKS), arb_user(), option::of(arb_time())),
        (any::<bool>(), option::of(arb_time()), arb_time()),
        (
            prop_oneof![8 => 1i64..6, 1 => Just(0), 1 => any::<i64>()],
            arb_time(),
            prop::bool::weighted(0.9),
        ),
        arb_people(),
    )
        .prop_map(
            |(
                (task, owner, due_time),
                (completed, completed_time, create_time),
                (version, occurred_at, consistent),
                (assignee, previous_assignee, actor, changed_fields),
            )| TaskEventData {
                task: TaskSnapshot {
                    id: Uuid::from_u128(task),
                    owner_id: if consistent {
                        owner.clone()
                    } else {
                        "mallory".into()
                    },
                    title: "t".into(),
                    description: String::new(),
                    priority: "low".into(),
                    tags: Vec::new(),
                    due_time,
                    time_zone: None,
                    recurrence: None,
                    completed,
                    completed_time,
                    create_time,
                    update_time: create_time,
                    version,
                    list_id: None,
                    assignee_id: assignee,
                },
                changed_fields: changed_fields.into_iter().map(str::to_owned).collect(),
                version,
                owner_id: owner,
                occurred_at,
                actor_id: actor,
                previous_list_id: None,
                previous_assignee_id: previous_assignee,
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
        "/task/completed",
        "/task/completed_time",
        "/task/create_time",
        "/task/due_time",
        "/task/assignee_id",
        "/actor_id",
        "/previous_assignee_id",
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
}

fn arb_step() -> impl Strategy<Value = Step> {
    let event_type = prop_oneof![
        6 => select(TaskEventKind::ALL.to_vec()).prop_map(|k| k.event_type().to_owned()),
        1 => arb_text(),
    ];
    let method = prop_oneof![8 => Just(METHOD.to_owned()), 1 => arb_text()];
    prop_oneof![
        3 => (event_type, "[a-z0-9-]{1,12}", arb_event_data())
            .prop_map(|(event_type, id, data)| Step::Deliver { event_type, id, data }),
        2 => (method, arb_body()).prop_map(|(method, body)| Step::Invoke { method, body }),
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

/// A report that adds up.
fn consistent(report: &Report) -> Result<(), TestCaseError> {
    prop_assert!((0.0..=1.0).contains(&report.completion_rate));
    prop_assert_eq!(report.completions_per_day.len(), HISTORY_DAYS as usize);
    prop_assert!(report.open + report.deleted <= report.created);
    prop_assert!(report.overdue <= report.open);
    if let Some(median) = report.median_seconds_to_complete {
        prop_assert!(median >= 0);
    }
    Ok(())
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
                prop_assert_eq!(method.as_str(), METHOD);
                let body = reply.into_inner().data.unwrap().value;
                consistent(&serde_json::from_slice(&body).unwrap())?;
            }
            Err(status) if method == METHOD => {
                prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
            }
            Err(status) => prop_assert_eq!(status.code(), Code::Unimplemented),
        },
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Any sequence of deliveries and calls; afterwards every user's statistics are still
    /// readable (nothing stored that cannot be read back) and add up.
    #[test]
    fn any_sequence_of_calls_is_answered(steps in vec(arb_step(), 1..16)) {
        block_on(async {
            let router = service();
            for step in steps {
                run(&router, step).await?;
            }
            for user in USERS {
                let body = serde_json::to_vec(&json!({"user_id": user})).unwrap();
                let reply = router.on_invoke(invoke(METHOD, Some(body))).await;
                prop_assert!(reply.is_ok(), "{user}: {reply:?}");
                let body = reply.unwrap().into_inner().data.unwrap().value;
                consistent(&serde_json::from_slice(&body).unwrap())?;
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// Shared tasks, counted exactly
// ---------------------------------------------------------------------------------------

const PEOPLE: &[&str] = &["alice", "bob", "carol"];

/// A change someone makes to a task, when it makes sense in the task's state (otherwise
/// skipped, as task-service would refuse it or publish nothing).
#[derive(Debug, Clone)]
enum Op {
    /// To one of `PEOPLE`, or to no one.
    Assign(Option<usize>),
    Complete(usize),
    Reopen(usize),
    Retitle(usize),
    Delete(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let who = 0..PEOPLE.len();
    prop_oneof![
        2 => option::of(who.clone()).prop_map(Op::Assign),
        3 => who.clone().prop_map(Op::Complete),
        2 => who.clone().prop_map(Op::Reopen),
        1 => who.clone().prop_map(Op::Retitle),
        1 => who.prop_map(Op::Delete),
    ]
}

/// A task's owner, its first assignee, and what happens to it.
fn arb_life() -> impl Strategy<Value = (usize, Option<usize>, Vec<Op>)> {
    (
        0..PEOPLE.len(),
        option::of(0..PEOPLE.len()),
        vec(arb_op(), 0..12),
    )
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    created: u64,
    completed: u64,
    assigned: u64,
    deleted: u64,
    open: u64,
}

/// The events task-service publishes for `life`, and what each user should count.
fn publish(
    id: u128,
    (owner, assignee, ops): &(usize, Option<usize>, Vec<Op>),
    expected: &mut [Counts],
) -> Vec<(TaskEventKind, TaskEventData)> {
    let now = Utc::now();
    let created_at = now - chrono::Duration::hours(1);
    let mut task = TaskSnapshot {
        id: Uuid::from_u128(id),
        owner_id: PEOPLE[*owner].into(),
        title: "t".into(),
        description: String::new(),
        priority: "low".into(),
        tags: Vec::new(),
        due_time: Some(now + chrono::Duration::days(1)),
        time_zone: None,
        recurrence: None,
        completed: false,
        completed_time: None,
        create_time: created_at,
        update_time: created_at,
        version: 1,
        list_id: Some(Uuid::from_u128(99)),
        assignee_id: assignee.map(|a| PEOPLE[a].to_owned()),
    };
    let event = |task: &TaskSnapshot, version: i64, actor: usize, changed: &[&str]| TaskEventData {
        task: task.clone(),
        changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
        version,
        owner_id: PEOPLE[*owner].into(),
        occurred_at: created_at + chrono::Duration::seconds(version),
        actor_id: Some(PEOPLE[actor].into()),
        previous_list_id: None,
        previous_assignee_id: None,
    };
    expected[*owner].created += 1;
    if let Some(a) = assignee {
        expected[*a].assigned += 1;
    }
    let mut events = vec![(
        TaskEventKind::Created,
        event(&task, 1, *owner, &["title", "completed", "assignee_id"]),
    )];
    let mut version = 1;
    let mut deleted = false;
    for op in ops {
        let (kind, actor, changed, previous) = match *op {
            Op::Assign(to) => {
                let to = to.map(|a| PEOPLE[a].to_owned());
                if to == task.assignee_id {
                    continue;
                }
                let previous = std::mem::replace(&mut task.assignee_id, to.clone());
                if let Some(a) = PEOPLE.iter().position(|p| Some(*p) == to.as_deref()) {
                    expected[a].assigned += 1;
                }
                (TaskEventKind::Updated, *owner, "assignee_id", previous)
            }
            Op::Complete(by) if !task.completed => {
                task.completed = true;
                task.completed_time = Some(created_at + chrono::Duration::seconds(version + 1));
                expected[by].completed += 1;
                (TaskEventKind::Completed, by, "completed", None)
            }
            Op::Reopen(by) if task.completed => {
                task.completed = false;
                task.completed_time = None;
                (TaskEventKind::Reopened, by, "completed", None)
            }
            Op::Retitle(by) => {
                task.title.push('!');
                (TaskEventKind::Updated, by, "title", None)
            }
            Op::Delete(by) => {
                deleted = true;
                expected[*owner].deleted += 1;
                // The task as it was, one version later.
                events.push((TaskEventKind::Deleted, event(&task, version + 1, by, &[])));
                break;
            }
            _ => continue,
        };
        version += 1;
        task.version = version;
        task.update_time = created_at + chrono::Duration::seconds(version);
        let mut data = event(&task, version, actor, &[changed]);
        data.previous_assignee_id = previous;
        events.push((kind, data));
    }
    if !deleted && !task.completed {
        expected[*owner].open += 1;
    }
    events
}

proptest! {
    #![proptest_config(config(128))]

    /// Up to four tasks among three users, each event delivered once in a random order and
    /// some a second time: every user's counts are exactly what happened.
    #[test]
    fn shared_tasks_count_exactly_in_any_order(
        lives in vec(arb_life(), 1..5),
        order in any::<u64>(),
        again in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut expected = vec![Counts::default(); PEOPLE.len()];
        let mut events: Vec<(TaskEventKind, TaskEventData)> = Vec::new();
        for (i, life) in lives.iter().enumerate() {
            events.extend(publish(100 + i as u128, life, &mut expected));
        }
        // A shuffle (a small LCG seeded by the case), then some redeliveries.
        let mut seed = order;
        for i in (1..events.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            events.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let twice: Vec<_> = again.iter().map(|i| events[i.index(events.len())].clone()).collect();
        events.extend(twice);
        block_on(async {
            let router = service();
            for (n, (kind, data)) in events.into_iter().enumerate() {
                let step = Step::Deliver {
                    event_type: kind.event_type().to_owned(),
                    id: format!("e{n}"),
                    data: serde_json::to_vec(&data).unwrap(),
                };
                run(&router, step).await?;
            }
            for (user, want) in PEOPLE.iter().zip(&expected) {
                let body = serde_json::to_vec(&json!({"user_id": user})).unwrap();
                let reply = router.on_invoke(invoke(METHOD, Some(body))).await.unwrap();
                let report: Report =
                    serde_json::from_slice(&reply.into_inner().data.unwrap().value).unwrap();
                let got = Counts {
                    created: report.created,
                    completed: report.completed,
                    assigned: report.assigned,
                    deleted: report.deleted,
                    open: report.open,
                };
                prop_assert_eq!(got, *want, "{}", user);
            }
            Ok(())
        })?;
    }
}
