use std::collections::HashSet;

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    concurrent_retries_create_one_task,
    concurrent_updates_at_one_version,
    concurrent_reads_answer_each_caller_alone
);

async fn concurrent_retries_create_one_task(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.client("alice").await;
    let req = CreateTaskRequest {
        title: "pay invoice".into(),
        request_id: Some("req-42".into()),
        ..Default::default()
    };
    let attempts = (0..20).map(|_| {
        let mut c = alice.clone();
        let req = req.clone();
        async move { c.create_task(req).await.map(|r| r.into_inner()) }
    });
    let results = futures::future::join_all(attempts).await;
    let ids: HashSet<String> = results
        .into_iter()
        .map(|r| r.expect("every retry succeeds").id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let mut alice = alice;
    let all = list_all(&mut alice, ListTasksRequest::default()).await;
    assert_eq!(all.len(), 1);
    // The retries that lost the race wrote no event either: the task row and its outbox
    // row go in together or not at all.
    let events: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(events, [all[0].id.clone()]);
    // A later retry, even with another payload, answers with the same task.
    let later = create(
        &mut alice,
        CreateTaskRequest {
            title: "something else".into(),
            ..req.clone()
        },
    )
    .await;
    assert!(ids.contains(&later.id));
    assert_eq!(later.title, "pay invoice");

    // Request ids are per user.
    let mut bob = app.client("bob").await;
    let bobs = create(&mut bob, req).await;
    assert!(!ids.contains(&bobs.id));
    app.stop().await;
}

async fn concurrent_updates_at_one_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.client("alice").await;
    for round in 0..5 {
        let task = create(&mut alice.clone(), new_task(&format!("round {round}"))).await;
        let updates = ["left", "right"].map(|title| {
            let mut c = alice.clone();
            let id = task.id.clone();
            async move {
                c.update_task(UpdateTaskRequest {
                    id,
                    expected_version: Some(1),
                    title: Some(title.into()),
                    ..Default::default()
                })
                .await
            }
        });
        let [a, b] = futures::future::join_all(updates)
            .await
            .try_into()
            .expect("two results");
        let (ok, aborted): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(Result::is_ok);
        assert_eq!((ok.len(), aborted.len()), (1, 1), "round {round}");
        let err = aborted.into_iter().next().unwrap().unwrap_err();
        assert_eq!(err.code(), Code::Aborted);
        assert!(err.message().contains("retry"), "{}", err.message());
        let winner = ok.into_iter().next().unwrap().unwrap().into_inner();
        assert_eq!(winner.version, 2);
        let stored = alice
            .clone()
            .get_task(GetTaskRequest { id: task.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored, winner);
    }
    app.stop().await;
}

/// GetTask batches reads that arrive together: 600 at once, mixing owners, repeated ids
/// and missing ones, each get exactly their own answer, and a read after an update sees
/// the update.
async fn concurrent_reads_answer_each_caller_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut alice = app.client("alice").await;
    let mut bob = app.client("bob").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        for (owner, client) in [("alice", &mut alice), ("bob", &mut bob)] {
            let task = create(client, new_task(&format!("{owner} {i}"))).await;
            tasks.push((owner, task));
        }
    }
    let client_of = |user: &str| {
        if user == "alice" {
            alice.clone()
        } else {
            bob.clone()
        }
    };
    let missing = uuid::Uuid::now_v7().to_string();
    let reads = (0..600).map(|n| {
        let (owner, task) = &tasks[n % tasks.len()];
        // Every third read is by the other user, every seventh of a task that is not there.
        let reader = match (n % 3 == 0, *owner) {
            (false, owner) => owner,
            (true, "alice") => "bob",
            (true, _) => "alice",
        };
        let mut client = client_of(reader);
        let id = if n % 7 == 0 {
            missing.clone()
        } else {
            task.id.clone()
        };
        let expected = (reader == *owner && n % 7 != 0).then(|| task.clone());
        async move {
            let got = client.get_task(GetTaskRequest { id }).await;
            (n, expected, got.map(|r| r.into_inner()))
        }
    });
    for (n, expected, got) in futures::future::join_all(reads).await {
        match (expected, got) {
            (Some(task), Ok(found)) => assert_eq!(found, task, "read {n}"),
            (None, Err(status)) => {
                assert_eq!(status.code(), Code::NotFound, "read {n}: {status:?}")
            }
            (expected, got) => panic!("read {n}: expected {expected:?}, got {got:?}"),
        }
    }

    let (_, first) = &tasks[0];
    let updated = alice
        .update_task(UpdateTaskRequest {
            id: first.id.clone(),
            title: Some("a0, renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let again = alice
        .get_task(GetTaskRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, updated);
    app.stop().await;
}
