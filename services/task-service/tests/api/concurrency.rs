use std::collections::HashSet;

use taskmesh_proto::tasks::v1::*;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    concurrent_retries_create_one_task,
    concurrent_updates_at_one_version
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
