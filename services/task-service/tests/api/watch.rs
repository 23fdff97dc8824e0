//! WatchTasks on one replica: what a watcher gets, resuming exactly, tokens bound to
//! their watch, OUT_OF_RANGE past the pruned horizon, a slow client cut off, streams
//! ended by shutdown, and (PostgreSQL) a change that commits after a later one.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use taskmesh_proto::tasks::v1::list_service_client::ListServiceClient;
use taskmesh_proto::tasks::v1::task_service_client::TaskServiceClient;
use taskmesh_proto::tasks::v1::*;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_watch_gets_the_changes_of_the_callers_lists_in_order,
    resuming_gets_exactly_what_was_missed,
    tokens_are_bound_to_their_user_and_list,
    a_token_behind_the_pruned_horizon_is_out_of_range,
    a_slow_client_is_cut_off_and_resumes_without_loss,
    shutdown_ends_streams_with_unavailable
);

/// Long enough for a change to reach a watcher on a loaded test machine.
const ARRIVES: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Auth(MetadataValue<Ascii>);

impl Interceptor for Auth {
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

fn auth(user: &str) -> Auth {
    Auth(format!("Bearer {}", TestApp::token(user)).parse().unwrap())
}

async fn lists(app: &TestApp, user: &str) -> ListServiceClient<InterceptedService<Channel, Auth>> {
    ListServiceClient::with_interceptor(app.channel().await, auth(user))
}

async fn default_list(app: &TestApp, user: &str) -> String {
    let page = lists(app, user)
        .await
        .list_lists(ListListsRequest::default())
        .await
        .unwrap()
        .into_inner();
    page.lists.into_iter().find(|l| l.default).unwrap().id
}

async fn watch(
    client: &mut Client,
    token: &str,
    list: Option<&str>,
) -> Streaming<WatchTasksResponse> {
    client
        .watch_tasks(WatchTasksRequest {
            resume_token: token.to_owned(),
            list_id: list.map(str::to_owned),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Streaming<WatchTasksResponse>) -> WatchTasksResponse {
    tokio::time::timeout(ARRIVES, stream.message())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
        .expect("a message, not the end")
}

/// The next `n` changes, skipping keep-alives, with the token after each.
async fn changes(
    stream: &mut Streaming<WatchTasksResponse>,
    n: usize,
) -> Vec<(TaskChange, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = next(stream).await;
        assert!(
            !message.resume_token.is_empty(),
            "every message has a token"
        );
        if let Some(change) = message.change {
            out.push((change, message.resume_token));
        }
    }
    out
}

/// Asserts that no change arrives within `wait` (keep-alives may).
async fn quiet(stream: &mut Streaming<WatchTasksResponse>, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    while let Ok(message) = tokio::time::timeout_at(until, stream.message()).await {
        let message = message.unwrap().unwrap();
        assert!(
            message.change.is_none(),
            "unexpected change: {:?}",
            message.change
        );
    }
}

/// The first message: a keep-alive with the starting position.
async fn started(stream: &mut Streaming<WatchTasksResponse>) -> String {
    let first = next(stream).await;
    assert!(first.change.is_none(), "the first message is a keep-alive");
    assert!(!first.resume_token.is_empty());
    first.resume_token
}

fn task_of(change: &TaskChange) -> &Task {
    change.task.as_ref().unwrap()
}

async fn a_watch_gets_the_changes_of_the_callers_lists_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut bob = app.client("bob").await;
    let mut stream = watch(&mut alice, "", None).await;
    started(&mut stream).await;

    create(&mut bob, new_task("Not alice's")).await;
    let task = create(&mut alice, new_task("Water plants")).await;
    let id = task.id.clone();
    alice
        .update_task(UpdateTaskRequest {
            id: id.clone(),
            title: Some("Water all plants".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    alice
        .complete_task(CompleteTaskRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    alice
        .reopen_task(ReopenTaskRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    alice
        .delete_task(DeleteTaskRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();

    let got = changes(&mut stream, 5).await;
    let types: Vec<ChangeType> = got.iter().map(|(c, _)| c.r#type()).collect();
    assert_eq!(
        types,
        [
            ChangeType::Created,
            ChangeType::Updated,
            ChangeType::Completed,
            ChangeType::Reopened,
            ChangeType::Deleted
        ]
    );
    let versions: Vec<i64> = got.iter().map(|(c, _)| c.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    for (change, _) in &got {
        assert_eq!(task_of(change).id, id);
        assert_eq!(task_of(change).list_id, task.list_id);
        assert!(change.occur_time.is_some());
    }
    assert_eq!(task_of(&got[1].0).title, "Water all plants");
    assert!(task_of(&got[2].0).completed);
    assert_eq!(
        task_of(&got[4].0).version,
        4,
        "a deletion shows the last state"
    );
    let events: HashSet<String> = got.iter().map(|(c, _)| c.event_id.clone()).collect();
    assert_eq!(events.len(), 5);
    let written: HashSet<String> = app
        .outbox()
        .await
        .iter()
        .filter(|(_, task, _)| *task == id)
        .map(|(_, _, event)| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, written, "the ids of the published events");
    quiet(&mut stream, Duration::from_millis(300)).await;

    // One list only; another's list is NOT_FOUND, as a missing one.
    let other = lists(&app, "alice")
        .await
        .create_list(CreateListRequest {
            name: "Other".into(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut only = watch(&mut alice, "", Some(&other)).await;
    started(&mut only).await;
    create(&mut alice, new_task("In the default list")).await;
    let mut request = new_task("In Other");
    request.list_id = Some(other.clone());
    create(&mut alice, request.clone()).await;
    let got = changes(&mut only, 1).await;
    assert_eq!(task_of(&got[0].0).title, "In Other");
    quiet(&mut only, Duration::from_millis(300)).await;
    let bobs = default_list(&app, "bob").await;
    let refused = alice
        .watch_tasks(WatchTasksRequest {
            resume_token: String::new(),
            list_id: Some(bobs),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // A member sees the shared list's changes.
    lists(&app, "alice")
        .await
        .add_member(AddMemberRequest {
            list_id: other.clone(),
            user_id: "bob".into(),
            role: Role::Viewer as i32,
        })
        .await
        .unwrap();
    let mut bobs_stream = watch(&mut bob, "", None).await;
    started(&mut bobs_stream).await;
    request.title = "Shared with bob".into();
    create(&mut alice, request).await;
    let got = changes(&mut bobs_stream, 1).await;
    assert_eq!(task_of(&got[0].0).title, "Shared with bob");
    app.stop().await;
}

async fn resuming_gets_exactly_what_was_missed(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut stream = watch(&mut alice, "", None).await;
    let at_start = started(&mut stream).await;
    for i in 1..=3 {
        create(&mut alice, new_task(&format!("task {i}"))).await;
    }
    let got = changes(&mut stream, 3).await;
    let after_first = got[0].1.clone();
    let after_third = got[2].1.clone();
    drop(stream);
    for i in 4..=5 {
        create(&mut alice, new_task(&format!("task {i}"))).await;
    }

    let titles = |got: &[(TaskChange, String)]| -> Vec<String> {
        got.iter().map(|(c, _)| task_of(c).title.clone()).collect()
    };
    for (token, expected) in [
        (&after_third, vec!["task 4", "task 5"]),
        (&after_first, vec!["task 2", "task 3", "task 4", "task 5"]),
        (
            &at_start,
            vec!["task 1", "task 2", "task 3", "task 4", "task 5"],
        ),
    ] {
        let mut resumed = watch(&mut alice, token, None).await;
        let got = changes(&mut resumed, expected.len()).await;
        assert_eq!(titles(&got), expected);
        quiet(&mut resumed, Duration::from_millis(300)).await;
    }

    // Resumed and then live: the missed changes, then the new one, each once.
    let mut resumed = watch(&mut alice, &after_third, None).await;
    create(&mut alice, new_task("task 6")).await;
    let got = changes(&mut resumed, 3).await;
    assert_eq!(titles(&got), ["task 4", "task 5", "task 6"]);
    // The last token resumes after everything.
    let last = got[2].1.clone();
    drop(resumed);
    let mut resumed = watch(&mut alice, &last, None).await;
    started(&mut resumed).await;
    quiet(&mut resumed, Duration::from_millis(300)).await;
    app.stop().await;
}

async fn tokens_are_bound_to_their_user_and_list(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut stream = watch(&mut alice, "", None).await;
    let token = started(&mut stream).await;
    let list = default_list(&app, "alice").await;
    for (user, token, list) in [
        ("bob", token.as_str(), None),
        ("alice", token.as_str(), Some(list.as_str())),
        ("alice", "not-a-token", None),
        ("alice", "", Some("not-a-uuid")),
    ] {
        let refused = app
            .client(user)
            .await
            .watch_tasks(WatchTasksRequest {
                resume_token: token.to_owned(),
                list_id: list.map(str::to_owned),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{user}: {refused:?}");
    }
    app.stop().await;
}

async fn a_token_behind_the_pruned_horizon_is_out_of_range(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};
    use task_service::outbox::{OutboxStore, SeaOutbox};

    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut stream = watch(&mut alice, "", None).await;
    started(&mut stream).await;
    create(&mut alice, new_task("seen")).await;
    let token = changes(&mut stream, 1).await[0].1.clone();
    drop(stream);
    create(&mut alice, new_task("missed, then pruned")).await;

    // Published long ago, then pruned: the change the token has not seen is gone.
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE outbox SET published_at = 1",
    ))
    .await
    .unwrap();
    let pruned = SeaOutbox::new(db.clone())
        .prune(chrono::Utc::now())
        .await
        .unwrap();
    assert!(pruned >= 2, "{pruned}");
    let refused = alice
        .watch_tasks(WatchTasksRequest {
            resume_token: token,
            list_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("ListTasks"), "{refused:?}");

    // A position past the horizon resumes as usual.
    let mut stream = watch(&mut alice, "", None).await;
    let token = started(&mut stream).await;
    drop(stream);
    create(&mut alice, new_task("after the prune")).await;
    let mut resumed = watch(&mut alice, &token, None).await;
    let got = changes(&mut resumed, 1).await;
    assert_eq!(task_of(&got[0].0).title, "after the prune");
    let _ = db.close().await;
    app.stop().await;
}

async fn a_slow_client_is_cut_off_and_resumes_without_loss(backend: Backend) {
    const CHANGES: usize = 80;
    let app = spawn_app_with(backend, &[("TASKMESH_WATCH_BUFFER", "4")]).await;
    let mut alice = app.client("alice").await;
    // A small HTTP/2 window, so that a client that does not read stops the server soon.
    let channel = Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = TaskServiceClient::with_interceptor(channel, auth("alice"));
    let mut stream = slow
        .watch_tasks(WatchTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    started(&mut stream).await;
    let description = "x".repeat(8000);
    let mut made = HashSet::new();
    for i in 0..CHANGES {
        let mut request = new_task(&format!("big {i}"));
        request.description = description.clone();
        made.insert(create(&mut alice, request).await.id);
    }

    let mut got = Vec::new();
    let mut token = String::new();
    let status = loop {
        match tokio::time::timeout(ARRIVES, stream.message())
            .await
            .unwrap()
        {
            Ok(Some(message)) => {
                if let Some(change) = message.change {
                    got.push(task_of(&change).id.clone());
                }
                token = message.resume_token;
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "client too slow; resume with your last token"
    );
    assert!(
        got.len() < CHANGES,
        "cut off after {} of {CHANGES}",
        got.len()
    );

    let mut resumed = watch(&mut alice, &token, None).await;
    let rest = changes(&mut resumed, CHANGES - got.len()).await;
    got.extend(rest.iter().map(|(c, _)| task_of(c).id.clone()));
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "no change twice");
    assert_eq!(unique, made);
    quiet(&mut resumed, Duration::from_millis(300)).await;
    app.stop().await;
}

async fn shutdown_ends_streams_with_unavailable(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut stream = watch(&mut alice, "", None).await;
    started(&mut stream).await;
    let started_at = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let status = loop {
        match tokio::time::timeout(ARRIVES, stream.message())
            .await
            .unwrap()
        {
            Ok(Some(message)) => assert!(message.change.is_none()),
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the server stops without waiting for the drain deadline")
        .unwrap();
    assert!(started_at.elapsed() < Duration::from_secs(5));
}

/// PostgreSQL numbers rows at insert and commits them in any order: a change whose
/// transaction commits after a later-numbered one is still delivered, live and on resume,
/// and a number that never commits (a rollback) is given up on after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_below_a_delivered_seq_is_still_delivered() {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    use task_service::api::ResumeTokens;

    let app = spawn_app_with(
        Backend::Postgres,
        &[
            ("TASKMESH_WATCH_GAP_GRACE_MS", "3000"),
            ("TASKMESH_WATCH_KEEPALIVE_SECS", "1"),
            ("TASKMESH_DB_STATEMENT_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let mut alice = app.client("alice").await;
    let mut stream = watch(&mut alice, "", None).await;
    started(&mut stream).await;
    let first = create(&mut alice, new_task("first")).await;
    changes(&mut stream, 1).await;

    // A transaction takes the next seq and holds it open.
    let (_, _, event) = app.outbox().await.into_iter().next().unwrap();
    let mut late = event.clone();
    late["id"] = "late-event".into();
    late["data"]["task"]["title"] = "late".into();
    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let insert = |event: &serde_json::Value| {
        Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO outbox (event_id, task_id, event_type, payload, created_at, attempts, list_id) \
             VALUES ($1, $2, $3, $4, 0, 0, $5)",
            [
                event["id"].as_str().unwrap().into(),
                first.id.clone().into(),
                "taskmesh.task.created.v1".into(),
                event.to_string().into(),
                first.list_id.clone().into(),
            ],
        )
    };
    let txn = db.begin().await.unwrap();
    txn.execute_raw(insert(&late)).await.unwrap();

    // A later change commits first and is delivered first.
    create(&mut alice, new_task("second")).await;
    let got = changes(&mut stream, 1).await;
    assert_eq!(task_of(&got[0].0).title, "second");
    let before_late = got[0].1.clone();
    let tokens = ResumeTokens::new(SECRET.as_bytes());
    let cursor = tokens.decode(&before_late, "alice", None).unwrap();
    assert_eq!(
        cursor.gaps.len(),
        1,
        "the open transaction's seq: {cursor:?}"
    );

    txn.commit().await.unwrap();
    let got = changes(&mut stream, 1).await;
    assert_eq!(got[0].0.event_id, "late-event");
    // A watcher that stopped before the late commit gets it on resume.
    let mut resumed = watch(&mut alice, &before_late, None).await;
    let got = changes(&mut resumed, 1).await;
    assert_eq!(got[0].0.event_id, "late-event");
    quiet(&mut resumed, Duration::from_millis(300)).await;

    // A rolled-back seq never fills: after the grace, positions no longer carry it.
    let txn = db.begin().await.unwrap();
    late["id"] = "rolled-back".into();
    txn.execute_raw(insert(&late)).await.unwrap();
    txn.rollback().await.unwrap();
    create(&mut alice, new_task("third")).await;
    let got = changes(&mut stream, 1).await;
    assert_eq!(task_of(&got[0].0).title, "third");
    let with_gap = tokens.decode(&got[0].1, "alice", None).unwrap();
    assert_eq!(with_gap.gaps.len(), 1, "{with_gap:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let message = next(&mut stream).await;
        assert!(message.change.is_none(), "nothing else changed");
        let cursor = tokens.decode(&message.resume_token, "alice", None).unwrap();
        if cursor.gaps.is_empty() {
            assert!(cursor.high >= with_gap.high);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rolled-back seq is never given up on"
        );
    }
    let _ = db.close().await;
    app.stop().await;
}
